"""RetinaVLM curriculum generation with deterministic templates driven by the guideline schemas.

Part 1, "introduction to retina": one tabular row per image (sex, age, visual acuity, quality, AMD stage, eye,
biomarker tags) → K question/answer pairs mixing open and yes/no questions, never stating the attribute's value in the
question, yes/no balanced. Part 2, "advanced retinal specialism": one free-text report per image, read against the
biomarker schema (:mod:`medvit.vlm.retina.reports`) and the staging/referral rules → the paper's ten modules with K
pairs each, including chain-of-thought staging and referral. A third file, ``captions.jsonl``, holds generic captions
without specialist content (the generalist baseline's training data).

Output: LLaVA-style conversation JSONL (``images`` + ``conversations`` [{from: human|gpt, value}], the human turn
starting with ``<image>``) plus ``manifest.json`` (seed, guideline version, counts per module, yes fractions, skipped
rows with reasons, SHA-256 per file). Byte-identical for identical inputs and seed: every image's pairs come from a
random generator keyed on (seed, image id, module).

Source: Holland et al., npj Digital Medicine 2025 (arXiv 2407.08410) — curriculum parts 1 and 2, the module table
(K per image) and the prompt rules (do not leak image facts into questions; mix yes/no and open questions; balance
positives and negatives; chain of thought from biomarkers to stage to referral; fluid separates active from inactive
late wet AMD). The paper generates with GPT-4o/WizardLM; here templates do it, optionally paraphrased by a local LM.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from medvit.config import option
from medvit.io.errors import file_problem, printable_path
from medvit.io.safe_write import resolved_inside
from medvit.vlm.retina.guidelines import (
    GuidelineError,
    Guidelines,
    normalize_observations,
    referral_from_stage,
    stage_evidence,
    stage_from_biomarkers,
)
from medvit.vlm.retina.reports import (
    PHANTOM_STAGE,
    findings_section,
    observations_from_report,
    quality_label,
    sentences,
)

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
#: the paper's ten part-2 modules with their K (pairs per image), in curriculum order
PART2_MODULES: dict[str, int] = {
    "advanced_biomarkers_guidelines": 30,
    "specific_qa": 15,
    "general_qa": 15,
    "staging_introduction_guidelines": 20,
    "staging_logic_guidelines": 20,
    "referral_reasoning_guidelines": 25,
    "report_writing": 15,
    "full_report_writing_guidelines": 20,
    "staging_accuracy_guidelines": 40,
    "staging_accuracy": 30,
}
PART1_MODULE = "introduction_to_retina"
CAPTION_MODULE = "generic_captions"
#: part-1 fields and the phantom ``labels.csv`` columns holding them (``medvit data synth --kind retina``)
PHANTOM_COLUMNS = {
    "image_id": "image_id",
    "image": "file",
    "sex": "sex",
    "age": "age",
    "va_logmar": "va_logmar",
    "quality_index": "quality_index",
    "stage": "stage_name",
    "eye": "eye",
    "report_file": "report_file",
    "split": "split",
}
PHANTOM_BIOMARKER_COLUMNS = {
    "drusen": "drusen",
    "hyperreflective_foci": "pigment",
    "rpe_atrophy": "atrophy",
    "srf": "srf",
    "irf": "irf",
    "ped": "ped",
}


@dataclass
class CurriculumConfig:
    """What ``medvit curriculum generate`` reads (YAML + ``a.b=value`` overrides)."""

    table: str = option("labels.csv", "CSV with one row per image (relative to the data root)")
    columns: dict[str, str] = option(
        default_factory=lambda: dict(PHANTOM_COLUMNS),
        help="field → CSV column: image_id, image, sex, age, va_logmar, quality_index, "
        "stage, eye, report (text) or report_file, split; absent fields are skipped",
    )
    biomarker_columns: dict[str, str] = option(
        default_factory=lambda: dict(PHANTOM_BIOMARKER_COLUMNS),
        help="schema biomarker → 0/1 CSV column (part-1 biomarker tags)",
    )
    tags_column: str = option("", "alternatively one column of biomarker tags (schema names or synonyms)")
    tags_separator: str = option(";", "separator of tags_column")
    stage_values: dict[str, str] = option(
        default_factory=lambda: dict(PHANTOM_STAGE), help="CSV stage value → guideline stage name (identity for names)"
    )
    splits: list[str] = option(default_factory=lambda: ["train"], help="rows of these splits (empty: all rows)")
    max_images: int = option(0, "use at most this many rows (0: all)")
    seed: int = option(0, "random seed; identical inputs and seed give byte-identical files")
    part1_k: int = option(10, "part-1 pairs per image")
    part2_k: dict[str, int] = option(
        default_factory=lambda: dict(PART2_MODULES), help="part-2 module → pairs per image (0 drops a module)"
    )
    part2_fraction: float = option(1.0, "fraction of images with reports used for part 2 (the paper: a subset)")
    captions_k: int = option(3, "generic captions per image (generalist baseline)")
    paraphraser: str = option("", "local HF causal LM directory rewriting answers (facts checked); empty: off")
    paraphrase_fraction: float = option(0.0, "fraction of answers offered to the paraphraser")

    def __post_init__(self) -> None:
        counts = {"part1_k": self.part1_k, "captions_k": self.captions_k, "max_images": self.max_images,
                  **{f"part2_k.{m}": k for m, k in self.part2_k.items()}}
        bad = {k: v for k, v in counts.items() if not isinstance(v, int) or v < 0}
        if bad:
            raise ValueError(f"counts must be integers >= 0 (0 turns a part off), got {bad}")
        for k in ("part2_fraction", "paraphrase_fraction"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k} must be in [0, 1], got {getattr(self, k)}")


#: split names a curriculum table may hold besides the selected ones (rows of other values are reported as skipped)
KNOWN_SPLITS = frozenset({"train", "val", "valid", "validation", "dev", "test"})


@dataclass
class QA:
    """One generated pair. ``value`` is the fact the answer states (yes/no for ``kind == 'yesno'``)."""

    module: str
    question: str
    answer: str
    attribute: str
    value: str
    kind: str  # "open" | "yesno" | "choice" | "cot" | "report"


@dataclass
class ImageRow:
    """One image's inputs after validation."""

    image_id: str
    image: str
    fields: dict[str, Any]
    tags: dict[str, bool]
    report: str | None = None
    observations: dict[str, Any] | None = None


