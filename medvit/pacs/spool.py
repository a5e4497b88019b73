"""The spool: retrieved or received instances on disk, one file per instance, written atomically.

Layout ``ROOT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. A file appears only complete
(temporary ``.<name>.tmp<pid>`` + fsync + ``os.replace``), so whatever is in the spool is whole and a
killed retrieve or listener resumes by skipping what is there. UIDs become folder and file names only after
they pass :func:`check_uid` (PS3.5 §9.1, :func:`medvit.io.safe_write.is_valid_uid`), so nothing a peer sends can
name a path outside the spool.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def check_uid(value: Any, what: str) -> str:
    """``value`` as a str if it is a valid DICOM UID, else ``ValueError`` naming ``what`` and the value."""
    from medvit.io.safe_write import is_valid_uid

    s = str(value if value is not None else "").strip()
    if not is_valid_uid(s):
        raise ValueError(f"{what} {s[:80]!r} is not a valid DICOM UID (digits and dots, at most 64 characters)")
    return s


class Spool:
    """A folder of instances by study / series / SOP Instance UID."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, study: str, series: str, sop: str) -> Path:
        """Where the instance lives (UIDs are checked; ``ValueError`` on a bad one)."""
        return (self.root / check_uid(study, "StudyInstanceUID") / check_uid(series, "SeriesInstanceUID")
                / f"{check_uid(sop, 'SOPInstanceUID')}.dcm")

    def has(self, study: str, series: str, sop: str) -> bool:
        return self.path(study, series, sop).is_file()

    def instances(self, study: str) -> set[str]:
        """SOP Instance UIDs of ``study`` already in the spool."""
        d = self.root / check_uid(study, "StudyInstanceUID")
        if not d.is_dir():
            return set()
        return {f.stem for f in d.glob("*/*.dcm")}

    def studies(self) -> list[str]:
        """Study folders present (sorted)."""
        return sorted(d.name for d in self.root.iterdir() if d.is_dir() and _UID.match(d.name))

    def write_bytes(self, study: str, series: str, sop: str, data: bytes | Iterator[bytes]) -> Path:
        """Store a Part 10 file given as bytes (or chunks) atomically; returns its path."""
        p = self.path(study, series, sop)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            if isinstance(data, bytes | bytearray | memoryview):
                f.write(data)
            else:
                for chunk in data:
                    f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        return p

    def write_dataset(self, ds: Any) -> Path:
        """Store a pydicom dataset (with file meta) atomically under its own UIDs; returns its path."""
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return self.write_bytes(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, buf.getvalue())

    def remove_temporaries(self) -> int:
        """Delete ``.*.tmpPID`` files a killed writer left; returns how many."""
        n = 0
        for f in self.root.rglob(".*.tmp*"):
            if f.is_file() and re.match(r"^\..+\.tmp\d+$", f.name):
                f.unlink()
                n += 1
        return n
