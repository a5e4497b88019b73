"""Shared pieces of the procedural phantoms: soft masks, texture banks, patients, synthetic metadata.

Everything is deterministic: a phantom is a pure function of ``(seed, kind, index)`` (image-level
randomness) and ``(seed, kind, patient)`` (anatomy shared by all images of one patient).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from decimal import Decimal
from numbers import Integral, Real
from typing import Any

import numpy as np

#: kind codes mixed into the seed so chest and retina phantoms of one seed are independent
KIND_CODES = {"cxr": 11, "retina": 23}

#: fractions of *patients* in train / val / test
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLITS = ("train", "val", "test")

#: smallest side of a chest / retina phantom in pixels (the anatomy needs it)
MIN_IMAGE_SIZE = 32
#: largest side of a phantom in pixels: the generators draw their texture banks at twice the side on construction
#: (4096 px: about 3 GB), so a value from a config or a call is never allowed to exhaust memory
MAX_IMAGE_SIZE = 4096
#: range of a chest phantom's detector field of view in mm (``fov_mm``: the whole thorax spans it, so it sets the pixel
#: spacing and the lesions' size in pixels): a neonate's chest (~100 mm) to beyond the largest flat-panel detector
#: (430 mm, 17 in), with margin either side. Outside it the DICOM Pixel Spacing (0028,0030) left the physical range
#: (1e-300 mm was written as 0.0, which DICOM forbids: a reader computing mm divides by it)
MIN_FOV_MM, MAX_FOV_MM = 50.0, 1000.0
#: upper bound of ``n`` (phantom images over all splits; a value from a config or a call is never allowed to exhaust
#: memory): the patient plan holds ``n`` integers
MAX_N = 10_000_000

_GIVEN = ["Alex", "Sam", "Robin", "Kim", "Jo", "Noa", "Ari", "Lee", "Max", "Eli", "Ren", "Sky", "Ash", "Dani",
          "Remy", "Jules", "Quinn", "Sasha", "Toni", "Luca"]
_FAMILY = ["Phantom", "Synthetic", "Testcase", "Mockup", "Simulant", "Model", "Replica", "Dummy"]


#: an argument not passed to :func:`check_geometry` (None is a value, refused like any other non-number)
_UNSET: Any = object()


def whole_number(v: Any) -> int | None:
    """``v`` as an ``int`` when it is a whole number (``int``, a numpy integer, a ``float`` / ``Fraction`` /
    ``Decimal`` without a fractional part, however large); ``None`` otherwise (a bool, NaN, ±inf, 64.5, a string,
    None, ...). Never raises (an int beyond float range is compared exactly, not converted to float)."""
    if isinstance(v, bool | np.bool_) or not isinstance(v, Real | Decimal):
        return None
    if isinstance(v, Integral):
        return int(v)
    try:
        i = int(v)
    except (ValueError, OverflowError, ArithmeticError):  # NaN, ±inf, Decimal('sNaN')
        return None
    return i if i == v else None


def finite_number(v: Any) -> float | None:
    """``v`` as a finite ``float`` (an ``int``, numpy or ``Fraction`` / ``Decimal`` number); ``None`` for a bool,
    NaN, ±inf, a number beyond float range (±1.8e308) or a non-number. Never raises."""
    if isinstance(v, bool | np.bool_) or not isinstance(v, Real | Decimal):
        return None
    try:
        f = float(v)
    except (ValueError, OverflowError, ArithmeticError):
        return None
    return f if math.isfinite(f) else None


def check_geometry(image_size: Any = _UNSET, fov_mm: Any = _UNSET, in_chans: Any = _UNSET, *,
                   what: str = "phantoms", name: Callable[[str], str] = str, min_size: int = MIN_IMAGE_SIZE) -> None:
    """The one check of a phantom's geometry (the generators', the phantom datasets' and ``medvit run --dry-run``'s):
    ``image_size`` a whole number of pixels in [``min_size`` (default :data:`MIN_IMAGE_SIZE`: a phantom's anatomy
    needs it; 1 for a synth folder's resize target), :data:`MAX_IMAGE_SIZE`], ``fov_mm`` (detector
    field of view in mm) a number in [:data:`MIN_FOV_MM`, :data:`MAX_FOV_MM`], ``in_chans`` 1 (grey) or 3 (grey
    repeated, for RGB backbones). An argument not passed is not checked (``None`` passed is refused).

    Raises:
        ValueError: naming the argument (``name(arg)``, e.g. ``dataset_args.image_size``) and the value; ``what``
            (e.g. "chest phantoms") says whose minimum size applies.
    """
    if image_size is not _UNSET:
        size = whole_number(image_size)
        if size is None:
            raise ValueError(f"{name('image_size')} (pixels a side) must be a whole number, got {image_size!r}")
        if size < min_size:
            raise ValueError(f"{name('image_size')} must be >= {min_size} for {what}, got {image_size}")
        check_at_most(image_size, MAX_IMAGE_SIZE, "image_size", "pixels a side", name)
    if fov_mm is not _UNSET:
        fov = finite_number(fov_mm)
        if fov is None or not MIN_FOV_MM <= fov <= MAX_FOV_MM:
            raise ValueError(f"{name('fov_mm')} (detector field of view in mm; sets the pixel spacing) must be a "
                             f"number in [{MIN_FOV_MM:g}, {MAX_FOV_MM:g}], got {fov_mm!r}")
    if in_chans is not _UNSET and (isinstance(in_chans, bool | np.bool_) or whole_number(in_chans) not in (1, 3)):
        raise ValueError(f"{name('in_chans')} must be 1 (grey) or 3 (the grey channel repeated, for RGB "
                         f"backbones), got {in_chans!r}")


def check_count(n: Any, name: Callable[[str], str] = str) -> int:
    """``n`` (number of phantom images) as an int: a whole number in [1, :data:`MAX_N`]; ``ValueError`` naming
    ``name('n')`` and the value otherwise (``"2"``, 2.5, True, 0, 10**9)."""
    v = whole_number(n)
    if v is None:
        raise ValueError(f"{name('n')} (number of phantom images) must be a whole number, got {n!r}")
    if v < 1:
        raise ValueError(f"{name('n')} (number of phantom images) must be >= 1, got {n}")
    check_at_most(n, MAX_N, "n", "number of phantom images", name)
    return v


def check_draw(seed: Any, with_masks: Any, name: Callable[[str], str] = str) -> int:
    """The generators' ``seed`` (a whole number >= 0, returned as an int: 1.5 was drawn as seed 1) and
    ``with_masks`` (a bool: "yes" was taken as true); ``ValueError`` naming ``name(arg)`` and the value."""
    v = whole_number(seed)
    if v is None:
        raise ValueError(f"{name('seed')} (a random seed) must be a whole number, got {seed!r}")
    if v < 0:  # numpy's refusal ("expected non-negative integer") names no argument
        raise ValueError(f"{name('seed')} must be >= 0 (a random seed), got {seed}")
    if not isinstance(with_masks, bool | np.bool_):
        raise ValueError(f"{name('with_masks')} must be true or false, got {with_masks!r}")
    return v


def check_at_most(value: Any, limit: int, key: str, what: str, name: Callable[[str], str] = str) -> None:
    """``ValueError`` naming ``name(key)`` (``what`` it counts) when ``value`` exceeds ``limit``: a value from a
    config or a call is never allowed to exhaust memory."""
    if value > limit:
        shown = f"{value:,}" if isinstance(value, Integral) else repr(value)
        raise ValueError(f"{name(key)} ({what}) must be <= {limit:,} (more would not fit in memory), got {shown}")


def check_probability(value: Any, key: str, name: Callable[[str], str] = str) -> float:
    """``value`` as a float in [0, 1]; ``ValueError`` naming ``name(key)`` and the value otherwise (NaN too)."""
    p = finite_number(value)
    if p is None or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name(key)} (a probability) must lie in [0, 1], got {value!r}")
    return p


def bound_args(cls: type, kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` completed with the defaults of ``cls.__init__`` (a generator's ``check_args``: the values its
    constructor would see). ``TypeError`` for an argument the constructor does not take."""
    b = inspect.signature(cls.__init__).bind(None, **kw)
    b.apply_defaults()
    return {k: v for k, v in b.arguments.items() if k != "self"}


def image_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """Random generator for image-level choices (pose, exposure, findings)."""
    return np.random.default_rng([int(seed), KIND_CODES[kind], 1, int(index)])


def patient_rng(seed: int, kind: str, patient: int) -> np.random.Generator:
    """Random generator for patient-level anatomy shared by all of one patient's images."""
    return np.random.default_rng([int(seed), KIND_CODES[kind], 2, int(patient)])


def ramp(z: np.ndarray, width: float) -> np.ndarray:
    """Soft step 0 → 1 of ``z`` over ``width`` centred at 0 (linear, clipped); float32, same shape."""
    out = np.multiply(z, np.float32(0.5 / width), dtype=np.float32)
    out += np.float32(0.5)
    np.clip(out, 0.0, 1.0, out=out)
    return out


@dataclass
class PatientPlan:
    """Which patient each image belongs to and which split each patient is in.

    ``patient_of[i]`` is image i's patient number; ``split_of_patient[p]`` is 0/1/2 (train/val/test).
    """

    n: int
    seed: int
    patient_of: np.ndarray
    split_of_patient: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    def indices(self, split: str) -> np.ndarray:
        """Image indices of ``split`` (``train``, ``val``, ``test`` or ``all``)."""
        if split == "all":
            return np.arange(self.n)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} or 'all'")
        code = SPLITS.index(split)
        return np.flatnonzero(self.split_of_patient[self.patient_of] == code)

    def split_of_image(self, i: int) -> str:
        return SPLITS[int(self.split_of_patient[self.patient_of[i]])]


