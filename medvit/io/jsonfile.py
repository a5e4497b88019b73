"""Reading a JSON document that comes from outside the code (a checkpoint's ``config.json``, a logit store's
``meta.json``, a rules file, a dataset's annotation file, a viewer feedback file): one place that reads, parses and
checks the top level, with errors that name the file and the reason (never a bare ``JSONDecodeError`` traceback).

Each caller passes its domain's error type (``CheckpointError``, ``AdapterError``, ``RulesError``, ...; all are
``ValueError`` subclasses), so its callers and messages keep their meaning.

Strict JSON (RFC 8259): ``NaN`` / ``Infinity`` literals (Python's ``json`` extension) are refused, naming the key,
except under the top-level keys a caller lists in ``nonfinite_ok`` (e.g. a checkpoint's free-form ``extra``, where
the code itself records metrics that can be NaN). A number longer than Python's integer-string limit and a document
nested deeper than the parser's recursion limit are refused as invalid JSON naming the file. A UTF-8 byte-order mark
(files saved by Windows Notepad) is accepted.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medvit.io.errors import file_problem, printable_path

__all__ = ["json_type_name", "name_list_problem", "parse_json", "read_json"]

_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "true/false",
               type(None): "null"}


def _json_name(tp: type) -> str:
    return _JSON_NAMES.get(tp, tp.__name__)


def json_type_name(value: Any) -> str:
    """The JSON name of ``value``'s type (``object``, ``array``, ``string``, ``number``, ``true/false``, ``null``), for
    messages such as ``"'base' must be an object, got string"``."""
    return _json_name(type(value))


def name_list_problem(value: Any, *, allow_empty: bool = False) -> str | None:
    """Why ``value`` (label / class names read from a file: one name per model output) is not a list of distinct
    non-empty strings, as the end of a message (``"must be ..., got ..."``); None when it is one. An empty list is
    refused unless ``allow_empty`` (a run with no outputs); a repeated name is refused (two outputs under one
    name: ``dict(zip(names, scores))`` keeps one of them, a CSV writes two columns of the same name)."""
    if not isinstance(value, list | tuple):
        return f"must be a list of non-empty strings, got {json_type_name(value)}"
    bad = next((i for i, x in enumerate(value) if not (isinstance(x, str) and x.strip())), None)
    if bad is not None:
        x = value[bad]
        what = "blank" if isinstance(x, str) else f"a {json_type_name(x)}, not a string"
        return f"must be a list of non-empty strings; item [{bad}] ({json.dumps(x)}) is {what}"
    if not value and not allow_empty:
        return "must name at least one label, got an empty list"
    counts = Counter(x.strip() for x in value)  # "A" and "A " read as one name in a report or a CSV header
    repeated = sorted(x for x, n in counts.items() if n > 1)
    if repeated:
        return (f"must not repeat a name (one per output; surrounding spaces ignored), got "
                f"{', '.join(map(repr, repeated))} more than once")
    return None


def _first_nonfinite(doc: Any, allowed: tuple[str, ...]) -> tuple[str, float] | None:
    """Key path (``contract.thresholds[0]``) of the first NaN/±Infinity in ``doc``, in document order, outside the
    top-level keys ``allowed``, and the value; None when there is none. Iterative: ``doc`` may be nested up to the
    parser's limit."""
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:
        v, path = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return path or "the document", v
        if isinstance(v, dict):
            items = [(x, f"{path}.{k}" if path else str(k)) for k, x in v.items() if path or k not in allowed]
        elif isinstance(v, list):
            items = [(x, f"{path}[{i}]") for i, x in enumerate(v)]
        else:
            continue
        stack.extend(reversed(items))
    return None


