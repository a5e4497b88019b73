"""Records shared by the PACS sources and sinks (what was found, fetched, sent, and what failed)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class StudyRef:
    """A study found by a query (C-FIND / QIDO-RS study level)."""

    study_instance_uid: str
    patient_id: str = ""
    accession_number: str = ""
    study_date: str = ""
    modalities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failure:
    """One instance (or, with an empty ``sop_instance_uid``, a whole series or study) that failed a step."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    step: str  # e.g. "WADO-RS retrieve", "C-GET", "STOW-RS", "C-STORE"
    reason: str


@dataclass
class RetrieveReport:
    """What a source's retrieve did: studies touched, instances newly written, already present, failures."""

    studies: list[str] = field(default_factory=list)
    retrieved: int = 0
    present: int = 0
    failures: list[Failure] = field(default_factory=list)


@dataclass
class SendReport:
    """What a sink's send did: instances stored (or already there) and the failures, one per instance."""

    sent: list[str] = field(default_factory=list)  # SOP Instance UIDs accepted by the PACS
    failures: list[Failure] = field(default_factory=list)


def with_retries(fn: Callable[[], T], *, attempts: int, backoff_s: float, retriable: Callable[[Exception], bool],
                 what: str) -> T:
    """Call ``fn``; on an exception for which ``retriable`` is true, wait ``backoff_s * 2**k`` and try again,
    ``attempts`` times in all; the last exception propagates."""
    for k in range(max(attempts, 1)):
        try:
            return fn()
        except Exception as e:
            if k + 1 >= attempts or not retriable(e):
                raise
            logger.info("%s: attempt %d failed (%s: %s); retrying", what, k + 1, type(e).__name__, e)
            time.sleep(backoff_s * 2**k)
    raise AssertionError("unreachable")


def short(value: Any, n: int = 200) -> str:
    """One-line excerpt of a server's answer for an error message."""
    s = " ".join(str(value).split())
    return s if len(s) <= n else s[: n - 3] + "..."