def plan_patients(n: int, seed: int, kind: str) -> PatientPlan:
    """Group ``n`` images into patients (1–3 studies each) and assign patients to splits (80/10/10).

    Splits are patient-disjoint by construction and deterministic for ``(n, seed, kind)``; the
    grouping of the first images does not depend on ``n`` (growing ``n`` appends patients).

    Raises:
        ValueError: ``n`` not a whole number in [1, :data:`MAX_N`] or ``seed`` not a whole number >= 0, naming it
            (:func:`check_count`, :func:`check_draw`).
    """
    n, seed = check_count(n), check_draw(seed, False)
    rng = np.random.default_rng([int(seed), KIND_CODES[kind], 3])
    counts = rng.choice([1, 2, 3], size=n, p=[0.5, 0.3, 0.2])  # at most n patients needed
    patient_of = np.repeat(np.arange(n), counts)[:n]
    n_pat = int(patient_of[-1]) + 1
    # split by a per-patient uniform draw so patient p's split does not depend on n either
    u = np.random.default_rng([int(seed), KIND_CODES[kind], 4]).random(n)[:n_pat]
    split = np.where(u < SPLIT_FRACTIONS[0], 0, np.where(u < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1], 1, 2))
    return PatientPlan(n=n, seed=seed, patient_of=patient_of, split_of_patient=split.astype(np.int64))


