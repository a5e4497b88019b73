"""Still-Moving: removing the motion adapter restores the frozen temporal model exactly; a still image is a frozen
video whose per-frame spatial outputs are identical; the temporal model can come from a trained vivit adapter."""

from __future__ import annotations

import copy

import pytest
import torch

from medvit.peft import AdapterError, apply_peft, load_adapter, save_adapter, trainable_report
from medvit.peft.still_moving import StillMovingConfig, StillMovingViViT
from tests.peft.conftest import make_base

CFG = {"temporal_depth": 2, "adapter_dim": 8, "max_frames": 8, "still_frames": 3, "spatial_r": 2, "motion_r": 4}


def _steps(model, x, y, n: int = 3) -> None:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    model.train()
    for _ in range(n):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_removing_the_motion_adapter_restores_the_frozen_temporal_output_exactly(images):
    base = make_base(depth=4)
    model = apply_peft(base, "still_moving", CFG)
    assert isinstance(model, StillMovingViViT)
    # the same temporal model without any adapter: rebuilt from a copy of the base with the same config and seed
    plain = StillMovingViViT(make_base(depth=4), StillMovingConfig(**CFG)).eval()
    motion = model.motion_layers()
    assert sorted(motion) == [f"temporal.{i}.attn.{m}" for i in (0, 1) for m in ("proj", "qkv")]
    assert all(layer.lora_A["default"].weight.shape[0] == 4 for layer in motion.values())  # motion_r
    _steps(model, images, torch.tensor([0, 1, 2, 0]))
    assert all(layer.lora_B["default"].weight.abs().max() > 0 for layer in motion.values())  # the adapter trained
    frames = torch.randn(4, 5, 48, generator=torch.Generator().manual_seed(3))
    # autograd on: both run the module path (under no_grad a plain Block takes torch's fused kernel, ~1e-6 apart)
    with torch.enable_grad():
        model.eval()
        off = model.temporal_forward(frames)
        assert torch.equal(off, plain.temporal_forward(frames))  # motion adapter removed: frozen temporal model
        model.train()
        on = model.temporal_forward(frames)
        assert (on - off).abs().max() > 1e-4
        model.eval()
        # the spatial adapters stay at test time
        assert (model.spatial_tokens(images[:, None]) - plain.spatial_tokens(images[:, None])).abs().max() > 1e-4
    # trainable flags do not move with the train/eval switch
    assert all(p.requires_grad for layer in motion.values() for n, p in layer.named_parameters() if "lora_" in n)
    rep = trainable_report(model)
    assert rep["trainable_pct"] < 25


def test_still_image_is_a_frozen_video_with_identical_per_frame_spatial_outputs(images):
    model = apply_peft(make_base(), "still_moving", CFG)
    _steps(model, images, torch.tensor([0, 1, 2, 0]), n=2)
    model.eval()
    clip = images[:, None].expand(-1, 3, -1, -1, -1).contiguous()  # the frozen video, computed frame by frame
    with torch.no_grad():
        tok = model.spatial_tokens(clip)
        for t in range(1, 3):
            assert torch.equal(tok[:, t], tok[:, 0])
        still, video = model(images), model(clip)
    assert torch.allclose(still, video, atol=1e-5, rtol=0)
    assert model(images[:, None].expand(-1, 2, -1, -1, -1)).shape == (4, 3)  # a real clip of another length
    # the spatial adapters get gradients through the frozen-video path (spatial pass keeps its graph)
    model.train()
    model(images).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "backbone.blocks" in n)


def test_temporal_model_from_a_trained_vivit_adapter(images, tmp_path):
    vcfg = {k: CFG[k] for k in ("temporal_depth", "adapter_dim", "max_frames")}
    video = apply_peft(make_base(), "vivit", vcfg)
    _steps(video, images[:, None].expand(-1, 3, -1, -1, -1), torch.tensor([0, 1, 2, 0]))
    save_adapter(video, tmp_path / "vivit")
    cfg = {**CFG, "temporal_model": str(tmp_path / "vivit")}
    model = apply_peft(make_base(), "still_moving", cfg)
    with torch.enable_grad():
        frames = torch.randn(2, 3, 48)
        assert torch.equal(model.eval().temporal_forward(frames), video.eval().temporal_forward(frames))
    assert not any(p.requires_grad for p in (model.temporal_pos, model.pool_score.weight))
    # adapter-only: the temporal model is rebuilt from the vivit adapter at load and checked
    _steps(model, images, torch.tensor([0, 1, 2, 0]), n=2)
    model.eval()
    save_adapter(model, tmp_path / "sm")
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "sm" / "adapter.safetensors")))
    assert keys and all(".lora_" in k or k.startswith("backbone.head.") for k in keys)
    with torch.no_grad():
        assert torch.equal(load_adapter(tmp_path / "sm", base_model=make_base())(images), model(images))
    # the vivit adapter changes under the Still-Moving adapter: refused
    other = copy.deepcopy(video)
    with torch.no_grad():
        other.temporal_pos.add_(1.0)
    save_adapter(other, tmp_path / "vivit")
    with pytest.raises(AdapterError, match="rebuilds from its base"):
        load_adapter(tmp_path / "sm", base_model=make_base())
    with pytest.raises(ValueError, match="another image base"):
        apply_peft(make_base(seed=9), "still_moving", cfg)


@pytest.mark.parametrize("cfg, match", [({"still_frames": 9}, "still_frames=9 > max_frames=8"),
                                        ({"motion_r": 0}, "motion_r must be >= 1"),
                                        ({"motion_targets": []}, "motion_targets is empty")])
def test_bad_configs(cfg, match):
    with pytest.raises(ValueError, match=match):
        apply_peft(make_base(), "still_moving", {**CFG, **cfg})


def test_temporal_model_must_be_a_vivit_adapter(images, tmp_path):
    save_adapter(apply_peft(make_base(), "lora", {"r": 2}), tmp_path / "lora")
    with pytest.raises(ValueError, match="not a 'vivit' one"):
        apply_peft(make_base(), "still_moving", {**CFG, "temporal_model": str(tmp_path / "lora")})
    video = apply_peft(make_base(), "vivit", {"temporal_depth": 1, "adapter_dim": 8, "max_frames": 8})
    save_adapter(video, tmp_path / "v1")
    with pytest.raises(ValueError, match="temporal_depth=1"):
        apply_peft(make_base(), "still_moving", {**CFG, "temporal_model": str(tmp_path / "v1")})
