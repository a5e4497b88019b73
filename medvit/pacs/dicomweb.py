"""DICOMweb (PS3.18) source and sink: QIDO-RS query, WADO-RS retrieve into a spool, STOW-RS store.

Uses ``dicomweb-client`` (requests underneath). Every server error becomes a :class:`PacsError` naming the
server, the step and the HTTP status; per-instance problems of a retrieve or a store are collected as
:class:`Failure` records and the rest continue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medvit.pacs.base import Failure, RetrieveReport, SendReport, StudyRef, short, with_retries
from medvit.pacs.errors import PacsError
from medvit.pacs.spool import Spool, check_uid
from medvit.pacs.url import PacsAddress

logger = logging.getLogger(__name__)

# DICOM JSON tags (PS3.18 F.2) read from QIDO-RS answers
_STUDY_UID, _SERIES_UID, _SOP_UID = "0020000D", "0020000E", "00080018"
_PATIENT_ID, _ACCESSION, _STUDY_DATE, _MODALITIES, _MODALITY = "00100020", "00080050", "00080020", "00080061", \
    "00080060"


def _value(obj: dict[str, Any], tag: str) -> Any:
    v = obj.get(tag, {}).get("Value") or [""]
    return v[0] if len(v) == 1 else v


def _retriable(e: Exception) -> bool:
    import requests

    if isinstance(e, requests.ConnectionError | requests.Timeout):
        return True
    return isinstance(e, requests.HTTPError) and e.response is not None and e.response.status_code in (
        408, 429, 500, 502, 503, 504)


class _DicomwebPeer:
    def __init__(self, address: PacsAddress, retries: int = 2, backoff_s: float = 0.5) -> None:
        if address.kind != "dicomweb":
            raise ValueError(f"{address.server} is not a DICOMweb address")
        import requests
        from dicomweb_client.api import DICOMwebClient

        self.address, self.retries, self.backoff_s = address, retries, backoff_s
        session = requests.Session()
        if address.username:
            session.auth = (address.username, address.password)
        self.client = DICOMwebClient(url=address.base_url, session=session, timeout=address.timeout)
        self.client.set_http_retry_params(retry=False)  # retries are ours (connection errors included)

    def _call(self, step: str, fn: Any, *args: Any, **kw: Any) -> Any:
        """``fn(*args, **kw)`` with retries; any failure becomes a PacsError naming the server and ``step``."""
        try:
            return with_retries(lambda: fn(*args, **kw), attempts=self.retries + 1, backoff_s=self.backoff_s,
                                retriable=_retriable, what=f"{self.address.server} {step}")
        except Exception as e:
            raise PacsError(self.address.server, step, _reason(e, self.address.timeout)) from e


def _reason(e: Exception, timeout: float) -> str:
    import requests

    if isinstance(e, requests.HTTPError) and e.response is not None:
        r = e.response
        return f"HTTP {r.status_code} {r.reason}" + (f": {short(r.text)}" if r.text else "")
    if isinstance(e, requests.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(e, requests.ConnectionError):
        return f"cannot connect (is the server running and the address right?): {short(e, 160)}"
    return f"{type(e).__name__}: {short(e)}"


class DicomwebSource(_DicomwebPeer):
    """Studies matching the address's query, retrieved with WADO-RS into a :class:`Spool`.

    Resumable: instances already in the spool are not fetched again; a series none of whose instances is
    there is streamed in one WADO-RS series request (one instance in memory at a time), a partly present one
    is completed instance by instance.
    """

    page_size = 500  # QIDO-RS results per request

    def query(self) -> list[StudyRef]:
        """QIDO-RS study search (``Modality`` is matched against ModalitiesInStudy); sorted by date and UID."""
        q = dict(self.address.query)
        if "Modality" in q:
            q["ModalitiesInStudy"] = q.pop("Modality")
        found = self._paged("QIDO-RS search for studies", self.client.search_for_studies, _STUDY_UID,
                            search_filters=q, fields=["ModalitiesInStudy", "AccessionNumber", "StudyDate", "PatientID"])
        out = []
        for uid, s in found.items():
            mods = _value(s, _MODALITIES)
            out.append(StudyRef(uid, str(_value(s, _PATIENT_ID)), str(_value(s, _ACCESSION)),
                                str(_value(s, _STUDY_DATE)), tuple(mods) if isinstance(mods, list) else (mods,)))
        out.sort(key=lambda r: (r.study_date, r.study_instance_uid))
        return out[: self.address.limit] if self.address.limit else out

    def instances(self, study: str) -> dict[str, list[str]]:
        """Series UID -> SOP Instance UIDs of ``study`` (only series of the queried Modality, if one was given)."""
        found = self._paged(f"QIDO-RS search for instances of study {study}", self.client.search_for_instances,
                            _SOP_UID, study_instance_uid=study, fields=["Modality", "SeriesInstanceUID"])
        modality = self.address.query.get("Modality")
        series: dict[str, list[str]] = {}
        for sop, i in found.items():
            if modality and str(_value(i, _MODALITY)) != modality:
                continue
            se = check_uid(_value(i, _SERIES_UID), f"{self.address.server}: QIDO-RS SeriesInstanceUID")
            series.setdefault(se, []).append(sop)
        return series

    def _paged(self, step: str, search: Any, key_tag: str, **kw: Any) -> dict[str, dict[str, Any]]:
        """All matches of a QIDO-RS search by ``limit``/``offset`` pages, keyed by the (checked) UID in
        ``key_tag``. Stops at a short page or at a page with nothing new (servers that ignore ``offset``)."""
        out: dict[str, dict[str, Any]] = {}
        while True:
            page = self._call(step, search, limit=self.page_size, offset=len(out), **kw)
            new = 0
            for obj in page:
                uid = check_uid(_value(obj, key_tag), f"{self.address.server}: {step}: UID")
                new += uid not in out
                out.setdefault(uid, obj)
            if len(page) < self.page_size or new == 0:
                return out

    def retrieve(self, spool: Spool, studies: Iterable[StudyRef] | None = None) -> RetrieveReport:
        """Fetch every instance of ``studies`` (default: :meth:`query`) missing from ``spool``.

        Query errors raise :class:`PacsError`; per-series/instance retrieve errors are recorded in the report.
        """
        report = RetrieveReport()
        for ref in (self.query() if studies is None else studies):
            study = ref.study_instance_uid
            report.studies.append(study)
            try:
                series = self.instances(study)
            except PacsError as e:
                report.failures.append(Failure(study, "", "", "QIDO-RS search for instances", e.reason))
                continue
            have = spool.instances(study)
            for se, sops in sorted(series.items()):
                missing = [s for s in sops if s not in have]
                report.present += len(sops) - len(missing)
                if len(missing) == len(sops):
                    missing = self._stream_series(spool, study, se, set(sops), report)
                for sop in missing:
                    self._fetch_instance(spool, study, se, sop, report)
        logger.info("%s: %d studies, %d instances retrieved, %d already in the spool, %d failed",
                    self.address.server, len(report.studies), report.retrieved, report.present,
                    len(report.failures))
        return report

    def _stream_series(self, spool: Spool, study: str, series: str, want: set[str],
                       report: RetrieveReport) -> list[str]:
        """Stream one series; returns the instances still missing (all of them if the stream failed early)."""
        got: set[str] = set()
        step = f"WADO-RS retrieve series {series}"
        try:
            for ds in self._call(step, self.client.iter_series, study, series):
                sop = str(ds.SOPInstanceUID)
                if sop in want and str(ds.StudyInstanceUID) == study:
                    spool.write_dataset(ds)
                    got.add(sop)
                    report.retrieved += 1
        except Exception as e:  # includes errors raised while iterating the multipart stream
            logger.warning("%s: %s stopped after %d instances (%s); fetching the rest one by one",
                           self.address.server, step, len(got), e)
        return sorted(want - got)

    def _fetch_instance(self, spool: Spool, study: str, series: str, sop: str, report: RetrieveReport) -> None:
        try:
            ds = self._call(f"WADO-RS retrieve instance {sop}", self.client.retrieve_instance, study, series, sop)
            if str(ds.SOPInstanceUID) != sop:
                raise PacsError(self.address.server, "WADO-RS retrieve", f"asked for {sop}, got {ds.SOPInstanceUID}")
            spool.write_dataset(ds)
            report.retrieved += 1
        except (PacsError, ValueError, OSError) as e:
            reason = e.reason if isinstance(e, PacsError) else f"{type(e).__name__}: {e}"
            report.failures.append(Failure(study, series, sop, "WADO-RS retrieve", reason))


class StowSink(_DicomwebPeer):
    """Store Part 10 files with STOW-RS, one request per instance so each gets its own status."""

    def send(self, paths: Iterable[str | Path]) -> SendReport:
        import pydicom

        report = SendReport()
        for p in paths:
            try:
                ds = pydicom.dcmread(p)
            except Exception as e:
                report.failures.append(Failure("", "", "", "read", f"{p}: {type(e).__name__}: {e}"))
                continue
            study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
            try:
                answer = self._call(f"STOW-RS store instance {sop}", self.client.store_instances, [ds])
                failed = list(getattr(answer, "FailedSOPSequence", None) or [])
                if failed:
                    why = ", ".join(f"FailureReason 0x{int(getattr(f, 'FailureReason', 0)):04X}" for f in failed)
                    raise PacsError(self.address.server, "STOW-RS", f"the server refused instance {sop} ({why})")
                report.sent.append(sop)
            except PacsError as e:
                report.failures.append(Failure(study, series, sop, "STOW-RS", e.reason))
        return report
