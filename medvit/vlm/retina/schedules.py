"""Curriculum schedules (registry kind ``schedule``): which conversation files, and which modules of them, are
trained in which order. Each phase starts from the weights the previous phase ended with (RetinaVLM initialises part 2
from the part-1 checkpoint) with a fresh optimiser.

- ``sequential``: part 1, then all of part 2 mixed (the paper's RetinaVLM-Specialist).
- ``module_by_module``: part 1, then the ten part-2 modules one after another in the paper's table order.
- ``mixed``: parts 1 and 2 shuffled together in one phase (an ablation: no ordering).
- ``part1_only``: part 1 alone (the paper's RetinaVLM-Base baseline).
- ``captions_only``: generic captions alone (a generalist baseline without specialist curriculum).
"""

from __future__ import annotations

from dataclasses import dataclass

from medvit.registry import register
from medvit.vlm.retina.curriculum import PART2_MODULES


@dataclass(frozen=True)
class Phase:
    """One training phase: ``files`` (names inside the curriculum folder), ``modules`` (None = every record),
    ``share`` = the phase's share of its part's step budget (``part1_steps`` / ``part2_steps``)."""

    name: str
    files: tuple[str, ...]
    part: str  # "part1" | "part2" | "all" (the step budget it draws on; all = part1 + part2)
    modules: tuple[str, ...] | None = None
    share: float = 1.0


@register("schedule", "sequential", description="part 1, then part 2 (modules mixed): RetinaVLM-Specialist")
def sequential() -> list[Phase]:
    return [Phase("part1", ("part1.jsonl",), "part1"), Phase("part2", ("part2.jsonl",), "part2")]


@register("schedule", "module_by_module", description="part 1, then the ten part-2 modules in table order")
def module_by_module() -> list[Phase]:
    n = len(PART2_MODULES)
    return [Phase("part1", ("part1.jsonl",), "part1")] + [
        Phase(f"part2_{i + 1:02d}_{m}", ("part2.jsonl",), "part2", (m,), 1.0 / n) for i, m in enumerate(PART2_MODULES)]


@register("schedule", "mixed", description="parts 1 and 2 shuffled together (no ordering; ablation)")
def mixed() -> list[Phase]:
    return [Phase("mixed", ("part1.jsonl", "part2.jsonl"), "all")]


@register("schedule", "part1_only", description="part 1 only: RetinaVLM-Base")
def part1_only() -> list[Phase]:
    return [Phase("part1", ("part1.jsonl",), "part1")]


@register("schedule", "captions_only", description="generic captions only: a generalist without the curriculum")
def captions_only() -> list[Phase]:
    return [Phase("captions", ("captions.jsonl",), "all")]
