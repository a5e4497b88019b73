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
        ({"insertion": "mlp"}, "insertion must be"),
    ],
)
def test_dvpt_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        apply_peft(make_base(), "dvpt", cfg)


def _released_cfg() -> dict:
    """method_config of the released-code preset, read from the YAML itself."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    return yaml.safe_load((root / "pipelines/dvpt/cxr_vitb16_released.yaml").read_text())["method_config"]


def test_trainable_fraction_of_both_readings_on_vit_b16():
    """Measured on ViT-B/16 + 5-class head: abstract 432,353 params = 0.5039 %; released 172,281 = 0.2008 %."""
    from medvit.models import create_model

    pct = {}
    for name, cfg in (("abstract", None), ("released", _released_cfg())):
        model = apply_peft(create_model("vit_base_patch16_224", num_classes=5), "dvpt", cfg)
        assert model.reading == name
        rep = trainable_report(model)
        pct[name] = (rep["trainable_params"], rep["trainable_pct"])
    assert pct["abstract"][0] == 428_508 + 3845
    assert pct["released"][0] == 4 * 32_509 + 50 * 768 + 3845 == 172_281
    assert 0.503 <= pct["abstract"][1] <= 0.505, pct
    assert 0.200 <= pct["released"][1] <= 0.202, pct


def test_released_preset_insertion_sharing_and_readout(images):
    torch.manual_seed(0)
    m = apply_peft(make_base(depth=6), "dvpt", {**_released_cfg(), "rank": 4, "num_prompts": 3})
    assert m.reading == "released" and m.insertion == "post_attention" and m.prompt_pool == "prompts"
    # sharing: one module object (same parameters) per group of 3 blocks
    assert len(m.dvpt) == 2 and m.module_of_block == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    mods = [m.dvpt[m.module_of_block[b]] for b in range(6)]
    assert mods[0].down.weight is mods[1].down.weight is mods[2].down.weight
    assert mods[3].queries is mods[5].queries and mods[0].queries is not mods[3].queries
    # insertion: h = x + Attn(LN1(x)); out = h + MLP(LN2(h)) + Δ(h) — the module sees h, not the block input
    with torch.no_grad():
        for mod in m.dvpt:
            mod.gate.fill_(0.7)
        blk = m.backbone.blocks[0]
        x = torch.randn(4, 1 + 3 + 4, 48)
        h = x + blk.attn(blk.norm1(x))
        d_p, d_t = m.dvpt[0](m.strip_prompts(h))
        ref = h + blk.mlp(blk.norm2(h)) + torch.cat([d_t[:, :1], d_p, d_t[:, 1:]], dim=1)
        torch.testing.assert_close(m.block_forward(0, blk, x), ref, atol=1e-6, rtol=0)
        d_p_in, d_t_in = m.dvpt[0](m.strip_prompts(x))  # the abstract reading's input would differ
        assert (d_t_in - d_t).abs().max() > 1e-3
        # readout: mean of CLS and the 3 prompt tokens
        t = torch.randn(4, 1 + 3 + 4, 48)
        ref_head = m.backbone.head(m.backbone.fc_norm(t[:, :4].mean(dim=1)))
        torch.testing.assert_close(m.forward_head(t), ref_head)


def test_every_trainable_param_gets_a_gradient_under_released_readout(images):
    def no_grad_names(cfg):
        m = apply_peft(make_base(depth=3), "dvpt", cfg)
        with torch.no_grad():
            for mod in m.dvpt:
                mod.gate.fill_(0.5)
        m(images).sum().backward()
        return [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]

    assert no_grad_names({**_released_cfg(), "rank": 4, "num_prompts": 3}) == []
    # contrast: CLS readout without sharing leaves the last block's prompt queries without a gradient
    assert "dvpt.2.queries" in no_grad_names({"rank": 4, "num_prompts": 3})
