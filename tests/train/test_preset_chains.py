"""Presets meant to chain (`medvit run B.yaml pretrained=runs/A`, as their comments and READMEs say) share the
architecture; the documented DVPT-from-MAE chain runs (issue 12)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
ARCH = ("patch_size", "embed_dim", "depth", "num_heads")


def _presets() -> dict[str, dict]:
    return {p.relative_to(PIPELINES).as_posix(): yaml.safe_load(p.read_text()) for p in PIPELINES.rglob("*.yaml")}


def _chains() -> list[tuple[str, str, str]]:
    """(documenting file, consumer preset, producer output name) for every `X.yaml pretrained=runs/NAME`."""
    out = []
    for doc in list(PIPELINES.rglob("*.yaml")) + list(PIPELINES.rglob("README.md")):
        for m in re.finditer(r"(\S+\.yaml)\s+(?:\\\s*\n\s*)?[^\n#]*?pretrained=runs/([A-Za-z0-9_]+)", doc.read_text()):
            consumer = m.group(1).removeprefix("pipelines/")
            if "/" not in consumer:
                consumer = f"{doc.parent.name}/{consumer}"
            out.append((doc.relative_to(PIPELINES).as_posix(), consumer, m.group(2)))
    return sorted(set(out))


def _arch(cfg: dict) -> dict:
    from medvit.models.mae import MAE_PRESETS

    backbone = MAE_PRESETS[cfg["preset"]].backbone if cfg.get("preset") else cfg.get("backbone")
    args = cfg.get("backbone_args") or {}
    return {"backbone": backbone, "in_chans": cfg.get("in_chans", 1), **{k: args.get(k) for k in ARCH}}


def test_documented_chains_share_the_architecture():
    presets = _presets()
    chains = _chains()
    assert len(chains) >= 5
    by_output = {str(c.get("output_dir", "")).removeprefix("runs/"): name for name, c in presets.items()}
    problems = []
    for doc, consumer, produced in chains:
        if consumer not in presets:
            problems.append(f"{doc}: {consumer} does not exist")
            continue
        if produced not in by_output:
            problems.append(f"{doc}: no preset writes runs/{produced}")
            continue
        a, b = _arch(presets[by_output[produced]]), _arch(presets[consumer])
        if a != b:
            problems.append(f"{doc}: {consumer} {b} differs from {by_output[produced]} {a}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_dvpt_from_mae_tiny_chain_runs(tmp_path):
    from medvit.tasks import run_task

    mae = yaml.safe_load((PIPELINES / "mae_thorax" / "mae_pretrain_tiny_cpu.yaml").read_text())
    mae.update(output_dir=str(tmp_path / "mae_tiny_cpu"), dataset_args={"n": 40, "seed": 0, "image_size": 64},
               figure_split="")
    mae["train"].update(steps=1, batch_size=8, warmup_epochs=0, ckpt_every=0)
    run_task(None, data=mae)
    dvpt = yaml.safe_load((PIPELINES / "dvpt" / "cxr_tiny_cpu.yaml").read_text())
    dvpt.update(output_dir=str(tmp_path / "dvpt"), pretrained=str(tmp_path / "mae_tiny_cpu"),
                dataset_args={"n": 80, "seed": 0, "image_size": 64})
    dvpt["train"] = {**dvpt["train"], "steps": 1, "batch_size": 8, "warmup_epochs": 0}
    out = run_task(None, data=dvpt)
    assert out["seeds"][0]["steps"] == 1