@dataclass
class Skipped:
    row: int
    image_id: str
    reason: str


@dataclass
class Result:
    out: Path
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- reading inputs
def safe_relpath(value: str, what: str) -> str:
    """A CSV value used as a file reference: relative POSIX path, no ``..``, no drive/absolute (else ValueError)."""
    p = PurePosixPath(value.replace("\\", "/"))
    if not value or p.is_absolute() or ".." in p.parts or ":" in p.parts[0]:
        raise ValueError(f"{what} {value!r} must be a relative path inside the data root")
    return str(p)


def _file_inside(root: Path, rel: str, what: str) -> Path:
    """``root / rel`` for a file named in the table (``rel`` from :func:`safe_relpath`): ``ValueError`` (the row is
    skipped) naming ``what`` and ``rel`` when it leads outside the data root through a symbolic link (checked
    first, so a link out to a device is called that), cannot be resolved (a symbolic-link loop) or is not a
    regular file (not found, a directory, FIFO, device: :func:`medvit.io.errors.file_problem`). Nothing is
    opened."""
    p = root / rel
    shown = f"{what} {printable_path(rel)}"
    if not resolved_inside(root, p, shown=shown)[1]:  # a loop: ValueError "cannot resolve <shown>: ..."
        raise ValueError(f"{shown} is a symbolic link leading outside the data root (refused)")
    if why := file_problem(p):
        raise ValueError(f"{shown} {why}" + (" under the data root" if why == "not found" else ""))
    return p


def _read_report(root: Path, rel: str) -> str:
    """The text of the report file ``rel`` (:func:`_file_inside`); ``ValueError`` naming it when it is not UTF-8."""
    p = _file_inside(root, rel, "report file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"report file {printable_path(rel)} is not UTF-8 text ({e.reason} at byte {e.start})"
                         ) from None


def _tag_lookup(g: Guidelines) -> dict[str, str]:
    out = {}
    for n, b in g.biomarkers.items():
        if b.type == "bool":
            out[n] = n
            out.update({s: n for s in b.synonyms})
            out[b.label.lower()] = n
    return out


