"""Hostile input: pydicom's whole bundled test corpus. Every file ends predicted or with a status/error row."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medvit.infer import EXIT_OK, EXIT_SOME_FAILED, InferConfig, run_inference
from tests.infer.helpers import make_model

pytestmark = pytest.mark.slow


def test_pydicom_corpus_never_crashes(tmp_path):
    import pydicom

    corpus = Path(pydicom.__file__).parent / "data" / "test_files"
    files = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(corpus).parts))
    assert len(files) > 50
    model = make_model(tmp_path / "model", modalities=())  # any modality: as many files as possible get decoded
    out = tmp_path / "out"
    res = run_inference(InferConfig(str(model), str(corpus), str(out), batch_size=8, workers=2, any_modality=True,
                                    progress=False))
    assert res.exit_code in (EXIT_OK, EXIT_SOME_FAILED)
    with open(out / "status.csv", newline="") as f:
        status = list(csv.DictReader(f))
    assert [r["file"] for r in status] == files  # each file exactly once
    assert all(r["status"] in ("predicted", "skipped", "error") for r in status)
    assert all(r["reason"] for r in status if r["status"] != "predicted")
    with open(out / "errors.csv", newline="") as f:
        errors = list(csv.DictReader(f))
    assert [e["file"] for e in errors] == [r["file"] for r in status if r["status"] == "error"]
    with open(out / "predictions.csv", newline="") as f:
        predicted = [r["file"] for r in csv.DictReader(f)]
    assert predicted == [r["file"] for r in status if r["status"] == "predicted"]
    assert len(predicted) >= 20
    assert (res.exit_code == EXIT_SOME_FAILED) == bool(errors)


def test_pydicom_corpus_through_the_cli_keeps_the_terminal_clean(tmp_path):
    """`medvit infer` on the whole corpus (with SR and heatmaps): the terminal shows only medvit's one line per
    failed file and the summary; no traceback, no library warning, no C decoder message (those go to infer.log)."""
    import os
    import re
    import subprocess
    import sys

    import pydicom

    corpus = Path(pydicom.__file__).parent / "data" / "test_files"
    model = make_model(tmp_path / "model", modalities=())
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), PYTHONWARNINGS="default")
    proc = subprocess.run([sys.executable, "-m", "medvit.cli.main", "infer", "-m", str(model), "-i", str(corpus),
                           "-o", str(out), "--any-modality", "--sr", "--heatmaps", "--workers", "2",
                           "--batch-size", "8"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode in (EXIT_OK, EXIT_SOME_FAILED), proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    for line in lines:
        assert re.match(r"^\d\d:\d\d:\d\d WARNING medvit\.infer\.runner: FAILED ", line), line
    with open(out / "errors.csv", newline="") as f:
        errors = [r["file"] for r in csv.DictReader(f)]
    assert len(lines) == len(errors) and all(any(f" {e} at " in x for x in lines) for e in errors)
    assert "medvit infer:" in proc.stdout and "infer.log" in proc.stdout
    log = (out / "infer.log").read_text(encoding="utf-8")
    assert "Traceback" in log  # the details are kept, in the log file
