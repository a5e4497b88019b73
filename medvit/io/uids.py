"""DICOM UIDs medvit derives: one maker for written images, SRs, secondary captures and synthetic studies."""

from __future__ import annotations

from typing import Any

#: separates the parts, so ("ab", "c") and ("a", "bc") give different UIDs (generate_uid joins sources with "")
_SEP = "\x1f"


def make_uid(*parts: Any) -> str:
    """Deterministic DICOM UID from ``parts`` (e.g. ``("study", patient_id, accession)``): equal inputs, equal UID.

    ``pydicom.uid.generate_uid`` under pydicom's root (``1.2.826.0.1.3680043.8.498.``) with the parts as entropy
    source (a SHA-512 of them): a valid UID of at most 64 characters (PS3.5 §9.1), so a re-run or a resumed run
    writes the same UIDs. (``generate_uid(prefix=None)`` would ignore the parts and return a random ``2.25`` UID.)
    """
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[_SEP.join(str(p) for p in parts)]))