def read_rows(root: Path, cfg: CurriculumConfig, g: Guidelines) -> tuple[list[ImageRow], list[Skipped]]:
    """Validated rows of ``cfg.table`` (bad rows are skipped with a reason, never fatal)."""
    path = root / safe_relpath(cfg.table, "table")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: curriculum table not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        cols = {k: v for k, v in cfg.columns.items() if v}
        for need in ("image_id", "image"):
            if need not in cols:
                raise ValueError(f"columns: the mapping needs {need!r}")
        missing = [f"{k} -> {v}" for k, v in cols.items() if v not in header]
        missing += [f"biomarker {k} -> {v}" for k, v in cfg.biomarker_columns.items() if v not in header]
        if cfg.tags_column and cfg.tags_column not in header:
            missing.append(f"tags -> {cfg.tags_column}")
        if missing:
            raise ValueError(
                f"{path.name}: mapped columns not in the header ({', '.join(missing)}); header: {', '.join(header)}"
            )
        unknown = sorted(set(cfg.biomarker_columns) - set(g.bool_biomarkers()))
        if unknown:
            raise ValueError(f"biomarker_columns: {unknown} are not bool biomarkers of the schema")
        lookup = _tag_lookup(g)
        rows, skipped = [], []
        for i, raw in enumerate(reader, start=2):  # line numbers as an editor shows them
            iid = (raw.get(cols["image_id"]) or "").strip()
            if cfg.splits and "split" in cols and raw.get(cols["split"]) not in cfg.splits:
                sv = (raw.get(cols["split"]) or "").strip()
                if sv.lower() not in KNOWN_SPLITS:  # a typo is reported, not silently dropped with the other splits
                    reason = (f"split {sv!r} in column {cols['split']!r} is neither a selected split "
                              f"({', '.join(cfg.splits)}) nor one of {', '.join(sorted(KNOWN_SPLITS))}")
                    skipped.append(Skipped(i, iid, reason))
                    logger.warning("%s line %d (%s) skipped: %s", path.name, i, iid, reason)
                continue
            try:
                rows.append(_row(raw, cols, cfg, g, lookup, root))
            except (ValueError, GuidelineError, OSError) as e:
                skipped.append(Skipped(i, iid, str(e)))
                logger.warning("%s line %d (%s) skipped: %s", path.name, i, iid, e)
            if cfg.max_images and len(rows) >= cfg.max_images:
                break
    if not rows:
        raise ValueError(f"{path}: no usable rows ({len(skipped)} skipped)")
    return rows, skipped


def _row(
    raw: Mapping[str, str],
    cols: Mapping[str, str],
    cfg: CurriculumConfig,
    g: Guidelines,
    lookup: Mapping[str, str],
    root: Path,
) -> ImageRow:
    def get(k: str) -> str | None:
        if k not in cols:
            return None
        v = (raw.get(cols[k]) or "").strip()
        if not v:
            raise ValueError(f"column {cols[k]!r} ({k}) is empty")
        return v

    iid = get("image_id") or ""
    if not re.fullmatch(r"[\w.\-]{1,128}", iid):
        raise ValueError(f"image_id {iid!r} must be 1-128 letters, digits, '.', '_' or '-'")
    image = safe_relpath(get("image") or "", "image")
    img = _file_inside(root, image, "image file")
    if img.stat().st_size == 0:
        raise ValueError(f"image file {image} is empty (0 bytes)")
    f: dict[str, Any] = {}
    if (sex := get("sex")) is not None:
        s = sex.lower()
        if s not in ("f", "m", "female", "male"):
            raise ValueError(f"sex {sex!r} must be F/M/female/male")
        f["sex"] = "female" if s.startswith("f") else "male"
    if (age := get("age")) is not None:
        a = float(age)
        if not 0 <= a <= 120:
            raise ValueError(f"age {age!r} outside 0-120")
        f["age"] = int(a)
    if (va := get("va_logmar")) is not None:
        v = float(va)
        if not -0.5 <= v <= 3.0:
            raise ValueError(f"va_logmar {va!r} outside -0.5..3.0")
        f["va_logmar"] = round(v, 2)
    if (q := get("quality_index")) is not None:
        qi = float(q)
        if not 0 <= qi <= 100:
            raise ValueError(f"quality_index {q!r} outside 0-100")
        f["quality_index"] = int(round(qi))
    if (st := get("stage")) is not None:
        name = cfg.stage_values.get(st, st)
        if name not in g.stage_names:
            raise ValueError(
                f"stage {st!r} is not a guideline stage ({', '.join(g.stage_names)}); map it with stage_values"
            )
        f["stage"] = name
    if (eye := get("eye")) is not None:
        e = eye.upper()
        if e not in ("OD", "OS", "R", "L", "RIGHT", "LEFT"):
            raise ValueError(f"eye {eye!r} must be OD/OS/R/L/right/left")
        f["eye"] = "right" if e in ("OD", "R", "RIGHT") else "left"
    tags: dict[str, bool] = {}
    for b, c in cfg.biomarker_columns.items():
        v = (raw.get(c) or "").strip().lower()
        if v not in ("0", "1", "true", "false"):
            raise ValueError(f"biomarker column {c!r} must be 0/1, got {v!r}")
        tags[b] = v in ("1", "true")
    if cfg.tags_column:
        for t in filter(None, (x.strip().lower() for x in (raw.get(cfg.tags_column) or "").split(cfg.tags_separator))):
            if t not in lookup:
                raise ValueError(f"unknown biomarker tag {t!r} in column {cfg.tags_column!r}")
            tags[lookup[t]] = True
        for b in g.bool_biomarkers():
            tags.setdefault(b, False)
    report = None
    if "report" in cols:
        report = get("report")
    elif "report_file" in cols:
        report = _read_report(root, safe_relpath(get("report_file") or "", "report_file"))
    obs = observations_from_report(report, g) if report else None
    if obs is not None and "quality_index" in f:
        obs = normalize_observations({**obs, "image_quality": quality_label(f["quality_index"])}, g)
    return ImageRow(iid, image, f, tags, report, obs)


