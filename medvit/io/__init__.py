"""Medical image I/O: the only package that touches pydicom, nibabel and image files.

Readers return :class:`~medvit.io.image.MedicalImage` (float32 modality values + geometry + windows + UIDs);
:func:`render` / :func:`display_array` turn one into what a person (or a model trained on displayed images) sees.
Errors are typed (:mod:`medvit.io.errors`), all subclasses of ``ValueError``.

pydicom and nibabel are imported lazily inside the readers, so ``import medvit.io`` stays light.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medvit.io.dicom import read_dicom, read_dicom_header
from medvit.io.dicom_pixels import DEFAULT_PIXEL_BUDGET
from medvit.io.display import PRESETS, display_array, render, select_voi, window_linear
from medvit.io.errors import (
    CorruptFileError,
    FrameIndexError,
    InconsistentSeriesError,
    MedicalIOError,
    NoPixelDataError,
    NotDicomError,
    PixelBudgetError,
    UnsupportedPhotometricError,
    UnsupportedTransferSyntaxError,
    check_file,
)
from medvit.io.image import MedicalImage, VoiLut, Window
from medvit.io.nifti import NIFTI_SUFFIXES
from medvit.io.raster import RASTER_SUFFIXES


def read_image(path: str | Path, frame: int | None = None, pixel_budget: int | None = None,
               min_side: int | None = None) -> MedicalImage:
    """Read DICOM (file, or a folder = one series volume), NIfTI, PNG/JPEG/TIFF/BMP or .npy into a MedicalImage.

    The format is chosen by suffix; anything else is tried as DICOM (DICOM files often have no suffix).
    ``frame`` selects one DICOM frame (0-based). ``pixel_budget`` caps decoded samples (see
    :data:`DEFAULT_PIXEL_BUDGET`). ``min_side`` (DICOM only): the caller needs only this many pixels a side, so a
    greyscale image at least twice as large comes reduced by a power of two (JPEG 2000 decoded at a lower
    wavelet level; :func:`medvit.io.dicom.image_from_dataset`). Raises :class:`MedicalIOError` subclasses or
    FileNotFoundError.
    """
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        from medvit.io.series import read_series

        return read_series(p, pixel_budget=pixel_budget)
    check_file(p, "image file")  # FileNotFoundError, or ValueError naming a FIFO / device / link loop
    if name.endswith(NIFTI_SUFFIXES):
        from medvit.io.nifti import read_nifti

        return read_nifti(p, pixel_budget=pixel_budget)
    if name.endswith(RASTER_SUFFIXES):
        from medvit.io.raster import read_raster

        return read_raster(p, pixel_budget=pixel_budget)
    if name.endswith(".npy"):
        return _read_npy(p, pixel_budget)
    return read_dicom(p, frame=frame, pixel_budget=pixel_budget, min_side=min_side)


def _read_npy(p: Path, pixel_budget: int | None) -> MedicalImage:
    """A .npy array (H, W) or (F, H, W), pickles refused; spacing 1."""
    from medvit.io.dicom_pixels import pixel_budget as _budget

    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise CorruptFileError(p, f"cannot read .npy ({type(e).__name__}: {e})") from e
    if arr.size > _budget(pixel_budget):
        raise PixelBudgetError(p, f"array of shape {arr.shape} exceeds the pixel budget {_budget(pixel_budget):,}")
    if arr.ndim not in (2, 3) or arr.dtype.kind not in "biuf":
        raise UnsupportedPhotometricError(p, f".npy must be a numeric (H, W) or (F, H, W) array, got {arr.dtype} "
                                             f"{arr.shape}")
    axes = "HW" if arr.ndim == 2 else "FHW"
    return MedicalImage(np.asarray(arr, dtype=np.float32), axes, (1.0,) * arr.ndim,
                        meta={"format": "npy", "spacing_source": "default"}, path=str(p))


__all__ = [
    "DEFAULT_PIXEL_BUDGET",
    "PRESETS",
    "CorruptFileError",
    "FrameIndexError",
    "InconsistentSeriesError",
    "MedicalIOError",
    "MedicalImage",
    "NoPixelDataError",
    "NotDicomError",
    "PixelBudgetError",
    "UnsupportedPhotometricError",
    "UnsupportedTransferSyntaxError",
    "VoiLut",
    "Window",
    "display_array",
    "read_dicom",
    "read_dicom_header",
    "read_image",
    "render",
    "select_voi",
    "window_linear",
]
