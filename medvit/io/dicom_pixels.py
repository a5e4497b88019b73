"""DICOM pixel stage (PS3.5 encoding, PS3.3 C.7.6.3 / C.11.1): header checks, pixel budget, decoding, modality LUT.

Everything here works on a pydicom ``Dataset`` already read; :mod:`medvit.io.dicom` opens files and builds the
:class:`~medvit.io.image.MedicalImage`. pydicom is imported lazily.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from medvit.io.errors import (
    CorruptFileError,
    FrameIndexError,
    MedicalIOError,
    NoPixelDataError,
    PixelBudgetError,
    UnsupportedPhotometricError,
    UnsupportedTransferSyntaxError,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

#: default maximum number of samples (rows x columns x frames x samples per pixel) one read may decode:
#: 2**28 samples = 1 GiB as float32. Override per call (``pixel_budget=``) or with $MEDVIT_PIXEL_BUDGET. The one
#: budget: the readers, `medvit infer` and the viewer all use it.
DEFAULT_PIXEL_BUDGET = 2**28

#: pip packages that decode each transfer syntax family (shown when none of the installed ones can)
_PLUGIN_HINT = {
    "1.2.840.10008.1.2.4.50": "python-gdcm, pillow or pylibjpeg + pylibjpeg-libjpeg (GPL-3.0)",
    "1.2.840.10008.1.2.4.51": "python-gdcm (12-bit read through GDCM directly) or pylibjpeg + pylibjpeg-libjpeg "
                              "(GPL-3.0)",
    "1.2.840.10008.1.2.4.57": "python-gdcm or pylibjpeg + pylibjpeg-libjpeg (GPL-3.0)",
    "1.2.840.10008.1.2.4.70": "python-gdcm or pylibjpeg + pylibjpeg-libjpeg (GPL-3.0)",
    "1.2.840.10008.1.2.4.80": "pyjpegls or python-gdcm",
    "1.2.840.10008.1.2.4.81": "pyjpegls or python-gdcm",
    "1.2.840.10008.1.2.4.90": "pylibjpeg + pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg + pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg + pylibjpeg-openjpeg>=2",
    "1.2.840.10008.1.2.4.202": "pylibjpeg + pylibjpeg-openjpeg>=2",
    "1.2.840.10008.1.2.4.203": "pylibjpeg + pylibjpeg-openjpeg>=2",
    "1.2.840.10008.1.2.5": "pylibjpeg + pylibjpeg-rle",
}

_GRAY = ("MONOCHROME1", "MONOCHROME2")
_COLOR_IN = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR")


def pixel_budget(value: int | None) -> int:
    """The effective budget: ``value``, else $MEDVIT_PIXEL_BUDGET, else :data:`DEFAULT_PIXEL_BUDGET`."""
    if value is not None:
        return int(value)
    env = os.environ.get("MEDVIT_PIXEL_BUDGET")
    return int(env) if env else DEFAULT_PIXEL_BUDGET


def _int_attr(ds: Dataset, keyword: str, path: str | None, default: int | None = None) -> int:
    """Integer header attribute; missing/garbled values raise CorruptFileError naming the attribute."""
    try:
        v = ds.get(keyword, default)
        if v is None or v == "":
            if default is None:
                raise CorruptFileError(path, f"missing required attribute {keyword}; the Image Pixel module is "
                                             "incomplete")
            return default
        return int(v)
    except CorruptFileError:
        raise
    except Exception as e:  # pydicom raises on bad VRs lazily, e.g. IS '1A'
        raise CorruptFileError(path, f"attribute {keyword} is not a valid integer ({e})") from e


def pixel_geometry(ds: Dataset, path: str | None) -> dict[str, int]:
    """Validated Image Pixel attributes: rows, columns, frames, samples, bits_allocated, bits_stored, signed."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        from pydicom.uid import UID

        sop = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
        name = UID(str(sop)).name if sop else "no SOP Class UID"
        raise NoPixelDataError(path, f"no Pixel Data element ({name}); this is not an image object")
    g = {
        "rows": _int_attr(ds, "Rows", path),
        "columns": _int_attr(ds, "Columns", path),
        "samples": _int_attr(ds, "SamplesPerPixel", path, 1),
        "bits_allocated": _int_attr(ds, "BitsAllocated", path),
        "bits_stored": _int_attr(ds, "BitsStored", path, 0),
        "signed": _int_attr(ds, "PixelRepresentation", path, 0),
    }
    try:
        g["frames"] = _int_attr(ds, "NumberOfFrames", path, 1)
    except CorruptFileError:
        g["frames"] = 0
    if g["frames"] < 1:  # garbled ("1A") or out of range ("0", "-1", PS3.3 C.7.6.6: >= 1): same lenience rule
        g["frames"] = _frames_from_pixel_data(ds, path, g)
    if g["bits_stored"] == 0:
        g["bits_stored"] = g["bits_allocated"]
    if g["rows"] < 1 or g["columns"] < 1 or g["frames"] < 1:
        raise CorruptFileError(path, f"invalid image size rows={g['rows']} columns={g['columns']} "
                                     f"frames={g['frames']}")
    if g["samples"] not in (1, 3):
        raise UnsupportedPhotometricError(path, f"Samples per Pixel {g['samples']} is not 1 or 3")
    if g["bits_allocated"] not in (1, 8, 16, 32, 64) or not 1 <= g["bits_stored"] <= g["bits_allocated"]:
        raise CorruptFileError(path, f"invalid Bits Allocated/Stored {g['bits_allocated']}/{g['bits_stored']}")
    if g["signed"] not in (0, 1):
        raise CorruptFileError(path, f"invalid Pixel Representation {g['signed']} (must be 0 or 1)")
    return g