# --------------------------------------------------------------------------------------------- helpers
def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _yes(rng: np.random.Generator, truth: bool, affirm: str, deny: str) -> str:
    lead = _pick(rng, ["Yes", "Yes,"] if truth else ["No", "No,"]).rstrip(",")
    return f"{lead}, {affirm if truth else deny}"


def _label(g: Guidelines, name: str) -> str:
    return g.biomarkers[name].label


def _present(obs: Mapping[str, Any], g: Guidelines) -> list[str]:
    return [n for n in g.bool_biomarkers() if obs.get(n)]


def describe_observations(obs: Mapping[str, Any], g: Guidelines, rng: np.random.Generator | None = None) -> str:
    """One paragraph naming every present biomarker (with drusen size/count, PED type) and the key absences."""
    parts = []
    pres = _present(obs, g)
    if obs.get("drusen"):
        n = obs.get("drusen_count", 0)
        parts.append(
            f"{n} druse{'n' if n != 1 else ''}, the largest {obs.get('drusen_size', 'none')}" if n else "drusen"
        )
    for b in pres:
        if b == "drusen":
            continue
        lab = _label(g, b)
        if b == "ped" and obs.get("ped_type", "none") != "none":
            lab = f"a {obs['ped_type']} {lab}"
        parts.append(lab)
    if rng is not None and len(parts) > 1:
        order = rng.permutation(len(parts))
        parts = [parts[i] for i in order]
    text = ("The scan shows " + ", ".join(parts) + ".") if parts else "No AMD biomarkers are visible."
    absent = [b for b in ("srf", "irf", "rpe_atrophy") if b in g.biomarkers and not obs.get(b)]
    if absent and parts:
        text += " There is no " + " or ".join(_label(g, b) for b in absent) + "."
    return text


def stage_reasoning(obs: Mapping[str, Any], g: Guidelines, fluid_rule: bool = False) -> tuple[str, str]:
    """Chain of thought biomarkers → holding stage criteria → most advanced stage (precedence); (text, stage)."""
    ev = stage_evidence(obs, g)
    stage = ev[-1][0].name
    steps = [describe_observations(obs, g)]
    held = [f"{s.name} ({', '.join(c.text(g.biomarkers) for c in cs)})" for s, cs in ev[1:]]
    if held:
        steps.append("These meet the criteria for " + "; ".join(held) + ".")
        if len(held) > 1:
            steps.append("The most advanced stage takes precedence.")
    else:
        steps.append("No stage criteria beyond a healthy retina are met.")
    if fluid_rule:
        fluid = bool(obs.get("srf") or obs.get("irf"))
        steps.append(
            "Subretinal or intraretinal fluid is present, which marks active disease."
            if fluid
            else "There is no subretinal or intraretinal fluid, so there is no active neovascular disease."
        )
    steps.append(f"The AMD stage is therefore {stage}.")
    return " ".join(steps), stage


def _why_not(stage: str, g: Guidelines) -> str:
    names = list(g.stage_names)
    i = names.index(stage)
    out = []
    if i + 1 < len(names):
        nxt = g.stages[i + 1]
        out.append(
            f"It is not {nxt.name} because none of "
            + ", ".join(c.text(g.biomarkers) for c in nxt.any_of)
            + " is present."
        )
    return " ".join(out)


