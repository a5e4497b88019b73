"""Index a folder of DICOM files (headers only): patients -> studies -> series, plus skipped files with reasons.

DICOMDIR files are read too: the instances they reference are indexed (even outside the walked folder) and the
DICOMDIR itself is listed under ``dicomdirs``, not as skipped. Headers are read with ``stop_before_pixels`` and a
fixed tag list; large trees use a process pool.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvit.io.errors import MedicalIOError, printable
from medvit.io.text import csv_row

logger = logging.getLogger(__name__)

#: header keywords read per file
INDEX_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName",
    "StudyDate", "StudyDescription", "AccessionNumber", "SeriesNumber", "SeriesDescription", "InstanceNumber",
    "Modality", "BodyPartExamined", "ViewPosition", "Laterality", "ImageLaterality", "Rows", "Columns",
    "NumberOfFrames", "PhotometricInterpretation", "BitsStored",
]
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: columns of the per-series table (CSV order)
SERIES_COLUMNS = [
    "patient_id", "patient_name", "study_uid", "study_date", "study_description", "accession_number", "series_uid",
    "series_number", "series_description", "modality", "body_part", "view_positions", "laterality",
    "n_instances", "n_frames", "sizes", "photometric", "transfer_syntaxes", "sop_classes", "bytes", "first_file",
]


@dataclass
class IndexResult:
    """Result of :func:`index_tree`: per-file rows, per-series rows and what was skipped (with reasons)."""

    root: str
    files: list[dict[str, Any]] = field(default_factory=list)  # one row per DICOM instance
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    dicomdirs: list[str] = field(default_factory=list)  # DICOMDIR files found and followed

    @property
    def series(self) -> list[dict[str, Any]]:
        """One row per series (columns :data:`SERIES_COLUMNS`), sorted by patient, study date, series number."""
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for r in self.files:
            groups[(r["patient_id"], r["study_uid"], r["series_uid"])].append(r)
        out = []
        for (pid, study, series), rows in groups.items():
            f = rows[0]

            def join(key: str, rows: list[dict] = rows) -> str:
                return "|".join(sorted({str(r[key]) for r in rows if r.get(key) not in (None, "")}))

            out.append({
                "patient_id": pid, "patient_name": f["patient_name"], "study_uid": study,
                "study_date": f["study_date"], "study_description": f["study_description"],
                "accession_number": f["accession_number"], "series_uid": series, "series_number": f["series_number"],
                "series_description": f["series_description"], "modality": join("modality"),
                "body_part": join("body_part"), "view_positions": join("view_position"),
                "laterality": join("laterality"), "n_instances": len(rows),
                "n_frames": sum(int(r["frames"] or 0) for r in rows), "sizes": join("size"),
                "photometric": join("photometric"), "transfer_syntaxes": join("transfer_syntax"),
                "sop_classes": join("sop_class"), "bytes": sum(int(r["bytes"]) for r in rows),
                "first_file": sorted(r["path"] for r in rows)[0],
            })
        return sorted(out, key=lambda r: (r["patient_id"], r["study_date"], r["study_uid"],
                                          _num(r["series_number"]), r["series_uid"]))

    def patients(self) -> list[dict[str, Any]]:
        """Nested view: ``[{patient_id, patient_name, studies: [{study_uid, ..., series: [...]}]}]``."""
        tree: dict[str, dict] = {}
        for s in self.series:
            p = tree.setdefault(s["patient_id"], {"patient_id": s["patient_id"], "patient_name": s["patient_name"],
                                                  "studies": {}})
            st = p["studies"].setdefault(s["study_uid"], {
                "study_uid": s["study_uid"], "study_date": s["study_date"],
                "study_description": s["study_description"], "accession_number": s["accession_number"],
                "series": []})
            st["series"].append({k: v for k, v in s.items() if k in SERIES_COLUMNS[6:]})
        return [dict(p, studies=list(p["studies"].values())) for p in tree.values()]

    def summary(self) -> dict[str, int]:
        """Counts: files, patients, studies, series, skipped, dicomdirs."""
        return {"files": len(self.files), "patients": len({r["patient_id"] for r in self.files}),
                "studies": len({r["study_uid"] for r in self.files}),
                "series": len({(r["study_uid"], r["series_uid"]) for r in self.files}),
                "skipped": len(self.skipped), "dicomdirs": len(self.dicomdirs)}

    def write(self, out: str | Path) -> list[Path]:
        """Write ``.json`` (summary, patients tree, series, skipped) or ``.csv`` (series table + a sibling
        ``<stem>.skipped.csv``). Returns the written paths."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".json":
            doc = {"root": self.root, "summary": self.summary(), "patients": self.patients(),
                   "series": self.series, "skipped": self.skipped, "dicomdirs": self.dicomdirs}
            out.write_text(json.dumps(printable(doc), indent=2, default=str), encoding="utf-8")
            return [out]
        if out.suffix.lower() != ".csv":
            raise ValueError(f"index output {out}: use a .csv or .json file name")
        with out.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=SERIES_COLUMNS)
            w.writeheader()
            w.writerows(csv_row(r) for r in self.series)  # escaped, formula-safe cells (SECURITY.md §7)
        sk = out.with_name(out.stem + ".skipped.csv")
        with sk.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["path", "reason"])
            w.writeheader()
            w.writerows(csv_row(r) for r in self.skipped)
        return [out, sk]


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("inf")


