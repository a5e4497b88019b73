"""Runs that can be trusted together: one run per OUTPUT, workers die with their parent, killed runs recorded,
every walked entry gets a status row, links leaving INPUT refused (SECURITY.md §5)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from medvit.infer import InferConfig, run_inference
from medvit.infer.lock import OutputLock, OutputLockedError
from tests.infer.helpers import make_model, make_studies, write_dx

REPO = Path(__file__).resolve().parents[2]


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "status.csv", newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def _wait_for(cond, proc, what: str, limit: float = 120.0) -> None:
    """Readiness probe: return once ``cond()`` holds; fail if the process ends first or ``limit`` passes."""
    end = time.monotonic() + limit
    while not cond():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_second_run_on_a_locked_output_is_refused_and_changes_nothing(tmp_path):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    make_studies(inp, n_studies=1, per_study=2)
    out = tmp_path / "out"
    run_inference(InferConfig(str(model), str(inp), str(out), workers=0, progress=False))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "lock"}
    live_tmp = out / f".predictions.csv.tmp{os.getpid()}.0123456789abcdef"  # a live writer's temporary file
    live_tmp.write_bytes(b"in progress")
    with OutputLock(out / ".medvit-infer"):  # another run holds OUTPUT
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            run_inference(InferConfig(str(model), str(inp), str(out), workers=0, progress=False))
    assert live_tmp.read_bytes() == b"in progress"
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "lock"
            and p != live_tmp} == before
    # once the lock is free, a dead run's temporary file is cleaned and the run resumes
    dead_tmp = out / ".status.csv.tmp999999999.0123456789abcdef"
    dead_tmp.write_bytes(b"x")
    res = run_inference(InferConfig(str(model), str(inp), str(out), workers=0, progress=False))
    assert res.counts["predicted"] == 2 and not dead_tmp.exists()


def test_sigkill_of_parent_takes_workers_down_and_is_recorded(tmp_path):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    make_studies(inp, n_studies=6, per_study=4, seed=1)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "medvit.cli.main", "infer", "-m", str(model), "-i", str(inp), "-o", str(out),
           "--workers", "2", "--batch-size", "1", "--heatmaps", "--quiet", "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        parent = psutil.Process(proc.pid)
        journal = out / ".medvit-infer" / "journal.jsonl"
        _wait_for(lambda: journal.is_file() and journal.read_bytes().count(b"\n") >= 2, proc, "two journal lines")
        workers = parent.children(recursive=True)
        assert workers, "decoding workers should be alive"
        os.kill(proc.pid, signal.SIGKILL)  # the parent only: its workers must follow by themselves
        proc.wait(timeout=60)
        gone, alive = psutil.wait_procs(workers, timeout=60)
        assert not alive, f"orphaned workers still running: {[p.pid for p in alive]}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert json.loads((out / "run.json").read_text())["state"] == "running"
    res = run_inference(InferConfig(str(model), str(inp), str(out), workers=0, batch_size=1, heatmaps=True,
                                    progress=False))
    doc = json.loads((out / "run.json").read_text())
    assert doc["state"] == "finished" and doc["previous_runs"][-1]["state"] == "killed"
    assert res.counts["predicted"] == 24 and len(_rows(out)) == 24  # nothing already done is lost


def test_sigterm_is_recorded_as_interrupted(tmp_path):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    make_studies(inp, n_studies=6, per_study=4, seed=2)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "medvit.cli.main", "infer", "-m", str(model), "-i", str(inp), "-o", str(out),
           "--workers", "0", "--batch-size", "1", "--heatmaps", "--quiet", "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        journal = out / ".medvit-infer" / "journal.jsonl"
        _wait_for(lambda: journal.is_file() and journal.read_bytes().count(b"\n") >= 1, proc, "a journal line")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    doc = json.loads((out / "run.json").read_text())
    assert doc["state"] == "interrupted"
    res = run_inference(InferConfig(str(model), str(inp), str(out), workers=0, heatmaps=True,
                                    progress=False))  # lock released
    assert res.counts["predicted"] == 24


def test_unreadable_and_symlinked_folders_get_status_rows(tmp_path, monkeypatch):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    good = make_studies(inp, n_studies=1, per_study=1)
    locked = inp / "locked"
    write_dx(locked / "x.dcm", "1.2.3.1", "1.2.3.2")
    outside = tmp_path / "elsewhere"
    secret = write_dx(outside / "secret.dcm", "1.2.3.3", "1.2.3.4", patient="NOT_IN_INPUT")
    (inp / "link_out.dcm").symlink_to(secret)  # a file link leaving INPUT
    (inp / "dir_out").symlink_to(outside, target_is_directory=True)  # a folder link leaving INPUT
    (inp / "dir_in").symlink_to(inp / "patient0", target_is_directory=True)  # a folder link inside INPUT
    (inp / "loop").symlink_to(inp, target_is_directory=True)  # a link loop
    os.mkfifo(inp / "fifo.dcm")  # reading it would block forever

    import medvit.infer.walk as walk

    real = os.scandir

    def scandir(p):  # root may read any folder: the permission failure is injected
        if Path(p) == locked:
            raise PermissionError(13, "Permission denied", str(p))
        return real(p)

    monkeypatch.setattr(walk.os, "scandir", scandir)
    if os.geteuid() != 0:
        locked.chmod(0)
    out = tmp_path / "out"
    try:
        res = run_inference(InferConfig(str(model), str(inp), str(out), workers=0, progress=False))
    finally:
        locked.chmod(0o755)
    rows = _rows(out)
    assert rows["locked/"]["status"] == "error" and "unreadable folder" in rows["locked/"]["reason"]
    assert rows["link_out.dcm"]["status"] == "skipped" and "outside INPUT" in rows["link_out.dcm"]["reason"]
    assert "outside INPUT" in rows["dir_out/"]["reason"]
    assert "not followed" in rows["dir_in/"]["reason"] and "not followed" in rows["loop/"]["reason"]
    assert "not a regular file" in rows["fifo.dcm"]["reason"]
    assert rows[good[0].relative_to(inp).as_posix()]["status"] == "predicted"
    assert res.exit_code == 3  # an unreadable folder is a failure, not a silent success
    assert "NOT_IN_INPUT" not in (out / "predictions.jsonl").read_text()
    # --follow-links reads the links (each real folder once: the loop ends)
    out2 = tmp_path / "out2"
    res2 = run_inference(InferConfig(str(model), str(inp), str(out2), workers=0, follow_links=True,
                                     progress=False))
    rows2 = _rows(out2)
    assert rows2["link_out.dcm"]["status"] == "predicted"  # read through the link
    assert rows2["dir_out/secret.dcm"]["status"] == "skipped" and "same file" in rows2["dir_out/secret.dcm"]["reason"]
    assert res2.counts["predicted"] == 2  # the good image and the secret (read once)
