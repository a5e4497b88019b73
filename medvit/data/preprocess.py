"""The one model-input preprocessing, derived only from a :class:`~medvit.models.WeightContract`.

Training evaluation (:func:`medvit.data.augment.build_contract_eval_transform`), training data loading
(:func:`medvit.data.imageload.load_unit`), ``medvit infer`` and the viewer all call this module, so a model
sees the same numbers wherever it runs. Steps, each recorded per image in the returned notes:

1. **intensity** to [0, 1] (:meth:`Preprocessor.intensity`), per file kind (``dicom``, ``raster``, ``nifti``,
   ``npy``) by the contract's ``intensity`` rule: ``voi`` = :func:`medvit.io.display_array` with the file's
   first VOI window / VOI LUT, min-max when it has none (the viewer's and a PACS's default); ``minmax``;
   ``full`` = the stored bit range (8-bit / 255, 16-bit / 65535, DICOM 0 .. 2**BitsStored - 1); ``identity``
   = values taken as already in [0, 1] (float NIfTI / .npy), clipped. A contract ``intensity_window``
   (centre, width) overrides the rule for grey images. MONOCHROME1 is inverted after the VOI (PS3.3 C.11).
2. **geometry** (:meth:`Preprocessor.geometry_box`): ``crop_mode`` ``pad`` (centre pad to the input's aspect),
   ``crop`` (centre crop to it) or ``squash`` (whole image, aspect ignored), then a resize to ``resize_size``
   (default ``input_size / crop_pct``, timm's rule: crop_pct 0.875 = Resize(256) + CenterCrop(224)) with
   ``interpolation`` (PIL bilinear / bicubic, antialiased when shrinking) and a centre crop of ``input_size``.
   The resize and the crop are one PIL resample over a source box, so no intermediate image exists.
3. **channels**: grey replicated to ``in_chans``; RGB converted to grey (ITU-R 601 luma) for 1-channel models.
4. **normalisation**: ``(x - mean) / std`` per channel.

numpy + PIL only, so it runs in decoding worker processes and dataset workers without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Geometry = Literal["pad", "crop", "squash"]
GEOMETRIES = ("pad", "crop", "squash")
INTERPOLATIONS = ("bilinear", "bicubic")
FILE_KINDS = ("dicom", "raster", "nifti", "npy")
INTENSITY_RULES = ("voi", "minmax", "full", "identity")
#: what checkpoints written before the rules existed were served with (and what the viewer shows)
SERVING_DEFAULT_INTENSITY: dict[str, str] = {k: "voi" for k in FILE_KINDS}
#: what the training data loaders did before they read through medvit.io (16-bit PNG / 65535, NIfTI clipped)
TRAINING_DEFAULT_INTENSITY: dict[str, str] = {"dicom": "voi", "raster": "full", "nifti": "identity",
                                              "npy": "identity"}


def check_intensity_rules(rules: dict[str, str], where: str = "intensity") -> dict[str, str]:
    """Complete ``rules`` with :data:`SERVING_DEFAULT_INTENSITY`; ValueError naming a bad kind or rule."""
    bad_kind = sorted(set(rules) - set(FILE_KINDS))
    if bad_kind:
        raise ValueError(f"{where}: unknown file kinds {bad_kind}; known: {list(FILE_KINDS)}")
    bad = {k: v for k, v in rules.items() if v not in INTENSITY_RULES}
    if bad:
        raise ValueError(f"{where}: unknown rules {bad}; known: {list(INTENSITY_RULES)}")
    return {**SERVING_DEFAULT_INTENSITY, **rules}


def file_kind(image: Any) -> str:
    """``dicom``, ``raster``, ``nifti`` or ``npy`` for a :class:`medvit.io.MedicalImage` (by its reader's meta)."""
    fmt = str(image.meta.get("format", "")).lower()
    if fmt == "nifti":
        return "nifti"
    if fmt == "npy":
        return "npy"
    if fmt in ("png", "jpg", "jpeg", "tif", "tiff", "bmp"):
        return "raster"
    return "dicom"


@dataclass
class Preprocessor:
    """Callable ``MedicalImage -> (x, notes, unit)``; built with :meth:`from_contract`.

    ``x``: float32 (C, H, W) normalised model input; ``unit``: float32 (h, w) in [0, 1], the grey image
    at source resolution after the intensity step (used for heatmap overlays); ``notes``: JSON-able dict.
    """

    in_chans: int  # channels the model expects
    input_size: tuple[int, int]  # (H, W) the model expects
    mean: tuple[float, ...]  # per-channel (or one shared) mean after [0, 1] scaling
    std: tuple[float, ...]  # per-channel (or one shared) std after [0, 1] scaling
    intensity_window: tuple[float, float] | None = None  # (centre, width) from the contract; None = per-kind rule
    geometry: Geometry = "pad"  # crop mode: pad / crop to the input's aspect, or squash
    crop_pct: float = 1.0  # fraction of the resized image kept by the final centre crop
    interpolation: str = "bilinear"  # PIL resampling filter: bilinear | bicubic
    resize_size: tuple[int, int] | None = None  # size before the centre crop; None = input_size / crop_pct
    intensity: dict[str, str] = field(default_factory=lambda: dict(SERVING_DEFAULT_INTENSITY))  # kind -> rule

    def __post_init__(self) -> None:
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"crop mode / geometry must be one of {GEOMETRIES}, got {self.geometry!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        self.intensity = check_intensity_rules(dict(self.intensity))
        if self.resize_size is not None:
            self.resize_size = (int(self.resize_size[0]), int(self.resize_size[1]))
            if self.resize_size[0] < self.input_size[0] or self.resize_size[1] < self.input_size[1]:
                raise ValueError(f"resize_size {self.resize_size} is smaller than input_size {self.input_size}")

    @classmethod
    def from_contract(cls, contract: Any, geometry: Geometry | None = None) -> Preprocessor:
        """The contract's preprocessing; ``geometry`` overrides its ``crop_mode`` (``medvit infer --geometry``)."""
        size = tuple(contract.input_size)
        if len(size) != 2:
            raise ValueError(f"batch inference handles 2D models; the contract's input_size is {size}")
        rs = getattr(contract, "resize_size", None)
        return cls(int(contract.in_chans), (int(size[0]), int(size[1])), tuple(contract.mean), tuple(contract.std),
                   contract.intensity_window, geometry or getattr(contract, "crop_mode", "pad"),
                   float(getattr(contract, "crop_pct", 1.0)), getattr(contract, "interpolation", "bilinear"),
                   tuple(rs) if rs else None, dict(getattr(contract, "intensity", None) or {}))

    def describe(self) -> dict[str, Any]:
        """The resolved preprocessing (goes into run.json)."""
        return {"in_chans": self.in_chans, "input_size": list(self.input_size), "mean": list(self.mean),
                "std": list(self.std), "geometry": self.geometry, "crop_pct": self.crop_pct,
                "interpolation": self.interpolation, "resize_size": list(self.scaled_size()),
                "intensity": (f"contract window c={self.intensity_window[0]:g} w={self.intensity_window[1]:g}"
                              if self.intensity_window else dict(self.intensity))}

    def __call__(self, image: Any) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
        """MedicalImage (2D grey or RGB) -> ((C, H, W) float32, notes, (h, w) float32 in [0, 1])."""
        notes: dict[str, Any] = {}
        unit = self.intensity01(image, notes)
        x, grey = self.from_unit(unit, notes)
        return x, notes, grey

    # ------------------------------------------------------------------ step 1: intensity
    def intensity01(self, image: Any, notes: dict[str, Any] | None = None) -> np.ndarray:
        """[0, 1] intensities, (h, w) or (h, w, 3) float32, by the rule for the image's file kind."""
        from medvit.io import display_array, select_voi

        notes = {} if notes is None else notes
        if image.is_color:
            notes["intensity"] = f"RGB / {2 ** image.bits_stored - 1}"
            return np.clip(display_array(image), 0.0, 1.0).astype(np.float32)
        kind = file_kind(image)
        rule = self.intensity[kind]
        notes["file_kind"] = kind
        notes["inverted"] = bool(image.invert)
        if self.intensity_window is not None:
            voi = select_voi(image, self.intensity_window)
            notes["intensity"] = f"contract window c={voi.center:g} w={voi.width:g}"
            return _clip01(display_array(image, window=self.intensity_window))
        if rule == "identity":
            notes["intensity"] = "values as stored, clipped to [0, 1]"
            y = np.clip(np.asarray(image.pixels, np.float32), 0.0, 1.0)
            return (1.0 - y if image.invert else y).astype(np.float32)
        preset = {"voi": None, "minmax": "minmax", "full": "full"}[rule]
        voi = select_voi(image, None, preset)
        if hasattr(voi, "center"):
            src = ("file VOI" if voi in image.windows else "no VOI in file; min-max") if rule == "voi" else rule
            notes["intensity"] = f"{src} c={voi.center:g} w={voi.width:g} {voi.function}"
        else:
            notes["intensity"] = "file VOI LUT"
        return _clip01(display_array(image, preset=preset))

    # ------------------------------------------------------------------ steps 2-4: geometry, channels, normalisation
    def scaled_size(self) -> tuple[int, int]:
        """(H, W) the aspect box is resized to before the centre crop of ``input_size``."""
        if self.resize_size is not None:
            return self.resize_size
        th, tw = self.input_size
        return (th, tw) if self.crop_pct >= 1.0 else (math.floor(th / self.crop_pct), math.floor(tw / self.crop_pct))

    def aspect_box(self, h: int, w: int) -> tuple[tuple[int, int, int, int], list[int]]:
        """Integer box (top, left, bottom, right) in source pixels (may extend outside = padding) and [t, b, l, r]."""
        th, tw = self.input_size
        target = tw / th
        if self.geometry == "squash":
            nh, nw = h, w
        elif self.geometry == "pad":
            nh, nw = (h, round(h * target)) if w / h < target else (round(w / target), w)
        else:
            nh, nw = (round(w / target), w) if w / h < target else (h, round(h * target))
        top, left = (h - nh) // 2, (w - nw) // 2
        return (top, left, top + nh, left + nw), [-top, nh + top - h, -left, nw + left - w]

    def geometry_box(self, h: int, w: int) -> tuple[tuple[int, int, int, int], tuple[float, float, float, float]]:
        """(aspect box, model-input box (top, left, bottom, right) in float source pixel coordinates)."""
        box, _ = self.aspect_box(h, w)
        nh, nw = box[2] - box[0], box[3] - box[1]
        sh, sw = self.scaled_size()
        th, tw = self.input_size
        oy, ox = (sh - th) // 2, (sw - tw) // 2
        fy, fx = nh / sh, nw / sw
        return box, (box[0] + oy * fy, box[1] + ox * fx, box[0] + (oy + th) * fy, box[1] + (ox + tw) * fx)

    def from_unit(self, unit: np.ndarray, notes: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """[0, 1] image (h, w) or (h, w, 3) -> ((C, H, W) normalised model input, (h, w) grey)."""
        notes = {} if notes is None else notes
        if unit.ndim == 3:
            if self.in_chans == 1:
                grey = unit @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
                chans = [grey]
                notes["channels"] = "RGB->luma"
            else:
                chans = [unit[..., i] for i in range(3)]
                grey = chans[0] * 0.299 + chans[1] * 0.587 + chans[2] * 0.114
        else:
            grey = unit
            chans = [unit]
        h, w = grey.shape
        notes["source_size"] = [h, w]
        box, pads = self.aspect_box(h, w)
        if self.geometry != "squash":
            notes[self.geometry] = pads
        _, fbox = self.geometry_box(h, w)
        notes["box"] = [round(v, 4) for v in fbox]
        notes["resize"] = [int(box[2] - box[0]), int(box[3] - box[1]), *self.scaled_size()]
        if self.crop_pct < 1.0 or self.resize_size is not None:
            notes["center_crop"] = list(self.input_size)
        planes = [self._resample(_pad_crop(c, box), box) for c in chans]
        if len(planes) != self.in_chans:
            if len(planes) == 1:
                planes = planes * self.in_chans
                if self.in_chans > 1:
                    notes["channels"] = f"grey->x{self.in_chans}"
            else:
                raise ValueError(f"image has {len(planes)} channels; the model expects {self.in_chans}")
        x = np.stack(planes).astype(np.float32)
        mean = np.asarray(self.mean if len(self.mean) == self.in_chans else self.mean * self.in_chans, np.float32)
        std = np.asarray(self.std if len(self.std) == self.in_chans else self.std * self.in_chans, np.float32)
        x = (x - mean[:, None, None]) / std[:, None, None]
        return x, grey.astype(np.float32, copy=False)

    def _resample(self, region: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """Aspect-box region (nh, nw) -> (H, W): resize to scaled_size then centre crop, as one PIL resample."""
        th, tw = self.input_size
        nh, nw = region.shape
        sh, sw = self.scaled_size()
        if (nh, nw) == (th, tw) and (sh, sw) == (th, tw):
            return region
        from PIL import Image

        oy, ox = (sh - th) // 2, (sw - tw) // 2
        fy, fx = nh / sh, nw / sw
        src = (ox * fx, oy * fy, (ox + tw) * fx, (oy + th) * fy)  # PIL box: (left, upper, right, lower)
        im = Image.fromarray(np.ascontiguousarray(region, dtype=np.float32))
        filt = Image.BICUBIC if self.interpolation == "bicubic" else Image.BILINEAR
        out = np.asarray(im.resize((tw, th), filt, box=src), dtype=np.float32)
        return np.clip(out, 0.0, 1.0) if self.interpolation == "bicubic" else out


def _clip01(y: np.ndarray) -> np.ndarray:
    """``y`` (a fresh float array from :func:`medvit.io.display_array`) clipped to [0, 1] in place, as float32: the
    same values as ``np.clip(y, 0, 1).astype(np.float32)`` without two more full-resolution arrays (each a few ms
    of page faults on a 2048² image)."""
    if y.dtype != np.float32:
        return np.clip(y, 0.0, 1.0).astype(np.float32)
    return np.clip(y, 0.0, 1.0, out=y)


def _pad_crop(a: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Cut ``box`` (top, left, bottom, right) out of ``a``, zero-filling outside (zero = black after scaling)."""
    top, left, bottom, right = box
    h, w = a.shape
    if (top, left, bottom, right) == (0, 0, h, w):
        return np.asarray(a, dtype=np.float32)
    out = np.zeros((bottom - top, right - left), dtype=np.float32)
    sy0, sx0 = max(top, 0), max(left, 0)
    sy1, sx1 = min(bottom, h), min(right, w)
    out[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = a[sy0:sy1, sx0:sx1]
    return out


def resize_array(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of a float32 (h, w) array to ``size`` (H, W) with PIL's "F" mode."""
    if a.shape == tuple(size):
        return a
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(im.resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32)


def unmap_heatmap(heat: np.ndarray, notes: dict[str, Any], geometry: str | None = None) -> np.ndarray:
    """Map a (H, W) map in model-input coordinates back onto the source image (h, w) recorded in ``notes``.

    Uses the model-input box (``notes["box"]``); source pixels outside it (cropped away) get 0.
    """
    h, w = notes["source_size"]
    if "box" not in notes:  # notes written before the box was recorded: pad / crop at crop_pct 1
        t, b, left, r = notes[geometry or "pad"]
        box = (-t, -left, h + b, w + r)
    else:
        box = tuple(notes["box"])
    top, lft, bot, rgt = box
    bh, bw = max(1, round(bot - top)), max(1, round(rgt - lft))
    full = resize_array(heat.astype(np.float32), (bh, bw))
    out = np.zeros((h, w), dtype=np.float32)
    oy, ox = round(top), round(lft)
    sy0, sx0 = max(oy, 0), max(ox, 0)
    sy1, sx1 = min(oy + bh, h), min(ox + bw, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0:sy1, sx0:sx1] = full[sy0 - oy:sy1 - oy, sx0 - ox:sx1 - ox]
    return out
