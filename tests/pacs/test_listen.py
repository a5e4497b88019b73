"""`medvit listen` against a real Orthanc: receive (storescu / pynetdicom), infer, store the SR back; bad input
contained; a killed listener loses and duplicates nothing; SIGTERM is clean."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pydicom
import pytest

from medvit.infer.listen import ListenConfig, Listener
from medvit.pacs import open_sink
from tests.infer.helpers import make_studies
from tests.pacs.orthanc import free_port

STORESCU = shutil.which("storescu")


def _srs(orthanc) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(io.BytesIO(orthanc.instance_file(t["_id"])))
            for t in orthanc.instance_tags() if t.get("Modality") == "SR"]


def _evidence(sr) -> set[str]:
    return {str(i.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
            for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}


class _Running:
    """A Listener served in a thread; ``done[study]`` events fire when a study was handled.

    Start it with a long quiet period (nothing completes while the test sends) and call :meth:`complete` once every
    instance was acknowledged: a short quiet period while instances arrive would split a study whenever the sender
    pauses longer than that (a loaded machine), and the test would see a partial study handled first."""

    def __init__(self, cfg: ListenConfig) -> None:
        self.lst = Listener(cfg)
        self.events: dict[str, dict] = {}
        self.cond = threading.Condition()

        def done(study, ev):
            with self.cond:
                self.events[study] = ev
                self.cond.notify_all()

        self.lst.on_study_done = done
        self.lst.start()
        self.thread = threading.Thread(target=self.lst.serve, daemon=True)
        self.thread.start()

    def complete(self) -> None:
        """From now on a study quiet for 0.05 s is complete (the watcher looks again within a second)."""
        self.lst.scp.quiet_s = 0.05

    def wait(self, study: str, timeout: float = 60) -> dict:
        with self.cond:
            assert self.cond.wait_for(lambda: study in self.events, timeout), f"study {study} not handled"
            return self.events[study]

    def stop(self) -> None:
        self.lst.shutdown(grace_s=5)
        self.thread.join(30)
        assert not self.thread.is_alive()


def _uids(paths):
    ds = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    return str(ds[0].StudyInstanceUID), {str(d.SOPInstanceUID) for d in ds}


@pytest.mark.skipif(STORESCU is None, reason="dcmtk storescu not installed (make sysdeps)")
def test_listen_storescu_to_orthanc(orthanc, tiny_model, tmp_path):
    images = make_studies(tmp_path / "src", n_studies=1, per_study=3)
    study, sops = _uids(images)
    run = _Running(ListenConfig(model=str(tiny_model), output=str(tmp_path / "out"), port=0, quiet_s=600,
                                send_to=orthanc.dicomweb()))
    try:
        r = subprocess.run([STORESCU, "-aec", "MEDVIT", "127.0.0.1", str(run.lst.port), *map(str, images)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr  # all three acknowledged
        run.complete()
        ev = run.wait(study)
    finally:
        run.stop()
    assert (ev["instances"], ev["predicted"], ev["sr"], ev["sent"], ev["handled"]) == (3, 3, True, 1, True)
    (sr,) = _srs(orthanc)
    assert str(sr.StudyInstanceUID) == study and _evidence(sr) == sops
    journal = [json.loads(x) for x in (tmp_path / "out" / ".medvit-infer" / "journal.jsonl").read_text().splitlines()]
    assert sorted(r["sop_instance_uid"] for r in journal) == sorted(sops)


def test_listen_contains_bad_input(orthanc, tiny_model, tmp_path):
    """Garbage bytes on the port and an instance with a bad UID are refused; the good study goes through."""
    from pynetdicom import AE

    good = make_studies(tmp_path / "src", n_studies=1, per_study=2)
    bad = pydicom.dcmread(good[0])
    bad.StudyInstanceUID = "../../etc"
    bad.SOPInstanceUID = "1.2.3.999"
    study, sops = _uids(good)
    run = _Running(ListenConfig(model=str(tiny_model), output=str(tmp_path / "out"), port=0, quiet_s=600,
                                send_to=orthanc.dimse()))
    try:
        with socket.create_connection(("127.0.0.1", run.lst.port), timeout=5) as s:  # not DICOM at all
            s.sendall(b"\x01\x00\x00\x00\x00\x04GET / HTTP/1.0\r\n\r\n")
            s.recv(1024)
        ae = AE(ae_title="SENDER")
        ae.add_requested_context(bad.SOPClassUID)
        assoc = ae.associate("127.0.0.1", run.lst.port, ae_title="MEDVIT")
        assert assoc.is_established
        assert assoc.send_c_store(bad).Status == 0xC210
        assoc.release()
        rep = open_sink(f"dimse://MEDVIT@127.0.0.1:{run.lst.port}").send(good)
        assert not rep.failures
        run.complete()
        ev = run.wait(study)
    finally:
        run.stop()
    assert ev["predicted"] == 2 and ev["handled"]
    assert run.lst.scp.rejected == 1 and run.lst.scp.received == 2
    assert not (tmp_path / "etc").exists() and not list((tmp_path / "out").rglob("1.2.3.999*"))
    (sr,) = _srs(orthanc)
    assert _evidence(sr) == sops


def _start_cli(tiny_model, out: Path, port: int, quiet: float, send_to: str, log: Path) -> subprocess.Popen:
    """`medvit listen` in a subprocess, its output to ``log`` (a file: nobody reads a pipe while it runs, and a
    full pipe would block the listener's logging)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "medvit.cli.main", "listen", "-m", str(tiny_model), "-o",
                                 str(out), "--port", str(port), "--quiet-period", str(quiet), "--send-to", send_to],
                                env=env, stdout=fh, stderr=subprocess.STDOUT)


