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
