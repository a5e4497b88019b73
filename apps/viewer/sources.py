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
    duplicates: int = 0  # files whose SOP Instance UID another file of the series already has

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


def _instance_order(row: dict[str, Any]) -> tuple[float, str]:
    try:
        return float(row.get("instance_number") or 0), row["path"]
    except (TypeError, ValueError):
        return 0.0, row["path"]


def catalog(root: str | Path, ignore_results: bool = True) -> Catalog:
    """Catalog every image under ``root`` (recursively); unreadable files end up in ``skipped``.

    DICOM headers are indexed by :func:`medvit.io.index.index_tree` (which also follows DICOMDIRs); files it skips
    that carry an image suffix (:data:`IMAGE_SUFFIXES`) become one-file series. ``ignore_results`` drops, silently,
    the tables and notes that sit beside studies (:data:`IGNORED_SUFFIXES`); uploads are catalogued with it off,
    so every uploaded file is either shown or reported.
    """
    from medvit.io.index import index_tree

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    idx = index_tree(root)
    cat = Catalog(str(root))
    studies: dict[str, Study] = {}
    for sk in idx.skipped:
        p = Path(sk["path"])
        name = p.name.lower()
        if name.endswith(IMAGE_SUFFIXES):
            studies[str(p)] = Study(str(p), "", _rel(p, root), "", "",  # the file is its own study
                                    [Series(str(p), str(p), "", p.name, "", [str(p)], 0)])
        elif not (ignore_results and name.endswith(IGNORED_SUFFIXES)):
            cat.skipped.append((_rel(p, root), sk["reason"]))
    by_series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in idx.files:
        if not row.get("size"):  # SR, RT plan, presentation state...: DICOM without pixels
            kind = row.get("sop_class") or "unknown SOP class"
            cat.skipped.append((_rel(Path(row["path"]), root), f"no image in this DICOM file ({kind})"))
            continue
        by_series.setdefault((row["study_uid"], row["series_uid"]), []).append(row)
    for (study_uid, series_uid), rows in by_series.items():
        rows.sort(key=_instance_order)
        f = rows[0]
        study = studies.setdefault(study_uid, Study(study_uid, f["study_date"], f["study_description"],
                                                    f["patient_name"], f["patient_id"]))
        study.series.append(Series(series_uid, study_uid, f["modality"], f["series_description"],
                                   f["series_number"], [r["path"] for r in rows],
                                   sum(int(r["frames"] or 1) for r in rows),
                                   len(rows) - len({r["sop_instance_uid"] for r in rows})))
    for study in studies.values():
        study.series.sort(key=lambda s: (int(s.number) if s.number.isdigit() else 1 << 30, s.description))
    cat.studies = sorted(studies.values(), key=lambda s: (s.date, s.key), reverse=True)
    return cat


def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


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