def patient_meta(seed: int, kind: str, patient: int) -> dict[str, str]:
    """Synthetic patient identity (clearly fake names and IDs)."""
    rng = np.random.default_rng([int(seed), KIND_CODES[kind], 5, int(patient)])
    sex = "F" if rng.random() < 0.5 else "M"
    age = int(rng.integers(55, 90)) if kind == "retina" else int(rng.integers(18, 90))
    prefix = "CXR" if kind == "cxr" else "RET"
    return {
        "PatientID": f"{prefix}{seed % 1000:03d}P{patient:06d}",
        "PatientName": f"{_FAMILY[rng.integers(len(_FAMILY))]}^{_GIVEN[rng.integers(len(_GIVEN))]}",
        "PatientSex": sex,
        "PatientAge": f"{age:03d}Y",
        "PatientBirthDate": f"{2026 - age}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
    }


def study_meta(seed: int, kind: str, index: int, patient: int, visit: int) -> dict[str, str]:
    """Synthetic study identity for image ``index`` (the ``visit``-th study of its patient)."""
    rng = np.random.default_rng([int(seed), KIND_CODES[kind], 6, int(patient)])
    base_day = int(rng.integers(0, 3000))
    day = np.datetime64("2015-01-01") + np.timedelta64(base_day + 97 * visit, "D")
    rng_i = np.random.default_rng([int(seed), KIND_CODES[kind], 7, int(index)])
    hh, mm, ss = int(rng_i.integers(7, 19)), int(rng_i.integers(0, 60)), int(rng_i.integers(0, 60))
    prefix = "CXR" if kind == "cxr" else "RET"
    return {
        "StudyDate": str(day).replace("-", ""),
        "StudyTime": f"{hh:02d}{mm:02d}{ss:02d}",
        "AccessionNumber": f"A{seed % 1000:03d}{index:08d}",
        "StudyID": f"{index % 100000:05d}",
        "ImageID": f"{prefix}{seed % 1000:03d}I{index:07d}",
    }