def _frames_from_pixel_data(ds: Dataset, path: str | None, g: dict[str, int]) -> int:
    """Number of Frames when its value is garbled (``"1A"``) or below 1 (``"0"``, ``"-1"``), if the Pixel Data
    leaves no doubt: native data
    whose length is a whole number of frames (PS3.5 8.1.1, padded to even length), or encapsulated data with
    one fragment after the Basic Offset Table (one frame). Logs a warning and repairs ``ds`` in memory, as
    dcmtk does; raises CorruptFileError when the count is ambiguous. The garbled value is not logged."""
    from pydicom.uid import UID

    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    data = ds.get("PixelData")
    n = 0
    try:
        if data is None:
            pass
        elif ts is not None and UID(str(ts)).is_compressed:
            from pydicom.encaps import parse_fragments

            n_fragments = parse_fragments(data)[0]
            n = 1 if n_fragments == 1 else 0
        else:
            frame_bytes = (g["rows"] * g["columns"] * g["samples"] * g["bits_allocated"] + 7) // 8
            if frame_bytes and len(data) // frame_bytes >= 1 and len(data) - (len(data) // frame_bytes) * \
                    frame_bytes <= 1:
                n = len(data) // frame_bytes
    except Exception:
        n = 0
    if n < 1:
        raise CorruptFileError(path, "attribute NumberOfFrames is not a valid integer >= 1 and the Pixel Data does "
                                     "not determine the frame count")
    logger.warning("%s: attribute NumberOfFrames is not a valid integer >= 1; using %d frame(s) from the Pixel "
                   "Data length", path or "<dataset>", n)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.NumberOfFrames = n  # the decoders read it again
    return n


def check_budget(g: dict[str, int], path: str | None, budget: int | None, frame: int | None) -> None:
    """Refuse (before decoding) an image whose header claims more samples than the budget allows."""
    limit = pixel_budget(budget)
    n_frames = 1 if frame is not None else g["frames"]
    total = g["rows"] * g["columns"] * n_frames * g["samples"]
    if total > limit:
        raise PixelBudgetError(path, f"header claims {g['rows']}x{g['columns']}x{n_frames} frames x{g['samples']} "
                                     f"samples = {total:,} > pixel budget {limit:,}; raise pixel_budget= (or "
                                     "$MEDVIT_PIXEL_BUDGET) if the file is genuine, or read one frame")


def transfer_syntax(ds: Dataset, path: str | None) -> Any:
    """The dataset's Transfer Syntax UID (from File Meta, else from how pydicom read it)."""
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts:
        return UID(str(ts))
    enc = getattr(ds, "original_encoding", None)
    if enc and enc[0] is not None and enc[1] is not None:
        implicit, little = enc
        if implicit:
            return ImplicitVRLittleEndian
        return ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    raise CorruptFileError(path, "File Meta has no Transfer Syntax UID and the encoding cannot be inferred")


