"""Benchmarks are scripts, not a package: tests load one by file path through :func:`load_benchmark`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark(stem: str, module_name: str | None = None) -> ModuleType:
    """``benchmarks/<stem>.py`` as a module (registered in ``sys.modules`` so dataclasses and pickling work)."""
    name = module_name or f"bench_{stem}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{stem}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
