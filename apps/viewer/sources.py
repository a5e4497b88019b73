"""Where images come from: a server-side folder or the user's uploads (files or ZIP), as a study/series catalog.

No Streamlit here. Uploads are written into a per-session folder (ZIP members extracted with path and size
checks), then catalogued like any folder. DICOM files are grouped by Study/Series Instance UID (header only,
through medvit.io); NIfTI/PNG/JPEG/.npy files are one series each. Files that are not images are listed with the
reason, never fatal.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

logger = logging.getLogger(__name__)

#: suffixes read as non-DICOM images (one series per file)
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")
#: files never offered (results the viewer or the batch job write next to studies)
IGNORED_SUFFIXES = (".json", ".jsonl", ".csv", ".md", ".txt", ".yaml", ".yml", ".log", ".tmp")
MAX_ZIP_BYTES = 4 << 30  # refuse archives that would expand beyond 4 GiB
MAX_ZIP_MEMBERS = 20_000


@dataclass
class Series:
    """One series: the files to page through (sorted by Instance Number, then name)."""

    key: str  # SeriesInstanceUID, or the file path for non-DICOM
    study_key: str  # StudyInstanceUID, or the file path for non-DICOM
    modality: str
    description: str  # Series Description (or the file name)
    number: str  # Series Number ("" when absent)
    files: list[str] = field(default_factory=list)
    frames: int = 0  # total frames over the files (from headers; 0 = unknown, e.g. NIfTI before reading)

    @property
    def label(self) -> str:
        n = len(self.files)
        count = f"{n} image{'s' * (n != 1)}" + (f", {self.frames} frames" if self.frames > n else "")
        num = f"#{self.number} " if self.number else ""
        return f"{num}{self.description or '(no description)'} · {self.modality or '?'} · {count}"


@dataclass
class Study:
    """A study and its series, with the fields the browser shows (patient fields are redacted on screen)."""

    key: str
    date: str
    description: str
    patient_name: str
    patient_id: str
    series: list[Series] = field(default_factory=list)

    def label(self, reveal: bool) -> str:
        from apps.viewer.redact import shown

        who = shown("PatientName", self.patient_name, reveal) or shown("PatientID", self.patient_id, reveal)
        date = f"{self.date[:4]}-{self.date[4:6]}-{self.date[6:8]}" if len(self.date) == 8 else self.date
        mods = "/".join(sorted({s.modality for s in self.series if s.modality}))
        parts = [p for p in (date, self.description, mods, who) if p]
        return " · ".join(parts) + f" · {len(self.series)} series"


@dataclass
class Catalog:
    """Studies found under a root, plus skipped files with their reason."""

    root: str
    studies: list[Study] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    def find_series(self, key: str) -> Series | None:
        return next((s for st in self.studies for s in st.series if s.key == key), None)


def _sort_key(inst: dict[str, Any]) -> tuple[int, str]:
    try:
        return int(inst.get("InstanceNumber") or 0), inst["path"]
    except (TypeError, ValueError):
        return 0, inst["path"]


def catalog(root: str | Path, ignore_results: bool = True) -> Catalog:
    """Catalog every image under ``root`` (recursively); unreadable files end up in ``skipped``.

    ``ignore_results`` skips, silently, the tables and notes that sit beside studies (:data:`IGNORED_SUFFIXES`);
    uploads are catalogued with it off, so every uploaded file is either shown or reported.
    """
    from medvit.io import MedicalIOError

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    cat = Catalog(str(root))
    studies: dict[str, Study] = {}
    series: dict[str, Series] = {}
    members: dict[str, list[dict[str, Any]]] = {}
    for p in sorted(x for x in root.rglob("*") if x.is_file()):
        rel = str(p.relative_to(root))
        name = p.name.lower()
        if any(q.startswith(".") for q in p.relative_to(root).parts) or (
                ignore_results and name.endswith(IGNORED_SUFFIXES)):
            continue
        if name.endswith(IMAGE_SUFFIXES):
            st_ = studies.setdefault(str(p), Study(str(p), "", "", "", ""))
            s = Series(str(p), str(p), "", p.name, "", [str(p)], 0)
            st_.series.append(s)
            continue
        try:
            h = _header(p)
        except MedicalIOError as e:
            cat.skipped.append((rel, e.reason))
            continue
        if not h.get("SeriesInstanceUID"):
            cat.skipped.append((rel, "DICOM without pixel data or Series Instance UID (not an image)"))
            continue
        skey, ykey = h.get("StudyInstanceUID") or "unknown-study", h["SeriesInstanceUID"]
        if skey not in studies:
            studies[skey] = Study(skey, str(h.get("StudyDate", "")), str(h.get("StudyDescription", "")),
                                  str(h.get("PatientName", "")), str(h.get("PatientID", "")))
        if ykey not in series:
            series[ykey] = Series(ykey, skey, str(h.get("Modality", "")), str(h.get("SeriesDescription", "")),
                                  str(h.get("SeriesNumber", "") or ""))
            studies[skey].series.append(series[ykey])
        members.setdefault(ykey, []).append(dict(h, path=str(p)))
    for ykey, insts in members.items():
        insts.sort(key=_sort_key)
        series[ykey].files = [i["path"] for i in insts]
        series[ykey].frames = sum(int(i.get("NumberOfFrames") or 1) for i in insts)
    for st_ in studies.values():
        st_.series.sort(key=lambda s: (int(s.number) if s.number.isdigit() else 1 << 30, s.description))
    cat.studies = sorted(studies.values(), key=lambda s: (s.date, s.key), reverse=True)
    return cat


# --- TEMPORARY ADAPTER (viewer): delete when medvit.io's study index lands and call it instead. -------------
_HEADER_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber",
                "InstanceNumber", "NumberOfFrames", "StudyDate", "StudyDescription", "PatientName", "PatientID")


def _header(p: Path) -> dict[str, Any]:
    """Header fields of a DICOM file; raises medvit.io's typed errors for non-DICOM / corrupt files."""
    from medvit.io import read_dicom_header

    ds = read_dicom_header(p)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if ds.get("Rows") is None:
            return {"SeriesInstanceUID": ""}
    return {k: str(ds.get(k, "") or "") for k in _HEADER_KEYS}