def _get_decoder(ts: Any, path: str | None) -> Any:
    from pydicom.pixels import get_decoder

    try:
        dec = get_decoder(ts)
    except NotImplementedError as e:
        hint = _PLUGIN_HINT.get(str(ts))
        hint = f"would need: {hint}" if hint else ("no Python decoder exists for it in pydicom; transcode it to an "
                                                   "uncompressed or JPEG/JPEG 2000 transfer syntax first")
        raise UnsupportedTransferSyntaxError(path, f"transfer syntax {ts} ({getattr(ts, 'name', '?')}) has no "
                                                   f"decoder; {hint}") from e
    if not dec.is_available:
        raise UnsupportedTransferSyntaxError(path, f"no installed plugin decodes {ts.name}; install "
                                                   f"{_PLUGIN_HINT.get(str(ts), 'a pydicom decoder plugin')}")
    return dec


def decode(ds: Dataset, path: str | None, g: dict[str, int], frame: int | None) -> tuple[np.ndarray, str]:
    """Decode stored values: (F, H, W[, 3]) or (H, W[, 3]) when ``frame`` is given; returns (array, photometric).

    YBR_* becomes RGB, PALETTE COLOR becomes RGB through its LUT; the modality LUT is NOT applied here.
    """
    pi = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not pi:
        raise CorruptFileError(path, "missing Photometric Interpretation")
    if pi not in _GRAY + _COLOR_IN:
        raise UnsupportedPhotometricError(path, f"Photometric Interpretation {pi!r} is not supported "
                                                "(supported: MONOCHROME1/2, RGB, YBR_FULL(_422), YBR_RCT/ICT, "
                                                "PALETTE COLOR)")
    if (pi in _GRAY or pi == "PALETTE COLOR") != (g["samples"] == 1):
        raise UnsupportedPhotometricError(path, f"Photometric Interpretation {pi} with Samples per Pixel "
                                                f"{g['samples']} is inconsistent")
    if "PixelData" not in ds:
        raise UnsupportedPhotometricError(path, "Float/Double Float Pixel Data is not supported by the display "
                                                "pipeline (parametric maps)")
    if frame is not None and not 0 <= frame < g["frames"]:
        raise FrameIndexError(path, f"frame {frame} out of range, the file has {g['frames']} frames "
                                    f"(0..{g['frames'] - 1})")
    ts = transfer_syntax(ds, path)
    dec = _get_decoder(ts, path)
    if not ts.is_compressed:
        bits = g["bits_allocated"]
        expected = (g["rows"] * g["columns"] * g["frames"] * g["samples"] * bits + 7) // 8
        if pi == "YBR_FULL_422":
            expected = expected * 2 // 3
        got = len(ds.PixelData) if ds.PixelData is not None else 0
        if got < expected:
            raise CorruptFileError(path, f"truncated: Pixel Data has {got:,} bytes, the header needs {expected:,}")
    try:
        arr, info = _as_array(dec, ds, path, g, frame)
    except (MemoryError, RecursionError, MedicalIOError):
        raise
    except Exception as e:  # decoders raise many types; classify
        msg = str(e)
        missing = list(getattr(dec, "missing_dependencies", []) or [])
        unsupported = "does not support" in msg or "not supported" in msg.lower()
        if missing and unsupported:
            raise UnsupportedTransferSyntaxError(
                path, f"the installed plugins cannot decode this {ts.name} data ({msg.splitlines()[-1].strip()}); "
                      f"would need: {_PLUGIN_HINT.get(str(ts), '; '.join(missing))}") from e
        raise CorruptFileError(path, f"cannot decode {ts.name} pixel data: {' | '.join(msg.splitlines())[:400]}") \
            from e
    out_pi = str(info.get("photometric_interpretation", pi)).upper()
    if frame is not None or g["frames"] == 1:
        arr = arr[None]
    if pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            arr = apply_color_lut(arr, ds)
        except Exception as e:
            raise CorruptFileError(path, f"invalid Palette Color LUT: {e}") from e
        out_pi = "RGB"
    elif pi not in _GRAY and out_pi != "RGB":
        raise UnsupportedPhotometricError(path, f"decoder returned {out_pi} for {pi}; cannot convert to RGB")
    return arr, out_pi


JPEG_EXTENDED_12BIT = "1.2.840.10008.1.2.4.51"


def _as_array(dec: Any, ds: Dataset, path: str | None, g: dict[str, int], frame: int | None) -> tuple[Any, dict]:
    """``dec.as_array``; 12-bit JPEG Extended that pydicom's plugins refuse goes through GDCM directly."""
    try:
        return dec.as_array(ds, index=frame, as_rgb=True)
    except Exception as e:
        if str(transfer_syntax(ds, path)) == JPEG_EXTENDED_12BIT and path is not None and "12-bit" in str(e):
            return _decode_jpeg12_gdcm(path, g, frame), {}
        raise
