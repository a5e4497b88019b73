"""NIfTI-1/2 (and Analyze) reading via nibabel: canonical RAS orientation, spacing from the affine, 3D and 4D."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from medvit.io.dicom_pixels import pixel_budget as _budget
from medvit.io.errors import (
    CorruptFileError,
    NotDicomError,
    PixelBudgetError,
    UnsupportedPhotometricError,
    check_file,
)
from medvit.io.image import MedicalImage

#: file-name suffixes read as NIfTI-1/2 (single file) or Analyze-style pairs
NIFTI_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img")

logger = logging.getLogger(__name__)


def read_nifti(path: str | Path, pixel_budget: int | None = None, canonical: bool = True) -> MedicalImage:
    """Read a NIfTI file into a MedicalImage, reoriented to the closest canonical RAS+ (``as_closest_canonical``).

    Shapes: ``pixels`` (X, Y, Z) or (X, Y, Z, T) float32 (scl_slope/inter applied); 2D files get Z = 1.
    ``affine`` equals nibabel's canonical affine; ``spacing`` = column norms of its 3x3 part.
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    p = check_file(path, "NIfTI file")
    try:
        img = nib.load(str(p))
    except ImageFileError as e:
        raise NotDicomError(p, f"not a NIfTI/Analyze image ({e})") from e
    except Exception as e:
        raise CorruptFileError(p, f"cannot parse NIfTI header ({type(e).__name__}: {e})") from e
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 4:
        raise UnsupportedPhotometricError(p, f"{len(shape)}-D NIfTI {shape} not supported (max 4-D: X, Y, Z, T)")
    n = int(np.prod(shape, dtype=np.float64)) if shape else 0
    limit = _budget(pixel_budget)
    if n > limit:
        raise PixelBudgetError(p, f"header claims shape {shape} = {n:,} voxels > pixel budget {limit:,}")
    try:
        if canonical:
            img = nib.as_closest_canonical(img)
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as e:
        raise CorruptFileError(p, f"cannot read NIfTI data ({type(e).__name__}: {e})") from e
    data = data.reshape(data.shape[:4]) if data.ndim > 4 else data
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim not in (3, 4):
        raise UnsupportedPhotometricError(p, f"NIfTI with shape {data.shape} is not 2-D, 3-D or 4-D")
    aff = np.asarray(img.affine, dtype=np.float64)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    spacing = np.where(spacing > 0, spacing, 1.0)
    direction = aff[:3, :3] / spacing[None, :]
    hdr = img.header
    meta = {"format": "nifti", "original_shape": list(shape), "spacing_source": "affine",
            "original_affine": np.asarray(nib.load(str(p)).affine).tolist() if canonical else aff.tolist()}
    try:
        meta["description"] = hdr["descrip"].tobytes().rstrip(b"\0").decode("latin-1")
        meta["xyzt_units"] = list(hdr.get_xyzt_units())
        if data.ndim == 4:
            meta["time_step"] = float(hdr.get_zooms()[3])
    except Exception:  # Analyze headers lack some fields
        pass
    return MedicalImage(pixels=np.ascontiguousarray(data), axes="XYZ" if data.ndim == 3 else "XYZT",
                        spacing=tuple(float(s) for s in spacing), photometric="MONOCHROME2", modality="",
                        origin=tuple(float(v) for v in aff[:3, 3]), direction=direction, space="RAS",
                        bits_stored=16, value_range=None, meta=meta, path=str(p))
