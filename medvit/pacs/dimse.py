"""DIMSE (PS3.7) source and sink with pynetdicom: C-ECHO, C-FIND + C-GET into a spool, C-STORE.

The source walks the Study Root information model: C-FIND at STUDY level with the address's query
(``Modality`` matched as ModalitiesInStudy), then SERIES level (only series of that Modality, if given), then
IMAGE level for the SOP Instance UIDs; it C-GETs a series none of whose instances is in the spool in one
request, and a partly present one instance by instance (resumable). C-GET sends the instances back over the
same association (no C-MOVE destination to configure on the PACS); each is written atomically as it arrives.
Association failures raise :class:`PacsError` naming the server and the step; per-instance failures are
recorded as :class:`Failure` and the rest continue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medvit.pacs.base import Failure, RetrieveReport, SendReport, StudyRef, with_retries
from medvit.pacs.errors import PacsError
from medvit.pacs.spool import Spool, check_uid
from medvit.pacs.url import PacsAddress

logger = logging.getLogger(__name__)

_PENDING = (0xFF00, 0xFF01)
#: C-STORE statuses that mean "stored" (PS3.4 B.2.3: success and the coercion/elements-discarded warnings)
STORED = (0x0000, 0xB000, 0xB006, 0xB007)


def _status(s: Any) -> int:
    return int(getattr(s, "Status", -1)) if s is not None else -1


def _no_answer(assoc: Any, op: str, calling: str) -> str:
    """Why a DIMSE request got no status back (pynetdicom yields an empty status on abort or timeout)."""
    return (f"no {op} response: the PACS dropped the request or the association (does it accept {op} from "
            f"calling AE {calling!r}? PACSs often answer only peers they know), or it timed out")


class _DimsePeer:
    def __init__(self, address: PacsAddress, retries: int = 2, backoff_s: float = 0.5) -> None:
        if address.kind != "dimse":
            raise ValueError(f"{address.server} is not a DIMSE address")
        self.address, self.retries, self.backoff_s = address, retries, backoff_s

    def _ae(self) -> Any:
        from pynetdicom import AE

        ae = AE(ae_title=self.address.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.address.timeout
        ae.connection_timeout = min(self.address.timeout, 10.0)
        return ae

    @contextmanager
    def _association(self, ae: Any, step: str, **kw: Any) -> Iterator[Any]:
        """An established association (retried); ``PacsError`` naming ``step`` if none can be had."""
        a = self.address

        def connect() -> Any:
            from pynetdicom import evt
            from pynetdicom.pdu import A_ASSOCIATE_RJ

            rejections: list[Any] = []  # A-ASSOCIATE-RJ PDUs received (PS3.8 9.3.4)

            def on_pdu(event: Any) -> None:
                if isinstance(event.pdu, A_ASSOCIATE_RJ):
                    rejections.append(event.pdu)

            handlers = [*kw.get("evt_handlers", []), (evt.EVT_PDU_RECV, on_pdu)]
            assoc = ae.associate(a.host, a.port, ae_title=a.called_aet, **{**kw, "evt_handlers": handlers})
            if assoc.is_established:
                assoc.unbind(evt.EVT_PDU_RECV, on_pdu)
                return assoc
            # pynetdicom 3.0 reports a rejection as an abort when the PACS closes the connection right after its
            # A-ASSOCIATE-RJ and the requesting thread looks at the socket only after that (a loaded machine):
            # the received PDU says what happened
            if assoc.is_rejected or rejections:
                raise PacsError(a.server, f"{step}: association", "the PACS rejected the association (check the "
                                f"called AE title {a.called_aet!r} and that it accepts calling AE "
                                f"{a.calling_aet!r})")
            raise ConnectionError("cannot connect or no A-ASSOCIATE answer (is the server running and the "
                                  "address right?)")

        try:
            assoc = with_retries(connect, attempts=self.retries + 1, backoff_s=self.backoff_s,
                                 retriable=lambda e: isinstance(e, ConnectionError), what=f"{a.server} {step}")
        except ConnectionError as e:
            raise PacsError(a.server, f"{step}: association", str(e)) from None
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def echo(self) -> None:
        """C-ECHO (Verification); ``PacsError`` if the PACS does not answer with Success."""
        from pynetdicom.sop_class import Verification

        ae = self._ae()
        ae.add_requested_context(Verification)
        with self._association(ae, "C-ECHO") as assoc:
            st = _status(assoc.send_c_echo())
            if st != 0:
                raise PacsError(self.address.server, "C-ECHO", f"status 0x{st:04X}" if st >= 0 else "no answer")


class DimseSource(_DimsePeer):
    """Studies matching the address's query, found with C-FIND and fetched with C-GET into a :class:`Spool`."""

    def _find(self, assoc: Any, identifier: Any, step: str) -> list[Any]:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        out = []
        for status, ident in assoc.send_c_find(identifier, FIND):
            st = _status(status)
            if st in _PENDING and ident is not None:
                out.append(ident)
            elif st == 0:
                break
            else:
                raise PacsError(self.address.server, step, f"status 0x{st:04X}" if st >= 0 else
                                _no_answer(assoc, "C-FIND", self.address.calling_aet))
        return out

    def _find_ae(self) -> Any:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        ae = self._ae()
        ae.add_requested_context(FIND)
        return ae

    def query(self) -> list[StudyRef]:
        """C-FIND at STUDY level; sorted by date and UID."""
        from pydicom.dataset import Dataset

        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = self.address.query.get("StudyInstanceUID", "")
        q.ModalitiesInStudy = self.address.query.get("Modality", "")
        for k in ("PatientID", "AccessionNumber", "StudyDate"):
            setattr(q, k, self.address.query.get(k, ""))
        with self._association(self._find_ae(), "C-FIND") as assoc:
            found = self._find(assoc, q, "C-FIND study level")
        out = {}
        for ds in found:
            uid = check_uid(ds.get("StudyInstanceUID"), f"{self.address.server}: C-FIND StudyInstanceUID")
            mods = ds.get("ModalitiesInStudy", "")
            out[uid] = StudyRef(uid, str(ds.get("PatientID", "")), str(ds.get("AccessionNumber", "")),
                                str(ds.get("StudyDate", "")), tuple(mods) if not isinstance(mods, str) else (mods,))
        refs = sorted(out.values(), key=lambda r: (r.study_date, r.study_instance_uid))
        return refs[: self.address.limit] if self.address.limit else refs

    def instances(self, assoc: Any, study: str) -> dict[str, list[tuple[str, str]]]:
        """Series UID -> [(SOP Instance UID, SOP Class UID)] by SERIES then IMAGE level C-FIND."""
        from pydicom.dataset import Dataset

        q = Dataset()
        q.QueryRetrieveLevel, q.StudyInstanceUID, q.SeriesInstanceUID = "SERIES", study, ""
        q.Modality = self.address.query.get("Modality", "")
        series: dict[str, list[tuple[str, str]]] = {}
        for s in self._find(assoc, q, f"C-FIND series of study {study}"):
            se = check_uid(s.get("SeriesInstanceUID"), f"{self.address.server}: C-FIND SeriesInstanceUID")
            qi = Dataset()
            qi.QueryRetrieveLevel, qi.StudyInstanceUID, qi.SeriesInstanceUID = "IMAGE", study, se
            qi.SOPInstanceUID, qi.SOPClassUID = "", ""
            series[se] = [(check_uid(i.get("SOPInstanceUID"), f"{self.address.server}: C-FIND SOPInstanceUID"),
                           str(i.get("SOPClassUID", "")))
                          for i in self._find(assoc, qi, f"C-FIND instances of series {se}")]
        return series

    def retrieve(self, spool: Spool, studies: Iterable[StudyRef] | None = None) -> RetrieveReport:
        """Fetch every instance of ``studies`` (default: :meth:`query`) missing from ``spool`` with C-GET."""
        report = RetrieveReport()
        refs = list(self.query() if studies is None else studies)
        with self._association(self._find_ae(), "C-FIND") as assoc:
            plan = {}
            for ref in refs:
                report.studies.append(ref.study_instance_uid)
                try:
                    plan[ref.study_instance_uid] = self.instances(assoc, ref.study_instance_uid)
                except PacsError as e:
                    report.failures.append(Failure(ref.study_instance_uid, "", "", "C-FIND", e.reason))
        for study, series in plan.items():
            have = spool.instances(study)
            todo: list[tuple[str, list[tuple[str, str]], bool]] = []  # (series, missing, whole series?)
            for se, items in sorted(series.items()):
                missing = [(sop, cls) for sop, cls in items if sop not in have]
                report.present += len(items) - len(missing)
                if missing:
                    todo.append((se, missing, len(missing) == len(items)))
            if todo:
                self._get_study(spool, study, todo, report)
        logger.info("%s: %d studies, %d instances retrieved, %d already in the spool, %d failed",
                    self.address.server, len(report.studies), report.retrieved, report.present,
                    len(report.failures))
        return report

    def _get_study(self, spool: Spool, study: str, todo: list[tuple[str, list[tuple[str, str]], bool]],
                   report: RetrieveReport) -> None:
        """C-GET (or, with ``move_port``, C-MOVE) the missing instances of one study over one association; a
        whole series goes in one request, a partly present one instance by instance."""
        from pydicom.dataset import Dataset
        from pynetdicom import ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

        op = "C-MOVE" if self.address.move_port is not None else "C-GET"
        series_of = {sop: se for se, items, _ in todo for sop, _ in items}
        got: set[str] = set()

        def on_store(event: Any) -> int:
            try:
                ds = event.dataset
                sop = check_uid(ds.SOPInstanceUID, "SOPInstanceUID")
                if sop not in series_of or str(ds.StudyInstanceUID) != study:
                    logger.warning("%s: %s sent an instance not asked for (%s); ignored", self.address.server, op, sop)
                    return 0x0000
                spool.write_bytes(study, series_of[sop], sop, event.encoded_dataset())
                got.add(sop)
                return 0x0000
            except Exception as e:  # a bad instance must not end the retrieve
                logger.warning("%s: %s sub-operation: instance not stored (%s: %s)", self.address.server, op,
                               type(e).__name__, e)
                return 0xC210  # cannot understand

        requests = []
        for se, items, whole in todo:
            for sop in ([None] if whole else [sop for sop, _ in items]):
                q = Dataset()
                q.QueryRetrieveLevel = "SERIES" if sop is None else "IMAGE"
                q.StudyInstanceUID, q.SeriesInstanceUID = study, se
                if sop is not None:
                    q.SOPInstanceUID = sop
                requests.append(q)
        ae = self._ae()
        server = None
        if op == "C-GET":
            classes = sorted({c for _, items, _ in todo for _, c in items if c})
            if not classes:  # the PACS did not return SOP Class UIDs: offer the common storage classes
                classes = [cx.abstract_syntax for cx in StoragePresentationContexts[:120]]
            classes = classes[:127]  # 128 presentation contexts at most, one is the C-GET model
            ae.add_requested_context(GET)
            for c in classes:
                ae.add_requested_context(c, ALL_TRANSFER_SYNTAXES)
            kw: dict[str, Any] = {"ext_neg": [build_role(c, scp_role=True) for c in classes],
                                  "evt_handlers": [(evt.EVT_C_STORE, on_store)]}
        else:  # C-MOVE: the PACS opens its own association to our storage SCP (it must know our AE title)
            server = self._move_destination(on_store)
            ae.add_requested_context(MOVE)
            kw = {}
        step = f"{op} study {study}"
        try:
            with self._association(ae, step, **kw) as assoc:
                for q in requests:
                    last = -1
                    responses = (assoc.send_c_get(q, GET) if op == "C-GET" else
                                 assoc.send_c_move(q, self.address.calling_aet, MOVE))
                    for status, _ in responses:
                        last = _status(status)
                    if last not in (0x0000, 0xFF00):
                        logger.warning("%s: %s series %s: final status %s", self.address.server, step,
                                       q.SeriesInstanceUID, f"0x{last:04X}" if last >= 0 else "none (aborted)")
                        hint = (f"; with C-MOVE the PACS must know move destination {self.address.calling_aet!r} "
                                "(this host, move_port) in its list of modalities" if op == "C-MOVE" else "")
                        report.failures.append(Failure(study, q.SeriesInstanceUID, "", op, (
                            f"final status {f'0x{last:04X}' if last >= 0 else 'none (aborted)'}{hint}")))
                    if not assoc.is_established:
                        break
        finally:
            if server is not None:
                server.shutdown()
        for sop in sorted(set(series_of) - got):
            report.failures.append(Failure(study, series_of[sop], sop, op,
                                           f"the PACS did not send this instance (see the log for the {op} status)"))
        report.retrieved += len(got)

    def _move_destination(self, on_store: Any) -> Any:
        """A storage SCP on ``move_port`` as the calling AE title, for the C-MOVE sub-operations."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        scp = AE(ae_title=self.address.calling_aet)
        scp.network_timeout = scp.acse_timeout = scp.dimse_timeout = self.address.timeout
        for cx in AllStoragePresentationContexts:
            scp.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        try:
            return scp.start_server(("", int(self.address.move_port or 0)), block=False,
                                    evt_handlers=[(evt.EVT_C_STORE, on_store)])
        except OSError as e:
            raise PacsError(self.address.server, "C-MOVE: local storage SCP",
                            f"cannot listen on move_port {self.address.move_port}: {e}") from None


class CStoreSink(_DimsePeer):
    """Store Part 10 files with C-STORE over one association (contexts from the files' SOP classes)."""

    def send(self, paths: Iterable[str | Path]) -> SendReport:
        import pydicom

        report = SendReport()
        files: list[tuple[Path, Any]] = []
        for p in paths:
            try:
                files.append((Path(p), pydicom.dcmread(p, stop_before_pixels=True)))
            except Exception as e:
                report.failures.append(Failure("", "", "", "read", f"{p}: {type(e).__name__}: {e}"))
        if not files:
            return report
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        syntaxes: dict[str, set[str]] = {}  # SOP class -> the files' transfer syntaxes (+ uncompressed fallbacks)
        for _, h in files:
            ts = str(getattr(getattr(h, "file_meta", None), "TransferSyntaxUID", "") or ImplicitVRLittleEndian)
            syntaxes.setdefault(str(h.SOPClassUID), {ExplicitVRLittleEndian, ImplicitVRLittleEndian}).add(ts)
        classes = sorted(syntaxes)
        for start in range(0, len(classes), 120):  # at most 128 presentation contexts per association
            chunk = set(classes[start:start + 120])
            ae = self._ae()
            for c in chunk:
                ae.add_requested_context(c, sorted(syntaxes[c]))
            batch = [(p, h) for p, h in files if str(h.SOPClassUID) in chunk]
            try:
                with self._association(ae, "C-STORE") as assoc:
                    for p, h in batch:
                        self._store_one(assoc, p, h, report)
            except PacsError as e:
                done = set(report.sent) | {f.sop_instance_uid for f in report.failures}
                for _, h in batch:
                    if str(h.SOPInstanceUID) not in done:
                        report.failures.append(Failure(str(h.StudyInstanceUID), str(h.SeriesInstanceUID),
                                                       str(h.SOPInstanceUID), "C-STORE", f"{e.step}: {e.reason}"))
        return report

    def _store_one(self, assoc: Any, path: Path, head: Any, report: SendReport) -> None:
        sop = str(head.SOPInstanceUID)
        study, series = str(head.StudyInstanceUID), str(head.SeriesInstanceUID)
        if not assoc.is_established:
            report.failures.append(Failure(study, series, sop, "C-STORE", "the association ended before this instance"))
            return
        try:
            try:
                st = _status(assoc.send_c_store(path))
            except ValueError as e:
                if "presentation context" not in str(e):
                    raise
                # the PACS refused the file's compressed transfer syntax: send it decompressed (lossless)
                import pydicom

                ds = pydicom.dcmread(path)
                ds.decompress()
                st = _status(assoc.send_c_store(ds))
        except Exception as e:  # e.g. no accepted presentation context even uncompressed, or a decoder error
            report.failures.append(Failure(study, series, sop, "C-STORE", f"{type(e).__name__}: {e}"))
            return
        if st in STORED:
            report.sent.append(sop)
        else:
            why = f"status 0x{st:04X}" if st >= 0 else _no_answer(assoc, "C-STORE", self.address.calling_aet)
            report.failures.append(Failure(study, series, sop, "C-STORE", f"the PACS refused instance {sop}: {why}"))
