"""Training augmentations in pure torch (no torchvision), 1- or 3-channel images in [0, 1], seeded per sample.

- :func:`random_resized_crop`: a crop of random area fraction ``scale`` and aspect ``ratio`` resized (bicubic,
  antialiased) to the output size — the torchvision/timm sampling rule; 3D volumes get an isotropic variant.
- :func:`hflip`: left-right flip.
- :class:`RandAugment`: timm's ``rand-m{M}-n{N}-mstd{S}-inc{0|1}`` (magnitude M of 10, N ops per image, magnitude
  jitter N(M, S), "increasing" op set where larger M is always stronger), each op applied with probability 0.5.
  Colour ops reduce to the identity on grey images; geometric ops fill with ``fill`` (0.5 by default).
- :func:`build_train_transform`: a MONAI ``Compose`` of dictionary transforms — MONAI's own where MONAI has the
  transform (``RandFlipd``, ``NormalizeIntensityd``, any of its affine / intensity / noise transforms through
  :func:`monai_augment`), and MONAI ``Randomizable`` wrappers for the recipe's random resized crop
  (:class:`RandResizedCropd`) and RandAugment (:class:`RandAugmentd`) — called as ``(item, generator) -> item``
  (:class:`SeededCompose`); 2D and 3D through the same code (RandAugment: 2D only).
- :func:`build_eval_transform` / :func:`build_contract_eval_transform`: deterministic evaluation transforms
  (the contract one is the serving preprocessing, unchanged).

Every random draw derives from the ``torch.Generator`` passed in, so augmentations are reproducible per sample and
independent of worker processes (see :mod:`medvit.train.sampler`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from monai.transforms import Compose, MapTransform, Randomizable

Item = dict[str, Any]


def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi)."""
    return int(torch.randint(lo, hi, (), generator=g))


