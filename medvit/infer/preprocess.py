"""Model-input preprocessing derived only from a :class:`~medvit.models.WeightContract`.

Steps, each recorded per image in the returned notes:

1. **intensity** to [0, 1] with :func:`medvit.io.display_array` (the same display pipeline as the viewer
   and ``medvit.io.render``): the contract's ``intensity_window`` (centre, width; linear on modality
   values) or, when it is ``None``, the file's own first VOI window / VOI LUT (what a reader of the image
   on a PACS sees; min-max when the file has none). MONOCHROME1 is inverted after the VOI (PS3.3 C.11).
2. **geometry**: centre pad (default) or centre crop to the contract's aspect ratio, then an antialiased
   bilinear resize to ``input_size``.
3. **channels**: grey replicated to ``in_chans``; RGB converted to grey (ITU-R 601 luma) for 1-channel models.
4. **normalisation**: ``(x - mean) / std`` per channel from the contract.

Everything here is numpy + PIL so it runs in decoding worker processes without torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

Geometry = Literal["pad", "crop"]


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
    intensity_window: tuple[float, float] | None = None  # (centre, width) from the contract; None = file VOI
    geometry: Geometry = "pad"  # "pad" keeps the whole field of view, "crop" fills the input

    @classmethod
    def from_contract(cls, contract: Any, geometry: Geometry = "pad") -> Preprocessor:
        size = tuple(contract.input_size)
        if len(size) != 2:
            raise ValueError(f"batch inference handles 2D models; the contract's input_size is {size}")
        if geometry not in ("pad", "crop"):
            raise ValueError(f"geometry must be 'pad' or 'crop', got {geometry!r}")
        return cls(int(contract.in_chans), (int(size[0]), int(size[1])), tuple(contract.mean), tuple(contract.std),
                   contract.intensity_window, geometry)

    def describe(self) -> dict[str, Any]:
        """The resolved preprocessing (goes into run.json)."""
        return {"in_chans": self.in_chans, "input_size": list(self.input_size), "mean": list(self.mean),
                "std": list(self.std), "geometry": self.geometry,
                "intensity": (f"contract window c={self.intensity_window[0]:g} w={self.intensity_window[1]:g}"
                              if self.intensity_window else "file VOI window or LUT (fallback: min-max)")}

    def __call__(self, image: Any) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
        """MedicalImage (2D grey or RGB) -> ((C, H, W) float32, notes, (h, w) float32 in [0, 1])."""
        notes: dict[str, Any] = {}
        rgb = self._intensity(image, notes)  # (h, w) or (h, w, 3), [0, 1]
        if rgb.ndim == 3:
            if self.in_chans == 1:
                grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
                chans = [grey]
                notes["channels"] = "RGB->luma"
            else:
                chans = [rgb[..., i] for i in range(3)]
                grey = chans[0] * 0.299 + chans[1] * 0.587 + chans[2] * 0.114
        else:
            grey = rgb
            chans = [rgb]
        h, w = grey.shape
        notes["source_size"] = [h, w]
        box, pads = self._geometry(h, w)
        notes[self.geometry] = pads
        notes["resize"] = [int(box[2] - box[0]), int(box[3] - box[1]), *self.input_size]
        planes = [_resize(_pad_crop(c, box), self.input_size) for c in chans]
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
        return x, notes, grey.astype(np.float32)

    # ------------------------------------------------------------------ steps
    def _intensity(self, image: Any, notes: dict[str, Any]) -> np.ndarray:
        """[0, 1] display intensities via :func:`medvit.io.display_array` (VOI then MONOCHROME1 inversion)."""
        from medvit.io import display_array, select_voi

        if image.is_color:
            notes["intensity"] = f"RGB / {2 ** image.bits_stored - 1}"
            return np.clip(display_array(image), 0.0, 1.0)
        voi = select_voi(image, self.intensity_window)
        if self.intensity_window is not None:
            notes["intensity"] = f"contract window c={voi.center:g} w={voi.width:g}"
        elif hasattr(voi, "center"):
            src = "file VOI" if voi in image.windows else "no VOI in file; min-max"
            notes["intensity"] = f"{src} c={voi.center:g} w={voi.width:g} {voi.function}"
        else:
            notes["intensity"] = "file VOI LUT"
        notes["inverted"] = bool(image.invert)
        return np.clip(display_array(image, window=self.intensity_window), 0.0, 1.0).astype(np.float32)

    def _geometry(self, h: int, w: int) -> tuple[tuple[int, int, int, int], list[int]]:
        """Box (top, left, bottom, right) in source pixels (may extend outside = padding) and [t, b, l, r]."""
        th, tw = self.input_size
        target = tw / th
        if self.geometry == "pad":
            nh, nw = (h, round(h * target)) if w / h < target else (round(w / target), w)
        else:
            nh, nw = (round(w / target), w) if w / h < target else (h, round(h * target))
        top = (h - nh) // 2
        left = (w - nw) // 2
        box = (top, left, top + nh, left + nw)
        return box, [-top, nh + top - h, -left, nw + left - w]  # >0 padding ("pad"), <0 cropped ("crop")


def _pad_crop(a: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Cut ``box`` (top, left, bottom, right) out of ``a``, zero-filling outside (zero = black after scaling)."""
    top, left, bottom, right = box
    h, w = a.shape
    out = np.zeros((bottom - top, right - left), dtype=np.float32)
    sy0, sx0 = max(top, 0), max(left, 0)
    sy1, sx1 = min(bottom, h), min(right, w)
    out[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = a[sy0:sy1, sx0:sx1]
    return out


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of a float32 (h, w) array to ``size`` (H, W) with PIL's "F" mode."""
    if a.shape == tuple(size):
        return a
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(im.resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32)


def unmap_heatmap(heat: np.ndarray, notes: dict[str, Any], geometry: Geometry) -> np.ndarray:
    """Map a (H, W) map in model-input coordinates back onto the source image (h, w) recorded in ``notes``."""
    h, w = notes["source_size"]
    t, b, left, r = notes[geometry]
    nh, nw = h + t + b, w + left + r
    full = _resize(heat.astype(np.float32), (nh, nw))
    if geometry == "pad":
        return full[t:t + h, left:left + w]
    out = np.zeros((h, w), dtype=np.float32)
    out[-t:h + b if b else h, -left:w + r if r else w] = full
    return out
