"""DICOM file -> :class:`~medvit.io.image.MedicalImage` (PS3.3 Image Pixel, Modality LUT, VOI LUT, Image Plane).

``read_dicom(path)`` = open (typed errors) -> validate the Image Pixel module -> pixel budget -> decode (pydicom 3
handlers + pinned plugins) -> Modality LUT -> geometry, windows, UIDs and metadata. Display (VOI LUT,
MONOCHROME1 inversion) lives in :mod:`medvit.io.display`.
"""

from __future__ import annotations

import io
import logging
import warnings
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medvit.io import dicom_pixels as px
from medvit.io.errors import (
    CorruptFileError,
    MedicalIOError,
    NotDicomError,
    PixelBudgetError,
    check_file,
    redact_pydicom_log,
)
from medvit.io.image import MedicalImage, VoiLut, Window

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

#: header keywords copied into ``MedicalImage.meta`` (as JSON-able str / list / number)
META_KEYWORDS = (
    "PatientID", "PatientName", "PatientSex", "PatientAge", "PatientBirthDate", "StudyDate", "StudyTime",
    "StudyDescription", "AccessionNumber", "SeriesDescription", "SeriesNumber", "InstanceNumber",
    "AcquisitionNumber", "ViewPosition", "BodyPartExamined", "Laterality", "ImageLaterality", "ImageType",
    "Manufacturer", "ManufacturerModelName", "RescaleType", "PresentationLUTShape", "PatientOrientation",
    "SliceThickness", "SpacingBetweenSlices", "BurnedInAnnotation", "LossyImageCompression",
    "EstimatedRadiographicMagnificationFactor",
)
#: element values larger than this are read from disk only when accessed (after the pixel budget check)
DEFER_SIZE = 16 * 2**20
#: Deflated Explicit VR Little Endian (PS3.5 §A.5): the whole data set after the File Meta is deflated
DEFLATED_TS = "1.2.840.10008.1.2.1.99"
#: bytes allowed for a deflated data set besides its pixels (header, overlays, private elements)
HEADER_ALLOWANCE = 64 * 2**20
#: bytes per budgeted sample when sizing a deflated data set (<= 16-bit stored samples)
INFLATE_BYTES_PER_SAMPLE = 2
_INFLATE_CHUNK = 4 * 2**20
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")


def inflated_byte_budget(pixel_budget: int | None = None) -> int:
    """Most bytes a deflated data set may inflate to: 2 bytes per budgeted sample + :data:`HEADER_ALLOWANCE`."""
    return INFLATE_BYTES_PER_SAMPLE * px.pixel_budget(pixel_budget) + HEADER_ALLOWANCE


def _inflated_size(fp: Any, path: Path, limit: int) -> int:
    """Bytes the raw-deflate stream ``fp`` inflates to, counted in chunks without keeping them; PixelBudgetError as
    soon as the count passes ``limit``."""
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    n = 0
    data = fp.read(_INFLATE_CHUNK)
    while data and not d.eof:
        try:
            n += len(d.decompress(data, _INFLATE_CHUNK))
        except zlib.error as e:
            raise CorruptFileError(path, f"cannot inflate the deflated data set ({e})") from e
        if n > limit:
            raise PixelBudgetError(path, f"deflated data set inflates to more than {limit:,} bytes (2 bytes x pixel "
                                         "budget + header allowance); refused before keeping any of it; raise "
                                         "pixel_budget= (or $MEDVIT_PIXEL_BUDGET) if the file is genuine")
        data = d.unconsumed_tail or fp.read(_INFLATE_CHUNK)
    return n + len(d.flush())


def _inflate_bounded(fp: Any, path: Path, limit: int) -> io.BytesIO:
    """Raw-deflate stream ``fp`` (positioned after the File Meta) -> BytesIO of at most ``limit`` bytes.

    First pass counts the inflated size with O(chunk) memory (a bomb is refused there), second pass keeps it.
    """
    start = fp.tell()
    size = _inflated_size(fp, path, limit)
    fp.seek(start)
    out = io.BytesIO()
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    data = fp.read(_INFLATE_CHUNK)
    while data and not d.eof and out.tell() <= size:
        out.write(d.decompress(data, _INFLATE_CHUNK))
        data = d.unconsumed_tail or fp.read(_INFLATE_CHUNK)
    out.write(d.flush())
    out.seek(0)
    return out