_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UI", "UT"}


def _values(ds: Any) -> dict[str, str]:
    """Top-level elements of ``ds`` as keyword -> string.

    Pure-ASCII text values are decoded straight from the raw bytes (this skips pydicom's per-VR conversion, the
    bulk of header-reading time); anything else (non-ASCII text, binary VRs, garbled values) goes through pydicom.
    """
    from pydicom.datadict import keyword_for_tag
    from pydicom.multival import MultiValue

    out: dict[str, str] = {}
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        kw = keyword_for_tag(tag)
        val = getattr(raw, "value", None)
        vr = getattr(raw, "VR", None)
        if isinstance(val, bytes) and vr in _TEXT_VRS and val.isascii():
            text = val.decode("ascii").strip(" \0")
            out[kw] = "\\".join(part.strip(" \0") for part in text.split("\\")) if "\\" in text else text
            continue
        try:
            elem = ds[tag]
            v = elem.value
        except Exception:  # a garbled value: leave it out, the row reports it as empty
            continue
        if v is None or elem.VR == "SQ":
            continue
        if isinstance(v, bytes):  # VR UN (or OB/OW) left undecoded: text per the dictionary VR, never b'...'
            v = _bytes_value(tag, v, ds)
        out[kw] = "\\".join(str(x) for x in v) if isinstance(v, MultiValue | list | tuple) else str(v)
    return out


def _bytes_value(tag: Any, raw: bytes, ds: Any) -> str:
    """Text of a value pydicom left as bytes (VR UN, PS3.5 6.2.2): decoded with the data set's Specific
    Character Set when the data dictionary gives the tag a text VR, else hexadecimal."""
    from pydicom.charset import decode_bytes
    from pydicom.datadict import dictionary_VR

    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = "UN"
    if vr in _TEXT_VRS:
        charset = ds.get("SpecificCharacterSet") or "ISO_IR 6"
        try:
            text = decode_bytes(raw, [charset] if isinstance(charset, str) else list(charset), set())
        except Exception:
            text = raw.decode("latin-1")
        return "\\".join(part.strip(" \0") for part in text.split("\\"))
    return raw.hex()


def header_row(path: str | Path) -> dict[str, Any]:
    """Header facts of one file (a row of :attr:`IndexResult.files`), or ``{"dicomdir": [...]}`` for a DICOMDIR.

    Raises MedicalIOError (not DICOM, corrupt) or FileNotFoundError.
    """
    from medvit.io.dicom import _open

    p = Path(path)
    ds = _open(p, stop_before_pixels=True, specific_tags=INDEX_TAGS)
    v = _values(ds)
    fm = getattr(ds, "file_meta", None)
    sop_class = v.get("SOPClassUID") or (str(fm.get("MediaStorageSOPClassUID", "")) if fm else "")
    if sop_class == DICOMDIR_CLASS:
        found, missing = _dicomdir_files(p)
        return {"dicomdir": found, "missing": missing}
    study, series = v.get("StudyInstanceUID", ""), v.get("SeriesInstanceUID", "")
    if not study or not series:
        raise MedicalIOError(p, "DICOM file without Study/Series Instance UID; cannot be placed in a series")
    rows, cols = v.get("Rows", ""), v.get("Columns", "")
    ts = str(fm.get("TransferSyntaxUID", "")) if fm else ""
    return {
        "path": str(p), "patient_id": v.get("PatientID", ""), "patient_name": v.get("PatientName", ""),
        "study_uid": study, "study_date": v.get("StudyDate", ""), "study_description": v.get("StudyDescription", ""),
        "accession_number": v.get("AccessionNumber", ""), "series_uid": series,
        "series_number": v.get("SeriesNumber", ""), "series_description": v.get("SeriesDescription", ""),
        "sop_instance_uid": v.get("SOPInstanceUID", ""), "sop_class": _uid_name(sop_class),
        "instance_number": v.get("InstanceNumber", ""), "modality": v.get("Modality", ""),
        "body_part": v.get("BodyPartExamined", ""), "view_position": v.get("ViewPosition", ""),
        "laterality": v.get("ImageLaterality") or v.get("Laterality", ""),
        "size": f"{rows}x{cols}" if rows and cols else "", "frames": _frames(v) if rows else 0,
        "photometric": v.get("PhotometricInterpretation", ""), "transfer_syntax": _uid_name(ts),
        "bytes": p.stat().st_size,
    }


