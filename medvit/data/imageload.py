"""Load an image file as a float32 (H, W) array scaled to [0, 1] for the dataset adapters.

DICOM is scaled through its VOI window (WindowCenter/Width, linear) when present, else by its
stored bit depth; MONOCHROME1 is inverted so bright always means dense. 8/16-bit PNG/JPEG are divided
by their type's maximum; NIfTI data (float, after scl_slope) is clipped to [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _dicom01(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)
    arr = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    if arr.ndim == 3 and getattr(ds, "SamplesPerPixel", 1) == 1:
        arr = arr[0]
    wc, ww = ds.get("WindowCenter"), ds.get("WindowWidth")
    if wc is not None and ww is not None:
        c = float(wc[0] if isinstance(wc, pydicom.multival.MultiValue) else wc)
        w = float(ww[0] if isinstance(ww, pydicom.multival.MultiValue) else ww)
        out = np.clip((arr - (c - 0.5)) / max(w - 1, 1.0) + 0.5, 0, 1)  # PS3.3 C.11.2.1.2 linear
    else:
        out = arr / float(2 ** int(ds.get("BitsStored", 16)) - 1)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 1.0 - out
    return np.clip(out, 0, 1).astype(np.float32)


def load_gray01(path: str | Path) -> np.ndarray:
    """File → (H, W) float32 in [0, 1] (colour images are averaged to grey). Errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {p} (check the dataset root and its CSV paths)")
    name = p.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            arr = np.asarray(nib.load(str(p)).get_fdata(), dtype=np.float32)
            arr = arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr
            return np.clip(arr.T, 0, 1).astype(np.float32)  # NIfTI stores (x, y) → (rows, cols)
        if name.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")):
            from PIL import Image

            with Image.open(p) as im:
                a = np.asarray(im)
            if a.ndim == 3:
                a = a[..., :3].mean(-1)
            scale = 65535.0 if a.dtype == np.uint16 or im.mode.startswith("I") else 255.0
            return np.clip(a.astype(np.float32) / scale, 0, 1)
        if name.endswith(".npy"):
            return np.load(p, allow_pickle=False).astype(np.float32)
        return _dicom01(p)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{p}: cannot read as an image ({type(e).__name__}: {e})") from e
