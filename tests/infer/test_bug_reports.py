"""Fault kinds found with inputs modelled on public bug reports (issue 12): each test builds its inputs."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from medvit.infer import EXIT_OK, InferConfig, run_inference
from tests.infer.helpers import make_model, write_dx


def read_csv(p: Path) -> list[dict[str, str]]:
    with open(p, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "m")


def _uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


@pytest.mark.parametrize("raw", [b"caf\xe9.dcm", b"\xff\xfe-x.dcm", b"ok\x80\x81.dcm"])
def test_non_utf8_file_names_are_escaped_in_tables(model, tmp_path, raw):
    inp = tmp_path / "in"
    study = _uid()
    write_dx(inp / "a.dcm", study, _uid())
    bad = inp / os.fsdecode(raw)
    write_dx(bad, study, _uid(), seed=1)
    (inp / os.fsdecode(b"notes-\xe9.txt")).write_text("not an image")
    out = tmp_path / "out"
    for _ in range(2):  # the run finishes, and a resume of it too
        res = run_inference(InferConfig(str(model), str(inp), str(out), workers=0, progress=False, sr=True))
        assert res.exit_code == EXIT_OK
        assert json.loads((out / "run.json").read_text())["state"] == "finished"
    escaped = raw.decode("utf-8", "backslashreplace")
    files = {r["file"] for r in read_csv(out / "status.csv")}
    assert files == {"a.dcm", escaped, "notes-\\xe9.txt"}
    assert {r["file"] for r in read_csv(out / "predictions.csv")} == {"a.dcm", escaped}
    lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert {json.loads(x)["file"] for x in lines} == {"a.dcm", escaped}

    from medvit.io.index import index_tree

    res = index_tree(inp)
    written = res.write(tmp_path / "idx.csv") + res.write(tmp_path / "idx.json")
    for p in written:
        p.read_bytes().decode("utf-8")  # valid UTF-8, not cut short
    skipped = read_csv(tmp_path / "idx.skipped.csv")
    assert [Path(r["path"]).name for r in skipped] == ["notes-\\xe9.txt"]
    series = read_csv(tmp_path / "idx.csv")
    assert len(series) == 2 and {Path(r["first_file"]).name for r in series} == {"a.dcm", escaped}
    doc = json.loads((tmp_path / "idx.json").read_text(encoding="utf-8"))
    assert doc["summary"]["files"] == 2
