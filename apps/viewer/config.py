"""Viewer settings: where the studies, the model and the results are (no Streamlit here).

``medvit viewer`` passes its options as environment variables (see :mod:`medvit.cli.viewer_cmd`); the app reads
them once per session with :func:`from_env`. Defaults follow ``make demo``: its studies, its model, its results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

ENV_DATA = "MEDVIT_VIEWER_DATA"
ENV_MODEL = "MEDVIT_VIEWER_MODEL"
ENV_RESULTS = "MEDVIT_VIEWER_RESULTS"
ENV_VLM = "MEDVIT_VIEWER_VLM"

#: where ``make demo`` (``medvit demo --out demo_out``) puts things: relative to the working directory, else in the
#: medvit source tree
DEMO_OUT = Path("demo_out")
DEMO_STUDIES = "inbox"  # demo_out/inbox: phantom DICOM studies plus deliberately hostile extras
DEMO_RESULTS = "results"  # demo_out/results: `medvit infer` outputs (predictions, sr/, heatmaps/)

#: used when there is no results folder to save feedback beside
FALLBACK_RESULTS = Path.home() / ".cache" / "medvit" / "viewer"
#: where phantoms are generated when there is nothing else to show
PHANTOMS = FALLBACK_RESULTS / "phantoms"


@dataclass(frozen=True)
class ViewerConfig:
    """Resolved viewer settings."""

    data_dir: Path | None  # folder of studies offered on start (None: nothing to browse until an upload)
    model: str | None  # checkpoint directory or weight tag (None: findings disabled until one is picked)
    results_dir: Path  # batch-inference outputs for these studies (SR links); feedback JSON goes here
    data_source: str  # how data_dir was chosen: "--data", "demo", "phantoms", "none"
    vlm: str | None = None  # vision-language model checkpoint for the chat tab (medvit viewer --vlm DIR)

    def with_data(self, data_dir: str | Path, source: str) -> ViewerConfig:
        """A copy browsing ``data_dir`` instead."""
        return replace(self, data_dir=Path(data_dir), data_source=source)


def demo_model(env: dict[str, str] | os._Environ[str]) -> Path | None:
    """The model ``make demo`` used (see :func:`medvit.demo.current_demo_model`), or None."""
    from medvit.demo import current_demo_model

    return current_demo_model(env)


def results_beside(data_dir: Path) -> Path:
    """The default results folder for ``--data DIR`` without ``--results``: ``DIR/../results``."""
    return Path(data_dir).resolve().parent / DEMO_RESULTS


def from_env(environ: dict[str, str] | None = None, cwd: Path | None = None) -> ViewerConfig:
    """Settings from ``MEDVIT_VIEWER_*`` variables, falling back to the demo's outputs (under ``cwd``, else the
    checkout) and the demo model."""
    from medvit.demo import source_root

    env = os.environ if environ is None else environ
    base = Path.cwd() if cwd is None else cwd
    root = source_root()
    places = [base / DEMO_OUT] + ([root / DEMO_OUT] if root else [])
    demo = next((d for d in places if (d / DEMO_STUDIES).is_dir()), base / DEMO_OUT)
    if env.get(ENV_DATA):
        data: Path | None = Path(env[ENV_DATA])
        source = "--data"
    elif (demo / DEMO_STUDIES).is_dir():
        data, source = demo / DEMO_STUDIES, "demo"
    else:
        data, source = None, "none"
    dm = demo_model(env)
    model = env.get(ENV_MODEL) or (str(dm) if dm is not None else None)
    if env.get(ENV_RESULTS):
        results = Path(env[ENV_RESULTS])
    elif source == "demo" and (demo / DEMO_RESULTS).is_dir():
        results = demo / DEMO_RESULTS
    elif data is not None:  # beside the data, as `make demo` lays it out (demo_out/inbox + demo_out/results)
        results = results_beside(data)
    else:
        results = FALLBACK_RESULTS
    return ViewerConfig(data, model, results, source, env.get(ENV_VLM) or None)
