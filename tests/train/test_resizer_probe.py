"""Task resizer_probe (MULLER in front of a frozen backbone) runs from its pipeline file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medvit.config import ConfigError
from medvit.tasks import run_task

PIPE = Path(__file__).resolve().parents[2] / "pipelines" / "muller_probe" / "cxr_tiny_cpu.yaml"


def test_pipeline_runs_and_reports_both_resizers(tmp_path):
    out = tmp_path / "run"
    summary = run_task(PIPE, [f"output_dir={out}", "n=60", "source_size=64", "image_size=32", "epochs=1",
                              "backbone_args={patch_size: 16, embed_dim: 48, depth: 1, num_heads: 4}"])
    res = summary["results"]
    assert set(res) == {"bilinear", "muller"}
    assert res["bilinear"]["resizer_parameters"] == {}
    muller = res["muller"]["resizer_parameters"]
    assert len(muller["weights"]) == 2 and any(w != 0 for w in muller["weights"])  # it trained
    assert 0.0 <= res["muller"]["test_auroc"] <= 1.0
    assert json.loads((out / "summary.json").read_text())["results"]["muller"] == res["muller"]
    assert (out / "config.resolved.yaml").is_file()


def test_unknown_resizer_is_refused_before_any_work(tmp_path):
    with pytest.raises((ValueError, ConfigError), match="lanczos"):
        run_task(PIPE, [f"output_dir={tmp_path}", "resizers=[lanczos]"])