def texture_bank(rng: np.random.Generator, size: int, n: int, scales: tuple[float, float]) -> np.ndarray:
    """``n`` band-pass noise fields (n, 2*size, 2*size) float32, zero mean, unit std.

    ``scales`` = (low, high) feature sizes as fractions of ``size``; images take random ``size``
    windows of a field so each image gets fresh-looking texture without any per-image FFT.
    """
    m = 2 * size
    fy = np.fft.fftfreq(m)[:, None]
    fx = np.fft.rfftfreq(m)[None, :]
    f = np.sqrt(fx * fx + fy * fy) * size  # cycles per `size` pixels
    lo, hi = 1.0 / scales[1], 1.0 / scales[0]
    filt = np.exp(-((np.log(f + 1e-6) - np.log(np.sqrt(lo * hi))) ** 2) / (2 * (np.log(hi / lo) / 2.5) ** 2))
    out = np.empty((n, m, m), np.float32)
    for k in range(n):
        spec = np.fft.rfft2(rng.standard_normal((m, m))) * filt
        t = np.fft.irfft2(spec, s=(m, m))
        out[k] = ((t - t.mean()) / (t.std() + 1e-8)).astype(np.float32)
    return out


def take_window(bank: np.ndarray, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random (h, w) view of a random field of ``bank`` (n, M, M), randomly flipped (no copy)."""
    k = int(rng.integers(bank.shape[0]))
    y0 = int(rng.integers(0, bank.shape[1] - h + 1))
    x0 = int(rng.integers(0, bank.shape[2] - w + 1))
    win = bank[k, y0:y0 + h, x0:x0 + w]
    if rng.random() < 0.5:
        win = win[::-1]
    if rng.random() < 0.5:
        win = win[:, ::-1]
    return win


#: the phantom calibration knobs a pipeline's ``dataset_args`` may set (docs/phantoms.md): the five
#: :class:`Difficulty` fields plus the findings' prevalence and the healthy fraction
PHANTOM_KNOBS = ("lesion_contrast", "lesion_size", "anatomy", "noise", "label_noise", "prevalence", "healthy_fraction")
#: the non-numeric knob: which splits' reported labels carry ``label_noise`` (docs/phantoms.md)
SPLIT_KNOB = "label_noise_splits"


def knobs_from_dataset_args(args: dict) -> dict[str, Any]:
    """The phantom knobs present in a pipeline's ``dataset_args`` mapping: the numeric ones as floats,
    ``label_noise_splits`` as a tuple of split names (others ignored)."""
    out: dict[str, Any] = {k: float(args[k]) for k in PHANTOM_KNOBS if k in args}
    if SPLIT_KNOB in args:
        out[SPLIT_KNOB] = tuple(args[SPLIT_KNOB])
    return out


def parse_knob_assignments(items: list[str], where: str = "--knob") -> dict[str, Any]:
    """``["lesion_contrast=3", "label_noise_splits=train,val"]`` -> ``{"lesion_contrast": 3.0,
    "label_noise_splits": ("train", "val")}``: numeric knobs as floats, the split knob comma-separated. Ranges are
    checked where the knobs are used (:class:`Difficulty`).

    Raises:
        ValueError: an item that is not ``NAME=VALUE``, an unknown name or a value that is not a number, naming
            ``where`` and the item.
    """
    out: dict[str, Any] = {}
    for it in items:
        k, sep, v = it.partition("=")
        if sep and k == SPLIT_KNOB:
            out[k] = tuple(x.strip() for x in v.split(",") if x.strip())
            continue
        if not sep or k not in PHANTOM_KNOBS:
            raise ValueError(f"{where}: expected NAME=VALUE with NAME in {PHANTOM_KNOBS + (SPLIT_KNOB,)}, got {it!r}")
        try:
            out[k] = float(v)
        except ValueError:
            raise ValueError(f"{where} {k}: not a number: {v!r}") from None
    return out


@dataclass(frozen=True)
class Difficulty:
    """Calibration knobs shared by the chest and retina phantom generators (all deterministic).

    The defaults (1, 1, 1, 1, 0) draw exactly the phantoms of earlier medvit versions (bit-identical images and
    labels). See ``docs/phantoms.md`` for what each knob does per kind and for the calibrated settings.

    Args:
        lesion_contrast: multiplies each finding's density / reflectivity change (chest: nodule and mass
            opacity, consolidation air loss, pneumothorax lucency and pleural line, atelectasis band, effusion
            fluid; retina: drusen, fluid and PED reflectivity against their background). 0 < value <= 4.
        lesion_size: multiplies focal lesion sizes (chest: nodule/mass diameter, consolidation extent,
            atelectasis band, pneumothorax rim depth and effusion height, capped to stay inside the lung;
            retina: drusen elevation, capped at 200 µm, and hyperreflective foci — never the drusen basal width,
            which defines the AMD stage). 0 < value <= 4.
        anatomy: scales the spread of patient anatomy and pose around each range's centre (0 = every patient
            the same average anatomy, 1 = the default ranges, 2 = twice as wide). 0 <= value <= 2.
        noise: multiplies the acquisition noise (quantum noise; retina also the speckle contrast). 0 <= value <= 4.
        label_noise: probability that each reported label is wrong (chest: each finding flipped independently;
            retina: the stage replaced by a neighbouring stage and the biomarkers kept). Drawn from its own random
            stream, so the image does not change. 0 <= value <= 0.5.
        label_noise_splits: the splits whose reported labels carry ``label_noise`` (default all three). ``("train",)``
            models a training set labelled by an error-prone reader (e.g. report-mining labellers) evaluated
            against a clean reference standard on val/test, as CheXpert's radiologist-labelled val/test sets
            (Irvin et al., AAAI 2019). Images sampled without a split (``split=None``) carry the noise.
    Raises:
        ValueError: a knob outside its range or an unknown split, naming it.
    """

    lesion_contrast: float = 1.0
    lesion_size: float = 1.0
    anatomy: float = 1.0
    noise: float = 1.0
    label_noise: float = 0.0
    label_noise_splits: tuple[str, ...] = SPLITS

    def __post_init__(self) -> None:
        limits = {"lesion_contrast": (0.0, 4.0, False), "lesion_size": (0.0, 4.0, False),
                  "anatomy": (0.0, 2.0, True), "noise": (0.0, 4.0, True), "label_noise": (0.0, 0.5, True)}
        for name, (lo, hi, closed) in limits.items():
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise ValueError(f"phantom knob {name} must be a number, got {v!r}")
            if not ((lo <= v) if closed else (lo < v)) or v > hi:
                raise ValueError(f"phantom knob {name}={v} is outside {'[' if closed else '('}{lo}, {hi}]")
        sp = self.label_noise_splits
        if isinstance(sp, str) or not isinstance(sp, tuple | list) or not all(x in SPLITS for x in sp):
            raise ValueError(f"phantom knob {SPLIT_KNOB} must be a list of split names from {list(SPLITS)}, "
                             f"got {sp!r}")
        if self.label_noise > 0 and not sp:
            raise ValueError(f"phantom knob {SPLIT_KNOB} is empty while label_noise={self.label_noise}: name the "
                             "splits whose labels are noisy (e.g. [train]) or set label_noise 0")
        object.__setattr__(self, "label_noise_splits", tuple(sp))

    def noisy_labels(self, split: str | None) -> bool:
        """Whether an image of ``split`` (None: not known) gets ``label_noise`` on its reported labels."""
        return self.label_noise > 0 and (split is None or split in self.label_noise_splits)

    def as_dict(self) -> dict[str, float]:
        """The knobs as plain floats (recorded in synth manifests)."""
        return {k: float(getattr(self, k)) for k in ("lesion_contrast", "lesion_size", "anatomy", "noise",
                                                       "label_noise")}

    def spread(self, value: float, lo: float, hi: float) -> float:
        """``value`` drawn from ``[lo, hi]`` moved towards the range centre by ``anatomy`` (identity at 1)."""
        if self.anatomy == 1.0:
            return value
        mid = 0.5 * (lo + hi)
        return mid + self.anatomy * (value - mid)

    def uniform(self, rng: np.random.Generator, lo: float, hi: float) -> float:
        """One ``rng.uniform(lo, hi)`` draw (same stream as before) spread by ``anatomy``."""
        return self.spread(float(rng.uniform(lo, hi)), lo, hi)

    def label_rng(self, seed: int, kind: str, index: int) -> np.random.Generator:
        """Label-noise stream of image ``index`` (independent of the image's own stream)."""
        return np.random.default_rng([int(seed), KIND_CODES[kind], 3, int(index)])


#: the :class:`Difficulty` fields in constructor order: the generators' knob arguments
KNOB_ARGS: tuple[str, ...] = tuple(f.name for f in fields(Difficulty))


class PhantomGenerator:
    """Base of the chest and retina generators: their argument check without the constructor's work.

    A subclass's constructor starts with ``_checked(*values of CHECKED, knobs, name)`` (a static method that
    refuses bad arguments and draws nothing: :func:`check_geometry`, :func:`check_draw`, ...); :meth:`check_args`
    runs the same method on keyword arguments."""

    #: the constructor arguments ``_checked`` takes first, in order (the knobs follow as one tuple)
    CHECKED: tuple[str, ...] = ()

    @staticmethod
    def _checked(*args: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def check_args(cls, name: Callable[[str], str] = str, **kw: Any) -> None:
        """Refuse what the constructor would refuse for keyword arguments ``kw``, by the same code, without drawing
        anything (config-time checks: ``medvit run --dry-run``, ``medvit data synth``).

        Raises:
            ValueError: as the constructor, naming ``name(arg)``.
            TypeError: an argument the constructor does not take.
        """
        a = bound_args(cls, kw)
        cls._checked(*(a[k] for k in cls.CHECKED), tuple(a[k] for k in KNOB_ARGS), name)