_GDCM_LOCK = None


def _decode_jpeg12_gdcm(path: str, g: dict[str, int], frame: int | None) -> np.ndarray:
    """12-bit JPEG Extended (Process 2 & 4, PS3.5 A.4.1) through GDCM's own reader (BSD licence).

    pydicom's GDCM plugin refuses 12-bit precision, but GDCM's bundled 12-bit IJG codec decodes it (output
    identical to dcmtk's ``dcmdjpeg``, tested). IJG prints its 8-bit attempt's complaints on the C stderr;
    they go to this module's DEBUG log instead. Returns the shape pydicom's ``as_array`` would.
    """
    import tempfile
    import threading

    global _GDCM_LOCK
    try:
        import gdcm
    except ImportError as e:
        raise UnsupportedTransferSyntaxError(path, "12-bit JPEG Extended needs python-gdcm (BSD) or pylibjpeg + "
                                                   "pylibjpeg-libjpeg (GPL-3.0); neither is installed") from e
    if _GDCM_LOCK is None:
        _GDCM_LOCK = threading.Lock()
    with _GDCM_LOCK, tempfile.TemporaryFile() as err:
        saved = os.dup(2)
        try:
            os.dup2(err.fileno(), 2)
            reader = gdcm.ImageReader()
            reader.SetFileName(str(path))
            ok = reader.Read()
            buf = reader.GetImage().GetBuffer() if ok else None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        noise = err.read().decode("utf-8", "replace").strip()
    if noise:
        logger.debug("%s: GDCM/IJG said: %s", path, " | ".join(noise.splitlines()))
    if not buf:
        raise CorruptFileError(path, "cannot decode 12-bit JPEG Extended pixel data (GDCM could not read it)")
    raw = buf.encode("utf-8", "surrogateescape") if isinstance(buf, str) else bytes(buf)
    dtype = np.dtype("<i2" if g["signed"] else "<u2")
    shape = (g["frames"], g["rows"], g["columns"]) + ((g["samples"],) if g["samples"] > 1 else ())
    if len(raw) != int(np.prod(shape)) * dtype.itemsize:
        raise CorruptFileError(path, f"12-bit JPEG Extended: GDCM returned {len(raw):,} bytes, the header needs "
                                     f"{int(np.prod(shape)) * dtype.itemsize:,}")
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if frame is not None:
        return arr[frame]
    return arr[0] if g["frames"] == 1 else arr


# ----------------------------------------------------------------------------- modality LUT (PS3.3 C.11.1)
def _lut_item(item: Any, path: str | None, little_endian: bool, signed: bool) -> tuple[int, np.ndarray, int]:
    """Parse one LUT item -> (first_mapped, table (N,) int64, bits per entry)."""
    try:
        desc = [int(v) for v in item.LUTDescriptor]
        n, first, bits = desc[0] or 65536, desc[1], desc[2]
        if signed and first > 32767:
            first -= 65536
        raw = item.LUTData
        if isinstance(raw, bytes | bytearray):
            dt = np.dtype("<u2" if little_endian else ">u2") if bits > 8 or len(raw) >= 2 * n else np.uint8
            table = np.frombuffer(raw, dtype=dt)
        else:
            table = np.asarray(raw if not isinstance(raw, int) else [raw])
        table = table.astype(np.int64)[:n]
    except Exception as e:
        raise CorruptFileError(path, f"invalid LUT (Descriptor/Data): {e}") from e
    if table.size == 0:
        raise CorruptFileError(path, "LUT Data is empty")
    return first, table, bits


def apply_lut(x: np.ndarray, first: int, table: np.ndarray) -> np.ndarray:
    """``table[clip(round(x) - first, 0, N-1)]`` (values below/above the table clamp to its ends), float32."""
    idx = np.clip(np.rint(x).astype(np.int64) - first, 0, table.size - 1)
    return table[idx].astype(np.float32)