# --------------------------------------------------------------------------------------------- part 1
def part1_pairs(row: ImageRow, g: Guidelines, k: int, rng: np.random.Generator) -> list[QA]:
    """``k`` part-1 pairs from one tabular row: open and yes/no questions over the row's fields and tags."""
    f, m = row.fields, PART1_MODULE
    makers: list[Callable[[], QA]] = []
    if "sex" in f:
        makers.append(
            lambda: QA(
                m,
                _pick(rng, ["What is the patient's sex?", "Is the patient a man or a woman?"]),
                f"The patient is {f['sex']}.",
                "sex",
                f["sex"],
                "open",
            )
        )

        def sex_yn() -> QA:
            ask = _pick(rng, ["female", "male"])
            return QA(
                m,
                f"Is this scan from a {ask} patient?",
                _yes(rng, f["sex"] == ask, f"the patient is {f['sex']}.", f"the patient is {f['sex']}."),
                "sex",
                "yes" if f["sex"] == ask else "no",
                "yesno",
            )

        makers.append(sex_yn)
    if "age" in f:
        makers.append(
            lambda: QA(
                m,
                _pick(rng, ["How old is the patient?", "What is the patient's age?"]),
                f"The patient is {f['age']} years old.",
                "age",
                str(f["age"]),
                "open",
            )
        )

        def age_yn() -> QA:
            truth = bool(rng.random() < 0.5)
            t = f["age"] - int(rng.integers(1, 10)) if truth else f["age"] + int(rng.integers(0, 10))
            return QA(
                m,
                f"Is the patient older than {t}?",
                _yes(rng, truth, f"the patient is {f['age']}.", f"the patient is {f['age']}."),
                "age",
                "yes" if truth else "no",
                "yesno",
            )

        makers.append(age_yn)
    if "va_logmar" in f:
        va = f["va_logmar"]
        makers.append(
            lambda: QA(
                m,
                _pick(rng, ["What is the visual acuity of this eye?", "How well does this eye see (logMAR)?"]),
                f"The best-corrected visual acuity is {va:.2f} logMAR.",
                "va_logmar",
                f"{va:.2f}",
                "open",
            )
        )

        def va_yn() -> QA:
            truth = bool(rng.random() < 0.5)
            t = round(va - float(rng.uniform(0.05, 0.3)) if truth else va + float(rng.uniform(0.0, 0.3)), 1)
            if (va > t) != truth:
                truth = va > t
            return QA(
                m,
                f"Is the visual acuity worse than {t:.1f} logMAR?",
                _yes(rng, truth, f"it is {va:.2f} logMAR.", f"it is {va:.2f} logMAR."),
                "va_logmar",
                "yes" if truth else "no",
                "yesno",
            )

        makers.append(va_yn)
    if "quality_index" in f:
        q = f["quality_index"]
        makers.append(
            lambda: QA(
                m,
                _pick(rng, ["How would you rate the image quality?", "What is the quality of this B-scan?"]),
                f"The image quality is {quality_label(q)} (quality index {q}).",
                "image_quality",
                quality_label(q),
                "open",
            )
        )
    if "eye" in f:

        def eye_q() -> QA:
            q = _pick(rng, ["Which eye is imaged?", "Is this the patient's left or right eye?"])
            return QA(
                m,
                q,
                f"This is the {f['eye']} eye ({'OD' if f['eye'] == 'right' else 'OS'}).",
                "eye",
                f["eye"],
                "choice" if " or " in q else "open",
            )

        makers.append(eye_q)
    if "stage" in f:
        st = f["stage"]
        makers.append(
            lambda: QA(
                m,
                _pick(
                    rng,
                    [
                        "What is the AMD stage of this eye?",
                        "How advanced is the age-related macular degeneration here?",
                    ],
                ),
                f"The AMD stage is {st}.",
                "stage",
                st,
                "open",
            )
        )

        def stage_yn() -> QA:
            truth = bool(rng.random() < 0.5)
            ask = st if truth else _pick(rng, [s for s in g.stage_names if s != st])
            return QA(
                m,
                f"Is this eye at the {ask} stage of AMD?",
                _yes(rng, truth, f"it is {st}.", f"it is {st}."),
                "stage",
                "yes" if truth else "no",
                "yesno",
            )

        makers.append(stage_yn)

        def outcome() -> QA:
            level = referral_from_stage(st, g)
            return QA(
                m,
                _pick(rng, ["What follow-up does this patient need?", "Does this patient need treatment?"]),
                f"{g.referral_text[level].capitalize()}.",
                "referral",
                level,
                "open",
            )

        makers.append(outcome)
    if row.tags:
        pres = [b for b, v in row.tags.items() if v]
        makers.append(
            lambda: QA(
                m,
                _pick(rng, ["Which biomarkers are present?", "Which AMD biomarkers can be seen?"]),
                ("Present: " + ", ".join(_label(g, b) for b in pres) + ".")
                if pres
                else "None of the tagged biomarkers are present.",
                "biomarkers",
                ", ".join(pres) or "none",
                "open",
            )
        )

        def tag_yn() -> QA:
            truth = bool(rng.random() < 0.5)
            pool = [b for b, v in row.tags.items() if v == truth] or list(row.tags)
            b = _pick(rng, pool)
            v = row.tags[b]
            return QA(
                m,
                f"Is there {_label(g, b)} in this scan?",
                _yes(rng, v, f"{_label(g, b)} is present.", f"{_label(g, b)} is absent."),
                b,
                "yes" if v else "no",
                "yesno",
            )

        makers.append(tag_yn)
        makers.append(tag_yn)
    if not makers:
        raise ValueError(f"{row.image_id}: no part-1 fields mapped")
    # cycle through a random order of the makers so every field is covered before any repeats
    out = []
    while len(out) < k:
        for j in rng.permutation(len(makers)):
            if len(out) < k:
                out.append(makers[int(j)]())
    return out


