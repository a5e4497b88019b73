"""Frozen-spatial ViViT: no gradient or graph in the spatial ViT, bit-exact temporal init, small trainable share."""

from __future__ import annotations

import pytest
import torch

from medvit.peft import apply_peft, trainable_report
from medvit.peft.vivit import FrozenSpatialViViT
from tests.peft.conftest import make_base


def _clip(b: int = 2, t: int = 4) -> torch.Tensor:
    return torch.rand(b, t, 1, 32, 32, generator=torch.Generator().manual_seed(2))


def test_spatial_frozen_without_graph_and_temporal_trains():
    model = apply_peft(make_base(depth=4), "vivit", {"temporal_depth": 2, "adapter_dim": 8, "max_frames": 8})
    assert isinstance(model, FrozenSpatialViViT)
    clip = _clip()
    assert model.spatial_tokens(clip).grad_fn is None  # no graph through the spatial blocks
    model.train()
    out = model(clip)
    assert out.shape == (2, 3)
    out.sum().backward()
    for n, p in model.backbone.named_parameters():
        if not n.startswith("head."):
            assert p.grad is None, n
    assert all(p.grad is not None for p in model.temporal.parameters())
    rep = trainable_report(model)
    assert rep["trainable_pct"] < 60  # 2 of 4 blocks copied + a small adapter


def test_temporal_init_copies_last_blocks_bit_exactly_and_is_independent():
    base = make_base(depth=4)
    ref = [{k: v.clone() for k, v in base.blocks[i].state_dict().items()} for i in (2, 3)]
    model = apply_peft(base, "vivit", {"temporal_depth": 2, "adapter_dim": 8})
    for blk, sd in zip(model.temporal, ref):
        assert all(torch.equal(v, sd[k]) for k, v in blk.state_dict().items())
        assert blk.attn.qkv.weight.data_ptr() != base.blocks[2].attn.qkv.weight.data_ptr()
    assert all(not p.requires_grad for p in model.backbone.blocks.parameters())
    rand = apply_peft(make_base(depth=4), "vivit", {"temporal_depth": 3, "temporal_init": "random"})
    assert not torch.equal(rand.temporal[0].attn.qkv.weight, base.blocks[1].attn.qkv.weight)


def test_adapter_starts_at_cls_and_frame_order_matters():
    model = apply_peft(make_base(), "vivit", {"temporal_depth": 1, "adapter_dim": 8}).eval()
    clip = _clip()
    tok = model.spatial_tokens(clip)
    with torch.no_grad():
        assert torch.equal(model.frame_vectors(tok), tok[:, :, 0] + 0.0)  # zero up-projection at start
        model.temporal_pos.normal_()
        a, b = model(clip), model(clip.flip(1))
    assert (a - b).abs().max() > 1e-5  # temporal positions make the order count
    assert model(clip[:, 0]).shape == (2, 3)  # an image is a one-frame clip


@pytest.mark.parametrize("cfg, match", [({"temporal_depth": 3}, "> the image ViT's 2 blocks"),
                                        ({"adapter_dim": 0}, "adapter_dim must be >= 1"),
                                        ({"temporal_init": "imagenet"}, "temporal_init")])
def test_vivit_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        apply_peft(make_base(), "vivit", cfg)


def test_clip_too_long_refused():
    model = apply_peft(make_base(), "vivit", {"temporal_depth": 1, "max_frames": 2})
    with pytest.raises(ValueError, match="longer than max_frames=2"):
        model(_clip(t=3))