# --------------------------------------------------------------------------------------------- geometry
def crop_params(h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
                g: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop: area fraction ~ U(scale), log-aspect ~ U(log ratio).

    Ten attempts, then a centre crop with the aspect clamped to ``ratio`` (torchvision's rule).
    """
    area = h * w
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _u(g, *scale)
        aspect = math.exp(_u(g, *log_r))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return _randint(g, 0, h - ch + 1), _randint(g, 0, w - cw + 1), ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def resize(img: torch.Tensor, size: Sequence[int], mode: str = "bicubic") -> torch.Tensor:
    """(C, *S) -> (C, *size); bicubic/bilinear use antialiasing when shrinking; output clamped to [0, 1]."""
    if tuple(img.shape[1:]) == tuple(size):
        return img
    if img.ndim == 4:  # volume
        out = F.interpolate(img[None], size=tuple(size), mode="trilinear", align_corners=False)[0]
    else:
        out = F.interpolate(img[None], size=tuple(size), mode=mode, align_corners=False, antialias=True)[0]
    return out.clamp_(0.0, 1.0)


def random_resized_crop(img: torch.Tensor, size: Sequence[int], g: torch.Generator,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), mode: str = "bicubic") -> torch.Tensor:
    """(C, H, W) -> (C, *size) crop-and-resize; (C, D, H, W) volumes: cube-ish crop of volume fraction ~ U(scale)."""
    if img.ndim == 3:
        top, left, ch, cw = crop_params(img.shape[1], img.shape[2], scale, ratio, g)
        return resize(img[:, top : top + ch, left : left + cw], size, mode)
    if img.ndim == 4:
        frac = _u(g, *scale) ** (1 / 3)
        sides = [max(1, int(round(s * frac))) for s in img.shape[1:]]
        starts = [_randint(g, 0, s - c + 1) for s, c in zip(img.shape[1:], sides)]
        sl = tuple(slice(a, a + c) for a, c in zip(starts, sides))
        return resize(img[(slice(None), *sl)], size)
    raise ValueError(f"expected an image (C, H, W) or volume (C, D, H, W), got shape {tuple(img.shape)}")


def hflip(img: torch.Tensor) -> torch.Tensor:
    """Left-right flip of (C, ..., W)."""
    return img.flip(-1)


def center_crop_resize(img: torch.Tensor, size: Sequence[int], crop_pct: float = 0.875) -> torch.Tensor:
    """Evaluation transform: resize so the crop of ``size`` covers ``crop_pct`` of the shorter side, centre crop."""
    spatial = img.shape[1:]
    short = min(spatial)
    target = [int(math.floor(s / crop_pct)) for s in size]
    f = max(t / short for t in target) if crop_pct < 1.0 else max(s / sp for s, sp in zip(size, spatial))
    scaled = [max(int(round(sp * f)), s) for sp, s in zip(spatial, size)]
    img = resize(img, scaled)
    sl = tuple(slice((sc - s) // 2, (sc - s) // 2 + s) for sc, s in zip(scaled, size))
    return img[(slice(None), *sl)]


def affine(img: torch.Tensor, m: torch.Tensor, fill: float) -> torch.Tensor:
    """Warp (C, H, W) by ``m`` (2, 3), mapping output pixel (x, y, 1) to input pixel coordinates; outside = fill."""
    c, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=img.dtype) + 0.5, torch.arange(w, dtype=img.dtype) + 0.5,
                            indexing="ij")
    sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    grid = torch.stack([sx / w * 2 - 1, sy / h * 2 - 1], dim=-1)[None]
    x = torch.cat([img, torch.ones(1, h, w, dtype=img.dtype)])[None]
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return out[:c] + (1.0 - out[c:]) * fill


def _about_centre(a: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """2x2 linear map a (output->input) applied about the image centre, as a (2, 3) matrix."""
    cx, cy = w / 2, h / 2
    t = torch.tensor([cx, cy]) - a @ torch.tensor([cx, cy])
    return torch.cat([a, t[:, None]], dim=1)


# --------------------------------------------------------------------------------------------- RandAugment ops
def _luma(img: torch.Tensor) -> torch.Tensor:
    if img.shape[0] == 3:
        return (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
    return img.mean(0, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, f: float) -> torch.Tensor:
    """b + f·(a − b): f = 1 keeps ``a``, 0 gives ``b``."""
    return (b + f * (a - b)).clamp_(0.0, 1.0)


def _to_levels(img: torch.Tensor) -> torch.Tensor:
    return (img.clamp(0, 1) * 255.0 + 0.5).floor().long()


def autocontrast(img: torch.Tensor) -> torch.Tensor:
    lo = img.amin(dim=(-2, -1), keepdim=True)
    hi = img.amax(dim=(-2, -1), keepdim=True)
    return torch.where(hi > lo, (img - lo) / (hi - lo).clamp(min=1e-12), img)


def equalize(img: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel on 256 levels (PIL's algorithm)."""
    out = []
    for ch in _to_levels(img):
        hist = torch.bincount(ch.reshape(-1), minlength=256)
        nz = hist[hist > 0]
        step = (int(hist.sum()) - int(nz[-1])) // 255 if nz.numel() else 0
        if step == 0:
            out.append(ch.float() / 255.0)
            continue
        lut = ((torch.cumsum(hist, 0) - hist + step // 2) // step).clamp(max=255)
        out.append(lut[ch].float() / 255.0)
    return torch.stack(out)


def posterize(img: torch.Tensor, bits: int) -> torch.Tensor:
    if bits >= 8:
        return img
    mask = ~(2 ** (8 - max(bits, 0)) - 1) & 0xFF
    return (_to_levels(img) & mask).float() / 255.0


def solarize(img: torch.Tensor, thresh: float) -> torch.Tensor:
    """Invert levels >= ``thresh`` (0..256 scale)."""
    lv = _to_levels(img)
    return torch.where(lv >= thresh, 255 - lv, lv).float() / 255.0


def solarize_add(img: torch.Tensor, add: int, thresh: int = 128) -> torch.Tensor:
    lv = _to_levels(img)
    return torch.where(lv < thresh, (lv + add).clamp(max=255), lv).float() / 255.0


def sharpness(img: torch.Tensor, f: float) -> torch.Tensor:
    """Blend with PIL's SMOOTH-filtered image (borders unfiltered)."""
    k = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=img.dtype) / 13.0
    c = img.shape[0]
    blur = F.conv2d(img[None], k.expand(c, 1, 3, 3), groups=c)[0]
    smooth = img.clone()
    smooth[:, 1:-1, 1:-1] = blur
    return _blend(img, smooth, f)


_LEVEL_DENOM = 10.0


def _signed(v: float, g: torch.Generator) -> float:
    return -v if _u(g) < 0.5 else v


def _apply_op(name: str, img: torch.Tensor, m: float, g: torch.Generator, fill: float) -> torch.Tensor:
    """One RandAugment op at magnitude ``m`` (0..10) on (C, H, W) in [0, 1]."""
    lvl = m / _LEVEL_DENOM
    h, w = img.shape[-2:]
    if name == "AutoContrast":
        return autocontrast(img)
    if name == "Equalize":
        return equalize(img)
    if name == "Invert":
        return 1.0 - img
    if name == "Rotate":
        a = math.radians(_signed(30.0 * lvl, g))
        rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])  # output->input
        return affine(img, _about_centre(rot, h, w), fill)
    if name in ("ShearX", "ShearY"):
        s = _signed(0.3 * lvl, g)
        a = torch.tensor([[1.0, s], [0.0, 1.0]]) if name == "ShearX" else torch.tensor([[1.0, 0.0], [s, 1.0]])
        return affine(img, _about_centre(a, h, w), fill)
    if name in ("TranslateXRel", "TranslateYRel"):
        t = _signed(0.45 * lvl, g)
        m2 = torch.tensor([[1.0, 0.0, t * w if name == "TranslateXRel" else 0.0],
                           [0.0, 1.0, t * h if name == "TranslateYRel" else 0.0]])
        return affine(img, m2, fill)
    if name == "Posterize":
        return posterize(img, int(lvl * 4))
    if name == "PosterizeIncreasing":
        return posterize(img, 4 - int(lvl * 4))
    if name == "Solarize":
        return solarize(img, int(lvl * 256))
    if name == "SolarizeIncreasing":
        return solarize(img, 256 - int(lvl * 256))
    if name == "SolarizeAdd":
        return solarize_add(img, int(lvl * 110))
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        f = lvl * 1.8 + 0.1
    elif name.endswith("Increasing"):
        f = 1.0 + _signed(lvl * 0.9, g)
        name = name[: -len("Increasing")]
    else:
        raise KeyError(f"unknown RandAugment op {name!r}")
    if name == "Color":
        return _blend(img, _luma(img).expand_as(img), f)
    if name == "Contrast":
        return _blend(img, _luma(img).mean().expand_as(img), f)
    if name == "Brightness":
        return _blend(img, torch.zeros_like(img), f)
    return sharpness(img, f)


RAND_OPS = ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]
RAND_OPS_INCREASING = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                       "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                       "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]


