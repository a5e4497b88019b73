"""One result per SOP instance and per file: duplicates found while walking and decoding a run's inputs.

Two kinds (PS3.3 C.12.1.1.1: a SOP Instance UID identifies one instance): a file reached twice (a symbolic
link to a file already walked, or a hard link) is counted once; a second file with an already-seen SOP
Instance UID is not predicted again: a copy with the same image is *skipped*, one with a different image is
an *error* (two different images claim one identity; the first in walk order keeps the result).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

DUPLICATE_STAGE = "duplicate"


def image_digest(x: np.ndarray) -> str:
    """SHA-256 of a model input (C, H, W) float32: the image identity compared when two files claim one SOP
    Instance UID."""
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def _file_id(p: Path) -> tuple[int, int] | str:
    try:
        st = os.stat(p)
        return st.st_dev, st.st_ino
    except OSError:
        return os.path.realpath(p)


class DuplicateTracker:
    """Remembers files (by device + inode) and SOP Instance UIDs seen in this run and in resumed ones."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.files: dict[Any, str] = {}  # file identity -> first record key
        self.sops: dict[str, tuple[str, str | None]] = {}  # SOP Instance UID -> (record key, image digest)

    def load(self, records: Iterable[dict[str, Any]]) -> None:
        """Remember the records of an earlier (resumed) run."""
        for rec in records:
            p = self.root / rec["file"] if self.root.is_dir() else self.root
            self.files.setdefault(_file_id(p), rec["file"])
            if rec.get("status") == "predicted" and rec.get("sop_instance_uid"):
                self.sops.setdefault(rec["sop_instance_uid"], (rec["file"], None))

    def same_file(self, p: Path, rel: str) -> str | None:
        """Key of an already-walked file that ``p`` is (through a link), else None (and ``p`` is remembered)."""
        fid = _file_id(p)
        first = self.files.get(fid)
        if first is None or first == rel:
            self.files[fid] = rel
            return None
        return first

    def same_sop(self, rel: str, sop: str, x: np.ndarray | None, digest: str | None = None) -> tuple[str, str] | None:
        """``(status, reason)`` when ``sop`` was already predicted from another file, else None (remembered).

        The image identity is the SHA-256 of the model input ``x``, or ``digest`` when given (an engine that
        computed it with :func:`image_digest` where it decoded and did not ship ``x``).
        """
        if digest is None and x is not None:
            digest = image_digest(x)
        first = self.sops.get(sop)
        if first is None or first[0] == rel:
            self.sops[sop] = (rel, digest)
            return None
        other, other_digest = first
        if other_digest is None:
            return "skipped", f"duplicate SOP Instance UID of {other} (predicted by an earlier run)"
        if other_digest == digest:
            return "skipped", f"duplicate SOP Instance UID of {other} (same image; one result per instance)"
        return "error", (f"duplicate SOP Instance UID of {other} with a different image: two images claim one "
                         "identity; only the first was predicted")
