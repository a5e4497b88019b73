"""Per-file decoding for batch inference: header → selection rules → pixels → model input.

:func:`decode_file` never raises for a bad input: it returns a :class:`Decoded` whose ``status`` is
``"ok"``, ``"skipped"`` (not an image this model should see: not DICOM, DICOMDIR, no pixel data, not selected
by the rules, multi-frame) or ``"error"`` (an image that should have been read but could not: corrupt,
undecodable transfer syntax, ...), with the stage and a reason. It runs in worker processes, so it uses
numpy/PIL/pydicom only, never torch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvit.infer.preprocess import Preprocessor
from medvit.io.rules import SelectionRules

logger = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: modalities of objects that are not images to score (PS3.3 C.7.3.1.1.1), whatever the selection rules say
NON_IMAGE_MODALITIES = ("SEG", "SR", "KO", "PR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE", "REG",
                        "FID", "RWV", "PLAN", "DOC")
#: SOP Class UID prefixes of the same objects (PS3.4 B.5): Segmentation, SR family (incl. KO), Presentation States, RT
NON_IMAGE_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.66.", "1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.",
                          "1.2.840.10008.5.1.4.1.1.481.", "1.2.840.10008.5.1.4.1.1.104.")

#: header attributes copied into every record (no PatientName / PatientBirthDate: never needed downstream)
HEADER_KEYS = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "PatientID", "AccessionNumber",
    "StudyDate", "Modality", "ViewPosition", "BodyPartExamined", "Laterality", "SeriesNumber", "InstanceNumber",
    "SeriesDescription", "ImageType",
    # spacing for segmentation areas (medvit.infer.segment, medvit.io.spacing)
    "PixelSpacing", "ImagerPixelSpacing", "PixelSpacingCalibrationType", "EstimatedRadiographicMagnificationFactor",
    "NominalScannedPixelSpacing", "SliceThickness", "SpacingBetweenSlices",
)


@dataclass
class Decoded:
    """Outcome of decoding one file (picklable; crosses the worker boundary)."""

    rel: str  # path relative to the input root (the record key)
    status: str  # "ok" | "skipped" | "error"
    stage: str = ""  # where it stopped: header | select | decode | preprocess
    reason: str = ""  # why it was skipped / failed
    header: dict[str, Any] = field(default_factory=dict)  # HEADER_KEYS present in the file (JSON-able)
    selection: str = ""  # name of the matching selection rule
    x: np.ndarray | None = None  # (C, H, W) float32 model input
    notes: dict[str, Any] = field(default_factory=dict)  # preprocessing notes
    unit: np.ndarray | None = None  # (h, w) float16 grey display image in [0, 1], only when heatmaps are on
    # filled by an engine that predicts where it decodes (--engine ray, medvit.infer.ray_engine); else None
    probs: np.ndarray | None = None  # (K,) float32 probabilities
    ood: float | None = None  # out-of-distribution score (None: the model has no OOD reference)
    digest: str | None = None  # SHA-256 of x (duplicate SOP Instance UID check when x is not shipped back)


@dataclass
class DecodeSpec:
    """What a worker needs to turn a path into a model input (picklable)."""

    root: str  # input root (records are keyed by paths relative to it)
    preprocessor: Preprocessor
    rules: SelectionRules
    keep_unit: bool = False  # also return the display image (for heatmap overlays)
    pixel_budget: int | None = None  # refuse files claiming more samples before decoding (None: medvit.io's default)
    display_max_side: int = 1024  # display images are shrunk in the worker to at most this many pixels a side
    worker_memory_bytes: int | None = None  # address-space headroom of a decoding worker (RLIMIT_DATA); None = no cap
    parent_pid: int = 0  # the run's process id: a worker whose parent is already gone exits at start
    stderr_file: str | None = None  # worker processes append their C-level stderr (decoder libraries) here
    # pixels a side the model (and display) need: greyscale images >= 2x larger are read reduced (JPEG 2000 wavelet
    # level / block means, medvit.io.dicom.image_from_dataset) where the intensity mapping is linear
    # (reduced_read_refusal); None = always full resolution
    min_side: int | None = None


def _jsonable(v: Any) -> Any:
    if isinstance(v, str | int | float) or v is None:
        return v
    try:
        from pydicom.multival import MultiValue

        if isinstance(v, MultiValue | list | tuple):
            return [_jsonable(x) for x in v]
    except ImportError:  # pragma: no cover
        pass
    if hasattr(v, "real") and hasattr(v, "__float__"):
        f = float(v)
        return int(f) if f.is_integer() else f
    return str(v)


def read_header(path: Path) -> Any:
    """Header (no pixel data) of a DICOM file via :func:`medvit.io.read_dicom_header`; ``None`` if not DICOM."""
    from medvit.io import NotDicomError, read_dicom_header

    try:
        return read_dicom_header(path)
    except NotDicomError:
        return None


def decode_file(path: str | Path, spec: DecodeSpec) -> Decoded:
    """Decode one file under ``spec.root`` (see module doc); never raises for bad inputs."""
    p = Path(path)
    rel = _rel(p, spec.root)
    try:
        ds, whole = _open_dataset(p, spec.pixel_budget)
    except Exception as e:
        return Decoded(rel, "error", "header", f"unreadable header ({type(e).__name__}: {_reason(e)})")
    if ds is None:
        return Decoded(rel, "skipped", "header", "not a DICOM file")
    header = {k: _jsonable(getattr(ds, k, None)) for k in HEADER_KEYS if getattr(ds, k, None) not in (None, "")}
    meta_sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    if meta_sop == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return Decoded(rel, "skipped", "header", "DICOMDIR (an index; the walk reads the image files directly)",
                       header)
    if "SOPInstanceUID" not in header:
        return Decoded(rel, "skipped", "header", "DICOM data set without SOPInstanceUID", header)
    modality = str(header.get("Modality", "")).strip().upper()
    sop = str(header.get("SOPClassUID", ""))
    if modality in NON_IMAGE_MODALITIES or sop.startswith(NON_IMAGE_SOP_PREFIXES):
        return Decoded(rel, "skipped", "header", f"not an image to score ({modality or 'SOP Class ' + sop}: "
                       "segmentation, report, key objects, presentation state or RT object)", header)
    if "Rows" not in ds and "NumberOfFrames" not in ds:
        return Decoded(rel, "skipped", "header", f"no image (SOP Class {header.get('SOPClassUID', '?')})", header)
    selection, why = spec.rules.match(ds)
    if selection is None:
        return Decoded(rel, "skipped", "select", why, header)
    frames = _int(getattr(ds, "NumberOfFrames", 1))
    if frames > 1:
        return Decoded(rel, "skipped", "select", f"multi-frame image ({frames} frames); the model takes 2D "
                       "single-frame images", header, selection)
    min_side = spec.min_side
    refused = reduced_read_refusal(ds, spec.preprocessor) if min_side else None
    if refused:  # the intensity mapping is not linear: block means / LL band would change the model input
        min_side = None
    try:
        image = _decode_dataset(ds, p, spec.pixel_budget, min_side) if whole else \
            _read_image(p, spec.pixel_budget, min_side)
    except Exception as e:
        kind = type(e).__name__
        if kind in ("NoPixelDataError", "NotDicomError"):
            return Decoded(rel, "skipped", "decode", getattr(e, "reason", str(e)), header, selection)
        return Decoded(rel, "error", "decode", f"{kind}: {_reason(e)}", header, selection)
    try:
        px = np.asarray(image.pixels)
        axes = getattr(image, "axes", "HW")
        if "F" in axes and px.shape[axes.index("F")] > 1:
            return Decoded(rel, "skipped", "select", "multi-frame image; the model takes 2D single-frame images",
                           header, selection)
        if "F" in axes:
            image = image.frame(0)
        if np.asarray(image.pixels).ndim not in (2, 3):
            return Decoded(rel, "skipped", "select", f"not a 2D image (shape {px.shape})", header, selection)
        x, notes, unit = spec.preprocessor(image)
        factor = image.meta.get("ReducedResolutionFactor")
        if factor:  # source_size is then the decoded (reduced) size
            notes["decoded_at"] = f"1/{factor} resolution ({image.meta.get('ReducedResolutionMethod', '')})"
        elif refused and not image.is_color and _reducible(np.asarray(image.pixels).shape, spec.min_side):
            notes["decoded_at"] = f"full resolution (reduced read not used: {refused})"
        if not np.isfinite(x).all():
            return Decoded(rel, "error", "preprocess", "non-finite values after preprocessing", header, selection)
    except Exception as e:
        return Decoded(rel, "error", "preprocess", f"{type(e).__name__}: {_reason(e)}", header, selection)
    return Decoded(rel, "ok", "", "", header, selection, x, notes,
                   shrink_display(unit, spec.display_max_side).astype(np.float16) if spec.keep_unit else None)


def reduced_read_refusal(ds: Any, pre: Preprocessor) -> str | None:
    """Why a reduced-resolution read (``--reduced-decode``: 2**r block means of the stored values, or a JPEG 2000
    LL band) would not give this file's model input, or None when it does within the stated drift.

    Averaging before the intensity step equals averaging after it only when the mapping from stored values to
    [0, 1] is affine (the clip at a window's edges aside): a Rescale Slope/Intercept Modality LUT followed by a fixed
    LINEAR / LINEAR_EXACT window (the file's first window, the contract's ``intensity_window``) or the stored bit
    range. Refused (the caller decodes in full): a Modality LUT Sequence or a VOI LUT Sequence (tables:
    LUT(mean) != mean(LUT)), a SIGMOID VOI function, and min-max scaling (a file without a window under the
    ``voi`` rule, or the ``minmax`` rule): the range is set by the extreme pixels, which block means average away
    (a few hot detector pixels set a full decode's range but vanish from a reduced one). PS3.3 C.11.1, C.11.2.
    """
    from medvit.io.dicom import windows_from

    if "ModalityLUTSequence" in ds:
        return "Modality LUT Sequence (a table, not linear)"
    if pre.intensity_window is not None:
        return None  # the contract's fixed LINEAR window
    rule = pre.intensity.get("dicom", "voi")
    if rule in ("full", "identity"):
        return None
    if rule == "minmax":
        return "min-max intensity (set by the extreme pixels, which block means remove)"
    try:
        windows = windows_from(ds, 0)
    except Exception:  # a hostile header: the full read reports what is wrong with it
        return "VOI window unreadable"
    if windows:
        fn = windows[0].function.upper()
        return None if fn in ("LINEAR", "LINEAR_EXACT") else f"non-linear VOI LUT Function {fn}"
    if ds.get("VOILUTSequence"):
        return "VOI LUT Sequence (a table, not linear)"
    return "no VOI window in the file: min-max intensity (set by the extreme pixels, which block means remove)"


def _reducible(shape: tuple[int, ...], min_side: int | None) -> bool:
    """True when a (h, w) image would have been read reduced for a reader that needs ``min_side`` pixels a side."""
    from medvit.io.dicom_pixels import reduction_levels

    return bool(min_side) and len(shape) == 2 and reduction_levels(shape[0], shape[1], int(min_side)) >= 1


def shrink_display(unit: np.ndarray, max_side: int) -> np.ndarray:
    """``unit`` (h, w) resized (antialiased) so that its longer side is at most ``max_side`` pixels.

    Display images cross the process boundary and become heatmap overlays: their size is capped here, in the
    worker, so a 14000 x 14000 source costs at most ``max_side**2 * 2`` bytes in flight.
    """
    h, w = unit.shape[:2]
    if max(h, w) <= max_side:
        return unit
    from medvit.infer.preprocess import resize_array

    f = max_side / max(h, w)
    return resize_array(unit.astype(np.float32), (max(1, round(h * f)), max(1, round(w * f))))


def _reason(e: BaseException) -> str:
    """Message of ``e`` for the error table: medvit's own reason, quoted header values redacted."""
    from medvit.io.errors import redact_values

    return redact_values(str(getattr(e, "reason", e)))


def _open_dataset(p: Path, pixel_budget: int | None) -> tuple[Any, bool]:
    """(data set, whole): the file parsed once, pixels included, so that decoding does not parse it again; when
    that fails (a damaged Pixel Data region), the header alone, as before (the image then fails at the decode
    stage). (None, False) when the file is not DICOM; header errors are raised."""
    from medvit.io import NotDicomError
    from medvit.io.dicom import read_dicom_dataset

    try:
        return read_dicom_dataset(p, pixel_budget), True
    except NotDicomError:
        return None, False
    except (MemoryError, RecursionError, OSError):
        raise
    except Exception:
        return read_header(p), False


def _decode_dataset(ds: Any, p: Path, pixel_budget: int | None, min_side: int | None) -> Any:
    from medvit.io.dicom import decode_dataset

    return decode_dataset(ds, p, None, pixel_budget, min_side)


def _read_image(p: Path, pixel_budget: int | None, min_side: int | None = None) -> Any:
    from medvit.io import read_image

    return read_image(p, pixel_budget=pixel_budget, min_side=min_side)


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 1


def _rel(p: Path, root: str) -> str:
    try:
        return p.relative_to(root).as_posix() if Path(root).is_dir() else p.name
    except ValueError:
        return p.as_posix()


# ---------------------------------------------------------------------- worker-process plumbing
_SPEC: DecodeSpec | None = None


def preload() -> None:
    """Import the decoding stack (pydicom and its pixel plugins, medvit.io, Pillow's JPEG 2000 codec) in this
    process, so that forked workers inherit it instead of each importing it on its first file."""
    import PIL.Jpeg2KImagePlugin  # noqa: F401
    import pydicom.pixels  # noqa: F401

    import medvit.io.dicom  # noqa: F401
    import medvit.io.dicom_pixels  # noqa: F401


def init_worker(spec: DecodeSpec) -> None:
    """Pool initializer: keep the spec in the worker; stop BLAS/OpenMP threads from oversubscribing cores."""
    global _SPEC
    _SPEC = spec
    # A forked worker inherits the parent's Python signal handlers; `medvit infer` turns SIGTERM into SystemExit
    # so that a stopped job unwinds cleanly. In a worker that handler is harmful: when a sibling dies the pool
    # terminates the others with SIGTERM, and a worker that turned it into an exception tried to send that back
    # through the (dirty, unread) result queue and blocked forever — the run then hung. Workers die on SIGTERM.
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _exit_with_parent(spec.parent_pid)
    if spec.worker_memory_bytes:
        limit_worker_memory(spec.worker_memory_bytes)
    if spec.stderr_file:  # C decoders (openjpeg, IJG, CharLS) print on fd 2: keep it off the terminal
        import os

        fd = os.open(spec.stderr_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    try:  # torch may be imported in a forked worker; keep it single-threaded there
        import sys

        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
    except Exception:  # pragma: no cover
        pass


def _data_size() -> int | None:
    """Current data-segment size of this process in bytes (``VmData`` of /proc/self/status), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def limit_worker_memory(headroom: int) -> None:
    """Cap this (worker) process's data segment at its current size + ``headroom`` bytes (``RLIMIT_DATA``).

    A decoder that tries to allocate more (a decompression bomb whose codestream claims more than its
    header) then fails with MemoryError, which :func:`decode_file` reports as a decode error for that file.
    Linux only (no-op elsewhere).
    """
    import resource

    cur = _data_size()
    if cur is None:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    want = cur + int(headroom)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (want, hard))


def _exit_with_parent(parent_pid: int = 0) -> None:
    """Linux: ask the kernel to SIGKILL this worker when its parent dies (``PR_SET_PDEATHSIG``).

    Without it a decoding worker orphaned by a SIGKILL of ``medvit infer`` would keep running. If the parent
    is already gone when this runs, exit at once.
    """
    import os
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover
        return
    if (parent_pid and os.getppid() != parent_pid) or os.getppid() == 1:
        os._exit(1)


@contextmanager
def stderr_to(path: str | None) -> Iterator[None]:
    """Send file descriptor 2 (C libraries' messages) to ``path`` (appended) while open; no-op for None."""
    if not path:
        yield
        return
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def decode_in_worker(path: str) -> Decoded:
    """Worker entry point (uses the spec set by :func:`init_worker`)."""
    assert _SPEC is not None, "init_worker was not called"
    return decode_file(path, _SPEC)
