"""DVPT: parameter budget on ViT-B/16, zero-gate start, sharing, dynamic (sample-specific) prompts."""

from __future__ import annotations

import pytest
import torch

from medvit.peft import apply_peft, trainable_report
from medvit.peft.dvpt import DVPTConfig, DVPTViT, dvpt_param_count
from tests.peft.conftest import make_base

#: stated band for the paper's "about 0.5 % extra trainable parameters" on ViT-B/16 (5-grade head included)
DVPT_PCT_BAND = (0.45, 0.55)


def test_vit_b16_default_adds_about_half_a_percent():
    from medvit.models import create_model

    model = apply_peft(create_model("vit_base_patch16_224", num_classes=5), "dvpt")
    rep = trainable_report(model)
    assert rep["backbone_params"] == 85_798_656
    head = 768 * 5 + 5
    assert rep["trainable_params"] == dvpt_param_count(768, 12, DVPTConfig()) + head == 428_508 + head
    assert DVPT_PCT_BAND[0] <= rep["trainable_pct"] <= DVPT_PCT_BAND[1], rep
    # the released code's sharing (one module per 3 blocks) gives about 0.2 %
    shared = dvpt_param_count(768, 12, DVPTConfig(share_every=3))
    assert 0.15 <= 100 * shared / rep["backbone_params"] <= 0.25


def test_zero_gate_start_equals_prompted_frozen_backbone(images):
    """With g = 0 the DVPT branches add nothing: output = frozen backbone run with the prompt slots."""
    model = apply_peft(make_base(), "dvpt", {"rank": 4, "num_prompts": 3}).eval()
    base = make_base().eval()
    with torch.no_grad():
        t = base.embed(images)
        slots = model.prompt_tokens.expand(images.shape[0], -1, -1)
        t = torch.cat([t[:, :1], slots, t[:, 1:]], dim=1)
        for blk in base.blocks:
            t = blk(t)
        ref = base.forward_head(base.norm(torch.cat([t[:, :1], t[:, 4:]], dim=1)))
        assert torch.equal(model(images), ref)


def test_sharing_groups_and_layers():
    base = make_base(depth=4)
    m = apply_peft(base, "dvpt", {"rank": 4, "num_prompts": 2, "share_every": 2, "layers": [0, 1, 2, 3]})
    assert isinstance(m, DVPTViT) and len(m.dvpt) == 2
    assert m.module_of_block == {0: 0, 1: 0, 2: 1, 3: 1}
    m = apply_peft(make_base(depth=4), "dvpt", {"rank": 4, "num_prompts": 2, "share_every": 3, "layers": [1, -1]})
    assert len(m.dvpt) == 1 and m.module_of_block == {1: 0, 3: 0}
    n = sum(p.numel() for p in m.parameters() if p.requires_grad) - sum(p.numel() for p in m.head.parameters())
    assert n == dvpt_param_count(48, 4, DVPTConfig(rank=4, num_prompts=2, share_every=3, layers=[1, -1]))


def test_prompts_are_sample_specific(images):
    """The cross-attended prompts differ between images (dynamic queries), unlike VPT's static prompts."""
    model = apply_peft(make_base(), "dvpt", {"rank": 4, "num_prompts": 3, "query_init_std": 1.0})
    mod = model.dvpt[0]
    with torch.no_grad():
        mod.gate.fill_(1.0)
        feats = model.backbone.embed(images)
        d_prompts, d_tokens = mod(feats)
    assert d_prompts.shape == (4, 3, 48) and d_tokens.shape == feats.shape
    assert (d_prompts[0] - d_prompts[1]).abs().max() > 1e-4


def test_token_adapter_off_and_prompt_pool(images):
    m = apply_peft(make_base(), "dvpt", {"rank": 4, "num_prompts": 3, "token_adapter": False, "pool": "prompts"})
    with torch.no_grad():
        m.dvpt[0].gate.fill_(0.5)
        _, d_tokens = m.dvpt[0](m.backbone.embed(images))
        assert d_tokens is None
        assert m(images).shape == (4, 3)
        assert m.forward_head(m.forward_features(images), pre_logits=True).shape == (4, 48)


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"rank": 49}, "rank=49 is larger than the embedding width D=48"),
        ({"layers": [5]}, "block index 5 out of range"),
        ({"share_every": 0}, "share_every must be >= 1"),
        ({"pool": "max"}, "pool must be"),
    ],
)
def test_dvpt_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        apply_peft(make_base(), "dvpt", cfg)