def _rescale_source(ds: Dataset, frame: int) -> tuple[float, float]:
    """Rescale slope/intercept: top level, else functional groups (per-frame over shared)."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    for seq_kw, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(seq_kw)
        if seq and len(seq) > idx:
            pvt = seq[idx].get("PixelValueTransformationSequence")
            if pvt:
                return float(pvt[0].get("RescaleSlope", 1) or 1), float(pvt[0].get("RescaleIntercept", 0) or 0)
    return 1.0, 0.0


def modality_lut(stored: np.ndarray, ds: Dataset, path: str | None, g: dict[str, int],
                 first_frame: int = 0) -> tuple[np.ndarray, tuple[float, float]]:
    """Stored values (F, H, W) -> modality values float32 + the (min, max) the stored bit depth can produce."""
    b, signed = g["bits_stored"], bool(g["signed"])
    lo, hi = (-(2 ** (b - 1)), 2 ** (b - 1) - 1) if signed else (0, 2**b - 1)
    seq = ds.get("ModalityLUTSequence")
    if seq:
        little = bool((getattr(ds, "original_encoding", None) or (None, True))[1] is not False)
        first, table, _ = _lut_item(seq[0], path, little, signed)
        return apply_lut(stored, first, table), (float(table.min()), float(table.max()))
    out = np.empty(stored.shape, dtype=np.float32)
    rng: list[float] = []
    try:
        for k in range(stored.shape[0]):
            slope, icpt = _rescale_source(ds, first_frame + k)
            out[k] = stored[k]  # cast to float32 in place; float32 holds 24-bit integers exactly
            if slope != 1.0:
                out[k] *= np.float32(slope)
            if icpt != 0.0:
                out[k] += np.float32(icpt)
            rng += [lo * slope + icpt, hi * slope + icpt]
    except (TypeError, ValueError) as e:
        raise CorruptFileError(path, f"invalid Rescale Slope/Intercept: {e}") from e
    return out, (float(min(rng)), float(max(rng)))


def padding_mask(stored: np.ndarray, ds: Dataset, path: str | None) -> np.ndarray | None:
    """True where the stored value is the Pixel Padding Value (or within Pixel Padding Range Limit)."""
    if "PixelPaddingValue" not in ds:
        return None
    try:
        pv = int(ds.PixelPaddingValue)
        lim = ds.get("PixelPaddingRangeLimit")
    except Exception as e:
        raise CorruptFileError(path, f"invalid Pixel Padding Value: {e}") from e
    if np.issubdtype(stored.dtype, np.signedinteger):  # (0028,0120) may be stored as US for signed pixels
        span = 1 << (8 * stored.dtype.itemsize)
        pv = pv - span if pv > np.iinfo(stored.dtype).max else pv
        lim = None if lim is None else (int(lim) - span if int(lim) > np.iinfo(stored.dtype).max else int(lim))
    if lim is None:
        m = stored == pv
    else:
        a, b = sorted((pv, int(lim)))
        m = (stored >= a) & (stored <= b)
    return m if m.any() else None


#: JPEG 2000 transfer syntaxes whose codestream can be decoded at a lower resolution level (PS3.5 A.4.4)
J2K_SYNTAXES = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")


def reduction_levels(rows: int, columns: int, min_side: int) -> int:
    """Largest r >= 0 with min(rows, columns) / 2**r >= ``min_side``: how many JPEG 2000 resolution levels a
    reader that needs at least ``min_side`` pixels a side may discard."""
    r = 0
    while min(rows, columns) >> (r + 1) >= min_side:
        r += 1
    return r


def _j2k_precision(frame: bytes) -> tuple[int, bool, int, int, int, int] | None:
    """(precision, signed, Xsiz, Ysiz, XOsiz, YOsiz) of component 0 from a codestream's SIZ marker
    (ITU-T T.800 A.5.1), or None when the bytes do not start with SOC + SIZ."""
    import struct

    if len(frame) < 43 or frame[:4] != b"\xff\x4f\xff\x51":
        return None
    xsiz, ysiz, xo, yo = struct.unpack(">IIII", frame[8:24])
    ssiz = frame[42]
    return (ssiz & 0x7F) + 1, bool(ssiz & 0x80), xsiz, ysiz, xo, yo


def decode_j2k_reduced(ds: Dataset, path: str | None, g: dict[str, int], frame: int | None,
                       min_side: int) -> tuple[np.ndarray, str, int] | None:
    """Stored values of a JPEG 2000 greyscale image decoded at a lower resolution level, or None.

    A JPEG 2000 codestream holds the image as a wavelet pyramid (ITU-T T.800 Annex F): its resolution level
    ``r`` from the top is the low-pass (LL) band, a ``2**r``-fold antialiased down-sampling of the image, and
    decoding it skips the entropy decoding of every finer level (OpenJPEG through Pillow's ``reduce``). A
    reader that needs ``min_side`` pixels a side (a 224-pixel model input) thus decodes a 2048² radiograph at
    512² in a fraction of the time. Returns ((1, h, w) stored values, photometric, factor ``2**r``), or None
    (the caller decodes in full) unless: the transfer syntax is JPEG 2000, one frame, one unsigned sample of at
    most 16 bits, MONOCHROME1/2, no Pixel Padding Value (padding would blur into its neighbours), codestream
    without image offset whose size and precision match the header, ``r >= 1`` and OpenJPEG decodes it.
    """
    from io import BytesIO

    pi = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    r = reduction_levels(g["rows"], g["columns"], int(min_side))
    if (r < 1 or str(transfer_syntax(ds, path)) not in J2K_SYNTAXES or g["frames"] != 1 or frame not in (None, 0)
            or g["samples"] != 1 or g["signed"] or g["bits_stored"] > 16 or pi not in _GRAY
            or "PixelPaddingValue" in ds or "PixelData" not in ds):
        return None
    try:
        from PIL import Image
        from pydicom.encaps import get_frame

        data = get_frame(ds.PixelData, 0, number_of_frames=1)
        siz = _j2k_precision(data)
        if siz is None:
            return None
        prec, signed, xsiz, ysiz, xo, yo = siz
        if signed or (xo, yo) != (0, 0) or (xsiz, ysiz) != (g["columns"], g["rows"]) or prec != g["bits_stored"]:
            return None
        im = Image.open(BytesIO(data), formats=["JPEG2000"])
        if im.mode not in ("L", "I;16"):
            return None
        im.reduce = r
        im.load()
        arr = np.asarray(im)
    except Exception as e:  # anything OpenJPEG/Pillow refuse: the full decode reports it properly
        logger.debug("%s: reduced JPEG 2000 decode not used (%s: %s)", path, type(e).__name__, e)
        return None
    shift = (8 if im.mode == "L" else 16) - prec  # Pillow scales samples up to the mode's full bit depth
    want = (-(-g["rows"] // (1 << r)), -(-g["columns"] // (1 << r)))
    if arr.shape != want or shift < 0:
        return None
    stored = (arr >> shift).astype(np.uint16 if im.mode == "I;16" else np.uint8)
    return stored[None], pi, 1 << r


def realign_reduced(pixels: np.ndarray, factor: int) -> np.ndarray:
    """(F, h, w) values decoded at 1/``factor`` resolution, resampled onto the grid of a ``factor``-fold smaller
    image of the same field: float32, same shape.

    Sample n of a JPEG 2000 reduced resolution sits at source pixel ``factor * n`` (its canvas coordinate is
    ``ceil(x / 2**r)``, ITU-T T.800 B.5), whereas pixel n of an image covering the same field with ``factor``-fold
    larger pixels is centred at ``factor * n + (factor - 1) / 2``: left as is, the content would be displaced by
    ``(factor - 1) / 2`` source pixels. Linear interpolation by ``a = (factor - 1) / (2 factor)`` of a pixel along
    each axis (the last row/column kept) puts it back.
    """
    a = np.float32((factor - 1) / (2 * factor))
    y = np.array(pixels, dtype=np.float32)
    y[:, :-1, :] = (1 - a) * y[:, :-1, :] + a * y[:, 1:, :]
    y[:, :, :-1] = (1 - a) * y[:, :, :-1] + a * y[:, :, 1:]
    return y


def box_reduce(stored: np.ndarray, factor: int) -> np.ndarray:
    """(1, H, W) integer stored values -> (1, ceil(H/f), ceil(W/f)) float32 means of ``factor`` x ``factor`` blocks.

    Pixel n of the result covers source pixels [f n, f n + f), i.e. the grid of a ``factor``-fold smaller image of
    the same field (edge rows/columns are replicated to fill the last block). Used for images decoded in full that
    a reader needs at a much lower resolution: every later step then touches ``factor**2`` fewer pixels.
    """
    f = int(factor)
    a = stored[0]
    h, w = a.shape
    ph, pw = -h % f, -w % f
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)), mode="edge")
    small = a.dtype.itemsize <= 2 and f <= 256  # 16-bit sums of up to 256 x 256 values fit 32 bits
    acc = a[0::f].astype((np.uint32 if a.dtype.kind == "u" else np.int32) if small else np.int64)
    for k in range(1, f):  # rows first: contiguous, and every later step touches f times fewer values
        acc += a[k::f]
    out = acc[:, 0::f].copy()
    for k in range(1, f):
        out += acc[:, k::f]
    return (out.astype(np.float32) / np.float32(f * f))[None]
