"""PNG / JPEG / TIFF / BMP reading via Pillow (8- and 16-bit grayscale, RGB), EXIF orientation applied."""

from __future__ import annotations

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
from medvit.io.image import MedicalImage, Window

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: samples per pixel of each PNG colour type (PNG spec §11.2.2 IHDR)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _check_png_header(p: Path, limit: int) -> None:
    """Refuse a PNG whose IHDR claims more samples than ``limit`` before Pillow opens it (Pillow's own bomb guard
    would otherwise speak first, quoting its limit instead of medvit's budget). Non-PNG files pass."""
    with p.open("rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    bands = _PNG_CHANNELS.get(head[25], 4)
    if w * h * bands > limit:
        raise PixelBudgetError(p, f"PNG header claims {w}x{h}x{bands} = {w * h * bands:,} samples > pixel budget "
                                  f"{limit:,}; raise pixel_budget= (or $MEDVIT_PIXEL_BUDGET) if the file is genuine")


def read_raster(path: str | Path, pixel_budget: int | None = None) -> MedicalImage:
    """Read a raster image: ``pixels`` (H, W) for grayscale (8/16/32-bit), (H, W, 3) for colour, float32.

    Display default: 8-bit images map 0..255 unchanged (a stored full-range window); 16-bit images have no
    window, so :func:`medvit.io.render` uses min-max (16-bit PNGs rarely use the full 16 bits).
    Spacing is (1, 1) pixel units (``meta["spacing_source"] = "default"``).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = check_file(path, "image file")
    _check_png_header(p, _budget(pixel_budget))
    try:
        im = Image.open(p)
    except Image.DecompressionBombError as e:  # Pillow's own guard fired first (claims > 2x its limit)
        raise PixelBudgetError(p, f"image header claims more pixels than Pillow opens (> 2 x "
                                  f"{Image.MAX_IMAGE_PIXELS:,}), beyond medvit's pixel budget "
                                  f"{_budget(pixel_budget):,}") from e
    except UnidentifiedImageError as e:
        raise NotDicomError(p, "not a readable PNG/JPEG/TIFF/BMP image") from e
    except Exception as e:
        raise CorruptFileError(p, f"cannot open image ({type(e).__name__}: {e})") from e
    with im:
        w, h = im.size
        bands = len(im.getbands())
        limit = _budget(pixel_budget)
        if w * h * bands > limit:
            raise PixelBudgetError(p, f"image claims {w}x{h}x{bands} = {w * h * bands:,} samples > pixel budget "
                                      f"{limit:,}")
        try:
            im = ImageOps.exif_transpose(im) or im
            mode = im.mode
            if mode in ("1", "L", "LA", "P", "PA") and mode != "L":
                im = im.convert("RGB" if mode in ("P", "PA") and not _gray_palette(im) else "L")
            elif mode in ("RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
                im = im.convert("RGB")
            arr = np.asarray(im)
        except Exception as e:
            raise CorruptFileError(p, f"cannot decode image data ({type(e).__name__}: {e})") from e
    if arr.ndim == 3 and arr.shape[2] == 3:
        axes, photometric = "HWC", "RGB"
    elif arr.ndim == 2:
        axes, photometric = "HW", "MONOCHROME2"
    else:
        raise UnsupportedPhotometricError(p, f"unsupported Pillow mode {mode!r} (array shape {arr.shape})")
    if arr.dtype == np.uint8:
        bits = 8
    elif arr.dtype in (np.uint16, np.dtype(">u2"), np.dtype("<u2")):
        bits = 16
    else:
        bits = 32 if arr.dtype.itemsize >= 4 else 16
    windows = [Window(128.0, 256.0, "LINEAR", "FULL 8-BIT")] if bits == 8 and axes == "HW" else []
    vr = (0.0, float(2**bits - 1)) if arr.dtype.kind == "u" else None
    return MedicalImage(pixels=arr.astype(np.float32), axes=axes, spacing=(1.0, 1.0), photometric=photometric,
                        windows=windows, bits_stored=bits, value_range=vr,
                        meta={"format": p.suffix.lower().lstrip("."), "pil_mode": mode, "spacing_source": "default"},
                        path=str(p))


def _gray_palette(im) -> bool:
    """True when a palette image's palette is gray (R = G = B for all entries)."""
    pal = np.asarray(im.getpalette() or [], dtype=np.int64)
    if pal.size < 3:
        return True
    pal = pal[: pal.size // 3 * 3].reshape(-1, 3)
    return bool((pal[:, 0] == pal[:, 1]).all() and (pal[:, 1] == pal[:, 2]).all())