def _open_deflated(p: Path, stop_before_pixels: bool, specific_tags: list | None,
                   pixel_budget: int | None) -> Dataset | None:
    """A Deflated Explicit VR LE file read with a bounded inflate (pydicom inflates without a limit); None if the
    file is not Part 10 with that transfer syntax (then dcmread handles it)."""
    from pydicom.dataset import FileDataset
    from pydicom.filereader import _at_pixel_data, _read_file_meta_info, read_dataset
    from pydicom.tag import Tag

    with p.open("rb") as fp:
        preamble = fp.read(128)
        if fp.read(4) != b"DICM":
            return None
        try:
            meta = _read_file_meta_info(fp)
            deflated = str(meta.get("TransferSyntaxUID", "")).strip() == DEFLATED_TS
        except Exception:
            return None  # a garbled File Meta: dcmread reports it
        if not deflated:
            return None
        buf = _inflate_bounded(fp, p, inflated_byte_budget(pixel_budget))
    tags = [Tag(t) for t in specific_tags] if specific_tags else None
    try:
        ds = read_dataset(buf, is_implicit_VR=False, is_little_endian=True,
                          stop_when=_at_pixel_data if stop_before_pixels else None, specific_tags=tags)
    except (MemoryError, RecursionError):
        raise
    except Exception as e:
        raise CorruptFileError(p, f"cannot parse the inflated DICOM data set ({type(e).__name__}: {e})") from e
    fds = FileDataset(str(p), ds, preamble=preamble, file_meta=meta, is_implicit_VR=False, is_little_endian=True)
    fds.set_original_encoding(False, True, ds._character_set)
    return fds


