"""Parse the PACS addresses of ``medvit infer --source/--send-to`` and ``medvit listen --send-to``.

Grammar (query keys are DICOM keywords; lower-case keys are options)::

    dicomweb://[USER:PASSWORD@]HOST:PORT/PATH[?QUERY]   DICOMweb over http (PS3.18); dicomwebs:// = https
    http(s)://HOST:PORT/PATH[?QUERY]                     the same, written as the plain base URL
    dimse://CALLED_AET@HOST:PORT[?QUERY]                 DIMSE (PS3.7) over TCP

QUERY (sources only): ``Modality`` (matched against the study's ModalitiesInStudy, and only series of that
modality are retrieved), ``StudyDate`` (``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD``, either end open),
``AccessionNumber``, ``PatientID``, ``StudyInstanceUID`` (``*``/``?`` wildcards as in PS3.4 C.2.2.2.4).
Options: ``limit`` (most studies to take), ``calling_aet`` (DIMSE, default ``MEDVIT``), ``timeout`` (s),
``move_port`` (DIMSE: retrieve with C-MOVE to a storage SCP medvit opens on this port for the retrieve, as
``calling_aet``, which the PACS must know; default: C-GET over the query association).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

QUERY_KEYS = ("Modality", "StudyDate", "AccessionNumber", "PatientID", "StudyInstanceUID")
OPTION_KEYS = ("limit", "calling_aet", "timeout", "move_port")
_AET = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: 16 chars of the default repertoire, no backslash
_DATE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")


@dataclass(frozen=True)
class PacsAddress:
    """A parsed PACS address. ``kind`` is ``dicomweb`` or ``dimse``."""

    kind: str
    host: str
    port: int
    base_url: str = ""  # DICOMweb: http(s)://host:port/path (no credentials)
    called_aet: str = ""  # DIMSE: the PACS's AE title
    calling_aet: str = "MEDVIT"  # DIMSE: ours
    username: str = ""
    password: str = field(default="", repr=False)
    query: dict[str, str] = field(default_factory=dict)  # DICOM keyword -> matching value
    limit: int | None = None
    timeout: float = 30.0
    move_port: int | None = None  # DIMSE: C-MOVE to our storage SCP on this port instead of C-GET

    @property
    def server(self) -> str:
        """How errors and logs name this server (never with credentials)."""
        if self.kind == "dicomweb":
            return f"DICOMweb {self.base_url}"
        return f"DIMSE {self.called_aet}@{self.host}:{self.port}"


def parse_pacs_address(text: str) -> PacsAddress:
    """Parse ``text`` (see the module docstring); raises ``ValueError`` naming the bad part and the accepted forms."""
    u = urlsplit(text)
    scheme = u.scheme.lower()
    if scheme not in ("dicomweb", "dicomwebs", "http", "https", "dimse"):
        raise ValueError(f"PACS address {_redact(text)!r}: scheme must be dicomweb://, dicomwebs://, http(s):// "
                         "or dimse://")
    try:
        port = u.port
    except ValueError as e:
        raise ValueError(f"PACS address {_redact(text)!r}: bad port ({e})") from None
    if not u.hostname:
        raise ValueError(f"PACS address {_redact(text)!r}: no host")
    query: dict[str, str] = {}
    opts: dict[str, str] = {}
    for k, v in parse_qsl(u.query, keep_blank_values=True):
        if k in QUERY_KEYS:
            query[k] = v
        elif k in OPTION_KEYS:
            opts[k] = v
        else:
            raise ValueError(f"PACS address {_redact(text)!r}: unknown query key {k!r}; accepted: "
                             f"{', '.join(QUERY_KEYS + OPTION_KEYS)}")
    if "StudyDate" in query and not _DATE.match(query["StudyDate"]):
        raise ValueError(f"PACS address: StudyDate {query['StudyDate']!r} is not YYYYMMDD or YYYYMMDD-YYYYMMDD")
    limit = None
    if "limit" in opts:
        if not opts["limit"].isdigit() or int(opts["limit"]) < 1:
            raise ValueError(f"PACS address: limit must be a positive integer, got {opts['limit']!r}")
        limit = int(opts["limit"])
    try:
        timeout = float(opts.get("timeout", 30.0))
    except ValueError:
        raise ValueError(f"PACS address: timeout must be seconds, got {opts['timeout']!r}") from None
    move_port = None
    if "move_port" in opts:
        if not opts["move_port"].isdigit() or not 0 < int(opts["move_port"]) < 65536:
            raise ValueError(f"PACS address: move_port must be a TCP port, got {opts['move_port']!r}")
        move_port = int(opts["move_port"])
    host = u.hostname
    if scheme == "dimse":
        if port is None:
            raise ValueError(f"PACS address {text!r}: dimse:// needs a port (dimse://AET@HOST:PORT)")
        called = unquote(u.username or "")
        calling = opts.get("calling_aet", "MEDVIT")
        for what, aet in (("called AE title (before @)", called), ("calling_aet", calling)):
            if not _AET.match(aet) or not aet.strip():
                raise ValueError(f"PACS address {text!r}: {what} {aet!r} must be 1-16 printable characters "
                                 "(dimse://AET@HOST:PORT)")
        return PacsAddress("dimse", host, port, called_aet=called, calling_aet=calling, query=query,
                           limit=limit, timeout=timeout, move_port=move_port)
    if move_port is not None:
        raise ValueError("PACS address: move_port is a DIMSE option (dimse://...)")
    http = "https" if scheme in ("dicomwebs", "https") else "http"
    port = port or (443 if http == "https" else 80)
    netloc = f"[{host}]" if ":" in host else host
    base = f"{http}://{netloc}:{port}{u.path.rstrip('/')}"
    return PacsAddress("dicomweb", host, port, base_url=base, username=unquote(u.username or ""),
                       password=unquote(u.password or ""), query=query, limit=limit, timeout=timeout)


def _redact(text: str) -> str:
    """``text`` with any ``user:password@`` replaced (addresses appear in errors and logs)."""
    return re.sub(r"//[^/@]*:[^/@]*@", "//***@", text)