# --------------------------------------------------------------------------------------------- part 2
def _biomarker_yn(obs: Mapping[str, Any], g: Guidelines, rng: np.random.Generator, module: str) -> QA:
    truth = bool(rng.random() < 0.5)
    pool = [b for b in g.bool_biomarkers() if bool(obs[b]) == truth] or g.bool_biomarkers()
    b = _pick(rng, pool)
    v = bool(obs[b])
    lab = _label(g, b)
    q = _pick(rng, [f"Is there {lab}?", f"Can you see {lab} in this OCT?", f"Does this B-scan show {lab}?"])
    if rng.random() < 0.3:
        q += " Answer yes or no."
    return QA(
        module,
        q,
        _yes(
            rng,
            v,
            _pick(rng, [f"{lab} is present.", f"the scan shows {lab}."]),
            _pick(rng, [f"{lab} is absent.", f"there is no {lab}."]),
        ),
        b,
        "yes" if v else "no",
        "yesno",
    )


def _stage_yn(stage: str, g: Guidelines, rng: np.random.Generator, module: str, why: str) -> QA:
    truth = bool(rng.random() < 0.5)
    ask = stage if truth else _pick(rng, [s for s in g.stage_names if s != stage])
    ans = _yes(rng, truth, f"this is {stage} AMD, {why}.", f"this is {stage}, not {ask}, because {why}.")
    return QA(module, f"Is this {ask}?", ans, "stage", "yes" if truth else "no", "yesno")


def part2_pairs(row: ImageRow, g: Guidelines, module: str, k: int, rng: np.random.Generator) -> list[QA]:
    """``k`` pairs of part-2 ``module`` for one image (its report and the observations read from it)."""
    if row.report is None or row.observations is None:
        raise ValueError(f"{row.image_id}: part 2 needs a report")
    obs = row.observations
    stage = stage_from_biomarkers(obs, g)
    level = referral_from_stage(stage, g)
    why = g.stage(stage).why
    finds = sentences(findings_section(row.report))
    options6, options7 = ", ".join(g.stage_options), ", ".join(g.stage_names)
    out: list[QA] = []

    def jumbled() -> str:
        body = [finds[int(i)] for i in rng.permutation(len(finds))]
        return " ".join(body)

    for j in range(k):
        if module == "advanced_biomarkers_guidelines":
            if j % 3 == 2 and obs.get("drusen"):
                out.append(
                    QA(
                        module,
                        _pick(rng, ["What is the size of the largest druse?", "What size are the drusen?"]),
                        f"The largest druse is {obs['drusen_size']} "
                        f"({ {'small': '< 63', 'medium': '63-125', 'large': '> 125'}.get(obs['drusen_size'], '') }"
                        " µm).",
                        "drusen_size",
                        obs["drusen_size"],
                        "open",
                    )
                )
            elif j % 3 == 2 and obs.get("ped"):
                out.append(
                    QA(
                        module,
                        "What type of pigment epithelial detachment is this?",
                        f"It is a {obs['ped_type']} pigment epithelial detachment.",
                        "ped_type",
                        obs["ped_type"],
                        "open",
                    )
                )
            else:
                out.append(_biomarker_yn(obs, g, rng, module))
        elif module == "specific_qa":
            if j % 2 == 0:
                out.append(_biomarker_yn(obs, g, rng, module))
            else:
                fluid = [_label(g, b) for b in ("srf", "irf") if obs.get(b)]
                choice = int(rng.integers(3))
                if choice == 0:
                    out.append(
                        QA(
                            module,
                            "Is there any fluid, and if so, where?",
                            ("Yes: " + " and ".join(fluid) + ".")
                            if fluid
                            else "No, there is no subretinal or intraretinal fluid.",
                            "fluid",
                            ", ".join(fluid) or "none",
                            "open",
                        )
                    )
                elif choice == 1:
                    rpe = (
                        "atrophic, with choroidal hypertransmission"
                        if obs.get("rpe_atrophy")
                        else "elevated"
                        if obs.get("rpe_elevation")
                        else "flat and continuous"
                    )
                    out.append(
                        QA(
                            module,
                            "What is the state of the retinal pigment epithelium?",
                            f"The RPE is {rpe}.",
                            "rpe",
                            rpe,
                            "open",
                        )
                    )
                else:
                    pres = _present(obs, g)
                    out.append(
                        QA(
                            module,
                            "Which AMD biomarkers are present?",
                            ("Present: " + ", ".join(_label(g, b) for b in pres) + ".")
                            if pres
                            else "None; the retina shows no AMD biomarkers.",
                            "biomarkers",
                            ", ".join(pres) or "none",
                            "open",
                        )
                    )
        elif module == "general_qa":
            if j % 3 == 0:
                out.append(_biomarker_yn(obs, g, rng, module))
            else:
                out.append(
                    QA(
                        module,
                        _pick(
                            rng,
                            [
                                "Describe the image.",
                                "Describe this OCT B-scan in detail.",
                                "What do you see in this scan?",
                            ],
                        ),
                        jumbled(),
                        "findings",
                        "",
                        "report",
                    )
                )
        elif module == "staging_introduction_guidelines":
            if j % 2 == 0:
                out.append(_stage_yn(stage, g, rng, module, why))
            else:
                q = _pick(rng, ["What is the AMD stage?", "Which stage of AMD does this scan show?"])
                if rng.random() < 0.5:
                    q += f" Choose one of: {options6}."
                    out.append(QA(module, q, f"{stage.capitalize()}.", "stage", stage, "choice"))
                else:
                    out.append(QA(module, q, f"The stage is {stage}: {why}.", "stage", stage, "open"))
        elif module in ("staging_logic_guidelines", "staging_accuracy_guidelines"):
            text, _ = stage_reasoning(obs, g, fluid_rule=module == "staging_accuracy_guidelines")
            q = _pick(
                rng,
                [
                    "List the biomarkers you see, then determine the most advanced AMD stage they indicate.",
                    "Reason step by step from the biomarkers to the AMD stage.",
                    "What is the AMD stage? Explain your reasoning from the biomarkers.",
                ],
            )
            out.append(QA(module, q, text, "stage", stage, "cot"))
        elif module == "referral_reasoning_guidelines":
            text, _ = stage_reasoning(obs, g)
            q = _pick(
                rng,
                [
                    "Should this patient be referred, and how urgently? Reason from the biomarkers.",
                    "Following the referral guideline, what referral does this patient need?",
                    "What is the appropriate referral for this patient? Explain why.",
                ],
            )
            out.append(QA(module, q, f"{text} Referral: {level} — {g.referral_text[level]}.", "referral", level, "cot"))
        elif module == "report_writing":
            out.append(
                QA(
                    module,
                    _pick(rng, ["Write a report for this OCT image.", "Write the findings of this scan."]),
                    jumbled(),
                    "report",
                    "",
                    "report",
                )
            )
        elif module == "full_report_writing_guidelines":
            text, _ = stage_reasoning(obs, g)
            out.append(
                QA(
                    module,
                    _pick(
                        rng,
                        [
                            "Write a full clinical report: biomarkers, stage and referral.",
                            "Write a specialist report with staging and a referral decision.",
                        ],
                    ),
                    f"{describe_observations(obs, g, rng)} Stage: {stage} ({why}). {_why_not(stage, g)} "
                    f"Referral: {level} — {g.referral_text[level]}.".replace("  ", " "),
                    "report",
                    stage,
                    "report",
                )
            )
        elif module == "staging_accuracy":
            out.append(
                QA(
                    module,
                    f"What is the AMD stage? Answer with one of: {options7}.",
                    f"{stage.capitalize()}.",
                    "stage",
                    stage,
                    "choice",
                )
            )
        else:
            raise ValueError(f"unknown part-2 module {module!r}; modules: {', '.join(PART2_MODULES)}")
    return out


