"""mae_pretrain with VideoMAE V2 dual masking: presets run on the 3D / 2D+t phantoms; bad combinations refused."""

from __future__ import annotations

import json

import pytest

from medvit.config import ConfigError
from medvit.tasks import build_config, run_task
from medvit.tasks.presets import preset_path

SMALL = ["train.steps=2", "train.batch_size=4", "dataset_args.n=20", "backbone_args.depth=1"]


@pytest.mark.parametrize("preset", ["videomae/ct_dual_mae_tiny_cpu", "videomae/cine_dual_mae_tiny_cpu"])
def test_dual_masked_presets_run_and_record_the_masks(tmp_path, preset):
    s = run_task(preset_path(preset), [*SMALL, f"output_dir={tmp_path}"])
    assert s["steps"] == 2 and all(v == v for v in s["losses"])
    cfg = json.loads((tmp_path / "mae" / "config.json").read_text())
    assert cfg["encoder_mask"] == "tube" and cfg["decoder_mask_ratio"] == 0.5 and cfg["mask_ratio"] == 0.9
    assert (tmp_path / "encoder" / "model.safetensors").is_file()


def test_paper_recipe_preset_resolves():
    _, cfg = build_config(preset_path("videomae/vit_b_k710_dual"), [])
    assert (cfg.mask_ratio, cfg.decoder_mask_ratio, cfg.decoder_depth, cfg.encoder_mask) == (0.9, 0.5, 4, "tube")


@pytest.mark.parametrize("overrides, match", [
    (["backbone_args.spatial_dims=2", "backbone_args.patch_size=4"], "3D backbone"),
    (["backbone_args.patch_size=[2,4,16]"], "even"),
    (["encoder_mask=block"], "encoder_mask"),
    (["dual_loss_on=all"], "dual_loss_on"),
])
def test_bad_dual_masking_configs_are_refused(overrides, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        build_config(preset_path("videomae/ct_dual_mae_tiny_cpu"), overrides)
