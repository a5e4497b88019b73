"""Resumable run state (an append-only journal) and the final tables written from it, atomically.

Every input file ends as exactly one journal record (``status`` predicted / skipped / error). A record is
one JSON line written with a single ``write`` and flushed; a SIGKILL can leave at most one partial last
line, which :meth:`Journal.open` cuts off. A restarted run skips files already journaled, so the union of
both runs holds each file once. The user-facing tables (``predictions.csv``, ``predictions.jsonl``,
``status.csv``, ``errors.csv``) are rebuilt from the journal at the end of every run, sorted by file, and
replaced atomically (temporary file + ``os.replace``): a killed-and-resumed run ends with the same rows, in
the same order, as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medvit.io.errors import printable
from medvit.io.safe_write import atomic_write, open_exclusive
from medvit.io.text import FORMULA_PREFIXES, csv_cell, csv_row  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

STATE_DIR = ".medvit-infer"
JOURNAL = "journal.jsonl"
STATE = "state.json"
RESEARCH_NOTE = "research use only - not for diagnosis"

#: identifying columns of predictions.csv, in order (the probability columns follow, one per label)
ID_COLUMNS = ["file", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid",
              "patient_id", "accession_number", "study_date", "modality", "view_position", "body_part",
              "laterality", "selection"]
#: trailing columns of predictions.csv
TAIL_COLUMNS = ["positive_findings", "n_positive", "ood_score", "ood_flag", "heatmap_target", "heatmap_png",
                "model_name", "model_version", "model_sha256", "model_precision", "preprocessing", "intended_use"]
STATUS_COLUMNS = ["file", "status", "stage", "reason", "study_instance_uid", "series_instance_uid",
                  "sop_instance_uid"]
ERROR_COLUMNS = ["file", "stage", "reason"]

#: header keyword -> record key
HEADER_TO_RECORD = {
    "StudyInstanceUID": "study_instance_uid", "SeriesInstanceUID": "series_instance_uid",
    "SOPInstanceUID": "sop_instance_uid", "SOPClassUID": "sop_class_uid", "PatientID": "patient_id",
    "AccessionNumber": "accession_number", "StudyDate": "study_date", "Modality": "modality",
    "ViewPosition": "view_position", "BodyPartExamined": "body_part", "Laterality": "laterality",
}


def prob_column(label: str) -> str:
    """CSV column holding the probability of ``label``."""
    return f"p_{label}"


def csv_text(columns: list[str], rows: list[list[Any]]) -> str:
    """A small CSV document (header + rows), every cell through :func:`csv_cell`."""
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows([[csv_cell(v) for v in r] for r in rows])
    return buf.getvalue()


class StateMismatchError(ValueError):
    """OUTPUT holds results of a run with another model or other result-changing options."""


def _digest(value: Any) -> str:
    """Content hash of a fingerprint value (dicts compared by content, whatever their key order)."""
    import hashlib

    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _describe_diff(old: dict[str, Any], new: dict[str, Any], keys: list[str]) -> str:
    """One readable clause per differing key: scalars as ``was -> now``, structures as "content differs"."""
    parts = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict | list) or isinstance(b, dict | list):
            parts.append(f"{k}: content differs")
        else:
            sa, sb = (str(v)[:16] + ("..." if len(str(v)) > 16 else "") for v in (a, b))
            parts.append(f"{k}: {sa} before, {sb} now")
    return "; ".join(parts)


class Journal:
    """Append-only JSON-lines journal of finished inputs under ``OUTPUT/.medvit-infer/``."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = Path(out_dir) / STATE_DIR
        self.path = self.dir / JOURNAL
        self._f: Any = None
        self._synced = float("-inf")  # time.monotonic() of the last fsync

    def check_state(self, fingerprint: dict[str, Any], overwrite: bool = False) -> bool:
        """Record ``fingerprint`` for a new run or check it against a previous one; True when resuming.

        Raises :class:`StateMismatchError` naming the differing keys unless ``overwrite`` (which starts over).
        """
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        state = self.dir / STATE
        if state.is_file() and self.path.is_file():
            old = json.loads(state.read_text())
            diff = sorted(k for k in set(old) | set(fingerprint) if _digest(old.get(k)) != _digest(fingerprint.get(k)))
            if not diff:
                return True
            if not overwrite:
                raise StateMismatchError(
                    f"{self.dir.parent} holds results of a different run ({_describe_diff(old, fingerprint, diff)}); "
                    "use a new --output folder, or --overwrite to discard them")
            self.path.unlink()
        atomic_write(state, json.dumps(fingerprint, indent=2, sort_keys=True))
        return False

    def open(self) -> set[str]:
        """Open for appending after cutting a partial last line; returns the files already journaled."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        done: set[str] = set()
        if self.path.is_file():
            with open(self.path, "rb+") as f:
                data = f.read()
                end = data.rfind(b"\n") + 1
                if end != len(data):
                    logger.info("journal: cutting a partial last record (%d bytes)", len(data) - end)
                    f.truncate(end)
            for line in data[:end].splitlines():
                done.add(json.loads(line)["file"])
        self._f = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0),
                                    0o600), "ab")
        return done

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as one line (a single write, flushed to the OS)."""
        self._f.write((json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode())
        self._f.flush()

    def sync(self, max_lag_s: float = 0.0) -> None:
        """fsync the journal (end of a batch): survives power loss, not just process death.

        With ``max_lag_s`` > 0 the fsync is skipped when the last one is more recent than that: a fast model
        finishes several batches a second and an fsync costs ~10 ms on a busy disk (it blocks the model). Every
        record is still written and flushed to the OS at once (a killed process loses nothing); a power loss may
        lose the last ``max_lag_s`` seconds of records, which a resumed run predicts again.
        """
        if self._f is not None:
            now = time.monotonic()
            if max_lag_s > 0 and now - self._synced < max_lag_s:
                return
            os.fsync(self._f.fileno())
            self._synced = now

    def close(self) -> None:
        if self._f is not None:
            self.sync()
            self._f.close()
            self._f = None

    def records(self) -> Iterator[dict[str, Any]]:
        """Records sorted by file (one per file; the last wins), streamed via an offset index."""
        index: dict[str, int] = {}
        with open(self.path, "rb") as f:
            offset = 0
            for line in f:
                key = json.loads(line)["file"]
                index[key] = offset
                offset += len(line)
            for key in sorted(index):
                f.seek(index[key])
                yield json.loads(f.readline())


def segment_columns(labels: list[str]) -> list[str]:
    """predictions.csv columns of a segmentation model: area (mm²) and pixel count per label, the spacing's
    source, the SEG file (see :mod:`medvit.infer.segment`)."""
    return ([f"area_mm2_{k}" for k in labels] + [f"pixels_{k}" for k in labels]
            + ["spacing_source", "seg_dcm"])


def write_tables(journal: Journal, out_dir: Path, labels: list[str],
                 segment_labels: list[str] | None = None) -> dict[str, Any]:
    """Rebuild predictions.csv/.jsonl, status.csv and errors.csv from the journal; returns counts.

    ``segment_labels``: for segmentation models, adds :func:`segment_columns` after the probabilities, writes
    ``segment_volumes.csv`` and, when some predicted image got no SEG, ``seg_errors.csv`` (file, stage, reason;
    like ``sr_errors.csv``), counted as ``seg_failed``.

    Counts: ``predicted``, ``skipped``, ``error``, ``studies`` (predicted), ``positives`` per label,
    ``skip_reasons`` / ``error_stages`` histograms.
    """
    out_dir = Path(out_dir)
    seg_cols = segment_columns(segment_labels) if segment_labels else []
    pred_cols = ID_COLUMNS + [prob_column(k) for k in labels] + seg_cols + TAIL_COLUMNS
    names = {"pred_csv": "predictions.csv", "pred_jsonl": "predictions.jsonl", "status": "status.csv",
             "errors": "errors.csv"}
    import io
    import secrets

    tmps = {k: out_dir / f".{v}.tmp{os.getpid()}.{secrets.token_hex(8)}" for k, v in names.items()}
    bufs = {k: io.TextIOWrapper(open_exclusive(p), encoding="utf-8", newline="")  # streamed, not held
            for k, p in tmps.items()}
    pred_w = csv.DictWriter(bufs["pred_csv"], pred_cols, extrasaction="ignore", lineterminator="\n")
    status_w = csv.DictWriter(bufs["status"], STATUS_COLUMNS, extrasaction="ignore", lineterminator="\n")
    err_w = csv.DictWriter(bufs["errors"], ERROR_COLUMNS, extrasaction="ignore", lineterminator="\n")
    for w in (pred_w, status_w, err_w):
        w.writeheader()
    counts: dict[str, Any] = {"predicted": 0, "skipped": 0, "error": 0, "positives": dict.fromkeys(labels, 0),
                              "skip_reasons": {}, "error_stages": {}}
    studies: set[str] = set()
    seg_failures: list[list[Any]] = []
    for rec in journal.records():
        rec = printable(rec)  # the journal keeps the exact name (resume key); tables get valid text
        status_w.writerow(csv_row(rec))
        counts[rec["status"]] += 1
        if rec["status"] == "error":
            err_w.writerow(csv_row(rec))
            counts["error_stages"][rec["stage"]] = counts["error_stages"].get(rec["stage"], 0) + 1
        elif rec["status"] == "skipped":
            short = rec["reason"].split(" (")[0]
            counts["skip_reasons"][short] = counts["skip_reasons"].get(short, 0) + 1
        if rec["status"] != "predicted":
            continue
        studies.add(rec.get("study_instance_uid", ""))
        bufs["pred_jsonl"].write(json.dumps(rec, sort_keys=True) + "\n")
        row = dict(rec)
        for k in labels:
            row[prob_column(k)] = f"{rec['probabilities'][k]:.6f}"
        row["positive_findings"] = ";".join(rec["positive_findings"])
        row["n_positive"] = len(rec["positive_findings"])
        model = rec["model"]
        row.update(model_name=model["name"], model_version=model["version"], model_sha256=model["sha256"],
                   model_precision=model.get("precision", ""))  # fp32 | bf16 | int8 (+ " compiled"): what ran
        row["preprocessing"] = format_notes(rec["preprocessing"])
        for k in segment_labels or []:
            row[f"area_mm2_{k}"] = (rec.get("segment_areas_mm2") or {}).get(k, "")
            row[f"pixels_{k}"] = (rec.get("segment_pixels") or {}).get(k, "")
        pred_w.writerow(csv_row(row))
        for k in rec["positive_findings"]:
            counts["positives"][k] += 1
        if segment_labels:
            key = "seg_written" if rec.get("seg_dcm") else "seg_failed"
            counts[key] = counts.get(key, 0) + 1
            if not rec.get("seg_dcm"):
                seg_failures.append([rec["file"], "seg", rec.get("seg_error") or "SEG not written"])
        if rec.get("ood_flag") is True:
            counts["ood_flagged"] = counts.get("ood_flagged", 0) + 1
    counts["studies"] = len(studies)
    if segment_labels:
        from medvit.infer.segment import series_volumes

        vol_rows = series_volumes([r for r in journal.records() if r["status"] == "predicted"], segment_labels)
        atomic_write(out_dir / "segment_volumes.csv", csv_text(
            ["study_instance_uid", "series_instance_uid", "modality", "images", "slice_mm"]
            + [f"volume_mm3_{k}" for k in segment_labels], vol_rows))
        counts.setdefault("seg_written", 0)
        counts.setdefault("seg_failed", 0)
        if seg_failures or (out_dir / "seg_errors.csv").exists():  # as sr_errors.csv: one row per SEG not written
            atomic_write(out_dir / "seg_errors.csv", csv_text(["file", "stage", "reason"], seg_failures), out_dir)
    for k, f in bufs.items():
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmps[k], out_dir / names[k])
    return counts


def format_notes(notes: dict[str, Any]) -> str:
    """Compact one-line form of preprocessing notes for the CSV (``key=value; ...``)."""
    parts = []
    for k, v in notes.items():
        if isinstance(v, list):
            v = "x".join(str(x) for x in v) if k in ("source_size",) else ",".join(str(x) for x in v)
        parts.append(f"{k}={v}")
    return "; ".join(parts)
