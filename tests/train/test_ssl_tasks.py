"""Registered issue-20 part B tasks (tov_vicreg, m3i_pretrain, look_finetune, unip_distill): presets run through
the training loop with their registered losses; the TOV order head and the UNIP layer choice behave as stated."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medvit.models import create_model, load_model, save_checkpoint
from medvit.registry import REGISTRY
from medvit.tasks import build_config, run_task
from medvit.tasks.presets import preset_path

TINY = ["train.steps=2", "train.batch_size=8", "dataset_args.n=40"]


def test_tasks_registered():
    assert {"tov_vicreg", "m3i_pretrain", "look_finetune", "unip_distill"} <= set(REGISTRY.names("task"))


@pytest.mark.parametrize("preset", ["ssl20/tov_vicreg_cine_tiny_cpu", "ssl20/m3i_retina_tiny_cpu",
                                    "ssl20/look_retina_tiny_cpu"])
def test_ssl_presets_run_and_save_a_loadable_encoder(tmp_path, preset):
    s = run_task(preset_path(preset), [*TINY, f"output_dir={tmp_path}"])
    assert s["steps"] == 2 and s["first_loss"] == s["first_loss"]  # finite (not NaN)
    enc = load_model(tmp_path / "encoder")
    assert enc.num_classes == 0
    for split in ("val", "test"):
        assert 0.0 <= s["frozen_eval"][split]["linear_probe"]["accuracy"] <= 1.0


def test_unip_distill_runs_with_a_checkpoint_teacher_and_lowers_the_kl(tmp_path):
    torch.manual_seed(0)
    t = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2,
                     in_chans=1, num_classes=0)
    save_checkpoint(t, tmp_path / "teacher")
    s = run_task(preset_path("ssl20/unip_cxr_tiny_cpu"), [
        "train.steps=15", "train.batch_size=16", "dataset_args.n=60", "dataset_args.image_size=32", "image_size=32",
        "backbone_args.patch_size=8", "backbone_args.embed_dim=32", "backbone_args.num_heads=2", "train.blr=0.02",
        f"teacher={tmp_path / 'teacher'}", f"output_dir={tmp_path / 'run'}"])
    from medvit.tasks.unip_distill import pick_hybrid_layer

    assert len(s["teacher_nmi"]) == 3 and s["teacher_layer"] == pick_hybrid_layer(s["teacher_nmi"])
    assert s["val_kl_after"] < s["val_kl_before"]
    assert (tmp_path / "run" / "encoder" / "model.safetensors").is_file()


def test_unip_refuses_mismatched_tokens_and_missing_teacher(tmp_path):
    t = create_model("vit_tiny_patch16_224", img_size=64, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                     in_chans=1, num_classes=0)
    save_checkpoint(t, tmp_path / "teacher")
    with pytest.raises(ValueError, match="tokens"):
        run_task(preset_path("ssl20/unip_cxr_tiny_cpu"), [*TINY, f"teacher={tmp_path / 'teacher'}",
                                                          f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match="teacher"):
        build_config(preset_path("ssl20/unip_cxr_tiny_cpu"), ["teacher="])


def test_pick_hybrid_layer_is_the_midpoint_block():
    from medvit.tasks.unip_distill import pick_hybrid_layer

    assert pick_hybrid_layer([0.9, 0.6, 0.45, 0.1]) == 2  # midpoint 0.5
    assert pick_hybrid_layer([0.2, 0.2]) == 0


class _Mean(nn.Module):
    """A 'frame encoder' whose feature is the frame's mean intensity (= its time index t)."""

    embed_dim = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((1, 2, 3))[:, None]


def test_tov_order_head_learns_temporal_order_on_features_equal_to_t():
    from medvit.tasks.tov_vicreg import TOVVICRegModel
    from medvit.train.ssl_losses import temporal_order_loss

    torch.manual_seed(0)
    model = TOVVICRegModel(_Mean(), proj_dim=4, identity_prob=0.5)
    opt = torch.optim.Adam(model.order_head.parameters(), lr=0.3)
    for _ in range(300):  # 100 steps reach 0.87-1.0 depending on the seed; 300 reach 1.0 for seeds 0-5
        t = torch.randint(1, 15, (64,)).float()
        views = torch.stack([t, t, t - 1, t + 1], 1)[:, :, None, None, None].expand(-1, -1, 1, 2, 2)
        out = model(views)
        loss = temporal_order_loss(out["order_logit"], out["order_label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        t = torch.randint(1, 15, (1000,)).float()
        out = model(torch.stack([t, t, t - 1, t + 1], 1)[:, :, None, None, None].expand(-1, -1, 1, 2, 2))
        acc = ((out["order_logit"] > 0).float() == out["order_label"]).float().mean().item()
    assert acc > 0.9


def test_bad_task_configs_are_refused():
    with pytest.raises(ValueError, match="targets"):
        build_config(preset_path("ssl20/m3i_retina_tiny_cpu"), ["targets=[text]"])
    with pytest.raises(ValueError, match="loss.name"):
        build_config(preset_path("ssl20/look_retina_tiny_cpu"), ["loss.name=lookk"])
    with pytest.raises(ValueError, match="gap"):
        build_config(preset_path("ssl20/tov_vicreg_cine_tiny_cpu"), ["gap=0"])


@pytest.mark.parametrize("layer", ["99", "-5", "2", "-3"])
def test_unip_teacher_layer_out_of_range_is_refused_not_wrapped(tmp_path, layer):
    """A 2-block teacher: teacher_layer 99 / -5 / 2 / -3 used to wrap modulo depth (99 -> block 1); now a ValueError
    naming teacher_layer and the valid range [-2, 2) before any training."""
    t = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                     in_chans=1, num_classes=0)
    save_checkpoint(t, tmp_path / "teacher")
    with pytest.raises(ValueError, match=r"teacher_layer=-?\d+ is out of range .*\[-2, 2\)"):
        run_task(preset_path("ssl20/unip_cxr_tiny_cpu"), [
            *TINY, "dataset_args.image_size=32", "image_size=32", "backbone_args.patch_size=8",
            "backbone_args.embed_dim=32", "backbone_args.num_heads=2", f"teacher={tmp_path / 'teacher'}",
            f"teacher_layer={layer}", f"output_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run" / "encoder").exists()
