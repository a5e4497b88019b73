"""The in-memory image every reader returns: :class:`MedicalImage` (pixels + geometry + display + provenance).

Conventions (decided here, used by every reader and by :func:`medvit.io.render`):

* ``pixels`` is float32 and holds **modality values**: for DICOM the output of the Modality LUT stage (Rescale
  Slope/Intercept or Modality LUT Sequence, so CT is in HU); colour images are RGB in their stored range
  (YBR and PALETTE COLOR already converted). MONOCHROME1 is **not** inverted in ``pixels``: the flag
  :attr:`MedicalImage.invert` says so and :func:`medvit.io.render` / :func:`medvit.io.display_array` invert after
  the VOI stage, as PS3.3 C.11 prescribes. NIfTI/PNG pixels are the stored values (NIfTI scl_slope applied).
* ``axes`` names the array axes: ``"HW"`` (2D), ``"FHW"`` (frames or slices), ``"HWC"`` / ``"FHWC"`` (RGB),
  ``"XYZ"`` / ``"XYZT"`` (NIfTI in nibabel's canonical RAS order), ``"HWC"`` for RGB(A) PNG.
* ``spacing`` has one entry per spatial axis, in array order (mm; pixels when unknown, see ``meta["spacing_source"]``).
* :attr:`MedicalImage.affine` maps array indices of the spatial axes (array order) to RAS millimetres, the
  convention of nibabel and MONAI; DICOM geometry (LPS) is converted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medvit.io.errors import FrameIndexError

#: axes labels that are spatial (the rest are frames-as-time, channels or time)
_SPATIAL = {"H", "W", "X", "Y", "Z", "F"}


@dataclass(frozen=True)
class Window:
    """One VOI window (PS3.3 C.11.2.1.2): centre/width in modality units and the VOI LUT function."""

    center: float  # window centre in modality units (e.g. HU)
    width: float  # window width in modality units (>= 1 for LINEAR, > 0 otherwise)
    function: str = "LINEAR"  # LINEAR | LINEAR_EXACT | SIGMOID
    explanation: str = ""  # Window Center & Width Explanation, e.g. "LUNG"


@dataclass(frozen=True)
class VoiLut:
    """One VOI LUT Sequence item: ``output = lut[clip(x - first_mapped, 0, len-1)]``, output range 0..2**bits-1."""

    first_mapped: int  # input value mapped to lut[0]
    lut: np.ndarray  # (N,) integer table
    bits: int  # bits per entry (descriptor value 3): output range is 0 .. 2**bits - 1
    explanation: str = ""  # LUT Explanation


@dataclass
class MedicalImage:
    """A decoded image plus what is needed to display it, place it in space and reference its source.

    Shapes: ``pixels`` (H, W) | (F, H, W) | (H, W, 3) | (F, H, W, 3) | (X, Y, Z) | (X, Y, Z, T), float32.
    """

    pixels: np.ndarray  # float32 modality values, see the module docstring
    axes: str  # one letter per array axis: H W F C X Y Z T
    spacing: tuple[float, ...]  # mm per spatial axis, array order
    photometric: str = "MONOCHROME2"  # of ``pixels``: MONOCHROME1 | MONOCHROME2 | RGB
    modality: str = ""  # DICOM Modality (CT, CR, DX, MR, OP, ...); "" for non-DICOM
    origin: tuple[float, float, float] | None = None  # position of the first voxel in ``space`` (mm)
    direction: np.ndarray | None = None  # (3, 3): column i = unit vector of spatial axis i in ``space``
    space: str = "LPS"  # coordinate system of ``origin``/``direction``: LPS (DICOM) or RAS (NIfTI)
    windows: list[Window] = field(default_factory=list)  # VOI windows stored in the file, in order
    voi_luts: list[VoiLut] = field(default_factory=list)  # VOI LUT Sequence items, in order
    bits_stored: int = 8  # Bits Stored (nominal range of colour / unscaled data)
    value_range: tuple[float, float] | None = None  # (min, max) modality values the stored bits can produce
    padding_mask: np.ndarray | None = None  # bool, pixels' shape without channels: True = Pixel Padding Value
    uids: dict[str, str] = field(default_factory=dict)  # StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, ...
    meta: dict[str, Any] = field(default_factory=dict)  # PatientID, StudyDate, ViewPosition, ... (JSON-able)
    path: str | None = None  # source file (first file of a series)

    def __post_init__(self) -> None:
        if self.pixels.ndim != len(self.axes):
            raise ValueError(f"MedicalImage: pixels has {self.pixels.ndim} dims but axes={self.axes!r}")
        n_sp = sum(a in _SPATIAL for a in self.axes)
        if len(self.spacing) != n_sp:
            raise ValueError(f"MedicalImage: spacing {self.spacing} needs {n_sp} entries for axes={self.axes!r}")

    # ---------------------------------------------------------------- derived properties
    @property
    def invert(self) -> bool:
        """True for MONOCHROME1 (minimum = white), or MONOCHROME2 with Presentation LUT Shape INVERSE:
        display pipelines invert after the VOI stage. (INVERSE on MONOCHROME1 is the required companion value,
        not a second inversion.)"""
        if self.photometric == "MONOCHROME1":
            return True
        return self.photometric == "MONOCHROME2" and str(self.meta.get("PresentationLUTShape", "")).upper() == "INVERSE"

    @property
    def is_color(self) -> bool:
        """True when the last axis holds RGB samples."""
        return self.axes.endswith("C")

    @property
    def n_frames(self) -> int:
        """Number of frames/slices along ``F`` (1 if there is no frame axis)."""
        return self.pixels.shape[self.axes.index("F")] if "F" in self.axes else 1

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """Indices of the spatial axes of ``pixels``."""
        return tuple(i for i, a in enumerate(self.axes) if a in _SPATIAL)

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) float64: spatial array index (array order) -> RAS mm (nibabel/MONAI convention).

        For 2D images the third index column is the slice normal (unit length); without geometry
        in the file it is a diagonal of the spacing.
        """
        n = len(self.spacing)
        aff = np.eye(4)
        direction = np.eye(3) if self.direction is None else np.asarray(self.direction, dtype=np.float64)
        sp = list(self.spacing) + [1.0] * (3 - n)
        aff[:3, :3] = direction * np.asarray(sp[:3])[None, :]
        aff[:3, 3] = np.zeros(3) if self.origin is None else np.asarray(self.origin, dtype=np.float64)
        if self.space == "LPS":
            aff[:2, :] *= -1.0
        return aff

    def frame(self, k: int) -> MedicalImage:
        """The k-th frame (0-based) as a 2D image (same metadata); ``k`` negative counts from the end."""
        if "F" not in self.axes:
            if k in (0, -1):
                return self
            raise FrameIndexError(self.path, f"image has 1 frame, asked for frame {k}")
        fa = self.axes.index("F")
        n = self.pixels.shape[fa]
        if not -n <= k < n:
            raise FrameIndexError(self.path, f"frame {k} out of range, image has {n} frames (0..{n - 1})")
        k %= n
        axes = self.axes.replace("F", "")
        sp = tuple(s for i, s in zip(self.spatial_axes, self.spacing, strict=True) if i != fa)
        origin = self.origin
        direction = self.direction
        if direction is not None and origin is not None:
            d = np.asarray(direction)
            origin = tuple(float(v) for v in np.asarray(origin) + d[:, fa] * self.spacing[fa] * k)
            direction = np.concatenate([np.delete(d, fa, axis=1), d[:, fa:fa + 1]], axis=1)
        pm = None if self.padding_mask is None else self.padding_mask[k]
        meta = {key: v for key, v in self.meta.items() if key != "frame_windows"}
        meta["frame_index"] = k
        windows = list(self.windows)
        if self.meta.get("frame_windows"):  # enhanced multi-frame: this frame's own VOI windows
            windows = [Window(**w) for w in self.meta["frame_windows"][k]]
        return MedicalImage(np.take(self.pixels, k, axis=fa), axes, sp, self.photometric, self.modality, origin,
                            direction, self.space, windows, list(self.voi_luts), self.bits_stored,
                            self.value_range, pm, dict(self.uids), meta, self.path)
