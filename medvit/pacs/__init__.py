"""PACS connections: DICOMweb and DIMSE sources (query + retrieve into a spool) and sinks (store results).

This room sits just above ``medvit.io``: it imports io only, plus pynetdicom and dicomweb-client.
``open_source`` / ``open_sink`` pick the implementation from an address (see :mod:`medvit.pacs.url`).
"""

from __future__ import annotations

from typing import Any

from medvit.pacs.base import Failure, RetrieveReport, SendReport, StudyRef
from medvit.pacs.errors import PacsError
from medvit.pacs.spool import Spool, check_uid
from medvit.pacs.url import PacsAddress, parse_pacs_address

__all__ = ["Failure", "PacsAddress", "PacsError", "RetrieveReport", "SendReport", "Spool", "StudyRef",
           "check_uid", "open_sink", "open_source", "parse_pacs_address"]


def open_source(address: str | PacsAddress, **kw: Any) -> Any:
    """A source (``query()``, ``retrieve(spool)``) for a ``dicomweb://`` or ``dimse://`` address."""
    a = parse_pacs_address(address) if isinstance(address, str) else address
    if a.kind == "dicomweb":
        from medvit.pacs.dicomweb import DicomwebSource

        return DicomwebSource(a, **kw)
    from medvit.pacs.dimse import DimseSource

    return DimseSource(a, **kw)


def open_sink(address: str | PacsAddress, **kw: Any) -> Any:
    """A sink (``send(paths)``) for a ``dicomweb://`` (STOW-RS) or ``dimse://`` (C-STORE) address."""
    a = parse_pacs_address(address) if isinstance(address, str) else address
    if a.query:
        raise ValueError(f"{a.server}: a --send-to address takes no query ({', '.join(a.query)})")
    if a.kind == "dicomweb":
        from medvit.pacs.dicomweb import StowSink

        return StowSink(a, **kw)
    from medvit.pacs.dimse import CStoreSink

    return CStoreSink(a, **kw)
