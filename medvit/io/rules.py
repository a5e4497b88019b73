"""Series selection rules in MONAI Deploy's JSON grammar, with defaults derived from a model's contract.

A rules document looks like::

    {"selections": [
        {"name": "chest_xray",
         "conditions": {"Modality": "(?i)^(CR|DX)$", "ImageType": ["PRIMARY", "!SECONDARY"],
                        "Rows": [256, ">="], "Columns": [128, 4096]}}
    ]}

Keys are DICOM keywords (Study, Series and Image level attributes of the instance). Values match as in
MONAI Deploy's ``DICOMSeriesSelectorOperator``:

* a string is a regular expression searched in the attribute's string value (``"(?i)CR"``);
* a list of strings is a set condition on a (possibly multi-valued) attribute: every plain entry must be
  present, every ``!``-prefixed entry must be absent (case-insensitive);
* a number matches exactly; ``[min, max]`` is an inclusive range; ``[value, op]`` with op one of
  ``> >= < <= == !=`` is a relation;
* ``ImageOrientationPatient`` also accepts ``"Axial"``, ``"Coronal"`` or ``"Sagittal"``.

An attribute missing from the instance fails the condition. An instance is selected when any selection
matches (medvit infers every matching series; the matching selection's name is recorded). No selections
at all selects everything. Matching happens per instance on header attributes, so it streams; in practice
the attributes used are constant within a series.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from medvit.io.jsonfile import json_type_name, parse_json, read_json

logger = logging.getLogger(__name__)

_RELATIONS = {">", ">=", "<", "<=", "==", "!="}
_PLANES = {"axial", "coronal", "sagittal"}


class Scope(Protocol):
    """What a weight contract (:class:`medvit.models.contract.WeightContract`) declares about the images it is
    meant for: DICOM Modality, View Position and Body Part Examined values (empty = not restricted)."""

    modalities: Any
    view_positions: Any
    body_parts: Any


#: the header attributes a contract's scope reads (and :func:`header_of` returns)
SCOPE_KEYWORDS = ("Modality", "ViewPosition", "BodyPartExamined")


class RulesError(ValueError):
    """A rules document that does not follow the grammar; the message names the selection and key."""


@dataclass
class Selection:
    """One named selection: all ``conditions`` must hold."""

    name: str  # shown in status rows and predictions ("selection" column)
    conditions: dict[str, Any] = field(default_factory=dict)  # DICOM keyword -> condition (see module doc)
    if_present: list[str] = field(default_factory=list)  # keywords whose condition passes when the attribute is absent


@dataclass
class SelectionRules:
    """An ordered list of selections; an instance is selected when one matches (see module doc)."""

    selections: list[Selection] = field(default_factory=list)
    source: str = "default"  # where the rules came from (file path, "contract", "default")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> SelectionRules:
        return cls.from_dict(parse_json(text, source, error=RulesError, expect=None), source)

    @classmethod
    def from_file(cls, path: str | Path) -> SelectionRules:
        return cls.from_dict(read_json(path, error=RulesError, expect=None, missing="a selection rules file"),
                             str(path))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str = "<dict>") -> SelectionRules:
        if not isinstance(doc, Mapping) or "selections" not in doc:
            raise RulesError(f'{source}: expected {{"selections": [{{"name": ..., "conditions": {{...}}}}]}}')
        if not isinstance(doc["selections"], list | tuple):
            raise RulesError(f'{source}: "selections" must be a list of objects '
                             f'[{{"name": ..., "conditions": {{...}}}}], got {json_type_name(doc["selections"])}')
        sels = []
        for i, s in enumerate(doc["selections"]):
            if not isinstance(s, Mapping) or not isinstance(s.get("conditions", {}), Mapping):
                raise RulesError(f"{source}: selection {i} must be an object with a 'conditions' object")
            if not isinstance(s.get("name", ""), str):
                raise RulesError(f"{source}: selection {i}: 'name' must be a string, got {json_type_name(s['name'])}")
            sel = Selection(str(s.get("name", f"selection_{i}")), dict(s.get("conditions", {})))
            for key, cond in sel.conditions.items():
                _validate(cond, f"{source}: selection {sel.name!r} key {key!r}")
            sels.append(sel)
        return cls(sels, source)

    @classmethod
    def from_contract(cls, contract: Scope) -> SelectionRules:
        """Default rules from a :class:`~medvit.models.WeightContract` (modalities, view positions, body parts).

        Each non-empty list becomes an anchored case-insensitive regex, e.g. ``["CR","DX"]`` ->
        ``"(?i)^(CR|DX)$"``. Modality (Type 1) must match; View Position and Body Part Examined (Type 2 / 3, often
        empty in practice) must match when the file has them. An empty contract gives no selections (everything
        is selected; ``medvit infer`` refuses such a model unless ``--any-modality`` or ``--rules`` is given).
        """
        cond: dict[str, Any] = {}
        for key, values in (("Modality", contract.modalities), ("ViewPosition", contract.view_positions),
                            ("BodyPartExamined", contract.body_parts)):
            if values:
                cond[key] = "(?i)^(" + "|".join(re.escape(str(v)) for v in values) + ")$"
        optional = [k for k in ("ViewPosition", "BodyPartExamined") if k in cond]
        return cls([Selection("model_contract", cond, optional)] if cond else [], "model contract")

    def to_dict(self) -> dict[str, Any]:
        return {"selections": [{"name": s.name, "conditions": s.conditions,
                                **({"if_present": s.if_present} if s.if_present else {})} for s in self.selections],
                "source": self.source}

    def content(self) -> dict[str, Any]:
        """What the rules select, without where they came from: equal for the same rules given as a relative
        or an absolute path, or as a copy of the file (the run fingerprint compares this)."""
        return {k: v for k, v in self.to_dict().items() if k != "source"}

    @property
    def keywords(self) -> set[str]:
        """DICOM keywords the rules read (what a header reader must keep)."""
        return {k for s in self.selections for k in s.conditions}

    # ------------------------------------------------------------------ matching
    def match(self, attrs: Mapping[str, Any]) -> tuple[str | None, str]:
        """(name of the first matching selection or None, reason when none matched).

        ``attrs`` maps DICOM keywords to values (a pydicom Dataset works: it supports ``in`` and ``[]``
        by keyword through :func:`get_attr`).
        """
        if not self.selections:
            return "all", ""
        reasons = []
        for sel in self.selections:
            failed = _first_failure(sel, attrs)
            if failed is None:
                return sel.name, ""
            reasons.append(f"{sel.name}: {failed}")
        return None, "not selected by series rules (" + "; ".join(reasons) + ")"


def get_attr(attrs: Any, key: str) -> Any:
    """Value of ``key`` in a dict or pydicom Dataset, or ``None`` when absent or empty."""
    if isinstance(attrs, Mapping):
        v = attrs.get(key)
    else:
        v = getattr(attrs, key, None)
    if v is None or v == "" or (isinstance(v, list | tuple) and len(v) == 0):
        return None
    return v


def _first_failure(sel: Selection, attrs: Any) -> str | None:
    for key, cond in sel.conditions.items():
        value = get_attr(attrs, key)
        if value is None:
            if key in sel.if_present:
                continue
            return f"{key} is missing"
        if not _matches(key, cond, value):
            return f"{key}={_show(value)} does not match {json.dumps(cond)}"
    return None


def _show(value: Any) -> str:
    if isinstance(value, str | numbers.Number):
        return str(value)
    try:
        return "\\".join(str(v) for v in value)
    except TypeError:
        return str(value)


def _validate(cond: Any, where: str) -> None:
    if isinstance(cond, str):
        try:
            re.compile(cond)
        except re.error as e:
            raise RulesError(f"{where}: invalid regular expression {cond!r} ({e})") from e
    elif isinstance(cond, bool) or cond is None:
        raise RulesError(f"{where}: condition must be a string, number or list, got {cond!r}")
    elif isinstance(cond, numbers.Number):
        return
    elif isinstance(cond, list):
        if all(isinstance(c, str) for c in cond):
            return
        if len(cond) == 2 and isinstance(cond[0], numbers.Number):
            if isinstance(cond[1], numbers.Number) or cond[1] in _RELATIONS:
                return
        raise RulesError(f"{where}: list condition must be strings, [min, max] or [value, op] with op in "
                         f"{sorted(_RELATIONS)}; got {cond!r}")
    else:
        raise RulesError(f"{where}: unsupported condition {cond!r}")


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str | bytes | numbers.Number):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _matches(key: str, cond: Any, value: Any) -> bool:
    if key == "ImageOrientationPatient" and isinstance(cond, str) and cond.lower() in _PLANES:
        return _plane(value) == cond.lower()
    if isinstance(cond, str):
        return any(re.search(cond, str(v)) for v in _as_list(value)) if not isinstance(value, str) \
            else re.search(cond, value) is not None
    if isinstance(cond, numbers.Number):
        return any(_num(v) == cond for v in _as_list(value))
    if all(isinstance(c, str) for c in cond):
        have = {str(v).strip().upper() for v in _as_list(value)}
        need = {c.upper() for c in cond if not c.startswith("!")}
        banned = {c[1:].upper() for c in cond if c.startswith("!")}
        return need <= have and not (banned & have)
    x = _num(_as_list(value)[0])
    if x is None:
        return False
    a, b = cond
    if isinstance(b, numbers.Number):
        return min(a, b) <= x <= max(a, b)
    return {">": x > a, ">=": x >= a, "<": x < a, "<=": x <= a, "==": x == a, "!=": x != a}[b]


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _plane(iop: Any) -> str | None:
    """Closest anatomical plane of an ImageOrientationPatient (row and column direction cosines)."""
    try:
        r = [float(v) for v in list(iop)[:3]]
        c = [float(v) for v in list(iop)[3:6]]
    except (TypeError, ValueError):
        return None
    n = [r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0]]
    axis = max(range(3), key=lambda i: abs(n[i]))
    return ("sagittal", "coronal", "axial")[axis]


def header_of(image: Any) -> dict[str, Any] | None:
    """The scope attributes (:data:`SCOPE_KEYWORDS`, absent ones left out) of an image's own DICOM header: a
    DICOM file (header read without pixels) or a ``medvit.io.MedicalImage`` read from one (``modality`` +
    ``meta``). ``None`` when the image has no DICOM header at all (arrays, tensors, PNG/JPEG/TIFF, NIfTI, .npy —
    nothing says what they show: the caller vouches for them). ``{}`` for a file that is not readable DICOM.
    Never raises."""
    if isinstance(image, str | Path):
        from medvit.io.dicom import read_dicom_header
        from medvit.io.errors import MedicalIOError
        from medvit.io.nifti import NIFTI_SUFFIXES
        from medvit.io.raster import RASTER_SUFFIXES

        p = Path(image)
        if p.is_dir() or p.name.lower().endswith((*NIFTI_SUFFIXES, *RASTER_SUFFIXES, ".npy")):
            return None
        try:
            ds = read_dicom_header(p, specific_tags=list(SCOPE_KEYWORDS))
        except (MedicalIOError, OSError, ValueError):
            return {}
        return {k: str(v) for k in SCOPE_KEYWORDS if (v := get_attr(ds, k)) is not None}
    if hasattr(image, "modality") and isinstance(getattr(image, "meta", None), Mapping):
        if not image.modality and not getattr(image, "uids", None):  # not read from DICOM
            return None
        out = {"Modality": image.modality, **{k: image.meta.get(k) for k in SCOPE_KEYWORDS[1:]}}
        return {k: str(v) for k, v in out.items() if get_attr(out, k) is not None}
    return None
