"""Studies from a DICOMweb server (a PACS such as Orthanc) for the viewer; no Streamlit here.

The study list comes from a QIDO-RS query (nothing is downloaded for it); a study's instances are fetched with
WADO-RS only when the study is opened, into a per-session cache folder (resumable: what is there is not
fetched again), and then catalogued like any folder, so thumbnails, paging, display and the model work as for
folders. An SR that medvit wrote for the study (``medvit infer --send-to`` or ``medvit listen``) is read back
as findings per image.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ENV_DICOMWEB = "MEDVIT_VIEWER_DICOMWEB"  # default server address offered in the sidebar


def allowed_address(address: str, configured: str) -> str:
    """``address`` if it points at the server the viewer was started with (``--dicomweb``; only the query may
    differ), else ``PermissionError``: the viewer must not become a way to make its host request other URLs."""
    from medvit.pacs import parse_pacs_address

    if not configured:
        raise PermissionError("no DICOMweb server configured: start the viewer with --dicomweb URL")
    a, c = parse_pacs_address(address), parse_pacs_address(configured)
    if (a.kind, a.base_url) != (c.kind, c.base_url):
        raise PermissionError(f"only the server given with --dicomweb ({c.server}) can be queried; change the "
                              "query keys after '?', not the server")
    return address


def query_studies(address: str) -> list[Any]:
    """Studies matching ``address`` (``dicomweb://HOST:PORT/PATH?PatientID=…``), newest first.

    Raises ``ValueError`` for a bad address and :class:`medvit.pacs.PacsError` (naming the server and the step)
    when the server cannot be queried.
    """
    from medvit.pacs import open_source, parse_pacs_address

    a = parse_pacs_address(address)
    if a.kind != "dicomweb":
        raise ValueError(f"{a.server}: the viewer reads from DICOMweb servers (dicomweb://HOST:PORT/PATH)")
    return list(reversed(open_source(a).query()))


def fetch_study(address: str, study_uid: str, cache_root: str | Path) -> tuple[Path, list[str]]:
    """Retrieve every instance of one study (all series, SRs included) into ``cache_root``; returns the study
    folder and the per-instance problems as text (the rest is still usable)."""
    from medvit.pacs import Spool, StudyRef, check_uid, open_source, parse_pacs_address

    uid = check_uid(study_uid, "StudyInstanceUID")
    a = replace(parse_pacs_address(address), query={})  # the study is given by its UID; take all its series
    spool = Spool(cache_root)
    report = open_source(a).retrieve(spool, [StudyRef(uid)])
    problems = [f"{f.sop_instance_uid or f.series_instance_uid or f.study_instance_uid}: {f.step}: {f.reason}"
                for f in report.failures]
    return spool.root / uid, problems


def medvit_findings(study_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """SOP Instance UID -> findings of the SR(s) medvit wrote in this study folder (``label``, ``probability``,
    ``present``); newest SR last wins. Other SRs are ignored; an unreadable SR is logged and skipped."""
    import pydicom

    from medvit.io.sr import read_findings

    out: dict[str, list[dict[str, Any]]] = {}
    files = []
    for f in Path(study_dir).rglob("*.dcm"):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["Modality", "Manufacturer",
                                                                             "ContentDate", "ContentTime"])
        except Exception:
            continue
        if str(ds.get("Modality", "")) == "SR" and str(ds.get("Manufacturer", "")) == "medvit":
            files.append((str(ds.get("ContentDate", "")) + str(ds.get("ContentTime", "")), f))
    for _, f in sorted(files):
        try:
            groups = read_findings(f)
        except Exception as e:
            logger.warning("viewer: SR %s not readable as medvit findings (%s)", f.name, e)
            continue
        per: dict[str, list[dict[str, Any]]] = {}
        for g in groups:
            if "sop_instance_uid" in g:
                per.setdefault(g["sop_instance_uid"], []).append(g)
        out.update(per)
    return out
