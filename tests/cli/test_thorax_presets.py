"""The thorax-MAE fine-tuning presets carry the paper recipe (medical-notes §1.4) explicitly: the finetune task's
built-in defaults are generic (layer decay 1.0, eval crop 1.0), so ``medvit run PRESET --dry-run`` must show the
paper's values, not the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medvit.cli.main import main

PRESETS = Path(__file__).resolve().parents[2] / "pipelines" / "mae_thorax"
PAPER = ["finetune_vit_small_nih", "finetune_vit_base_nih", "finetune_vit_small_chexpert",
         "finetune_vit_base_chexpert"]


def _dry_run(name: str, capsys: pytest.CaptureFixture[str], *overrides: str) -> dict:
    assert main(["run", str(PRESETS / f"{name}.yaml"), *overrides, "--dry-run"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("name", PAPER)
def test_thorax_preset_dry_run_shows_paper_recipe(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _dry_run(name, capsys)
    assert cfg["task"] == "finetune_multilabel"
    assert cfg["train"]["layer_decay"] == 0.55  # FINETUNE.md, ViT-S and ViT-B
    # eval Resize(256) + CenterCrop(224), bicubic (timm create_transform eval path)
    assert cfg["image_size"] == 224
    assert cfg["eval_crop_pct"] == 0.875 and round(cfg["image_size"] / cfg["eval_crop_pct"]) == 256
    assert cfg["crop_mode"] == "crop"
    assert cfg["interpolation"] == "bicubic"
    assert list(cfg["rrc_scale"]) == [0.08, 1.0]
    assert cfg["drop_path"] == 0.2 and cfg["randaug"] == "rand-m6-mstd0.5-inc1"
    assert cfg["train"]["blr"] == 2.5e-4 and cfg["train"]["weight_decay"] == 0.05
    assert cfg["train"]["epochs"] == 75 and cfg["train"]["warmup_epochs"] == 5
    assert cfg["train"]["batch_size"] * cfg["train"]["accum_steps"] == 1024
    assert cfg["mean"] == [0.5056] and cfg["std"] == [0.252]


def test_task_defaults_differ_from_the_paper_so_presets_must_pin_them(capsys: pytest.CaptureFixture[str]) -> None:
    """Guards the reason for the test above: without the preset's keys the task would run the generic defaults."""
    from medvit.tasks.finetune_multilabel import FinetuneMultilabelConfig

    d = FinetuneMultilabelConfig()
    assert d.train.layer_decay == 1.0 and d.eval_crop_pct == 1.0
    for name in PAPER:
        raw = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
        assert raw["train"]["layer_decay"] == 0.55 and raw["eval_crop_pct"] == 0.875, name
        assert raw["crop_mode"] == "crop" and raw["interpolation"] == "bicubic", name
