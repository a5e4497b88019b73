"""Clinical guidelines as data: the biomarker observation schema, AMD staging rules and referral rules.

Loaded from ``pipelines/retinavlm/guidelines/{biomarkers,staging,referral}.yaml`` and validated on load (every error
names the file, the key path and the reason). The pure functions :func:`stage_from_biomarkers` and
:func:`referral_from_stage` are shared by the curriculum generators and the closed-ended evaluation.

Source: RetinaVLM (Holland et al., npj Digital Medicine 2025, arXiv 2407.08410) ``clinical_capabilities/`` — biomarker
observations, disease staging (most advanced stage takes precedence; fluid separates active from inactive late wet
AMD) and referral (none / general attention / urgent anti-VEGF); Beckman classification (Ferris et al. 2013).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medvit.config import yaml_loads

BIOMARKER_TYPES = ("bool", "enum", "int")
FILES = ("biomarkers.yaml", "staging.yaml", "referral.yaml")


class GuidelineError(ValueError):
    """A guideline file or an observation does not follow the schema (message names file/key and reason)."""


@dataclass(frozen=True)
class Biomarker:
    """One observation of the schema: ``type`` bool/enum/int, enum ``values``, report ``synonyms``, ``default``."""

    name: str
    type: str
    label: str
    synonyms: tuple[str, ...]
    default: Any
    values: tuple[str, ...] = ()
    task: str | None = None


@dataclass(frozen=True)
class Condition:
    """``biomarker`` with exactly one test: ``is`` (bool), ``in`` (enum values) or ``at_least`` (int)."""

    biomarker: str
    op: str  # "is" | "in" | "at_least"
    arg: Any

    def holds(self, obs: Mapping[str, Any]) -> bool:
        v = obs[self.biomarker]
        if self.op == "is":
            return bool(v) is bool(self.arg)
        if self.op == "in":
            return v in self.arg
        return int(v) >= int(self.arg)

    def text(self, schema: Mapping[str, Biomarker]) -> str:
        b = schema[self.biomarker]
        if self.op == "is":
            return b.label if self.arg else f"no {b.label}"
        if self.op == "in":
            return f"{b.label} {' or '.join(self.arg)}"
        return f"{b.label} at least {self.arg}"


@dataclass(frozen=True)
class Stage:
    name: str
    severity: int
    any_of: tuple[Condition, ...]
    why: str
    default: bool = False


@dataclass(frozen=True)
class Guidelines:
    """The three validated guideline documents; ``version`` joins their versions (``b1.0.0+s1.0.0+r1.0.0``)."""

    biomarkers: dict[str, Biomarker]
    stages: tuple[Stage, ...]
    stage_options: tuple[str, ...]
    referral_levels: tuple[str, ...]
    referral_text: dict[str, str]
    referral_by_stage: dict[str, str]
    escalate: tuple[tuple[str, str, str], ...]  # (stage, flag, level)
    referral_options: tuple[str, ...]
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return "+".join(f"{k[0]}{v}" for k, v in sorted(self.versions.items()))

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise GuidelineError(f"unknown stage {name!r}; stages: {', '.join(self.stage_names)}")

    def bool_biomarkers(self) -> list[str]:
        return [n for n, b in self.biomarkers.items() if b.type == "bool"]


def _err(file: str, key: str, reason: str) -> GuidelineError:
    return GuidelineError(f"{file}: {key}: {reason}")


def _need(d: Any, key: str, file: str, where: str, typ: type | tuple[type, ...]) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise _err(file, f"{where}{key}", "missing")
    v = d[key]
    if not isinstance(v, typ):
        names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise _err(file, f"{where}{key}", f"must be {names}, got {type(v).__name__}")
    return v


def _load(path: Path, kind: str) -> dict[str, Any]:
    if not path.is_file():
        raise GuidelineError(f"{path}: guideline file not found")
    try:
        data = yaml_loads(path.read_text())
    except yaml.YAMLError as e:
        raise GuidelineError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise GuidelineError(f"{path}: must be a mapping with keys kind, name, version, ...")
    if data.get("kind") != kind:
        raise _err(path.name, "kind", f"must be {kind!r}, got {data.get('kind')!r}")
    v = _need(data, "version", path.name, "", str)
    parts = v.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise _err(path.name, "version", f"must be semantic 'MAJOR.MINOR.PATCH' (quoted), got {v!r}")
    return data


def _biomarkers(data: dict[str, Any], file: str) -> dict[str, Biomarker]:
    raw = _need(data, "biomarkers", file, "", dict)
    out: dict[str, Biomarker] = {}
    allowed = {"type", "label", "synonyms", "default", "values", "task"}
    for name, spec in raw.items():
        w = f"biomarkers.{name}."
        if not isinstance(spec, dict):
            raise _err(file, f"biomarkers.{name}", "must be a mapping")
        extra = set(spec) - allowed
        if extra:
            raise _err(file, w + sorted(extra)[0], f"unknown key; allowed: {', '.join(sorted(allowed))}")
        typ = _need(spec, "type", file, w, str)
        if typ not in BIOMARKER_TYPES:
            raise _err(file, w + "type", f"must be one of {', '.join(BIOMARKER_TYPES)}, got {typ!r}")
        values: tuple[str, ...] = ()
        if typ == "enum":
            values = tuple(_need(spec, "values", file, w, list))
            if not values or not all(isinstance(x, str) for x in values) or len(set(values)) != len(values):
                raise _err(file, w + "values", "must be a non-empty list of distinct strings")
        elif "values" in spec:
            raise _err(file, w + "values", f"only enum biomarkers have values (type is {typ})")
        default = _need(spec, "default", file, w, (bool, int, str))
        try:
            default = _coerce(Biomarker(name, typ, "", (), None, values), default)
        except GuidelineError as e:
            raise _err(file, w + "default", str(e)) from None
        syn = spec.get("synonyms", [])
        if not isinstance(syn, list) or not all(isinstance(s, str) and s == s.lower() for s in syn):
            raise _err(file, w + "synonyms", "must be a list of lower-case strings")
        task = spec.get("task")
        if task is not None and (typ != "bool" or not isinstance(task, str)):
            raise _err(file, w + "task", "a closed-ended task name (string) is only allowed on bool biomarkers")
        out[name] = Biomarker(name, typ, str(_need(spec, "label", file, w, str)), tuple(syn), default, values, task)
    if not out:
        raise _err(file, "biomarkers", "is empty")
    return out


def _condition(c: Any, file: str, where: str, schema: dict[str, Biomarker]) -> Condition:
    if not isinstance(c, dict):
        raise _err(file, where, "a condition must be a mapping {biomarker: NAME, is|in|at_least: VALUE}")
    name = _need(c, "biomarker", file, where + ".", str)
    if name not in schema:
        raise _err(file, where + ".biomarker", f"unknown biomarker {name!r} (not in biomarkers.yaml)")
    ops = [k for k in ("is", "in", "at_least") if k in c]
    if len(ops) != 1 or set(c) - {"biomarker", *ops}:
        raise _err(file, where, "needs exactly one of is / in / at_least next to biomarker")
    op, arg, b = ops[0], c[ops[0]], schema[name]
    if op == "is" and (b.type != "bool" or not isinstance(arg, bool)):
        raise _err(file, where + ".is", f"needs a bool biomarker and true/false ({name} is {b.type})")
    if op == "in":
        if b.type != "enum" or not isinstance(arg, list) or not set(arg) <= set(b.values):
            raise _err(file, where + ".in", f"needs an enum biomarker and a list of its values {list(b.values)}")
        arg = tuple(arg)
    if op == "at_least" and (b.type != "int" or isinstance(arg, bool) or not isinstance(arg, int)):
        raise _err(file, where + ".at_least", f"needs an int biomarker and an integer ({name} is {b.type})")
    return Condition(name, op, arg)


def _stages(data: dict[str, Any], file: str, schema: dict[str, Biomarker]) -> tuple[tuple[Stage, ...], tuple[str, ...]]:
    if data.get("precedence") != "most_advanced":
        raise _err(file, "precedence", "must be 'most_advanced' (the only rule the paper states)")
    raw = _need(data, "stages", file, "", list)
    stages: list[Stage] = []
    for i, s in enumerate(raw):
        w = f"stages[{i}]"
        name = _need(s, "name", file, w + ".", str)
        if name in {x.name for x in stages}:
            raise _err(file, w + ".name", f"duplicate stage {name!r}")
        default = bool(s.get("default", False))
        if default != (i == 0):
            raise _err(file, w, "exactly the first (least severe) stage must have default: true")
        conds = () if default else tuple(_condition(c, file, f"{w}.any_of[{j}]", schema)
                                         for j, c in enumerate(_need(s, "any_of", file, w + ".", list)))
        if not default and not conds:
            raise _err(file, w + ".any_of", "is empty")
        stages.append(Stage(name, i, conds, str(s.get("why", "")), default))
    opts = tuple(_need(data, "evaluation_options", file, "", list))
    bad = [o for o in opts if o not in {s.name for s in stages}]
    if bad or not opts:
        raise _err(file, "evaluation_options", f"must be stage names; unknown: {bad}")
    return tuple(stages), opts


def load_guidelines(directory: str | Path) -> Guidelines:
    """Load and validate ``biomarkers.yaml``, ``staging.yaml``, ``referral.yaml`` from ``directory``.

    Raises:
        GuidelineError: a file is missing or not YAML, or a key is missing, unknown or of the wrong type, a rule names
            an unknown biomarker/stage/level, or the referral table does not cover every stage.
    """
    d = Path(directory)
    bio = _load(d / FILES[0], "biomarkers")
    schema = _biomarkers(bio, FILES[0])
    st = _load(d / FILES[1], "staging")
    stages, stage_opts = _stages(st, FILES[1], schema)
    ref = _load(d / FILES[2], "referral")
    f = FILES[2]
    levels_raw = _need(ref, "levels", f, "", list)
    levels = tuple(_need(x, "name", f, f"levels[{i}].", str) for i, x in enumerate(levels_raw))
    if len(set(levels)) != len(levels) or not levels:
        raise _err(f, "levels", "must be a non-empty list of distinct names")
    texts = {x["name"]: str(x.get("text", x["name"])) for x in levels_raw}
    by_stage = _need(ref, "by_stage", f, "", dict)
    names = {s.name for s in stages}
    for k, v in by_stage.items():
        if k not in names:
            raise _err(f, f"by_stage.{k}", f"unknown stage (stages: {', '.join(sorted(names))})")
        if v not in levels:
            raise _err(f, f"by_stage.{k}", f"unknown level {v!r} (levels: {', '.join(levels)})")
    missing = [s.name for s in stages if s.name not in by_stage]
    if missing:
        raise _err(f, "by_stage", f"no referral level for stage(s) {missing}")
    esc = []
    for i, e in enumerate(ref.get("escalate", []) or []):
        w = f"escalate[{i}]."
        stage, flag, to = (_need(e, k, f, w, str) for k in ("stage", "flag", "to"))
        if stage not in names or to not in levels:
            raise _err(f, f"escalate[{i}]", f"unknown stage {stage!r} or level {to!r}")
        esc.append((stage, flag, to))
    ropts = tuple(_need(ref, "evaluation_options", f, "", list))
    if not ropts or not set(ropts) <= set(levels):
        raise _err(f, "evaluation_options", f"must be referral levels {list(levels)}")
    return Guidelines(schema, stages, stage_opts, levels, texts, dict(by_stage), tuple(esc), ropts,
                      {"biomarkers": bio["version"], "referral": ref["version"], "staging": st["version"]})


def _coerce(b: Biomarker, v: Any) -> Any:
    if b.type == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.strip().lower() in ("0", "1", "true", "false", "yes", "no"):
            return v.strip().lower() in ("1", "true", "yes")
        raise GuidelineError(f"{b.name}: expected a bool (true/false/0/1), got {v!r}")
    if b.type == "int":
        try:
            iv = int(v)
        except (TypeError, ValueError):
            raise GuidelineError(f"{b.name}: expected an integer, got {v!r}") from None
        if isinstance(v, bool) or iv < 0 or (isinstance(v, float) and iv != v):
            raise GuidelineError(f"{b.name}: expected a non-negative integer, got {v!r}")
        return iv
    if not isinstance(v, str) or v not in b.values:
        raise GuidelineError(f"{b.name}: expected one of {list(b.values)}, got {v!r}")
    return v


def normalize_observations(obs: Mapping[str, Any], g: Guidelines) -> dict[str, Any]:
    """Typed, complete observations: unknown names raise, missing ones take the schema default.

    Raises:
        GuidelineError: an unknown biomarker name or a value of the wrong type.
    """
    unknown = sorted(set(obs) - set(g.biomarkers))
    if unknown:
        raise GuidelineError(f"unknown biomarker(s) {unknown}; schema: {', '.join(g.biomarkers)}")
    return {n: (_coerce(b, obs[n]) if n in obs else b.default) for n, b in g.biomarkers.items()}


def stage_evidence(obs: Mapping[str, Any], g: Guidelines) -> list[tuple[Stage, list[Condition]]]:
    """Every stage whose criteria hold, least to most severe, with the conditions that hold (chain of thought)."""
    o = normalize_observations(obs, g)
    out = [(g.stages[0], [])]
    for s in g.stages[1:]:
        held = [c for c in s.any_of if c.holds(o)]
        if held:
            out.append((s, held))
    return out


def stage_from_biomarkers(obs: Mapping[str, Any], g: Guidelines) -> str:
    """AMD stage for one B-scan's observations: the most advanced stage whose criteria hold (precedence rule).

    Args:
        obs: biomarker name → value (bool / enum string / int); missing names take the schema default.
        g: loaded guidelines.
    Returns:
        A stage name of ``staging.yaml`` (e.g. ``"late wet (active)"`` when SRF or IRF is present).
    Raises:
        GuidelineError: unknown biomarker or wrong value type.
    """
    return stage_evidence(obs, g)[-1][0].name


def referral_from_stage(stage: str, g: Guidelines, flags: Mapping[str, bool] | None = None) -> str:
    """Referral level for ``stage`` (``referral.yaml`` ``by_stage``), raised by ``escalate`` rules whose flag is set
    (e.g. ``{"progressing": True}`` for intermediate AMD → general attention); never lowered.

    Raises:
        GuidelineError: unknown stage.
    """
    g.stage(stage)
    level = g.referral_by_stage[stage]
    for st, flag, to in g.escalate:
        if st == stage and (flags or {}).get(flag) and g.referral_levels.index(to) > g.referral_levels.index(level):
            level = to
    return level


def default_guidelines_dir() -> Path:
    """``pipelines/retinavlm/guidelines`` of this source tree (raises ``GuidelineError`` when absent)."""
    p = Path(__file__).resolve().parents[3] / "pipelines" / "retinavlm" / "guidelines"
    if not p.is_dir():
        raise GuidelineError(f"{p}: default guideline folder not found; pass the guideline directory explicitly")
    return p