def parse_json(text: str, source: str, *, error: Callable[[str], Exception] = ValueError,
               expect: type | None = dict, format_id: str | None = None, nonfinite_ok: tuple[str, ...] = ()) -> Any:
    """The JSON document in ``text`` (read from ``source``, a file name or ``"<string>"`` for messages).

    Args:
        error: exception type raised (called with the message) on a refused document.
        expect: the top level's Python type (``dict`` = a JSON object, ``list`` = an array); None = any.
        format_id: when given, the object's ``"format"`` key must equal it (the house's versioned file formats).
        nonfinite_ok: top-level keys under which ``NaN`` / ``Infinity`` are tolerated (read as float nan/inf);
            anywhere else they are refused.

    Raises:
        ``error``: ``"<source>: not valid JSON (<reason>, line L column C)"`` (also a number over the integer-string
        digit limit, nesting beyond the recursion limit), ``"<source>: contract.thresholds[0] is NaN, not a finite
        number (NaN/Infinity are not JSON)"``, ``"<source>: expected a JSON object, got array"``,
        ``"<source>: format 'x' is not 'medvit-.../1'"``, ``"<source>: key 'format' missing (expected
        'medvit-.../1'; ...)"``.
    """
    seen: list[str] = []

    def constant(name: str) -> float:
        seen.append(name)
        return float(name)

    def number(literal: str) -> float:  # 1e999 is valid JSON syntax but overflows to inf: as non-finite as Infinity
        v = float(literal)
        if not math.isfinite(v):
            seen.append(literal)
        return v

    if text.startswith("\ufeff"):  # UTF-8 byte-order mark (already dropped by read_json's utf-8-sig decoding)
        text = text[1:]
    try:
        doc = json.loads(text, parse_constant=constant, parse_float=number)
    except json.JSONDecodeError as e:
        raise error(f"{source}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise error(f"{source}: not valid JSON (nested too deeply)") from None
    except ValueError:  # int(): more digits than sys.get_int_max_str_digits()
        raise error(f"{source}: not valid JSON (a number has more than {sys.get_int_max_str_digits()} "
                    f"digits)") from None
    if seen:
        found = _first_nonfinite(doc, nonfinite_ok)
        if found is not None:
            where, v = found
            literal = "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
            raise error(f"{source}: {where} is {literal}, not a finite number (NaN and Infinity are not JSON)")
    if expect is not None and not isinstance(doc, expect):
        raise error(f"{source}: expected a JSON {_json_name(expect)}, got {_json_name(type(doc))}")
    if format_id is not None and not isinstance(doc, dict):
        raise error(f"{source}: expected a JSON object with key 'format' {format_id!r}, got {_json_name(type(doc))}")
    if format_id is not None and "format" not in doc:
        raise error(f"{source}: key 'format' missing (expected {format_id!r}; is this a file medvit wrote?)")
    if format_id is not None and doc["format"] != format_id:
        raise error(f"{source}: format {doc['format']!r} is not {format_id!r}")
    return doc


def read_json(path: str | Path, *, error: Callable[[str], Exception] = ValueError, expect: type | None = dict,
              format_id: str | None = None, missing: str = "", nonfinite_ok: tuple[str, ...] = ()) -> Any:
    """The JSON document in file ``path`` (UTF-8, with or without a byte-order mark), checked as :func:`parse_json`
    does.

    Raises:
        FileNotFoundError: ``"<path> not found[: <missing>]"`` when nothing is at ``path`` (``missing``: what
            the caller expected there, e.g. "a medvit checkpoint is a directory with ...").
        ``error``: ``path`` is a directory or not a regular file (device, FIFO, socket), unreadable (permissions,
            not UTF-8) or refused by :func:`parse_json`; the message names the file.
    """
    p = Path(path)
    name = printable_path(p)
    if not p.exists():
        raise FileNotFoundError(f"{name} not found{': ' + missing if missing else ''}")
    if why := file_problem(p):  # a directory, FIFO, socket or device: named, never opened
        raise error(f"{name}: {why}, not a JSON file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{name}: not valid JSON (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except OSError as e:
        raise error(f"{name}: not readable ({e.strerror or e})") from None
    return parse_json(text, name, error=error, expect=expect, format_id=format_id, nonfinite_ok=nonfinite_ok)
