"""Clinician feedback on findings, stored locally as one JSON file per study (no Streamlit here).

Layout: ``<results_dir>/feedback/<study key>.json`` holding::

    {"format": "medvit-viewer-feedback/1", "study": "<StudyInstanceUID or file key>",
     "entries": [{"saved_at": ISO-8601 UTC, "reader": str, "series": uid, "instance": uid, "frame": int,
                  "model": {"name", "version", "sha256", "precision" (the precision the findings were computed at)},
                  "findings": [{"finding", "probability", "threshold", "positive", "verdict", "comment"}]}]}

An entry is identified by (instance, frame, model sha256, reader): saving again replaces it, so the file holds
each reader's latest opinion per image and model. No patient name, ID or birth date is written. Writes are atomic
(``medvit.io.safe_write.atomic_write``) so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medvit.io.jsonfile import read_json
from medvit.io.safe_write import atomic_write

FORMAT = "medvit-viewer-feedback/1"
VERDICTS = ("agree", "disagree")


def study_file(results_dir: str | Path, study_key: str) -> Path:
    """The feedback file of a study; ``study_key`` is made filesystem-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study_key).strip("._") or "study"
    return Path(results_dir) / "feedback" / f"{safe[:120]}.json"


def load(path: str | Path) -> dict[str, Any]:
    """The feedback document at ``path`` (an empty one when the file does not exist yet)."""
    p = Path(path)
    if not p.is_file():
        return {"format": FORMAT, "study": "", "entries": []}
    try:
        doc = read_json(p, format_id=FORMAT, nonfinite_ok=("entries",))  # a NaN probability saved by the viewer
        # (json.dumps writes NaN) must not lock a reader out of their earlier verdicts
    except ValueError as e:
        raise ValueError(f"feedback file {e}; move it aside to start a new one") from None
    if not isinstance(doc.get("entries"), list):
        raise ValueError(f"{p}: not a {FORMAT} document (no 'entries' list); move it aside to start a new one")
    return doc


def _entry_key(e: dict[str, Any]) -> tuple[Any, ...]:
    return e.get("instance"), e.get("frame"), (e.get("model") or {}).get("sha256"), e.get("reader")


def save(results_dir: str | Path, study_key: str, entry: dict[str, Any]) -> Path:
    """Add or replace ``entry`` in the study's feedback file; returns the file path.

    ``entry`` needs ``instance``, ``frame``, ``model`` and ``findings``; each finding's ``verdict`` must be one of
    :data:`VERDICTS` or ``None`` (no opinion). ``saved_at`` is set here.
    """
    for key in ("instance", "frame", "model", "findings"):
        if key not in entry:
            raise KeyError(f"feedback entry lacks {key!r}")
    for f in entry["findings"]:
        if f.get("verdict") not in (*VERDICTS, None):
            raise ValueError(f"finding {f.get('finding')!r}: verdict must be one of {VERDICTS} or None, "
                             f"got {f.get('verdict')!r}")
    path = study_file(results_dir, study_key)
    doc = load(path)
    doc["study"] = study_key
    new = dict(entry, saved_at=datetime.now(UTC).isoformat(timespec="seconds"))
    new.setdefault("reader", "")
    doc["entries"] = [e for e in doc["entries"] if _entry_key(e) != _entry_key(new)] + [new]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(doc, indent=2))
    return path
