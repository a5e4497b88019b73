"""`medvit listen`: receive studies by C-STORE, infer each once it is complete, send the SR back.

Layout of OUTPUT (the same journal and tables as ``medvit infer``)::

    incoming/<study>/<series>/<sop>.dcm   instances of studies still arriving (every file acknowledged = on disk)
    studies/<study>/<series>/<sop>.dcm    complete studies: the input folder of the inference run
    .medvit-infer/journal.jsonl           one record per instance (predicted / skipped / error), as for infer
    .medvit-infer/sent.jsonl              SOP Instance UIDs the PACS accepted (nothing is sent twice)
    listen.jsonl                          one line per study handled: instances, predicted, SR, sent, failures
    sr/<study>.dcm, predictions.csv, status.csv, errors.csv, run.json

Crash safety: a study moves from ``incoming/`` to ``studies/`` file by file (atomic renames); inference is the
journaled folder run (a restart skips what is journaled); a study counts as handled only once ``listen.jsonl``
says so with its instance count, so a restart re-handles any study whose files changed or whose SR was not
sent; the SR's UIDs derive from the weights and the instances, and ``sent.jsonl`` stops a second send.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvit.infer.pacs_run import SENT, _send_new
from medvit.infer.runner import InferConfig, InferenceRun

logger = logging.getLogger(__name__)

EVENTS = "listen.jsonl"


@dataclass
class ListenConfig:
    """Everything ``medvit listen`` needs."""

    model: str  # checkpoint directory or registered weight tag
    output: str  # OUTPUT folder (see the module docstring); restarting on it resumes
    port: int  # TCP port of the C-STORE SCP (0 = any free port, see Listener.port)
    aet: str = "MEDVIT"  # our AE title
    host: str = ""  # interface to bind ("" = all)
    quiet_s: float = 10.0  # a study is complete after this many seconds without a new instance
    send_to: str | None = None  # dicomweb:// or dimse:// address for the SR (None = keep it in OUTPUT/sr)
    batch_size: int = 16
    precision: str = "fp32"
    device: str = "cpu"
    heatmaps: bool = False
    heatmap_method: str = "gradcam"
    rules: str | None = None
    geometry: str | None = None
    any_modality: bool = False
    threads: int | None = None
    max_associations: int = 8  # concurrent associations (bounds memory: one instance each)


class Listener:
    """The listener service; :meth:`serve` runs until :meth:`shutdown` (e.g. from a SIGTERM handler)."""

    def __init__(self, cfg: ListenConfig) -> None:
        from medvit.pacs import open_sink
        from medvit.pacs.listener import StorageListener

        self.cfg = cfg
        self.out = Path(cfg.output)
        (self.out / "studies").mkdir(parents=True, exist_ok=True)
        self.sink = open_sink(cfg.send_to) if cfg.send_to else None
        # decoding stays in this process: forking workers from a multi-threaded server is unsafe
        self.run = InferenceRun(InferConfig(
            model=cfg.model, input=str(self.out / "studies"), output=str(self.out), batch_size=cfg.batch_size,
            workers=0, precision=cfg.precision, device=cfg.device, sr=False, heatmaps=cfg.heatmaps,
            heatmap_method=cfg.heatmap_method, rules=cfg.rules, geometry=cfg.geometry,
            any_modality=cfg.any_modality, threads=cfg.threads, progress=False))
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.scp = StorageListener(self.out, cfg.aet, cfg.port, cfg.quiet_s, on_complete=self.queue.put,
                                   host=cfg.host, max_associations=cfg.max_associations)
        self._stop = threading.Event()
        self._handled = self._load_handled()
        self.on_study_done: Any = None  # optional callback(study_uid, event dict), for tests and monitoring

    @property
    def port(self) -> int:
        return self.scp.port

    # ------------------------------------------------------------------ service
    def start(self) -> Listener:
        """Bind the SCP, queue the studies a previous process left unfinished; returns self."""
        self.scp.start()
        for study in self.scp.studies.studies():
            if self._handled.get(study) != self._count(study):
                self.queue.put(study)
        return self

    def serve(self) -> int:
        """Handle completed studies until :meth:`shutdown`; returns 0. Call :meth:`start` first."""
        while True:
            try:
                study = self.queue.get(timeout=1.0)  # wakes up for signals and shutdown
            except queue.Empty:
                if self._stop.is_set():
                    break
                continue
            if study is None or self._stop.is_set():
                break
            batch = {study}
            while True:  # everything already waiting goes through one inference pass
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._stop.set()
                    break
                batch.add(nxt)
            self._handle(sorted(batch))
            if self._stop.is_set():
                break
        return 0

    def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop receiving (running associations may finish within ``grace_s``), then end :meth:`serve` after
        the study in hand. Studies still arriving stay in incoming/; queued ones are handled at the next start."""
        self.scp.stop(grace_s)
        self._stop.set()
        self.queue.put(None)

    # ------------------------------------------------------------------ one batch of complete studies
    def _handle(self, studies: list[str]) -> None:
        from medvit.infer.study_sr import write_study_reports
        from medvit.io.safe_write import path_component

        res = self.run.run()  # new files under studies/ only: everything journaled is skipped
        for study in studies:
            ev: dict[str, Any] = {"study_instance_uid": study, "instances": self._count(study)}
            recs = [r for r in self._study_records(study)]
            ev["predicted"] = sum(r["status"] == "predicted" for r in recs)
            ev["skipped"] = sum(r["status"] == "skipped" for r in recs)
            ev["error"] = sum(r["status"] == "error" for r in recs)
            files: list[Path] = []
            if ev["predicted"]:
                written, failed = write_study_reports(self.run.output_context(), self.run.journal.records(),
                                                      only={study})
                ev["sr"] = bool(written and not failed)
                sr = self.out / "sr" / f"{path_component(study, 'unknown-study')}.dcm"
                files = ([sr] if ev["sr"] else []) + sorted(
                    (self.out / "heatmaps" / path_component(study, "unknown-study")).glob("*.dcm"))
            else:
                ev["sr"] = False
                ev["note"] = "no instance of this study is an image the model could predict on"
            complete = ev["predicted"] == 0 or ev["sr"]
            if self.sink is not None and files:
                sent, failures = _send_new(self.sink, files, self.out / ".medvit-infer" / SENT)
                ev["sent"] = sent
                if failures:
                    complete = False
                    ev["send_failures"] = [f"{f.sop_instance_uid}: {f.step}: {f.reason}" for f in failures]
                    logger.error("listen: study %s: %d result(s) not sent to %s: %s", study, len(failures),
                                 self.sink.address.server, failures[0].reason)
            ev["handled"] = complete
            self._record(ev)
            if complete:
                self._handled[study] = ev["instances"]
            logger.info("listen: study %s: %d instances, %d predicted, SR %s%s", study, ev["instances"],
                        ev["predicted"], "written" if ev["sr"] else "none",
                        f", sent {ev.get('sent', 0)}" if self.sink else "")
            if self.on_study_done is not None:
                self.on_study_done(study, ev)
        logger.debug("listen: run exit code %d", res.exit_code)

    def _study_records(self, study: str) -> list[dict[str, Any]]:
        prefix = f"{study}/"
        return [r for r in self.run.journal.records() if r["file"].startswith(prefix)]

    def _count(self, study: str) -> int:
        return sum(1 for _ in (self.scp.studies.root / study).glob("*/*.dcm"))

    def _record(self, ev: dict[str, Any]) -> None:
        from medvit.infer.runner import _now

        ev = {"time": _now(), **ev}
        with open(self.out / EVENTS, "a", encoding="utf-8") as f:
            f.write(json.dumps(ev, sort_keys=True) + "\n")
            f.flush()

    def _load_handled(self) -> dict[str, int]:
        """Study -> instance count at its last fully handled event (partial last line of a kill ignored)."""
        done: dict[str, int] = {}
        p = self.out / EVENTS
        if p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("handled"):
                    done[ev["study_instance_uid"]] = int(ev["instances"])
        return done


def run_listener(cfg: ListenConfig, install_signal_handlers: bool = True) -> int:
    """Start, serve until SIGTERM/SIGINT, stop cleanly; returns the exit code (0)."""
    import signal

    lst = Listener(cfg).start()
    if install_signal_handlers:
        def _stop(signum: int, _frame: Any) -> None:
            logger.warning("listen: %s received; stopping (acknowledged instances are on disk)",
                           signal.Signals(signum).name)
            threading.Thread(target=lst.shutdown, name="medvit-listen-stop", daemon=True).start()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    logger.info("listen: %s on port %d, quiet period %.1f s, results to %s", cfg.aet, lst.port, cfg.quiet_s,
                   lst.sink.address.server if lst.sink else f"{cfg.output}/sr")
    rc = lst.serve()
    logger.info("listen: stopped; %d instances received, %d refused", lst.scp.received, lst.scp.rejected)
    return rc
