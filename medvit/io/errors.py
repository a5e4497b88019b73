"""Typed errors of :mod:`medvit.io`. Every error names the file and says why and, where possible, how to fix it.

All inherit :class:`MedicalIOError`, itself a :class:`ValueError`, so callers that only know "bad input" still work.
"""

from __future__ import annotations

from pathlib import Path


def printable_path(path: str | Path) -> str:
    """``path`` as valid, single-line Unicode text: bytes that are not UTF-8 (kept by Python as lone surrogates,
    PEP 383) become ``\\xNN`` escapes, e.g. a Latin-1 ``caf\\xe9.dcm``, and so do control characters (terminal
    escapes, CR, LF, TAB, NUL, C1, DEL; :func:`medvit.io.text.escape_text`). For tables, logs and messages; the
    original path is ``os.fsencode``-recoverable only from the file system, not from this text.
    """
    from medvit.io.text import escape_text

    return escape_text(path)


def printable(value: object) -> object:
    """``value`` (a string, or a dict/list holding strings) with every string passed through
    :func:`printable_path`; other values unchanged. For records written to CSV/JSON tables."""
    if isinstance(value, str):
        return printable_path(value)
    if isinstance(value, dict):
        return {k: printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    return value


_QUOTED = None


def redact_values(text: str) -> str:
    """``text`` (a third-party exception message) with quoted values replaced by ``'<value>'``.

    pydicom and highdicom quote the offending header value in their messages (``Unable to convert
    '04/03/1951' to 'DA' object``); a header value must never reach a log line or an error table, so every
    quoted part that is not a DICOM keyword or a VR name is redacted. Unquoted numbers stay.
    """
    import re

    global _QUOTED
    if _QUOTED is None:
        _QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")

    def sub(m: re.Match[str]) -> str:
        inner = m.group(1) if m.group(1) is not None else m.group(2)
        if _is_keyword(inner):
            return m.group(0)
        return "'<value>'"

    return _QUOTED.sub(sub, str(text))


def _is_keyword(word: str) -> bool:
    if len(word) == 2 and word.isalpha() and word.isupper():  # a VR name (DA, TM, CS, ...)
        return True
    try:
        from pydicom.datadict import tag_for_keyword

        return bool(word) and word.isidentifier() and tag_for_keyword(word) is not None
    except ImportError:  # pragma: no cover
        return False


class _RedactValues:
    """logging filter: the record's message with quoted header values redacted (see :func:`redact_values`)."""

    def filter(self, record: object) -> bool:
        try:
            msg = record.getMessage()  # type: ignore[attr-defined]
        except Exception:
            return True
        record.msg, record.args = redact_values(msg), ()  # type: ignore[attr-defined]
        return True


def redact_pydicom_log() -> None:
    """Make the ``pydicom`` logger redact the header values it quotes (``Invalid value for VR DA: '...'``).

    Idempotent; called by medvit's DICOM readers. Only the message text of pydicom's own records changes.
    """
    import logging

    lg = logging.getLogger("pydicom")
    if not any(isinstance(f, _RedactValues) for f in lg.filters):
        lg.addFilter(_RedactValues())


class MedicalIOError(ValueError):
    """Base class: a file could not be read as a medical image.

    Attributes:
        path: the offending file (``None`` for in-memory datasets).
        reason: a short human-readable explanation (also part of ``str(err)``).
    """

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        where = printable_path(self.path) if self.path is not None else "<dataset>"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # picklable across multiprocessing workers
        return (type(self), (self.path, self.reason))


class NotAFileError(MedicalIOError):
    """Something that is not a regular file is at the path: a directory, FIFO, socket, device, link loop or dangling
    link (:func:`check_file`); it is never opened."""


class NotDicomError(MedicalIOError):
    """The file is not DICOM (no preamble/meta and not parseable as a raw data set), or not a known image format."""


class NoPixelDataError(MedicalIOError):
    """The file is valid DICOM but holds no image (SR, RT plan, DICOMDIR, waveform, ...)."""


class UnsupportedTransferSyntaxError(MedicalIOError):
    """No installed decoder handles the transfer syntax; the message names the plugin that would."""


class UnsupportedPhotometricError(MedicalIOError):
    """The Photometric Interpretation (or its combination with the pixel attributes) is not supported."""


class CorruptFileError(MedicalIOError):
    """Truncated or malformed file: bad header values, too little pixel data, a decoder failure on the stream."""


class InconsistentSeriesError(MedicalIOError):
    """Slices cannot form one volume: mixed series, orientation/size mismatch, gaps or duplicate positions."""


class FrameIndexError(MedicalIOError, IndexError):
    """A frame/slice index outside the image (also an IndexError)."""


class PixelBudgetError(MedicalIOError):
    """The header claims more pixels than the configured budget; refused before any decoding."""


#: what :func:`file_problem` says of a path that is neither a regular file nor a directory (reading one may block or
#: never end, so it is never opened)
SPECIAL_FILE_PROBLEMS = frozenset({"is a FIFO (named pipe)", "is a socket", "is a device"})


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a regular file to read (symbolic links followed), as the end of a message: ``"not
    found"``, ``"is a directory"``, ``"is a FIFO (named pipe)"``, ``"is a socket"``, ``"is a device"``, ``"is a
    symbolic link to a missing target"``, ``"is a symbolic-link loop"``, ``"contains a NUL byte"``, ``"cannot be
    read (<reason>)"``; None when it is one. Nothing is opened (a FIFO is never waited on)."""
    import errno

    p = Path(path)
    try:
        mode = p.stat().st_mode
    except ValueError:  # os.stat: "embedded null byte"
        return "contains a NUL byte"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic-link loop"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return "is a symbolic link to a missing target" if p.is_symlink() else "not found"
        return f"cannot be read ({e.strerror or e})"
    return mode_problem(mode)


def mode_problem(mode: int) -> str | None:
    """Why a file of ``os.stat`` mode ``mode`` is not a regular file, worded as :func:`file_problem` (``"is a
    directory"``, ``"is a FIFO (named pipe)"``, ``"is a socket"``, ``"is a device"``); None for a regular file."""
    import stat

    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "is a socket"
    return "is a device"


def check_file(path: str | Path, what: str = "image file") -> Path:
    """``path`` as a :class:`~pathlib.Path` when it is a regular file (links followed).

    Raises:
        FileNotFoundError: ``"<what> not found: <path>"`` when nothing is there.
        NotAFileError: ``"<path>: <why>, not an <what>"`` (a :class:`MedicalIOError`) when something that is
            not a regular file is there (directory, FIFO, socket, device, link loop, dangling link, a NUL byte in
            the name; :func:`file_problem`). The path is made printable (:func:`printable_path`)."""
    p = Path(path)
    why = file_problem(p)
    if why is None:
        return p
    if why == "not found":
        raise FileNotFoundError(f"{what} not found: {printable_path(p)}")
    raise NotAFileError(p, f"{why}, not {'an' if what[0] in 'aeiou' else 'a'} {what}")


__all__ = [
    "SPECIAL_FILE_PROBLEMS",
    "CorruptFileError",
    "FrameIndexError",
    "InconsistentSeriesError",
    "MedicalIOError",
    "NoPixelDataError",
    "NotAFileError",
    "NotDicomError",
    "PixelBudgetError",
    "UnsupportedPhotometricError",
    "UnsupportedTransferSyntaxError",
    "check_file",
    "file_problem",
    "printable",
    "redact_pydicom_log",
    "redact_values",
    "printable_path",
]