@dataclass
class RandAugment:
    """timm-style RandAugment on (C, H, W) images in [0, 1] (2D only)."""

    magnitude: float = 9.0  # M, 0..10
    num_ops: int = 2  # N ops drawn (with replacement) per image
    magnitude_std: float = 0.0  # per-op magnitude ~ N(M, std), clipped to [0, magnitude_max]
    magnitude_max: float = 10.0
    increasing: bool = False  # timm "inc1" op set
    prob: float = 0.5  # each drawn op is applied with this probability
    fill: float = 0.5  # value outside the image after geometric ops

    @classmethod
    def from_string(cls, spec: str, fill: float = 0.5) -> RandAugment:
        """Parse timm's ``rand-m6-mstd0.5-inc1`` (also ``n``, ``p``, ``mmax``)."""
        parts = spec.split("-")
        if parts[0] != "rand":
            raise ValueError(f"RandAugment spec must start with 'rand-', got {spec!r} (e.g. 'rand-m6-mstd0.5-inc1')")
        kw: dict[str, Any] = {"fill": fill}
        for p in parts[1:]:
            m = re.fullmatch(r"(mstd|mmax|inc|m|n|p)([\d.]+)", p)
            if not m:
                raise ValueError(f"unknown RandAugment option {p!r} in {spec!r}; known: m, n, mstd, mmax, inc, p")
            k, v = m.group(1), float(m.group(2))
            key = {"m": "magnitude", "n": "num_ops", "mstd": "magnitude_std", "mmax": "magnitude_max",
                   "inc": "increasing", "p": "prob"}[k]
            kw[key] = bool(v) if k == "inc" else int(v) if k == "n" else v
        return cls(**kw)

    @property
    def ops(self) -> list[str]:
        return RAND_OPS_INCREASING if self.increasing else RAND_OPS

    def __call__(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if img.ndim != 3:
            raise ValueError(f"RandAugment needs a 2D image (C, H, W), got shape {tuple(img.shape)}")
        ops = self.ops
        for _ in range(self.num_ops):
            name = ops[_randint(g, 0, len(ops))]
            if _u(g) >= self.prob:
                continue
            m = self.magnitude
            if self.magnitude_std > 0:
                m = m + self.magnitude_std * float(torch.randn((), generator=g))
            m = min(max(m, 0.0), self.magnitude_max)
            img = _apply_op(name, img, m, g, self.fill).clamp_(0.0, 1.0)
        return img


# --------------------------------------------------------------------------------------------- pipelines
def normalize(img: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(C, ...) -> (x − mean) / std per channel (one value broadcasts to all channels)."""
    c = img.shape[0]
    shape = (c,) + (1,) * (img.ndim - 1)
    m = torch.as_tensor(list(mean) * (c if len(mean) == 1 else 1), dtype=img.dtype).reshape(shape)
    s = torch.as_tensor(list(std) * (c if len(std) == 1 else 1), dtype=img.dtype).reshape(shape)
    return (img - m) / s


def _as_size(size: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    return (size,) * ndim if isinstance(size, int) else tuple(size)


class _GeneratorSeeded(Randomizable, MapTransform):
    """Base of the MONAI ``Randomizable`` wrappers below: each call draws one seed from MONAI's ``self.R`` and
    applies :meth:`apply` to every key with a ``torch.Generator`` seeded by it (the same draw for every key)."""

    def __init__(self, keys: Any):
        MapTransform.__init__(self, keys)
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def apply(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, data: Mapping[Any, Any]) -> Item:
        self.randomize()
        d = dict(data)
        for k in self.key_iterator(d):
            d[k] = self.apply(torch.as_tensor(d[k]).float(), torch.Generator().manual_seed(self._seed))
        return d


class RandResizedCropd(_GeneratorSeeded):
    """MONAI dictionary transform: the timm/torchvision random resized crop (:func:`random_resized_crop`: area
    fraction ~ U(``scale``), log-aspect ~ U(log ``ratio``), ten tries then a centre crop; volumes: a cube-ish crop of
    volume fraction ~ U(``scale``)), resized to ``size`` with the antialiased filter of :func:`resize`.

    MONAI's ``RandSpatialCropd`` / ``RandScaleCropd`` draw side lengths, not the area and aspect of the recipe, and
    MONAI's ``Resize`` anti-aliases with a Gaussian pre-filter rather than the antialiased kernel of timm and the
    serving path; so the sampling rule is kept here as a ``Randomizable`` (its draws come from ``self.R``)."""

    def __init__(self, keys: Any, size: int | Sequence[int], scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), mode: str = "bicubic"):
        super().__init__(keys)
        self.size, self.scale, self.ratio, self.mode = size, tuple(scale), tuple(ratio), mode

    def apply(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return random_resized_crop(img, _as_size(self.size, img.ndim - 1), g, self.scale, self.ratio, self.mode)


class RandAugmentd(_GeneratorSeeded):
    """MONAI dictionary transform applying :class:`RandAugment` (timm's policy; MONAI has no RandAugment) with a
    generator seeded from ``self.R``; 2D images only (ValueError for a volume)."""

    def __init__(self, keys: Any, spec: str):
        super().__init__(keys)
        self.spec, self.policy = spec, RandAugment.from_string(spec)

    def apply(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.policy(img, g)


class RepeatToChannelsd(MapTransform):
    """MONAI dictionary transform: a 1-channel image repeated to ``channels`` (grey CXR into an RGB model); other
    channel counts pass unchanged."""

    def __init__(self, keys: Any, channels: int):
        super().__init__(keys)
        self.channels = int(channels)

    def __call__(self, data: Mapping[Any, Any]) -> Item:
        d = dict(data)
        for k in self.key_iterator(d):
            img = d[k]
            if img.shape[0] == 1 and self.channels > 1:
                d[k] = img.expand(self.channels, *img.shape[1:]).contiguous()
        return d


def monai_augment(spec: Mapping[str, Any], keys: str = "image") -> MapTransform:
    """One MONAI dictionary transform by name from a config entry, e.g. ``{name: RandAffined, prob: 0.5,
    rotate_range: 0.1}`` or ``{name: RandGaussianNoised, prob: 0.3, std: 0.02}``; ``keys`` defaults to the image.
    ValueError naming the entry for an unknown name or arguments the transform does not take."""
    import monai.transforms as mt

    args = dict(spec)
    name = str(args.pop("name", ""))
    cls = getattr(mt, name, None)
    if not (isinstance(cls, type) and issubclass(cls, MapTransform)):
        raise ValueError(f"augment entry {dict(spec)!r}: 'name' must be a MONAI dictionary transform such as "
                         "RandAffined, RandGaussianNoised, RandScaleIntensityd, RandAdjustContrastd, RandRotated")
    args.setdefault("keys", keys)
    try:
        return cls(**args)
    except TypeError as e:
        raise ValueError(f"augment entry {dict(spec)!r}: {e}") from e


class SeededCompose:
    """A MONAI ``Compose`` called as ``(item, generator) -> item``: the per-sample generator of the training loop
    (:mod:`medvit.train.sampler`) seeds MONAI's random states, so augmentation is reproducible per sample and
    independent of worker processes. The output image is a plain ``torch.Tensor`` (no MetaTensor)."""

    def __init__(self, compose: Compose):
        self.compose = compose

    def __call__(self, item: Item, g: torch.Generator) -> Item:
        self.compose.set_random_state(seed=int(torch.randint(0, 2**31 - 1, (), generator=g)))
        return self.compose(dict(item))


def build_train_transform(
    size: int | Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip_prob: float = 0.5,
    randaug: str = "",
    in_chans: int | None = None,
    interpolation: str = "bicubic",
    extra: Sequence[Mapping[str, Any]] = (),
) -> Callable[[Item, torch.Generator], Item]:
    """MONAI dictionary transforms on ``item["image"]`` (C, H, W) or (C, D, H, W) in [0, 1]:
    :class:`RandResizedCropd` → ``monai.transforms.RandFlipd`` (left-right, ``hflip_prob``) → :class:`RandAugmentd`
    (2D, optional) → the ``extra`` MONAI transforms (:func:`monai_augment`: affine, intensity, noise, ...) →
    :class:`RepeatToChannelsd` (``in_chans``) → ``monai.transforms.NormalizeIntensityd`` (mean/std per channel).
    Returns a :class:`SeededCompose`."""
    from monai.transforms import EnsureTyped, NormalizeIntensityd, RandFlipd

    steps: list[Any] = [RandResizedCropd("image", size, scale, ratio, interpolation)]
    if hflip_prob > 0:
        steps.append(RandFlipd("image", prob=hflip_prob, spatial_axis=-1))
    if randaug:
        steps.append(RandAugmentd("image", randaug))
    steps += [monai_augment(e) for e in extra]
    if in_chans:
        steps.append(RepeatToChannelsd("image", in_chans))
    channel_wise = len(mean) > 1 or len(std) > 1
    steps.append(NormalizeIntensityd("image", subtrahend=list(mean) if channel_wise else float(mean[0]),
                                     divisor=list(std) if channel_wise else float(std[0]), channel_wise=channel_wise))
    steps.append(EnsureTyped("image", data_type="tensor", dtype=torch.float32, track_meta=False))
    return SeededCompose(Compose(steps))


def build_eval_transform(
    size: int | Sequence[int], mean: Sequence[float], std: Sequence[float], crop_pct: float = 1.0,
    in_chans: int | None = None,
) -> Callable[[Item], Item]:
    """Deterministic resize + centre crop (``crop_pct`` 0.875 = Resize(256)+CenterCrop(224)) → normalise."""

    def tf(item: Item, g: torch.Generator | None = None) -> Item:
        img = item["image"].float()
        img = center_crop_resize(img, _as_size(size, img.ndim - 1), crop_pct)
        if in_chans and img.shape[0] != in_chans and img.shape[0] == 1:
            img = img.expand(in_chans, *img.shape[1:])
        return {**item, "image": normalize(img, mean, std).contiguous()}

    return tf


def build_contract_eval_transform(contract: Any) -> Callable[..., Item]:
    """Evaluation transform = the serving preprocessing of ``contract`` (a WeightContract or a Preprocessor).

    ``item["image"]``: (1, H, W) grey or (3, H, W) RGB in [0, 1] at the resolution the dataset read (the output of
    the intensity step, :func:`medvit.data.imageload.load_unit`) -> the model input of
    :meth:`medvit.data.preprocess.Preprocessor.from_unit` (geometry, crop_pct, interpolation, channels, mean/std):
    the numbers ``medvit infer`` and the viewer feed the model for the same file.
    """
    from medvit.data.preprocess import Preprocessor

    pre = contract if isinstance(contract, Preprocessor) else Preprocessor.from_contract(contract)

    def tf(item: Item, g: torch.Generator | None = None) -> Item:
        img = item["image"].detach().float().cpu().numpy()
        if img.ndim != 3 or img.shape[0] not in (1, 3):
            raise ValueError(f"eval transform needs a 2D (1|3, H, W) image, got shape {tuple(img.shape)}")
        unit = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        x, _ = pre.from_unit(unit)
        return {**item, "image": torch.from_numpy(x)}

    return tf
