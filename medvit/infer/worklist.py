"""The reading worklist: one row per study from the result tables `medvit infer` wrote (no recomputation).

:func:`load_worklist` reads ``OUTPUT/predictions.jsonl`` (one record per predicted image: probabilities, the
model's thresholds, positive findings, OOD flag, study attributes) and folds it per Study Instance UID: a
finding's study probability is its highest image probability, a study is positive for a finding when any image
is (p ≥ that label's threshold), and OOD-flagged when any image is. :func:`reading_status` reads what readers
did (``OUTPUT/reading/read.json`` marks and the viewer's ``OUTPUT/feedback/*.json``): ``unread`` / ``read`` /
``feedback``. :func:`select` sorts and filters, e.g. "Pneumothorax ≥ threshold first, then by probability".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STATUSES = ("unread", "read", "feedback")
READ_MARKS = Path("reading") / "read.json"
SORT_KEYS = ("finding", "top", "date", "ood")


@dataclass
class WorklistRow:
    """One study of the worklist."""

    study_uid: str
    patient_id: str
    study_date: str  # YYYYMMDD as in the header ("" when absent)
    accession: str
    modalities: list[str]
    n_images: int
    probabilities: dict[str, float]  # finding -> highest image probability in the study
    thresholds: dict[str, float]  # finding -> operating threshold of the model
    positive: list[str]  # findings positive on any image, most probable first
    ood: bool | None  # any image flagged out-of-distribution (None: the model has no OOD reference)
    model: str  # model name and version
    files: list[str] = field(default_factory=list)  # image files (relative to the input root), in table order
    status: str = "unread"

    def top_findings(self, n: int = 3) -> list[tuple[str, float]]:
        """The ``n`` positive findings with the highest probabilities."""
        return [(k, self.probabilities[k]) for k in self.positive[:n]]

    def to_row(self, n_top: int = 3) -> dict[str, Any]:
        """Flat dict for a table (probabilities rounded to 3 decimals)."""
        top = ", ".join(f"{k} {p:.2f}" for k, p in self.top_findings(n_top))
        return {"status": self.status, "date": _date(self.study_date), "modality": "/".join(self.modalities),
                "accession": self.accession, "top findings": top or "none positive",
                "OOD": "" if self.ood is None else ("FLAG" if self.ood else "no"), "images": self.n_images,
                "study": self.study_uid}


def _date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def load_worklist(results_dir: str | Path) -> list[WorklistRow]:
    """Studies of ``results_dir/predictions.jsonl``, in table order (sorted by first file).

    Raises FileNotFoundError naming the file when it is missing, ValueError naming file and line for a
    line that is not a prediction record.
    """
    path = Path(results_dir) / "predictions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `medvit infer -o {results_dir}` first")
    studies: dict[str, WorklistRow] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                probs = {str(k): float(v) for k, v in rec["probabilities"].items()}
                thr = {str(k): float(v) for k, v in rec["thresholds"].items()}
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{path} line {n}: not a medvit prediction record ({type(e).__name__}: {e})") \
                    from None
            uid = str(rec.get("study_instance_uid") or "") or f"file:{rec.get('file', n)}"
            row = studies.get(uid)
            if row is None:
                model = rec.get("model") or {}
                row = studies[uid] = WorklistRow(
                    uid, str(rec.get("patient_id") or ""), str(rec.get("study_date") or ""),
                    str(rec.get("accession_number") or ""), [], 0, {}, thr, [], None,
                    f"{model.get('name', '')} {model.get('version', '')}".strip())
            row.n_images += 1
            row.files.append(str(rec.get("file", "")))
            mod = str(rec.get("modality") or "")
            if mod and mod not in row.modalities:
                row.modalities.append(mod)
            for k, p in probs.items():
                row.probabilities[k] = max(p, row.probabilities.get(k, 0.0))
            row.thresholds.update({k: v for k, v in thr.items() if k not in row.thresholds})
            flag = rec.get("ood_flag")
            if flag is not None and flag != "":
                row.ood = bool(row.ood) or bool(flag)
    for row in studies.values():
        row.positive = sorted((k for k, p in row.probabilities.items() if p >= row.thresholds.get(k, 0.5)),
                              key=lambda k: -row.probabilities[k])
    return list(studies.values())


def _safe(key: str) -> str:
    import re

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "study"
    return safe[:120]


def _read_marks(p: Path) -> tuple[dict[str, Any], bool]:
    """``reading/read.json`` as ``({"format": ..., "read": {study key: mark}}, usable)``.

    A missing file gives an empty document (usable). A file that cannot be read, is not JSON, or is not an object
    with a ``read`` object (hand-edited, truncated, hostile) gives an empty document and ``usable=False``, with a
    warning naming the file; :func:`mark_read` then keeps that file as a backup instead of overwriting it.
    """
    empty: dict[str, Any] = {"format": "medvit-reading/1", "read": {}}
    if not p.is_file():
        return empty, True
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        logger.warning("%s: unreadable read marks (%s); treated as no marks", p, e)
        return empty, False
    if not isinstance(doc, dict) or not isinstance(doc.get("read", {}), dict):
        logger.warning("%s: unreadable read marks (expected a JSON object with a 'read' object, got %s); "
                       "treated as no marks", p, type(doc.get("read") if isinstance(doc, dict) else doc).__name__)
        return empty, False
    doc.setdefault("read", {})
    return doc, True


def _backup_unreadable(p: Path) -> Path:
    """Move an unusable ``read.json`` aside to ``read.json.unreadable[-N]`` (first free name); returns it."""
    n, dest = 0, p.with_name(p.name + ".unreadable")
    while dest.exists():
        n += 1
        dest = p.with_name(f"{p.name}.unreadable-{n}")
    p.replace(dest)
    return dest


def reading_status(results_dir: str | Path) -> dict[str, str]:
    """Study key -> ``read`` or ``feedback`` for the studies readers touched (others are ``unread``).

    Feedback: the viewer's ``feedback/<study>.json`` files (their ``study`` field names the study). Read marks:
    ``reading/read.json``. Unreadable files are logged and ignored (the worklist still shows).
    """
    root = Path(results_dir)
    out: dict[str, str] = {}
    marks = root / READ_MARKS
    for k in _read_marks(marks)[0]["read"]:
        out[str(k)] = "read"
    fb = root / "feedback"
    if fb.is_dir():
        for f in sorted(fb.glob("*.json")):
            try:
                doc = json.loads(f.read_text())
            except ValueError as e:
                logger.warning("%s: unreadable feedback file (%s); ignored", f, e)
                continue
            if isinstance(doc, dict) and doc.get("entries"):
                out[str(doc.get("study") or f.stem)] = "feedback"
    return out


def mark_read(results_dir: str | Path, study_key: str, reader: str = "") -> Path:
    """Record that ``study_key`` was read (atomically, in ``reading/read.json``); returns the file.

    The file is rewritten atomically with the marks it already held plus this one. If the existing file is not
    usable (not JSON, or not an object with a ``read`` object), it is never overwritten: it is moved aside to
    ``reading/read.json.unreadable`` (``.unreadable-1``, ... if taken), a warning names both files, and a new
    ``read.json`` holding only this mark is written.
    """
    from medvit.io.safe_write import atomic_write

    p = Path(results_dir) / READ_MARKS
    doc, usable = _read_marks(p)
    if not usable:
        kept = _backup_unreadable(p)
        logger.warning("%s: unreadable read marks kept as %s; a new read.json is started", p, kept)
    doc["read"][study_key] = {"at": datetime.now(UTC).isoformat(timespec="seconds"),
                                             "reader": reader}
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(p, json.dumps(doc, indent=2))
    return p


def with_status(rows: list[WorklistRow], statuses: dict[str, str]) -> list[WorklistRow]:
    """``rows`` with ``status`` set from :func:`reading_status` (in place; returned for chaining)."""
    for r in rows:
        r.status = statuses.get(r.study_uid, "unread")
    return rows


def select(rows: list[WorklistRow], finding: str | None = None, threshold: float | None = None,
           modality: str | None = None, date_from: str = "", date_to: str = "", status: str | None = None,
           sort: str = "finding", ood_first: bool = False) -> list[WorklistRow]:
    """Filter, then order the worklist.

    Args:
        finding: the finding to triage by (``sort="finding"``): studies with p ≥ ``threshold`` (default: the
            model's operating threshold for it) first, each group by descending probability.
        modality, date_from/date_to (YYYYMMDD, inclusive), status: filters (None / "" = all).
        sort: ``finding`` | ``top`` (highest positive-finding probability) | ``date`` (newest first) |
            ``ood`` (flagged first).
        ood_first: flagged studies before all others, whatever the sort.
    Ties keep the table order (stable). Raises ValueError for an unknown sort key, finding or status.
    """
    if sort not in SORT_KEYS:
        raise ValueError(f"sort must be one of {SORT_KEYS}, got {sort!r}")
    if status not in (None, "", *STATUSES):
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    out = [r for r in rows
           if (not modality or modality in r.modalities) and (not status or r.status == status)
           and (not date_from or (r.study_date and r.study_date >= date_from))
           and (not date_to or (r.study_date and r.study_date <= date_to))]
    if sort == "finding":
        if not finding:
            raise ValueError("sort='finding' needs a finding")
        known = {k for r in rows for k in r.probabilities}
        if rows and finding not in known:
            raise ValueError(f"finding {finding!r} is not in the results; known: {sorted(known)}")

        def key(r: WorklistRow) -> tuple[Any, ...]:
            p = r.probabilities.get(finding, 0.0)
            t = threshold if threshold is not None else r.thresholds.get(finding, 0.5)
            return (p < t, -p)
    elif sort == "top":
        def key(r: WorklistRow) -> tuple[Any, ...]:
            return (-(r.probabilities[r.positive[0]] if r.positive else 0.0),)
    elif sort == "date":
        def key(r: WorklistRow) -> tuple[Any, ...]:
            return (-int(r.study_date) if r.study_date.isdigit() else 0,)
    else:
        def key(r: WorklistRow) -> tuple[Any, ...]:
            return (not r.ood,)
    out.sort(key=key)
    if ood_first:
        out.sort(key=lambda r: not r.ood)
    return out
