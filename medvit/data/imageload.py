"""Load an image file as a float32 (H, W) array scaled to [0, 1] for the dataset adapters.

DICOM goes through :func:`medvit.io.display_array` (the file's VOI window, else min-max; MONOCHROME1
inverted so bright always means dense). 8/16-bit PNG/JPEG are divided
by their type's maximum; NIfTI data (float, after scl_slope) is clipped to [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _dicom01(path: Path) -> np.ndarray:
    """DICOM → displayed values in [0, 1] through medvit.io (file VOI window, MONOCHROME1 inverted)."""
    from medvit.io import display_array, read_image

    img = read_image(path)
    out = display_array(img)
    if out.ndim == 3 and not img.is_color:
        out = out[0]
    elif out.ndim == 3:
        out = out.mean(-1)
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
