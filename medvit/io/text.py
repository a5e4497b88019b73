"""Untrusted text (file names, header values) made safe for terminals, logs and CSV cells.

A file name or a DICOM header value comes from outside the hospital's control: it may carry terminal escape
sequences (``ESC ] 0 ; title BEL``, ``ESC [ 2 J``), NUL, C1 controls, carriage returns that break CSV rows,
bidirectional overrides, or bytes that are not UTF-8. Every place where such text reaches the terminal, a log
line or a table goes through :func:`escape_text` (SECURITY.md §7); CSV cells also through :func:`csv_cell`.
"""

from __future__ import annotations

from typing import Any

#: Unicode format characters that reorder what a terminal or an editor shows (Trojan-Source, CVE-2021-42574)
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape_char(c: str) -> str:
    o = ord(c)
    if o < 0x20 or o == 0x7F or 0x80 <= o <= 0x9F:  # C0, DEL, C1
        return f"\\x{o:02x}"
    if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8, kept by Python as a lone surrogate (PEP 383)
        return f"\\x{o - 0xDC00:02x}"
    if 0xD800 <= o <= 0xDFFF:  # any other lone surrogate: not encodable as UTF-8
        return f"\\u{o:04x}"
    if c in _BIDI:
        return f"\\u{o:04x}"
    return c


def escape_text(value: object, keep_newlines: bool = False) -> str:
    """``str(value)`` with every control character escaped: C0 (including TAB, CR, LF and NUL), DEL and C1 as
    ``\\xNN``, non-UTF-8 bytes of a file name as ``\\xNN`` (``caf\\xe9.dcm``), bidirectional overrides as
    ``\\uNNNN``; a backslash is kept as is. The result is valid UTF-8 and shows on one line, unchanged by the
    terminal. Printable text (including non-ASCII letters) is unchanged. ``keep_newlines``: LF stays (for
    multi-line messages and tracebacks whose parts were escaped already).
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and text.isascii():
        return text
    return "".join(c if keep_newlines and c == "\n" else _escape_char(c) for c in text)


def header_text(value: Any) -> str:
    """A header value as one text: a multi-valued element (``..\\..\\win``) joined with the DICOM value
    separator ``\\`` (PS3.5 §6.4), never Python's list repr; ``None`` → ``""``."""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(header_text(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


#: first characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text and that keeps its row intact.

    Strings: control characters escaped (:func:`escape_text`: a CR or LF never splits a row), then a leading
    ``'`` where the text starts with ``= + - @`` (formula injection). Numbers and ``None`` are left alone (a
    negative number is data, not a formula). Used by every CSV medvit writes (infer tables, ``dicom index``).
    """
    if not isinstance(value, str):
        return value
    value = escape_text(value)
    if value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """:func:`csv_cell` applied to every value of a row."""
    return {k: csv_cell(v) for k, v in row.items()}


__all__ = ["FORMULA_PREFIXES", "csv_cell", "csv_row", "escape_text", "header_text"]
