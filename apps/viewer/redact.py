"""What the viewer hides on screen until the user reveals patient identifiers (no Streamlit here).

The rule is medvit's de-identification rule (:func:`medvit.io.deidentify.is_identifying`: DICOM PS3.15
Table E.1-1, default deny for the patient, clinical-trial, study, visit and results groups, every private
element and overlay/curve group), applied to the screen with the standard options a reader needs to read the
image:

* Retain Longitudinal Temporal Information with Full Dates (CID 7050 code 113106): dates and times are shown,
  except those in the patient and visit groups (birth date, last menstrual date, ...);
* Retain UIDs (113110): Study/Series/SOP Instance UIDs are shown (they reference results, not people);
* descriptors (Study/Series Description, Protocol Name) are shown (they say what was imaged).

Everything else the profile removes, empties or replaces is hidden: names, IDs, birth date, age, sex, address,
residence, medical alerts, allergies, patient state, accession number, physicians, operators and other
people's names, institution, locations and stations, device serial numbers, free-text comments.
"""

from __future__ import annotations

from typing import Any

HIDDEN = "‹hidden›"
#: descriptors a reader needs; shown although the Basic Profile removes them
SHOWN_DESCRIPTORS = frozenset({"StudyDescription", "SeriesDescription", "ProtocolName"})
MAX_VALUE_CHARS = 160
_TEMPORAL = ("DA", "DT", "TM")


def is_identifying(keyword: str, group: int | None = None, tag: int | None = None, vr: str | None = None) -> bool:
    """True when the element is hidden until revealed (see the module docstring for the rule)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    from medvit.io.deidentify import DENY_GROUPS
    from medvit.io.deidentify import is_identifying as profile_says

    if tag is None:
        tag = tag_for_keyword(keyword) if keyword else None
    if tag is None:
        return group is not None and (group % 2 == 1 or (group & 0xFF00) in (0x5000, 0x6000))
    if keyword in SHOWN_DESCRIPTORS:
        return False
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = ""
    if vr in _TEMPORAL and (int(tag) >> 16) not in DENY_GROUPS:
        return False  # Retain Longitudinal Temporal Information with Full Dates
    return profile_says(int(tag), keyword)


def shown(keyword: str, value: Any, reveal: bool) -> str:
    """``value`` as text, or :data:`HIDDEN` for an identifying keyword when not revealed."""
    if value is None or value == "":
        return ""
    if not reveal and is_identifying(keyword):
        return HIDDEN
    return str(value)


def tag_rows(ds: Any, reveal: bool, depth: int = 0) -> list[dict[str, str]]:
    """Rows (Tag, Keyword, VR, Value) of a pydicom Dataset, nested sequences indented, bulk data summarised."""
    rows: list[dict[str, str]] = []
    if depth == 0 and getattr(ds, "file_meta", None) is not None:
        rows += tag_rows(ds.file_meta, reveal, depth=0)
    for elem in ds:
        tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
        kw = elem.keyword or ("[private]" if elem.tag.is_private else "")
        hide = not reveal and is_identifying(elem.keyword or "", elem.tag.group, int(elem.tag), str(elem.VR))
        indent = "  " * depth + ("↳ " if depth else "")
        if elem.VR == "SQ":
            rows.append({"Tag": tag, "Keyword": indent + kw, "VR": "SQ",
                         "Value": HIDDEN if hide else f"{len(elem.value)} item(s)"})
            if not hide:
                for item in elem.value:
                    rows += tag_rows(item, reveal, depth + 1)
            continue
        if elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") or elem.tag == 0x7FE00010:
            value = f"<{len(elem.value) if elem.value is not None else 0} bytes>"
        else:
            try:
                value = str(elem.value)
            except Exception as e:  # a malformed value must not break the panel
                value = f"<unreadable: {type(e).__name__}>"
        if len(value) > MAX_VALUE_CHARS:
            value = value[:MAX_VALUE_CHARS] + "…"
        rows.append({"Tag": tag, "Keyword": indent + kw, "VR": str(elem.VR),
                     "Value": HIDDEN if hide and value else value})
    return rows
