"""`medvit infer --source PACS --send-to PACS`: retrieve into a spool, run the folder inference on it, send back.

The seam is thin on purpose: a source writes instances into ``OUTPUT/spool/<study>/<series>/<sop>.dcm``
(resumable, see :mod:`medvit.pacs.spool`), the ordinary folder run (:class:`~medvit.infer.runner.InferenceRun`)
consumes that folder with all its rules (selection, journal, resume, exit codes, tables), and a sink stores
the run's DICOM outputs (one SR per study, heatmap Secondary Captures) in the PACS. What was sent is recorded
in ``OUTPUT/.medvit-infer/sent.jsonl`` so a resumed run sends nothing twice; the SR's UIDs are derived from
the weights and the source instances, so an unchanged study gives the same SR identity anyway.

Retrieve failures go to ``OUTPUT/retrieve_errors.csv``, send failures to ``OUTPUT/send_errors.csv``; either
makes the exit code 3 like a failed input. A PACS that cannot be queried at all raises
:class:`medvit.pacs.PacsError` (the CLI exits 5).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from medvit.infer.outputs import STATE_DIR
from medvit.infer.runner import EXIT_SOME_FAILED, InferConfig, RunResult, run_inference
from medvit.io.safe_write import atomic_write

logger = logging.getLogger(__name__)

SENT = "sent.jsonl"
FAILURE_COLUMNS = ["study_instance_uid", "series_instance_uid", "sop_instance_uid", "step", "reason"]


def spool_dir(output: str | Path) -> Path:
    """Where a ``--source`` run keeps the retrieved instances: ``OUTPUT/spool`` (created)."""
    p = Path(output) / "spool"
    p.mkdir(parents=True, exist_ok=True)
    return p


def run_with_pacs(cfg: InferConfig, source: str | None = None, send_to: str | None = None) -> RunResult:
    """Retrieve from ``source`` (if given) into :func:`spool_dir`, run inference, send SR/SC to ``send_to``.

    With ``source``, ``cfg.input`` is replaced by the spool. ``send_to`` implies ``sr=True``. Raises
    ``ValueError`` for ``deidentify`` with ``send_to`` (de-identified results would not land in the source
    study) or a bad address, and :class:`medvit.pacs.PacsError` when the source cannot be queried.
    """
    from medvit.pacs import Spool, open_sink, open_source

    out = Path(cfg.output)
    if send_to and cfg.deidentify:
        raise ValueError("--deidentify cannot be combined with --send-to: de-identified results carry new "
                         "UIDs and would not land in the source study; send them from a separate run")
    sink = open_sink(send_to) if send_to else None  # parse the address before any work
    pacs: dict[str, Any] = {}
    if source:
        src = open_source(source)
        spool = Spool(spool_dir(out))
        spool.remove_temporaries()
        t0 = time.perf_counter()
        report = src.retrieve(spool)
        pacs.update(retrieve_s=round(time.perf_counter() - t0, 3), source=src.address.server,
                    studies_found=len(report.studies), retrieved=report.retrieved,
                    already_in_spool=report.present, retrieve_failed=len(report.failures))
        _write_failures(out / "retrieve_errors.csv", report.failures)
        cfg = replace(cfg, input=str(spool.root))
    if send_to:
        cfg = replace(cfg, sr=True)
    t0 = time.perf_counter()
    result = run_inference(cfg)
    pacs["infer_s"] = round(time.perf_counter() - t0, 3)  # model load, run, tables, SR
    if sink is not None:
        t0 = time.perf_counter()
        files = sorted((out / "sr").glob("*.dcm")) + sorted((out / "heatmaps").glob("*/*.dcm"))
        sent, failures = _send_new(sink, files, out / STATE_DIR / SENT)
        pacs.update(send_s=round(time.perf_counter() - t0, 3), send_to=sink.address.server, sent=sent,
                    already_sent=len(files) - sent - len(failures),
                    send_failed=len(failures))
        _write_failures(out / "send_errors.csv", failures)
    if source or sink is not None:
        result.counts["pacs"] = pacs
        if pacs.get("retrieve_failed") or pacs.get("send_failed"):
            result.exit_code = EXIT_SOME_FAILED
        _amend_run_json(out, pacs, result.exit_code)
        for name in ("retrieve_errors.csv", "send_errors.csv"):
            if (out / name).exists():
                result.files[name] = str(out / name)
    return result


def _send_new(sink: Any, files: list[Path], ledger: Path) -> tuple[int, list[Any]]:
    """Send the files whose SOP Instance UID is not yet in ``ledger``; append what the PACS accepted."""
    import pydicom

    done: set[str] = set()
    if ledger.is_file():
        for line in ledger.read_text().splitlines():
            try:
                done.add(json.loads(line)["sop_instance_uid"])
            except (ValueError, KeyError):  # a partial last line of a killed run
                continue
    todo = {}
    for f in files:
        uid = str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
        if uid not in done:
            todo[uid] = f
    if not todo:
        return 0, []
    report = sink.send(list(todo.values()))
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger, "a", encoding="utf-8") as fh:
        for uid in report.sent:
            fh.write(json.dumps({"sop_instance_uid": uid, "file": todo[uid].name, "to": sink.address.server}) + "\n")
        fh.flush()
    return len(report.sent), report.failures


def _write_failures(path: Path, failures: list[Any]) -> None:
    """``path`` as a CSV of failures (rewritten, or removed when a resumed run has none left)."""
    if not failures:
        if path.exists():
            path.unlink()
        return
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FAILURE_COLUMNS)
    for f in failures:
        w.writerow([f.study_instance_uid, f.series_instance_uid, f.sop_instance_uid, f.step, f.reason])
    atomic_write(path, buf.getvalue())


def _amend_run_json(out: Path, pacs: dict[str, Any], exit_code: int) -> None:
    p = out / "run.json"
    doc = json.loads(p.read_text())
    doc["pacs"], doc["exit_code"] = pacs, exit_code
    atomic_write(p, json.dumps(doc, indent=2, default=str))
