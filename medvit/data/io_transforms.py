"""MONAI-style loading transforms over :mod:`medvit.io`: file -> ``MetaTensor`` (channel first, RAS affine, meta).

``LoadMedicalImage`` is the array transform (holds the logic); ``LoadMedicalImaged`` the dictionary wrapper that
only routes keys, as MONAI users expect::

    from monai.transforms import Compose, Resized
    Compose([LoadMedicalImaged(keys="image", intensity="display"), Resized(keys="image", spatial_size=(224, 224))])

Unlike MONAI's ``PydicomReader`` the array is not transposed (index order = DICOM rows, columns), the spacing
falls back to Imager Pixel Spacing, MONOCHROME1 is handled and the affine is the true RAS one. monai and torch are
imported when a transform is called, so importing :mod:`medvit.data` stays light.

Layouts (channel first): HW -> (1, H, W); HWC -> (3, H, W); FHW -> (1, F, H, W); FHWC -> (3, F, H, W);
XYZ -> (1, X, Y, Z); XYZT -> (T, X, Y, Z).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvit.io.image import MedicalImage

INTENSITIES = ("modality", "display")


def _channel_first(image: MedicalImage, arr: np.ndarray) -> tuple[np.ndarray, int | str]:
    """(array in ``image.axes`` order) -> (channel-first array, MONAI original_channel_dim)."""
    axes = image.axes
    if axes.endswith("C"):
        return np.moveaxis(arr, -1, 0), len(axes) - 1
    if axes == "XYZT":
        return np.moveaxis(arr, -1, 0), 3
    return arr[None], "no_channel"


def to_metatensor(image: MedicalImage, intensity: str = "modality", window: tuple[float, float] | None = None,
                  preset: str | None = None, dtype: Any = None) -> Any:
    """A :class:`MedicalImage` as a MONAI ``MetaTensor`` (C, *spatial) with ``affine`` (RAS) and ``meta``.

    ``intensity="modality"`` keeps modality values (HU, ...); ``"display"`` applies the display pipeline
    (:func:`medvit.io.display_array`: VOI window/preset/file window, MONOCHROME1 inversion) -> [0, 1].
    """
    import torch
    from monai.data import MetaTensor

    from medvit.io import display_array

    if intensity not in INTENSITIES:
        raise ValueError(f"intensity must be one of {INTENSITIES}, got {intensity!r}")
    arr = display_array(image, window, preset) if intensity == "display" else image.pixels
    data, ch = _channel_first(image, np.asarray(arr, dtype=np.float32))
    affine = torch.as_tensor(image.affine, dtype=torch.float64)
    meta = {
        "filename_or_obj": image.path or "",
        "spatial_shape": np.asarray([image.pixels.shape[i] for i in image.spatial_axes]),
        "original_channel_dim": ch,
        "original_affine": image.affine.copy(),
        "space": "RAS",
        "spacing": np.asarray(image.spacing),
        "axes": image.axes,
        "modality": image.modality,
        "photometric": image.photometric,
        "invert": image.invert,
        "intensity": intensity,
        "windows": [(w.center, w.width, w.function, w.explanation) for w in image.windows],
        "uids": dict(image.uids),
        "dicom": dict(image.meta),
    }
    t = torch.as_tensor(np.ascontiguousarray(data), dtype=dtype or torch.float32)
    return MetaTensor(t, affine=affine, meta=meta)


class LoadMedicalImage:
    """Array transform: a path (DICOM file/series folder, NIfTI, PNG/JPEG, .npy) or a MedicalImage -> MetaTensor.

    Args:
        intensity: "modality" (modality values, e.g. HU) or "display" ([0, 1] after VOI and inversion).
        window: (center, width) for ``intensity="display"``; default the file's first window / VOI LUT / min-max.
        preset: a window preset name (see :data:`medvit.io.display.PRESETS`), for ``intensity="display"``.
        frame: read only this DICOM frame (0-based).
        pixel_budget: refuse files claiming more samples than this (default :data:`medvit.io.DEFAULT_PIXEL_BUDGET`).
    """

    def __init__(self, intensity: str = "modality", window: tuple[float, float] | None = None,
                 preset: str | None = None, frame: int | None = None, pixel_budget: int | None = None) -> None:
        if intensity not in INTENSITIES:
            raise ValueError(f"LoadMedicalImage: intensity must be one of {INTENSITIES}, got {intensity!r}")
        if (window is not None or preset is not None) and intensity != "display":
            raise ValueError("LoadMedicalImage: window/preset only apply with intensity='display'")
        self.intensity, self.window, self.preset = intensity, window, preset
        self.frame, self.pixel_budget = frame, pixel_budget

    def __call__(self, src: str | Path | MedicalImage) -> Any:
        from medvit.io import read_image

        image = src if isinstance(src, MedicalImage) else read_image(src, frame=self.frame,
                                                                     pixel_budget=self.pixel_budget)
        return to_metatensor(image, self.intensity, self.window, self.preset)


class LoadMedicalImaged:
    """Dictionary wrapper of :class:`LoadMedicalImage`: loads ``data[key]`` for each key in ``keys``.

    Args:
        keys: key or keys to load.
        allow_missing_keys: skip absent keys instead of raising KeyError.
        **kwargs: forwarded to :class:`LoadMedicalImage`.
    """

    def __init__(self, keys: Hashable | Sequence[Hashable], allow_missing_keys: bool = False, **kwargs: Any) -> None:
        self.keys = (keys,) if isinstance(keys, str) or not isinstance(keys, Sequence) else tuple(keys)
        if not self.keys:
            raise ValueError("LoadMedicalImaged: keys must not be empty")
        self.allow_missing_keys = allow_missing_keys
        self.loader = LoadMedicalImage(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.keys:
            if key not in d:
                if self.allow_missing_keys:
                    continue
                raise KeyError(f"LoadMedicalImaged: key {key!r} not in data (keys: {list(d)}); "
                               "pass allow_missing_keys=True to skip")
            d[key] = self.loader(d[key])
        return d


def _register() -> None:
    from medvit.registry import REGISTRY

    for name, obj, desc in (
        ("LoadMedicalImage", LoadMedicalImage, "file (DICOM/NIfTI/PNG/npy) -> MetaTensor with RAS affine"),
        ("LoadMedicalImaged", LoadMedicalImaged, "dictionary version of LoadMedicalImage"),
    ):
        if REGISTRY._table("transform").get(name) is None:  # no provider lookup: we are the provider
            REGISTRY.add("transform", name, obj, description=desc)


_register()
