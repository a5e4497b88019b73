"""Free-text OCT report → biomarker observations of the guideline schema (deterministic, rule-based).

RetinaVLM's part-2 generator asks GPT-4o to read a specialist report against the observation schema; medvit does the
same reading with the schema's own synonyms: the FINDINGS section (the impression restates the guideline, not the
image) is split into sentences, a biomarker is present when a synonym occurs and is not negated (NegEx-style cues
before the term in its sentence — "no", "without", "absent", ... — or after it: "is absent", "not seen"). Drusen size
comes from the Beckman words (small/medium/large) or a measured width in µm; drusen count from a leading number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from medvit.vlm.retina.guidelines import Guidelines, normalize_observations

_PRE_NEG = re.compile(r"\b(no|not|without|absent|absence of|free of|nor|neither|none|negative for|rules? out)\b")
_POST_NEG = re.compile(r"^[^.;]{0,30}\b(absent|not (?:seen|present|visible|identified)|ruled out|resolved)\b")
_BREAK = re.compile(r"\b(but|however|although|though|with)\b")
_NUMBERS = {"a single": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
            "nine": 9, "ten": 10, "a few": 2, "several": 3, "multiple": 3, "numerous": 10}


def findings_section(report: str) -> str:
    """The text between ``FINDINGS:`` and ``IMPRESSION:`` (the whole report when it has no FINDINGS header)."""
    m = re.search(r"findings\s*:(.*?)(?:impression\s*:|conclusion\s*:|$)", report, flags=re.I | re.S)
    return m.group(1) if m else report


def sentences(text: str) -> list[str]:
    """Sentences of ``text`` (split after . ! ? or a newline; decimal points kept)."""
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9(])|\n+", text.strip())
    return [p.strip() for p in parts if p.strip()]


_COORD = re.compile(r"\b(\w+)\s+(and|or)\s+(\w+)\s+(fluid|drusen|atrophy)\b")


def _mention(sentence: str, term: str) -> bool | None:
    """True = mentioned positively, False = negated, None = not mentioned."""
    s = _COORD.sub(r"\1 \4 \2 \3 \4", sentence.lower())  # "subretinal and intraretinal fluid": both named
    m = re.search(r"(?<![\w-])" + re.escape(term) + r"(?![\w-])", s)
    if not m:
        return None
    before = s[:m.start()]
    cue = None
    for c in _PRE_NEG.finditer(before):
        cue = c
    if cue is not None and not _BREAK.search(before[cue.end():]):
        return False
    return not _POST_NEG.search(s[m.end():])


def _drusen_details(sentence: str) -> tuple[str | None, int | None]:
    s = sentence.lower()
    size = None
    for word in ("large", "medium", "small"):  # "the largest large (>125 µm)": the size word of the largest
        if re.search(rf"\b{word}\b", s):
            size = word
            break
    if size is None:
        um = [int(x) for x in re.findall(r"(?<![<>≤≥\d])(\d{2,4})\s*(?:µm|um|microns?)", s)]
        if um:
            w = max(um)
            size = "small" if w < 63 else ("medium" if w <= 125 else "large")
    count = None
    m = re.match(r"\s*(\d+)\s+drus", s)
    if m:
        count = int(m.group(1))
    else:
        for word, n in _NUMBERS.items():
            if re.search(rf"\b{word}\b[^.]*\bdrus", s):
                count = n
                break
    return size, count


def observations_from_report(report: str, g: Guidelines) -> dict[str, Any]:
    """Observations (every schema biomarker, typed) read from one report's findings.

    Bool biomarkers: any positive, non-negated synonym mention → True. ``drusen_size``/``drusen_count`` from the
    sentence that mentions drusen; ``rpe_elevation`` is implied by drusen or a PED (both lift the RPE);
    ``ped_type`` from serous/drusenoid/fibrovascular next to the PED. Everything else keeps the schema default.
    """
    obs: dict[str, Any] = {}
    sents = sentences(findings_section(report))
    for name, b in g.biomarkers.items():
        if b.type != "bool":
            continue
        verdicts = [v for s in sents for t in b.synonyms if (v := _mention(s, t)) is not None]
        if verdicts:
            obs[name] = any(verdicts)
    for s in sents:
        if "drus" in s.lower() and any(_mention(s, t) for t in g.biomarkers["drusen"].synonyms):
            size, count = _drusen_details(s)
            if size and "drusen_size" in g.biomarkers:
                obs["drusen_size"] = size
            if count is not None and "drusen_count" in g.biomarkers:
                obs["drusen_count"] = count
        if obs.get("ped") and "ped_type" in g.biomarkers and _mention(s, "pigment epithelial detachment"):
            for t in ("fibrovascular", "drusenoid", "serous"):
                if t in s.lower():
                    obs["ped_type"] = t
                    break
    if obs.get("drusen"):
        obs.setdefault("drusen_count", 1)
    if "rpe_elevation" in g.biomarkers and (obs.get("drusen") or obs.get("ped")):
        obs.setdefault("rpe_elevation", True)
    return normalize_observations({k: v for k, v in obs.items() if k in g.biomarkers}, g)


#: the retina phantom's 5 stage names → guideline stage names (phantom "late wet" always has fluid: active)
PHANTOM_STAGE = {"healthy": "healthy", "early": "early", "intermediate": "intermediate", "late dry": "late dry",
                 "late wet": "late wet (active)"}
PHANTOM_REFERRAL = {"none": "none", "routine": "general attention", "urgent": "urgent"}


def observations_from_phantom(findings: Mapping[str, Any], quality_index: int | None, g: Guidelines) -> dict[str, Any]:
    """Structured truth of a retina phantom (``medvit.data.phantom_retina`` findings dict) → observations."""
    n = int(findings.get("drusen_count", 0))
    atrophy = bool(findings.get("atrophy_um", 0))
    ped = bool(findings.get("ped", False))
    obs = {"drusen": n > 0, "drusen_size": findings.get("drusen_max_size", "none") if n else "none",
           "drusen_count": n, "hyperreflective_foci": bool(findings.get("pigment", False)), "rpe_atrophy": atrophy,
           "hypertransmission": atrophy, "rpe_elevation": n > 0 or ped, "ped": ped,
           "ped_type": "serous" if ped else "none", "srf": bool(findings.get("srf")), "irf": bool(findings.get("irf"))}
    if quality_index is not None:
        obs["image_quality"] = quality_label(quality_index)
    return normalize_observations({k: v for k, v in obs.items() if k in g.biomarkers}, g)


def quality_label(quality_index: float) -> str:
    """Topcon-style quality index (0–100) → good (≥ 60) / adequate (≥ 40) / poor."""
    q = float(quality_index)
    return "good" if q >= 60 else ("adequate" if q >= 40 else "poor")
