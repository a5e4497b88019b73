"""Kill-and-resume: a run SIGKILLed mid-way and restarted ends with the outputs of an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from medvit.infer import InferConfig, run_inference
from medvit.infer.outputs import Journal
from tests.infer.helpers import LABELS, make_model, make_studies

pytestmark = pytest.mark.slow


#: ``medvit infer`` that SIGKILLs its own process group (itself and its decode workers) right after the journal
#: holds 4 or more records and is synced: a kill at a known point of the run, with no polling and no timing.
_KILLED_AFTER_4 = """
import os, signal, sys
from medvit.cli.main import main
from medvit.infer.outputs import Journal
_sync = Journal.sync
def sync(self, *args, **kwargs):
    _sync(self, *args, **kwargs)
    if self.path.read_bytes().count(b"\\n") >= 4:
        os.killpg(0, signal.SIGKILL)
Journal.sync = sync
sys.exit(main(sys.argv[1:]))
"""


def _cmd(model: Path, inp: Path, out: Path, kill_after_4: bool = False) -> list[str]:
    entry = ["-c", _KILLED_AFTER_4] if kill_after_4 else ["-m", "medvit.cli.main"]
    return [sys.executable, *entry, "infer", "-m", str(model), "-i", str(inp), "-o", str(out),
            "--batch-size", "2", "--workers", "2", "--sr", "--heatmaps", "--quiet", "--threads", "1"]


def _rows(p: Path) -> list[dict[str, str]]:
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def _tree(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and ".medvit-infer" not in p.parts and p.name != "infer.log")  # CLI runs only


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    make_studies(inp, n_studies=5, per_study=4)
    (inp / "junk.bin").write_bytes(b"\x00" * 300)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))

    ref = tmp_path / "ref"  # the uninterrupted run, in-process (same code path as the CLI)
    res = run_inference(InferConfig(str(model), str(inp), str(ref), batch_size=2, workers=2, sr=True,
                                    heatmaps=True, progress=False))
    assert res.exit_code == 0

    out = tmp_path / "out"
    journal = out / ".medvit-infer" / "journal.jsonl"
    proc = subprocess.run(_cmd(model, inp, out, kill_after_4=True), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    n_before = journal.read_bytes().count(b"\n")
    assert 4 <= n_before < 21
    assert not (out / "predictions.csv").exists()  # tables are only written at the end

    second = subprocess.run(_cmd(model, inp, out), env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "done by an earlier run" in second.stdout

    assert (out / "status.csv").read_text() == (ref / "status.csv").read_text()
    assert (out / "errors.csv").read_text() == (ref / "errors.csv").read_text()
    a, b = _rows(out / "predictions.csv"), _rows(ref / "predictions.csv")
    assert len(a) == len(b) == 20
    for ra, rb in zip(a, b, strict=True):
        for k in rb:
            if k.startswith("p_"):
                assert abs(float(ra[k]) - float(rb[k])) < 1e-5
            elif k != "positive_findings" and k != "n_positive":
                assert ra[k] == rb[k], k
    ja = [json.loads(x)["file"] for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert ja == sorted(set(ja)) and len(ja) == 20  # no duplicates, sorted
    assert _tree(out) == _tree(ref)  # same SR and heatmap files, no stale temporaries
    assert len(list((out / "sr").glob("*.dcm"))) == 5
    assert set(LABELS) <= {k[2:] for k in a[0] if k.startswith("p_")}


def test_journal_cuts_partial_last_line(tmp_path):
    j = Journal(tmp_path)
    j.check_state({"a": 1})
    j.open()
    j.append({"file": "x.dcm", "status": "skipped"})
    j.close()
    with open(j.path, "ab") as f:
        f.write(b'{"file": "y.dcm", "sta')  # a write cut by SIGKILL
    done = Journal(tmp_path).open()
    assert done == {"x.dcm"}
    assert j.path.read_bytes().endswith(b"}\n")


def test_journal_fsync_at_most_once_per_max_lag(tmp_path, monkeypatch):
    """Batches sync the journal at most once a second (fsync blocks a fast model); every record is still written
    through to the OS at once, and closing always syncs."""
    import os

    from medvit.infer import outputs

    calls = []
    monkeypatch.setattr(outputs.os, "fsync", lambda fd: calls.append(fd))
    clock = iter([100.0, 100.4, 100.9, 101.2, 101.3])
    monkeypatch.setattr("time.monotonic", lambda: next(clock))
    j = outputs.Journal(tmp_path)
    j.open()
    for i in range(5):
        j.append({"file": f"f{i}", "status": "skipped"})
        j.sync(max_lag_s=1.0)
    assert len(calls) == 2  # t=100.0 and t=101.2; 100.4, 100.9, 101.3 skipped
    assert len((tmp_path / outputs.STATE_DIR / outputs.JOURNAL).read_text().splitlines()) == 5  # all written
    monkeypatch.setattr("time.monotonic", lambda: 101.4)
    j.close()
    assert len(calls) == 3 and os.path.exists(tmp_path / outputs.STATE_DIR / outputs.JOURNAL)
