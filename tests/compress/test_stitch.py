"""SN-Netv2: least-squares stitch init, anchor configs equal the anchors, enumeration, MACs order, FLOPs-aware
sampling, one checkpoint reloaded with any configuration."""

from __future__ import annotations

import pytest
import torch

import medvit
from medvit.compress.stitch import (
    FlopsSampler,
    StitchedViT,
    least_squares_affine,
    load_stitched,
    save_stitched,
    stitch_configs,
)


def anchors(ds=4, dl=8):
    torch.manual_seed(0)
    kw = dict(img_size=16, patch_size=4, in_chans=1, num_classes=3)
    s = medvit.create_model("vit_small_patch16_224", embed_dim=32, depth=ds, num_heads=2, **kw).eval()
    l_ = medvit.create_model("vit_small_patch16_224", embed_dim=64, depth=dl, num_heads=4, **kw).eval()
    return s, l_


def test_least_squares_recovers_an_affine_map():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 12, generator=g)
    w, b = torch.randn(7, 12, generator=g), torch.randn(7, generator=g)
    w_hat, b_hat = least_squares_affine(x, x @ w.T + b)
    assert (w_hat - w).abs().max() < 1e-4 and (b_hat - b).abs().max() < 1e-4


def test_enumeration_for_depths_4_and_8():
    cs = stitch_configs(4, 8)
    assert len(cs) == 2 + 3 + 3
    assert [(c.front, c.back) for c in cs if c.route == "S2L"] == [(1, 2), (2, 4), (3, 6)]
    assert [(c.front, c.back) for c in cs if c.route == "L2S"] == [(2, 1), (4, 2), (6, 3)]


def test_anchor_configs_reproduce_the_anchors_and_macs_order():
    s, l_ = anchors()
    m = StitchedViT(s, l_).eval()
    x = torch.randn(3, 1, 16, 16)
    m.init_stitches(x)
    with torch.no_grad():
        m.select(0)
        assert torch.equal(m(x), s(x))
        m.select(1)
        assert torch.equal(m(x), l_(x))
    macs = m.config_macs(x)
    s2l = [macs[i] for i, c in enumerate(m.configs) if c.route == "S2L"]  # stitch points i = 1, 2, 3
    assert s2l == sorted(s2l, reverse=True)  # an earlier stitch runs more large blocks: more MACs
    assert macs[0] < min(s2l) and max(s2l) < macs[1]


def test_flops_sampler_visits_bins_evenly():
    macs = [10, 11, 12, 13, 50, 90, 91]
    sp = FlopsSampler(macs, n_bins=3, seed=0)
    counts = [0] * len(sp.bins)
    for _ in range(3000):
        i = sp.sample()
        counts[next(k for k, b in enumerate(sp.bins) if i in b)] += 1
    assert len(sp.bins) == 3 and all(abs(c / 3000 - 1 / 3) < 0.04 for c in counts)


def test_one_checkpoint_reloads_every_configuration(tmp_path):
    s, l_ = anchors()
    m = StitchedViT(s, l_, rank=4).eval()
    x = torch.randn(2, 1, 16, 16)
    m.init_stitches(x)
    with torch.no_grad():
        m.stitches["S2L_2_4"].lora_b.normal_()  # a trained LoRA update must round-trip too
    out = save_stitched(m, tmp_path / "snnet")
    for k in range(len(m.configs)):
        back = load_stitched(out, config_id=k)
        with torch.no_grad():
            torch.testing.assert_close(back(x), m.forward_config(x, m.configs[k]), atol=0, rtol=0)
    with pytest.raises(ValueError, match="config_id"):
        load_stitched(out, config_id=len(m.configs))
    (out / "model.safetensors").write_bytes(b"x" + (out / "model.safetensors").read_bytes()[1:])
    from medvit.models.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="SHA-256"):
        load_stitched(out)


def test_least_squares_stitch_beats_random_stitch():
    s, l_ = anchors()
    m = StitchedViT(s, l_).eval()
    x = torch.randn(16, 1, 16, 16)
    c = next(c for c in m.configs if c.key == "S2L_2_4")
    with torch.no_grad():
        target = l_.forward_until(x, c.back)
        err_rand = (m.stitches[c.key](s.forward_until(x, c.front)) - target).pow(2).mean()
        m.init_stitches(x)
        err_ls = (m.stitches[c.key](s.forward_until(x, c.front)) - target).pow(2).mean()
    assert err_ls < 0.5 * err_rand