def _open(path: str | Path, stop_before_pixels: bool, specific_tags: list | None = None,
          pixel_budget: int | None = None) -> Dataset:
    """dcmread with typed errors; files without File Meta are accepted only if they parse as an image/IOD.

    A Deflated Explicit VR Little Endian data set is inflated in bounded chunks up to
    :func:`inflated_byte_budget` (PixelBudgetError beyond it) before anything is parsed.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = check_file(path, "DICOM file")
    redact_pydicom_log()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on many benign quirks; errors below are typed
        deflated = _open_deflated(p, stop_before_pixels, specific_tags, pixel_budget)
        if deflated is not None:
            return deflated
        try:
            return pydicom.dcmread(p, stop_before_pixels=stop_before_pixels, specific_tags=specific_tags,
                                   defer_size=DEFER_SIZE)
        except InvalidDicomError:
            pass
        except (MemoryError, RecursionError):
            raise
        except Exception as e:
            raise CorruptFileError(p, f"cannot parse DICOM ({type(e).__name__}: {e})") from e
        try:  # raw data set without preamble / File Meta (ACR-NEMA style): keep only if it looks like DICOM
            ds = pydicom.dcmread(p, force=True, stop_before_pixels=stop_before_pixels, specific_tags=specific_tags,
                                 defer_size=DEFER_SIZE)
            ok = "SOPClassUID" in ds or ("Rows" in ds and "Columns" in ds)
            ok = ok and all(e.tag.group in (0x0002, 0x0008) or e.tag.group >= 0x0008 for e in ds)
        except Exception:
            ok = False
    if not ok:
        raise NotDicomError(p, "not a DICOM file (no 'DICM' preamble and not a parseable data set)")
    return ds


def read_dicom_header(path: str | Path, specific_tags: list | None = None, pixel_budget: int | None = None) -> Dataset:
    """The header (all elements before Pixel Data) of a DICOM file, without reading pixels.

    ``specific_tags`` (keywords or tags) limits parsing to those elements, which is faster for indexing.
    ``pixel_budget`` sizes the inflate limit of a deflated file (:func:`inflated_byte_budget`; PixelBudgetError).

    Raises NotDicomError / CorruptFileError / FileNotFoundError.
    """
    return _open(path, stop_before_pixels=True, specific_tags=specific_tags, pixel_budget=pixel_budget)


# ----------------------------------------------------------------------------- header -> python values
def _jsonable(v: Any) -> Any:
    from pydicom.multival import MultiValue
    from pydicom.valuerep import PersonName

    if isinstance(v, MultiValue | list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, PersonName):
        return str(v)
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    return str(v)


def _floats(v: Any) -> list[float]:
    if v is None or v == "":
        return []
    try:
        return [float(x) for x in v] if not isinstance(v, int | float | str) else [float(v)]
    except (TypeError, ValueError):
        return []


def _fg_item(ds: Dataset, frame: int, seq: str) -> Any:
    """First item of functional-group macro ``seq`` for ``frame`` (per-frame, else shared), or None."""
    for kw, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(kw)
        if groups and len(groups) > idx and groups[idx].get(seq):
            return groups[idx].get(seq)[0]
    return None


def windows_from(ds: Dataset, frame: int = 0) -> list[Window]:
    """VOI windows in file order: top-level Window Center/Width, else Frame VOI LUT functional group.

    Invalid widths (LINEAR < 1, others <= 0) are dropped with a log message.
    """
    src = ds if "WindowCenter" in ds else _fg_item(ds, frame, "FrameVOILUTSequence")
    if src is None or "WindowCenter" not in src:
        return []
    cs, ws = _floats(src.get("WindowCenter")), _floats(src.get("WindowWidth"))
    expl = src.get("WindowCenterWidthExplanation", "")
    expl = [str(e) for e in expl] if not isinstance(expl, str) else [expl] * len(cs)
    fn = str(src.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if fn not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        logger.info("unknown VOI LUT Function %r, using LINEAR", fn)
        fn = "LINEAR"
    out = []
    for i, (c, w) in enumerate(zip(cs, ws)):
        if w < (1.0 if fn == "LINEAR" else 1e-12):
            logger.info("ignoring window %d with invalid width %s (%s)", i, w, fn)
            continue
        out.append(Window(c, w, fn, expl[i] if i < len(expl) else ""))
    return out


def voi_luts_from(ds: Dataset, path: str | None, signed: bool) -> list[VoiLut]:
    """VOI LUT Sequence items in file order."""
    seq = ds.get("VOILUTSequence")
    if not seq:
        return []
    little = (getattr(ds, "original_encoding", None) or (None, True))[1] is not False
    out = []
    for item in seq:
        first, table, bits = px._lut_item(item, path, little, signed)
        bits = bits if 8 <= bits <= 16 else int(max(8, int(table.max()).bit_length()))
        out.append(VoiLut(first, table, bits, str(item.get("LUTExplanation", ""))))
    return out


def _geometry(ds: Dataset, g: dict[str, int], frames: list[int]) -> dict[str, Any]:
    """Spacing / origin / direction for (F, H, W) stored frames ``frames`` (DICOM LPS)."""
    meta: dict[str, Any] = {}
    pm = _fg_item(ds, frames[0], "PixelMeasuresSequence")
    sp, src = [], "default"
    for kw, holder in (("PixelSpacing", ds), ("PixelSpacing", pm), ("ImagerPixelSpacing", ds),
                       ("NominalScannedPixelSpacing", ds)):
        if holder is not None and len(_floats(holder.get(kw))) == 2:
            sp, src = _floats(holder.get(kw)), kw
            break
    dy, dx = (sp if sp and min(sp) > 0 else [1.0, 1.0])
    meta["spacing_source"] = src if sp and min(sp) > 0 else "default"
    po = _fg_item(ds, frames[0], "PlaneOrientationSequence")
    iop = _floats(ds.get("ImageOrientationPatient")) or (_floats(po.get("ImageOrientationPatient")) if po else [])
    direction = None
    if len(iop) == 6:
        r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
        n = np.cross(r, c)
        if np.linalg.norm(r) > 0.5 and np.linalg.norm(c) > 0.5 and np.linalg.norm(n) > 1e-3:
            direction = np.stack([c / np.linalg.norm(c), r / np.linalg.norm(r), n / np.linalg.norm(n)], axis=1)

    def ipp(k: int) -> list[float]:
        item = _fg_item(ds, k, "PlanePositionSequence")
        v = _floats(item.get("ImagePositionPatient")) if item is not None else []
        return v or _floats(ds.get("ImagePositionPatient"))

    origin = ipp(frames[0])
    dz = _floats(ds.get("SpacingBetweenSlices")) or (_floats(pm.get("SpacingBetweenSlices")) if pm else [])
    dz = dz or _floats(ds.get("SliceThickness")) or (_floats(pm.get("SliceThickness")) if pm else [])
    slice_sp = abs(dz[0]) if dz and dz[0] else 1.0
    if len(frames) > 1 and direction is not None and len(origin) == 3:
        p1 = ipp(frames[1])
        step = float(np.dot(np.asarray(p1) - np.asarray(origin), direction[:, 2])) if len(p1) == 3 else 0.0
        if abs(step) > 1e-6:
            slice_sp = abs(step)
            if step < 0:
                direction = direction.copy()
                direction[:, 2] *= -1
    gfo = _floats(ds.get("GridFrameOffsetVector"))  # RT Dose
    if len(frames) > 1 and len(gfo) > 1 and abs(gfo[1] - gfo[0]) > 0:
        slice_sp = abs(gfo[1] - gfo[0])
    return {"dy": dy, "dx": dx, "dz": slice_sp, "direction": direction,
            "origin": tuple(origin) if len(origin) == 3 else None, "meta": meta}


def _meta(ds: Dataset, g: dict[str, int], ts: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for kw in META_KEYWORDS:
        try:
            v = ds.get(kw)
        except Exception:
            continue
        if v is not None and v != "":
            meta[kw] = _jsonable(v)
    meta.update(TransferSyntaxUID=str(ts), SourcePhotometricInterpretation=str(ds.get("PhotometricInterpretation")),
                Rows=g["rows"], Columns=g["columns"], NumberOfFrames=g["frames"], BitsAllocated=g["bits_allocated"],
                BitsStored=g["bits_stored"], PixelRepresentation=g["signed"])
    return meta


def image_from_dataset(ds: Dataset, path: str | None = None, frame: int | None = None,
                       pixel_budget: int | None = None, min_side: int | None = None) -> MedicalImage:
    """Decode a pydicom Dataset (with Pixel Data) into a MedicalImage; ``frame`` selects one frame (0-based).

    Shapes: 2D single frame or ``frame`` given -> (H, W) / (H, W, 3); multi-frame -> (F, H, W) / (F, H, W, 3).
    ``min_side``: the caller needs only this many pixels a side (a model input): a greyscale single-frame image at
    least twice as large is returned reduced by the largest power of two ``f`` that keeps ``min_side``: JPEG 2000
    decoded at a lower wavelet resolution level (:func:`medvit.io.dicom_pixels.decode_j2k_reduced`), others decoded
    in full and averaged over f x f blocks (:func:`medvit.io.dicom_pixels.box_reduce`; not with a Pixel Padding
    Value or a Modality LUT Sequence). Spacing is scaled by f, ``meta["ReducedResolutionFactor"]`` = f and
    ``meta["ReducedResolutionMethod"]`` says how; Rows/Columns in meta stay the file's.
    """
    g = px.pixel_geometry(ds, path)
    px.check_budget(g, path, pixel_budget, frame)
    ts = px.transfer_syntax(ds, path)
    reduced = px.decode_j2k_reduced(ds, path, g, frame, min_side) if min_side else None
    factor, header_g = 1, g
    if reduced is not None:
        stored, pi, factor = reduced
        g = {**g, "rows": stored.shape[1], "columns": stored.shape[2]}
    else:
        stored, pi = px.decode(ds, path, g, frame)  # (F, H, W[, 3])
        r = px.reduction_levels(g["rows"], g["columns"], int(min_side)) if min_side else 0
        if (r and stored.shape[0] == 1 and stored.ndim == 3 and stored.dtype.kind in "ui"
                and "PixelPaddingValue" not in ds and "ModalityLUTSequence" not in ds):
            factor = 1 << r  # decoded in full, but needed far smaller: block means (no realignment needed)
            stored = px.box_reduce(stored, factor)
            g = {**g, "rows": stored.shape[1], "columns": stored.shape[2]}
    frames = [frame] if frame is not None else list(range(stored.shape[0]))
    color = stored.ndim == 4
    pad = None
    if color:
        pixels = stored.astype(np.float32)
        b = g["bits_stored"] if str(ds.get("PhotometricInterpretation")) != "PALETTE COLOR" else \
            (16 if stored.dtype.itemsize > 1 else 8)
        vrange = (0.0, float(2**b - 1))
    else:
        pad = px.padding_mask(stored, ds, path)
        pixels, vrange = px.modality_lut(stored, ds, path, g, frames[0])
        if reduced is not None:
            pixels = px.realign_reduced(pixels, factor)
        b = g["bits_stored"]
    geo = _geometry(ds, g, frames)
    single = len(frames) == 1 and (frame is not None or g["frames"] == 1)
    if single:
        pixels = pixels[0]
        pad = None if pad is None else pad[0]
        axes, spacing, direction = "HW", (geo["dy"], geo["dx"]), geo["direction"]
    else:
        axes, spacing = "FHW", (geo["dz"], geo["dy"], geo["dx"])
        d = geo["direction"]
        direction = None if d is None else d[:, [2, 0, 1]]
    if color:
        axes += "C"
    meta = _meta(ds, header_g, ts)  # Rows/Columns as in the file, also when decoded at a reduced resolution
    meta.update(geo["meta"])
    if factor > 1:  # one pixel of the reduced image covers factor x factor source pixels
        geo["dy"], geo["dx"] = geo["dy"] * factor, geo["dx"] * factor
        spacing = (geo["dy"], geo["dx"])
        meta["ReducedResolutionFactor"] = factor
        meta["ReducedResolutionMethod"] = "JPEG 2000 LL band" if reduced is not None else "block mean"
    if frame is not None:
        meta["frame_index"] = frame
    if not color and not single and "WindowCenter" not in ds and ds.get("PerFrameFunctionalGroupsSequence"):
        per_frame = [[asdict(w) for w in windows_from(ds, k)] for k in frames]
        if any(pf != per_frame[0] for pf in per_frame):  # enhanced multi-frame with per-frame VOI
            meta["frame_windows"] = per_frame
    uids = {k: str(ds.get(k)) for k in UID_KEYWORDS if ds.get(k)}
    wframe = frames[0]
    return MedicalImage(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32), axes=axes, spacing=tuple(float(s) for s in spacing),
        photometric=pi, modality=str(ds.get("Modality", "") or ""), origin=geo["origin"], direction=direction,
        space="LPS", windows=[] if color else windows_from(ds, wframe),
        voi_luts=[] if color else voi_luts_from(ds, path, bool(g["signed"])), bits_stored=b, value_range=vrange,
        padding_mask=pad, uids=uids, meta=meta, path=path)


def read_dicom(path: str | Path, frame: int | None = None, pixel_budget: int | None = None,
               min_side: int | None = None) -> MedicalImage:
    """Read a DICOM file into a :class:`MedicalImage` (modality values, geometry, windows, UIDs, metadata).

    Args:
        path: the file.
        frame: decode only this frame (0-based); None = all frames.
        pixel_budget: max samples to decode (default :data:`medvit.io.dicom_pixels.DEFAULT_PIXEL_BUDGET`).
        min_side: pixels a side the caller needs; greyscale images twice as large or more come reduced by a power
            of two (JPEG 2000: decoded at a lower wavelet level; see :func:`image_from_dataset`). None = full size.

    Raises:
        NotDicomError, NoPixelDataError, UnsupportedTransferSyntaxError, UnsupportedPhotometricError,
        CorruptFileError, PixelBudgetError (all :class:`~medvit.io.errors.MedicalIOError`); FileNotFoundError;
        FrameIndexError (also an IndexError) for a frame out of range.
    """
    p = str(path)
    return decode_dataset(read_dicom_dataset(p, pixel_budget), p, frame, pixel_budget, min_side)


def read_dicom_dataset(path: str | Path, pixel_budget: int | None = None) -> Dataset:
    """The whole data set of a DICOM file (Pixel Data over :data:`DEFER_SIZE` bytes read when first used).

    For a reader that inspects the header and then decodes (:func:`decode_dataset`) without parsing the file
    twice. Raises as :func:`read_dicom_header`.
    """
    return _open(path, stop_before_pixels=False, pixel_budget=pixel_budget)


def decode_dataset(ds: Dataset, path: str | Path | None = None, frame: int | None = None,
                   pixel_budget: int | None = None, min_side: int | None = None) -> MedicalImage:
    """:func:`image_from_dataset` of a data set from :func:`read_dicom_dataset`, any unforeseen failure of a
    hostile header raised as :class:`CorruptFileError` (errors as :func:`read_dicom`)."""
    p = None if path is None else str(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return image_from_dataset(ds, p, frame, pixel_budget, min_side)
        except (MedicalIOError, MemoryError):
            raise
        except Exception as e:  # anything unforeseen in a hostile header is a corrupt file, never a crash
            raise CorruptFileError(p, f"unexpected {type(e).__name__} while reading: {e}") from e


def bundled_test_file(name: str) -> Path | None:
    """A file of pydicom's bundled test data by name (``CT_small.dcm``), or None: demos and examples use them."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    return Path(found) if isinstance(found, str) else None
