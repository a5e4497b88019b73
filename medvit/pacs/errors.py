"""The one error type of the PACS room: which server, which step, and why."""

from __future__ import annotations


class PacsError(RuntimeError):
    """A PACS could not be reached, refused a request, or answered something unusable.

    ``server`` names the peer (``DICOMweb http://host:8042/dicom-web`` or ``DIMSE ORTHANC@host:4242``),
    ``step`` the operation (``QIDO-RS search for studies``, ``C-FIND``, ``association``, ``STOW-RS``, ...),
    ``reason`` what went wrong (HTTP status and body excerpt, DIMSE status, connection refused, ...).
    """

    def __init__(self, server: str, step: str, reason: str) -> None:
        self.server, self.step, self.reason = server, step, reason
        super().__init__(f"{server}: {step} failed: {reason}")