# --- end of temporary adapter -------------------------------------------------------------------------------


def save_uploads(files: list[tuple[str, bytes]], dest: str | Path) -> list[tuple[str, str]]:
    """Write uploaded ``(name, content)`` pairs into ``dest``; ZIPs are extracted into a folder of their name.

    Returns problems as ``(name, reason)`` (e.g. a broken ZIP); they do not stop the other files.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    problems: list[tuple[str, str]] = []
    for name, content in files:
        safe = _safe_name(name)
        if safe.lower().endswith(".zip"):
            try:
                extract_zip(content, dest / safe[:-4])
            except (zipfile.BadZipFile, ValueError, OSError) as e:
                problems.append((name, f"cannot open the ZIP archive: {e}"))
            continue
        (dest / safe).write_bytes(content)
    return problems


def _safe_name(name: str) -> str:
    base = PurePosixPath(name.replace("\\", "/")).name
    return base if base not in ("", ".", "..") else "upload"


def extract_zip(content: bytes, dest: Path) -> None:
    """Extract a ZIP given as bytes into ``dest``, refusing absolute/parent paths and zip bombs."""
    import io

    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > MAX_ZIP_MEMBERS:
            raise ValueError(f"{len(infos)} files in the archive; the viewer opens at most {MAX_ZIP_MEMBERS}")
        total = sum(i.file_size for i in infos)
        if total > MAX_ZIP_BYTES:
            raise ValueError(f"archive expands to {total / 2**30:.1f} GiB; the limit is {MAX_ZIP_BYTES / 2**30:.0f}")
        for info in infos:
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if not parts or info.filename.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                raise ValueError(f"unsafe path in archive: {info.filename!r}")
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                out.write(src.read())
