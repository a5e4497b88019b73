"""Reading a JSON document that comes from outside the code (a checkpoint's ``config.json``, a logit store's
``meta.json``, a rules file, a dataset's annotation file, a viewer feedback file): one place that reads, parses and
checks the top level, with errors that name the file and the reason (never a bare ``JSONDecodeError`` traceback).

Each caller passes its domain's error type (``CheckpointError``, ``AdapterError``, ``RulesError``, ...; all are
``ValueError`` subclasses), so its callers and messages keep their meaning.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medvit.io.errors import printable_path

__all__ = ["parse_json", "read_json"]

_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "true/false",
               type(None): "null"}


def _json_name(tp: type) -> str:
    return _JSON_NAMES.get(tp, tp.__name__)


def parse_json(text: str, source: str, *, error: Callable[[str], Exception] = ValueError,
               expect: type | None = dict, format_id: str | None = None) -> Any:
    """The JSON document in ``text`` (read from ``source``, a file name or ``"<string>"`` for messages).

    Args:
        error: exception type raised (called with the message) on a refused document.
        expect: the top level's Python type (``dict`` = a JSON object, ``list`` = an array); None = any.
        format_id: when given, the object's ``"format"`` key must equal it (the house's versioned file formats).

    Raises:
        ``error``: ``"<source>: not valid JSON (<reason>, line L column C)"``, ``"<source>: expected a JSON object,
        got array"``, ``"<source>: format 'x' is not 'medvit-.../1'"``.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{source}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
    if expect is not None and not isinstance(doc, expect):
        raise error(f"{source}: expected a JSON {_json_name(expect)}, got {_json_name(type(doc))}")
    if format_id is not None and (not isinstance(doc, dict) or doc.get("format") != format_id):
        got = doc.get("format") if isinstance(doc, dict) else None
        raise error(f"{source}: format {got!r} is not {format_id!r}")
    return doc


def read_json(path: str | Path, *, error: Callable[[str], Exception] = ValueError, expect: type | None = dict,
              format_id: str | None = None, missing: str = "") -> Any:
    """The JSON document in file ``path`` (UTF-8), checked as :func:`parse_json` does.

    Raises:
        FileNotFoundError: ``"<path> not found[: <missing>]"`` when ``path`` is not a regular file (``missing``: what
            the caller expected there, e.g. "a medvit checkpoint is a directory with ...").
        ``error``: unreadable (permissions, not UTF-8) or refused by :func:`parse_json`; the message names the file.
    """
    p = Path(path)
    name = printable_path(p)
    if not p.is_file():
        raise FileNotFoundError(f"{name} not found{': ' + missing if missing else ''}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{name}: not valid JSON (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except OSError as e:
        raise error(f"{name}: not readable ({e.strerror or e})") from None
    return parse_json(text, name, error=error, expect=expect, format_id=format_id)
