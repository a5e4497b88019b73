"""Presets: the pipeline YAML files under ``pipelines/`` addressed by name (registry kind ``preset``).

A preset's name is its path below a pipelines folder without ``.yaml`` (``mae_thorax/finetune_tiny_cpu``); its
entry holds the file path and meta ``task`` (the file's top-level ``task``) and ``description`` (the first comment
line). Folders searched, in order: those in ``MEDVIT_PIPELINES`` (``os.pathsep``-separated), then the source tree's
``pipelines/``. The research verbs (``medvit finetune --preset NAME``) and ``medvit list preset`` read this table.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from medvit.registry import REGISTRY

logger = logging.getLogger(__name__)

#: environment variable naming extra pipelines folders (searched before the source tree's)
ENV = "MEDVIT_PIPELINES"


def preset_roots() -> list[Path]:
    """Folders holding preset YAML files, in search order (missing ones skipped)."""
    roots = [Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p]
    roots.append(Path(__file__).resolve().parents[2] / "pipelines")
    return [r for r in roots if r.is_dir()]


def _describe(path: Path) -> tuple[str | None, str]:
    """(task, first comment line) of one YAML file, read as text (no YAML parse for listing)."""
    task, desc = None, ""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        s = line.strip()
        if s.startswith("#") and not desc:
            desc = s.lstrip("#").strip()
        elif s.startswith("task:") and task is None:
            task = s.split(":", 1)[1].split("#", 1)[0].strip().strip("'\"") or None
    return task, desc


def register_presets() -> None:
    """Register every ``*.yaml`` with a top-level ``task`` below the preset roots (first root wins per name)."""
    for root in preset_roots():
        for p in sorted(root.rglob("*.yaml")):
            name = p.relative_to(root).with_suffix("").as_posix()
            if ("preset", name) in _seen:
                continue
            task, desc = _describe(p)
            if not task:
                continue
            _seen.add(("preset", name))
            REGISTRY.add("preset", name, p, task=task, description=f"[{task}] {desc}")


_seen: set[tuple[str, str]] = set()


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; an existing file path is accepted as it is. KeyError (with close
    names) for an unknown preset."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    return Path(REGISTRY.get("preset", name))


def presets_for(task: str) -> list[str]:
    """Names of the presets whose YAML runs ``task``."""
    return [e.name for e in REGISTRY.entries("preset") if e.meta.get("task") == task]


register_presets()
