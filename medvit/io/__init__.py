"""Medical image I/O: the only package that touches pydicom, nibabel and image files.

(Foundation placeholder: ``read_image`` reads DICOM, NIfTI, PNG/JPEG and .npy into a float array.
The full DICOM pixel pipeline of the io issue replaces it with the same signature.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file to a float32 array (H, W) / (D, H, W); errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {p}")
    name = p.name.lower()
    if name.endswith(".npy"):
        return np.load(p, allow_pickle=False).astype(np.float32)
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asarray(nib.load(str(p)).get_fdata(), dtype=np.float32)
    if name.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff")):
        from PIL import Image

        with Image.open(p) as im:
            return np.asarray(im.convert("F") if im.mode not in ("I;16", "I") else im, dtype=np.float32)
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(p)
        return apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    except Exception as e:
        raise ValueError(f"{p}: cannot read as an image ({type(e).__name__}: {e})") from e