def caption_pairs(row: ImageRow, k: int, rng: np.random.Generator) -> list[QA]:
    """Generic, non-specialist captions (the generalist baseline's data): modality and eye, no biomarker or stage."""
    eye = row.fields.get("eye")
    caps = [
        "An optical coherence tomography B-scan of the retina.",
        "A grayscale cross-sectional OCT image of the macula.",
        "A retinal OCT scan showing the retinal layers in cross-section.",
    ]
    if eye:
        caps.append(f"An OCT B-scan of the {eye} eye.")
    return [
        QA(
            CAPTION_MODULE,
            _pick(rng, ["Describe the image.", "What is this image?", "Write a caption."]),
            _pick(rng, caps),
            "caption",
            "",
            "report",
        )
        for _ in range(k)
    ]


# --------------------------------------------------------------------------------------------- writing
def _rng(seed: int, image_id: str, module: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(image_id.encode()), zlib.crc32(module.encode())])


def _record(row: ImageRow, qa: QA, part: int, j: int) -> str:
    rec = {
        "id": f"{row.image_id}-{qa.module}-{j:03d}",
        "images": [row.image],
        "part": part,
        "module": qa.module,
        "attribute": qa.attribute,
        "value": qa.value,
        "kind": qa.kind,
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{qa.question}"},
            {"from": "gpt", "value": qa.answer},
        ],
    }
    return json.dumps(rec, sort_keys=True, ensure_ascii=False) + "\n"


