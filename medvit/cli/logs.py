"""Where a command's log records go: the terminal shows medvit's own warnings; libraries' chatter goes to a file.

pydicom logs every decoder attempt (with tracebacks) and every header quirk, highdicom warns once per copied
instance; on a folder of real data that buries the progress bar and the one line per failed file. Filtering is
done on the handlers, not by setting the libraries' logger levels (pydicom resets its level when it is
imported, so a level set before that import is lost).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _TerminalFilter(logging.Filter):
    """Admit medvit's records at ``level`` and above; everything when ``everything`` (``-vv``)."""

    def __init__(self, level: int, everything: bool) -> None:
        super().__init__()
        self.level, self.everything = level, everything

    def filter(self, record: logging.LogRecord) -> bool:
        if self.everything:
            return True
        return record.name.split(".")[0] == "medvit" and record.levelno >= self.level


@contextmanager
def routed_logs(verbose: int, log_file: str | Path | None = None) -> Iterator[Path | None]:
    """While open: the terminal shows medvit's WARNINGs (INFO with ``-v``; every logger with ``-vv``), and
    ``log_file`` gets every record at INFO and above from every logger plus Python warnings, appended as UTF-8
    with quoted header values redacted (:func:`medvit.io.errors.redact_values`). Restores the handlers after."""
    from medvit.io.errors import redact_pydicom_log

    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=FORMAT, datefmt="%H:%M:%S")
    old_level = root.level
    term = _TerminalFilter(logging.INFO if verbose >= 1 else logging.WARNING, verbose >= 2)
    streams = [h for h in root.handlers
               if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    escape = EscapeControls()
    for h in streams:
        h.addFilter(term)
        h.addFilter(escape)
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.captureWarnings(True)
    redact_pydicom_log()
    fh = None
    path = Path(log_file) if log_file is not None else None
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # OUTPUT may hold identifiers
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
            fh = logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")
            fh.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
            fh.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S"))
            fh.addFilter(_RedactOthers())
            fh.addFilter(escape)
            root.addHandler(fh)
        yield path
    finally:
        if fh is not None:
            root.removeHandler(fh)
            fh.close()
        for h in streams:
            h.removeFilter(term)
            h.removeFilter(escape)
        logging.captureWarnings(False)
        root.setLevel(old_level)


class _RedactOthers(logging.Filter):
    """Library records (not medvit's) with quoted values redacted: they quote header values verbatim."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] != "medvit":
            from medvit.io.errors import redact_values

            try:
                record.msg, record.args = redact_values(record.getMessage()), ()
            except Exception:  # a record whose message cannot be formatted: keep it as it is
                pass
        return True


class EscapeControls(logging.Filter):
    """Every record's message with control characters escaped (:func:`medvit.io.text.escape_text`): a file
    name or header value carrying terminal escapes, CR or NUL reaches neither the terminal nor the log raw."""

    def filter(self, record: logging.LogRecord) -> bool:
        from medvit.io.text import escape_text

        try:
            record.msg, record.args = escape_text(record.getMessage(), keep_newlines=True), ()
        except Exception:  # a record whose message cannot be formatted: keep it as it is
            pass
        return True
