"""Where the demo's files are: its pipeline, selection rules and committed model, and the cache of the model it
trains. ``medvit demo`` (the CLI) and the viewer (an app) both read these locations from here.

The demo pipeline lives in the medvit source tree (``pipelines/demo``). An installed package finds it through
``$MEDVIT_PIPELINES`` (a ``pipelines`` folder), else ``./pipelines`` under the working directory, else the source
tree this package was installed from (an editable install or a checkout). The trained model is cached in
``$MEDVIT_DEMO_CACHE``, else ``.cache/medvit-demo`` of that source tree, else ``$XDG_CACHE_HOME/medvit/demo``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: the files of pipelines/demo the demo uses
PIPELINE_NAME = "cxr_phantom_demo.yaml"
RULES_NAME = "cxr_rules.json"
COMMITTED_NAME = "model"  # the demo model shipped with the source tree (when present)


def source_root() -> Path | None:
    """The medvit source tree this package was loaded from (it has ``pipelines/demo``), or None when installed."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pipelines" / "demo").is_dir() else None


def pipelines_dir(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    """The ``pipelines`` folder holding ``demo/`` (see the module docstring for the order).

    Raises:
        FileNotFoundError: naming the places looked at and how to point medvit at a pipelines folder.
    """
    env = os.environ if environ is None else environ
    here = Path.cwd() if cwd is None else cwd
    root = source_root()
    candidates = [Path(env["MEDVIT_PIPELINES"])] if env.get("MEDVIT_PIPELINES") else []
    candidates += [here / "pipelines"] + ([root / "pipelines"] if root else [])
    for c in candidates:
        if (c / "demo" / PIPELINE_NAME).is_file():
            return c
    raise FileNotFoundError(
        f"the demo pipeline (pipelines/demo/{PIPELINE_NAME}) is not in {', '.join(str(c) for c in candidates)}; "
        "run from a medvit source tree, or set MEDVIT_PIPELINES to its pipelines folder")


def demo_dir(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    """``pipelines/demo``: the pipeline YAML, the selection rules and the committed model."""
    return pipelines_dir(environ, cwd) / "demo"


def default_cache(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``medvit demo`` caches the model it trains (``<cache>/model``)."""
    env = os.environ if environ is None else environ
    if env.get("MEDVIT_DEMO_CACHE"):
        return Path(env["MEDVIT_DEMO_CACHE"])
    root = source_root()
    if root is not None:
        return root / ".cache" / "medvit-demo"
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medvit" / "demo"


def current_demo_model(environ: Mapping[str, str] | None = None) -> Path | None:
    """The demo checkpoint ``medvit demo`` uses now, without training: the committed ``pipelines/demo/model``
    when it was trained by the current pipeline YAML (its ``PIPELINE_SHA256`` matches), else the cached one
    when it is, else whichever of the two exists (stale); None when there is none (run ``make demo``)."""
    import hashlib

    try:
        d = demo_dir(environ)
    except FileNotFoundError:
        return None
    pipeline = d / PIPELINE_NAME
    key = hashlib.sha256(pipeline.read_bytes()).hexdigest() if pipeline.is_file() else ""
    committed, cache = d / COMMITTED_NAME, default_cache(environ)
    cached = cache / "model"
    stamps = {committed: committed / "PIPELINE_SHA256", cached: cache / "PIPELINE_SHA256"}
    have = [m for m in (committed, cached) if (m / "config.json").is_file()]
    fresh = [m for m in have if stamps[m].is_file() and stamps[m].read_text().strip() == key]
    return (fresh or have or [None])[0]
