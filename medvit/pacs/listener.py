"""A C-STORE SCP that spools incoming studies and hands each one on once it has been quiet for a while.

Every received instance is written atomically (``incoming/<study>/<series>/<sop>.dcm``, fsynced) *before*
the Success status goes back to the sender, so an acknowledged instance survives a kill; an instance whose
association dies before the answer is re-sent by the sender and lands on the same path (no duplicate). A study
is complete when no instance of it arrived for ``quiet_s`` seconds and no write of it is in flight; its files
then move (``os.replace`` per file) to ``studies/<study>/...`` and ``on_complete(study_uid)`` is called from
the watcher thread. Studies left in ``incoming/`` by a previous process restart their quiet period at start.

Bad input stays contained: an instance without valid UIDs, or that cannot be decoded, gets a failure status
(0xC210) and a log line, and the association goes on; a malformed association is aborted by pynetdicom and
the server keeps serving. Memory is bounded: at most ``max_associations`` associations, one instance each.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medvit.pacs.spool import Spool, check_uid

logger = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_OUT_OF_RESOURCES = 0xA700


class StorageListener:
    """C-STORE SCP (and C-ECHO) on ``port`` as ``aet``; see the module docstring.

    ``root``: folder holding ``incoming/`` and ``studies/``. ``on_complete(study_uid)``: called once per
    completed arrival of a study (again if more of it arrives later). ``on_stored(study, sop)``: optional hook
    after each acknowledged instance (tests, progress).
    """

    def __init__(self, root: str | Path, aet: str, port: int, quiet_s: float,
                 on_complete: Callable[[str], None], host: str = "", max_associations: int = 8,
                 on_stored: Callable[[str, str], None] | None = None) -> None:
        if quiet_s <= 0:
            raise ValueError(f"quiet period must be > 0 s, got {quiet_s}")
        self.root = Path(root)
        self.incoming, self.studies = Spool(self.root / "incoming"), Spool(self.root / "studies")
        self.aet, self.port, self.host, self.quiet_s = aet, port, host, quiet_s
        self.on_complete, self.on_stored = on_complete, on_stored
        self.max_associations = max_associations
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when a write finishes
        self._last: dict[str, float] = {}  # study -> monotonic time of the last acknowledged instance
        self._inflight: dict[str, int] = {}  # study -> writes in progress
        self._stop = threading.Event()
        self._server: Any = None
        self._watcher: threading.Thread | None = None
        self.received = 0  # instances acknowledged by this process
        self.rejected = 0  # instances answered with a failure status

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> StorageListener:
        """Bind and serve in background threads; returns self. ``OSError`` if the port cannot be bound."""
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        removed = self.incoming.remove_temporaries()
        if removed:
            logger.info("listener: removed %d partial files of a previous process", removed)
        now = time.monotonic()
        for study in self.incoming.studies():  # resumed studies: a fresh quiet period
            self._last[study] = now
        if self._last:
            logger.info("listener: %d incomplete studies from a previous run resume", len(self._last))
        ae = AE(ae_title=self.aet)
        ae.maximum_associations = self.max_associations
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 60
        from pynetdicom import ALL_TRANSFER_SYNTAXES

        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        self._server = ae.start_server((self.host, self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._handle_store)])
        self.port = self._server.server_address[1]
        self._watcher = threading.Thread(target=self._watch, name="medvit-listen-watch", daemon=True)
        self._watcher.start()
        logger.info("listener: %s listening on port %d (quiet period %.1f s)", self.aet, self.port, self.quiet_s)
        return self

    def stop(self, grace_s: float = 10.0) -> None:
        """Refuse new associations, let running ones finish for up to ``grace_s`` (then abort them), wait for
        writes in flight, stop the watcher. Acknowledged instances are on disk already; incomplete studies stay
        in ``incoming/`` for the next start."""
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            deadline = time.monotonic() + grace_s
            for assoc in list(server.active_associations):
                assoc.join(timeout=max(deadline - time.monotonic(), 0.0))
                if assoc.is_alive():
                    assoc.abort()
        with self._idle:  # an aborted association's handler may still be writing: let it finish
            self._idle.wait_for(lambda: not any(self._inflight.values()), timeout=grace_s)
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None

    def __enter__(self) -> StorageListener:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ C-STORE
    def _handle_store(self, event: Any) -> int:
        study = None
        try:
            ds = event.dataset
            study = check_uid(ds.StudyInstanceUID, "StudyInstanceUID")
            series = check_uid(ds.SeriesInstanceUID, "SeriesInstanceUID")
            sop = check_uid(ds.SOPInstanceUID, "SOPInstanceUID")
        except Exception as e:
            self.rejected += 1
            logger.warning("listener: instance refused from %s (%s: %s)", _peer(event), type(e).__name__, e)
            return STATUS_CANNOT_UNDERSTAND
        with self._lock:
            self._inflight[study] = self._inflight.get(study, 0) + 1
        try:
            self.incoming.write_bytes(study, series, sop, event.encoded_dataset())
        except OSError as e:
            self.rejected += 1
            logger.error("listener: instance %s not stored (%s); answered 'out of resources'", sop, e)
            return STATUS_OUT_OF_RESOURCES
        finally:
            with self._idle:
                self._inflight[study] -= 1
                self._last[study] = time.monotonic()
                self._idle.notify_all()
        self.received += 1
        if self.on_stored is not None:
            self.on_stored(study, sop)
        return STATUS_SUCCESS

    # ------------------------------------------------------------------ completion
    def _watch(self) -> None:
        interval = min(max(self.quiet_s / 4, 0.05), 1.0)
        while not self._stop.wait(interval):
            for study in self._due():
                try:
                    self._promote(study)
                except OSError as e:
                    logger.error("listener: study %s could not be moved to studies/ (%s); will retry", study, e)
                    with self._lock:
                        self._last[study] = time.monotonic()
                    continue
                try:
                    self.on_complete(study)
                except Exception:  # the consumer's problem must not stop the listener
                    logger.exception("listener: handling completed study %s failed", study)

    def _due(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            due = [s for s, t in self._last.items() if now - t >= self.quiet_s and not self._inflight.get(s)]
            for s in due:
                del self._last[s]
                self._inflight.pop(s, None)
        return sorted(due)

    def _promote(self, study: str) -> None:
        """Move every file of ``study`` from incoming/ to studies/ (each move atomic; merges with earlier parts)."""
        src = self.incoming.root / study
        if not src.is_dir():
            return
        for f in sorted(src.glob("*/*.dcm")):
            dst = self.studies.root / study / f.parent.name / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dst)
        for d in sorted(src.glob("*"), reverse=True):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        if not any(src.iterdir()):
            src.rmdir()
        logger.info("listener: study %s complete (quiet for %.1f s)", study, self.quiet_s)


def _peer(event: Any) -> str:
    try:
        r = event.assoc.requestor
        return f"{r.ae_title}@{r.address}"
    except Exception:
        return "?"