def iter_qas(jsonl: Path) -> Iterable[dict[str, Any]]:
    with open(jsonl, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def generate_curriculum(
    root: str | Path,
    out: str | Path,
    cfg: CurriculumConfig,
    g: Guidelines,
    paraphrase: Callable[[list[str]], list[str]] | None = None,
) -> Result:
    """Write ``part1.jsonl``, ``part2.jsonl``, ``captions.jsonl`` and ``manifest.json`` into ``out``.

    Args:
        root: data root holding ``cfg.table`` (and the report files / images it names, relative to it).
        out: output folder (created).
        cfg: the curriculum config; ``part2_k`` modules must be the paper's module names.
        g: loaded guidelines.
        paraphrase: optional answer rewriter (see :mod:`medvit.vlm.retina.paraphrase`); facts are checked there.
    Raises:
        FileNotFoundError: the table is missing. ValueError: a mapped column is not in the header, an unknown module,
            or no usable row. Bad rows are skipped and listed in the manifest.
    """
    root, out = Path(root), Path(out)
    unknown = sorted(set(cfg.part2_k) - set(PART2_MODULES))
    if unknown:
        raise ValueError(f"part2_k: unknown module(s) {unknown}; modules: {', '.join(PART2_MODULES)}")
    rows, skipped = read_rows(root, cfg, g)
    out.mkdir(parents=True, exist_ok=True)
    res = Result(out, skipped=skipped)
    counts: Counter[str] = Counter()
    yes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    n_p2 = int(round(cfg.part2_fraction * sum(r.report is not None for r in rows)))
    files = {"part1": [], "part2": [], "captions": []}
    p2_rows = [r for r in rows if r.report is not None][:n_p2]
    for row in rows:
        qas = part1_pairs(row, g, cfg.part1_k, _rng(cfg.seed, row.image_id, PART1_MODULE)) if cfg.part1_k else []
        files["part1"] += [(row, qa, 1) for qa in qas]
        caps = caption_pairs(row, cfg.captions_k, _rng(cfg.seed, row.image_id, CAPTION_MODULE))
        files["captions"] += [(row, qa, 0) for qa in caps]
    for row in p2_rows:
        for module in PART2_MODULES:
            k = int(cfg.part2_k.get(module, 0))
            if k > 0:
                files["part2"] += [
                    (row, qa, 2) for qa in part2_pairs(row, g, module, k, _rng(cfg.seed, row.image_id, module))
                ]
    para_stats = {"offered": 0, "accepted": 0}
    if paraphrase is not None and cfg.paraphrase_fraction > 0:
        para_stats = _paraphrase_all(files, cfg, paraphrase)
    digests = {}
    for name, items in files.items():
        per_image: Counter[tuple[str, str]] = Counter()
        lines = []
        for row, qa, part in items:
            j = per_image[(row.image_id, qa.module)]
            per_image[(row.image_id, qa.module)] += 1
            lines.append(_record(row, qa, part, j))
            counts[qa.module] += 1
            if qa.kind == "yesno":
                yes[qa.module][0] += qa.value == "yes"
                yes[qa.module][1] += 1
        data = "".join(lines).encode("utf-8")
        (out / f"{name}.jsonl").write_bytes(data)
        digests[f"{name}.jsonl"] = hashlib.sha256(data).hexdigest()
    res.counts = dict(counts)
    manifest = {
        "seed": cfg.seed,
        "guideline_version": g.version,
        "guideline_versions": g.versions,
        "images": {"part1": len(rows), "part2": len(p2_rows)},
        "counts": {m: counts[m] for m in sorted(counts)},
        "k": {
            "part1": cfg.part1_k,
            "part2": {m: int(cfg.part2_k.get(m, 0)) for m in PART2_MODULES},
            "captions": cfg.captions_k,
        },
        "yes_fraction": {m: round(a / b, 4) for m, (a, b) in sorted(yes.items()) if b},
        "skipped": [{"line": s.row, "image_id": s.image_id, "reason": s.reason} for s in skipped],
        "paraphrase": {"model": Path(cfg.paraphraser).name if cfg.paraphraser else None, **para_stats},
        "sha256": digests,
        "source": "RetinaVLM (Holland et al. 2025) curriculum parts 1 and 2, deterministic templates",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    logger.info(
        "curriculum: %d images (%d with reports), %d pairs, %d rows skipped",
        len(rows),
        len(p2_rows),
        sum(counts.values()),
        len(skipped),
    )
    return res


def _paraphrase_all(
    files: dict[str, list[tuple[ImageRow, QA, int]]],
    cfg: CurriculumConfig,
    paraphrase: Callable[[list[str]], list[str]],
) -> dict[str, int]:
    """Offer a seeded fraction of open/report answers to ``paraphrase``; keep a rewrite only if it keeps the facts."""
    from medvit.vlm.retina.paraphrase import keeps_facts

    rng = np.random.default_rng([cfg.seed, 771])
    chosen = [
        qa
        for name in ("part1", "part2")
        for _, qa, _ in files[name]
        if qa.kind in ("open", "report", "cot") and rng.random() < cfg.paraphrase_fraction
    ]
    new = paraphrase([qa.answer for qa in chosen]) if chosen else []
    accepted = 0
    for qa, text in zip(chosen, new):
        if keeps_facts(qa.answer, text, qa.value):
            qa.answer, accepted = text, accepted + 1
    return {"offered": len(chosen), "accepted": accepted}