@functools.lru_cache(maxsize=256)
def _uid_name(uid: str) -> str:
    """Registered name of a UID (transfer syntax, SOP class) or the UID itself."""
    from pydicom.uid import UID

    try:
        return UID(uid).name if uid else ""
    except Exception:
        return uid


def _frames(v: dict[str, str]) -> int:
    """Number of Frames as int (1 when absent, 0 when garbled)."""
    try:
        return int(v.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 0


def _dicomdir_files(path: Path) -> tuple[list[str], list[str]]:
    """(existing, missing) paths of the instances a DICOMDIR references.

    File IDs (PS3.10 8.5: upper-case components) are matched case-insensitively against the folder tree, so a
    disc copied with lower-cased names (``pt000000/st000000/...``) still resolves; a referenced file that is
    not there is returned as missing.
    """
    import pydicom
    from pydicom.fileset import FileSet

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            FileSet(ds)  # validates the record hierarchy (its own list drops files whose name case differs)
        ids = [r.ReferencedFileID for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r]
    except Exception as e:
        raise MedicalIOError(path, f"unreadable DICOMDIR ({type(e).__name__}: {e})") from e
    base = Path(path).parent
    found, missing = [], []
    for fid in ids:
        parts = [str(fid)] if isinstance(fid, str) else [str(x) for x in fid]
        hit = _resolve_case_insensitive(base, parts)
        if hit is not None:
            found.append(str(hit))
        else:
            missing.append(str(base.joinpath(*parts)))
    return found, missing


def _resolve_case_insensitive(base: Path, parts: list[str]) -> Path | None:
    """``base/parts...`` where each component matches an existing entry ignoring case (exact match first)."""
    cur = base
    for part in parts:
        if (cur / part).exists():
            cur = cur / part
            continue
        try:
            names = {n.lower(): n for n in os.listdir(cur)}
        except OSError:
            return None
        if part.lower() not in names:
            return None
        cur = cur / names[part.lower()]
    return cur if cur.is_file() else None


def _safe_row(path: str) -> tuple[str, dict[str, Any] | None, str | None]:
    """Worker: (path, row, None) or (path, None, reason); never raises."""
    try:
        return path, header_row(path), None
    except MedicalIOError as e:
        return path, None, f"{type(e).__name__}: {e.reason}"
    except Exception as e:  # a hostile file must not stop the walk
        return path, None, f"{type(e).__name__}: {e}"


def index_tree(root: str | Path, workers: int | None = None, min_parallel: int = 256) -> IndexResult:
    """Walk ``root`` (a folder, a DICOMDIR or one file), read every header, return an :class:`IndexResult`.

    ``workers``: processes for header reading (default 1: on the shared 2-core test machine a 2-process pool
    was slower than one process, see benchmarks/results/io_benchmark.md); a pool is used only for at least
    ``min_parallel`` files. Hidden files and folders are skipped silently.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"index: {root} does not exist")
    if root.is_file():
        todo = [str(root)]
    else:
        todo = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            todo += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
    res = IndexResult(str(root))
    seen: set[str] = set()
    workers = workers if workers is not None else 1
    while todo:
        batch = [p for p in dict.fromkeys(todo) if os.path.realpath(p) not in seen]
        seen.update(os.path.realpath(p) for p in batch)
        todo = []
        if workers > 1 and len(batch) >= min_parallel:
            import multiprocessing as mp

            # fork: workers inherit the imported modules (spawn would re-import pydicom in each, ~1 s)
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(workers) as pool:
                results = list(pool.imap(_safe_row, batch, chunksize=64))
        else:
            results = [_safe_row(p) for p in batch]
        for path, row, reason in results:
            if row is None:
                res.skipped.append({"path": path, "reason": reason or "unknown"})
            elif "dicomdir" in row:
                res.dicomdirs.append(path)
                todo += row["dicomdir"]
                res.skipped += [{"path": m, "reason": f"referenced by DICOMDIR {path} but missing"}
                                for m in row["missing"]]
            else:
                res.files.append(row)
    logger.debug("indexed %s: %s", root, res.summary())  # the CLI prints the summary once
    return res
