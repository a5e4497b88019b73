"""Load an image file for the dataset adapters: float32 (H, W) in [0, 1], through :mod:`medvit.io` and the
intensity step of the one preprocessing (:class:`medvit.data.preprocess.Preprocessor`).

The reader is :func:`medvit.io.read_image` (DICOM, PNG/JPEG/TIFF/BMP, NIfTI, .npy); the 2D image is the one the
viewer shows (:func:`medvit.io.display.slice_for_display`: frame 0, the middle axial slice of a volume, NIfTI in
radiological orientation); intensities follow the per-file-kind ``intensity`` rules recorded in the weight contract
(default :data:`~medvit.data.preprocess.TRAINING_DEFAULT_INTENSITY`: file VOI for DICOM, stored bit range for
PNG/JPEG, values as stored for float NIfTI / .npy). Colour images become grey by ITU-R 601 luma, as the serving
preprocessing does for 1-channel models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medvit.data.preprocess import TRAINING_DEFAULT_INTENSITY, Preprocessor

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def nonfinite_problem(pixels: Any) -> str | None:
    """Why an image's ``pixels`` (any shape) cannot be read as an image: some values are NaN or ±inf (a float
    .npy / NIfTI can hold them; the preprocessing would clip or zero them, so an image without data would get
    findings); None when every value is finite."""
    a = np.asarray(pixels)
    if a.dtype.kind not in "fc":
        return None
    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    if not bad:
        return None
    which = f"all {a.size:,} of its pixel values are" if bad == a.size else \
        f"{bad:,} of its {a.size:,} pixel values {'is' if bad == 1 else 'are'}"
    return f"{which} not finite (NaN or ±inf): not an image the models can read"


def read_checked(path: str | Path) -> Any:
    """File → ``medvit.io.MedicalImage`` (all frames / the whole volume). ``FileNotFoundError`` / ``ValueError``
    naming the file when it is missing, cannot be read as an image, or holds a non-finite pixel value
    (:func:`nonfinite_problem`: refused, as ``medvit infer`` refuses "non-finite values after preprocessing")."""
    from medvit.io import MedicalIOError, read_image
    from medvit.io.errors import file_problem

    p = Path(path)
    if (why := file_problem(p)) == "not found":
        raise FileNotFoundError(f"image file not found: {p} (check the dataset root and its CSV paths)")
    if why:  # a directory, FIFO, device, link loop, ...: never opened
        raise ValueError(f"{p}: {why}, not an image file (check the dataset root and its CSV paths)")
    try:
        image = read_image(p)
    except MedicalIOError as e:
        raise ValueError(f"{p}: cannot read as an image ({e})") from e
    except (OSError, ValueError, IndexError) as e:
        raise ValueError(f"{p}: cannot read as an image ({type(e).__name__}: {e})") from e
    if why := nonfinite_problem(image.pixels):
        raise ValueError(f"{p}: {why}")
    return image


def load_unit(path: str | Path | Any, intensity: dict[str, str] | None = None,
              window: tuple[float, float] | None = None) -> np.ndarray:
    """File (or a ``medvit.io.MedicalImage`` already read, e.g. by :func:`read_checked`: not read again) →
    (H, W) float32 in [0, 1] (see the module doc). Errors name the file."""
    from medvit.io import MedicalIOError
    from medvit.io.display import slice_for_display

    image = read_checked(path) if isinstance(path, str | Path) else path
    p = Path(path) if isinstance(path, str | Path) else getattr(image, "path", None)
    rules = dict(TRAINING_DEFAULT_INTENSITY if intensity is None else intensity)
    pre = Preprocessor(1, (1, 1), (0.0,), (1.0,), intensity_window=window, intensity=rules)
    try:
        unit = pre.intensity01(slice_for_display(image))
    except MedicalIOError as e:
        raise ValueError(f"{p}: cannot read as an image ({e})") from e
    except (OSError, ValueError, IndexError) as e:
        raise ValueError(f"{p}: cannot read as an image ({type(e).__name__}: {e})") from e
    if unit.ndim == 3:
        unit = unit @ _LUMA
    return np.ascontiguousarray(unit, dtype=np.float32)


def load_gray01(path: str | Path, intensity: dict[str, str] | None = None) -> np.ndarray:
    """Alias of :func:`load_unit` (the name the dataset adapters used)."""
    return load_unit(path, intensity)