def _wait_echo(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Readiness probe: C-ECHO answers (fails fast if the process died)."""
    from medvit.pacs import PacsError, open_source

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-4000:]
        try:
            open_source(f"dimse://MEDVIT@127.0.0.1:{port}?timeout=5", retries=0).echo()
            return
        except PacsError:
            time.sleep(0.2)
    raise AssertionError(f"listener did not answer C-ECHO: {log.read_text()[-4000:]}")


def _wait_for(cond, timeout: float = 60) -> None:
    """Readiness probe on an observable condition (an SR in Orthanc)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def test_kill_mid_study_restart_and_sigterm(orthanc, tiny_model, tmp_path):
    """Killed mid-study, restarted, stopped by SIGTERM with the study unfinished, started again: the study is
    handled once with all its instances. No step depends on timing: the quiet period is 60 s while instances
    arrive, and only the last start (where nothing else arrives) lets the resumed study complete."""
    images = make_studies(tmp_path / "src", n_studies=1, per_study=3)
    study, sops = _uids(images)
    out, port, log = tmp_path / "out", free_port(), tmp_path / "listen.log"
    sink = f"dimse://MEDVIT@127.0.0.1:{port}"

    def stop(p: subprocess.Popen, sig: int) -> int:
        p.send_signal(sig)
        try:
            return p.wait(60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()

    # 1) two of three instances arrive, then the listener is killed
    p = _start_cli(tiny_model, out, port, 60, orthanc.dicomweb(), log)
    try:
        _wait_echo(port, p, log)
        assert not open_sink(sink).send(images[:2]).failures  # acknowledged = on disk
    finally:
        stop(p, signal.SIGKILL)
    assert len(list((out / "incoming").rglob("*.dcm"))) == 2
    # 2) restart; the sender re-sends the first instance (its association broke) and sends the third; then
    #    SIGTERM while the study is still in its quiet period: clean exit, its instances kept for the next start
    p = _start_cli(tiny_model, out, port, 60, orthanc.dicomweb(), log)
    try:
        _wait_echo(port, p, log)
        assert not open_sink(sink).send([images[0], images[2]]).failures
    finally:
        assert stop(p, signal.SIGTERM) == 0, log.read_text()[-4000:]
    assert sorted(f.name for f in (out / "incoming").rglob("*.dcm")) == sorted(f"{s}.dcm" for s in sops)
    assert not _srs(orthanc)
    # 3) the next start resumes the study (a fresh 1 s quiet period) and handles it; SIGTERM after its SR
    p = _start_cli(tiny_model, out, port, 1, orthanc.dicomweb(), log)
    try:
        _wait_echo(port, p, log)
        _wait_for(lambda: len(_srs(orthanc)) == 1)
    finally:
        assert stop(p, signal.SIGTERM) == 0, log.read_text()[-4000:]
    (sr,) = _srs(orthanc)
    assert _evidence(sr) == sops  # all three, once
    journal = [json.loads(x) for x in (out / ".medvit-infer" / "journal.jsonl").read_text().splitlines()]
    assert sorted(r["sop_instance_uid"] for r in journal) == sorted(sops)  # nothing lost, nothing twice
    handled = [json.loads(x) for x in (out / "listen.jsonl").read_text().splitlines()]
    assert [(e["study_instance_uid"], e["instances"], e["handled"]) for e in handled] == [(study, 3, True)]
    assert not list((out / "incoming").rglob("*.dcm"))
