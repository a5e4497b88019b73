"""LookupViT (ECCV'24): general-vision notes, entry 21."""

from __future__ import annotations

import pytest
import torch

from medvit.models import create_model
from medvit.nn.flops import measured_macs
from medvit.nn.lookup_block import LookupBlock

TINY = dict(img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=4, compressed_grid=3, num_classes=3)


def test_shapes_and_compressed_tokens():
    m = create_model("lookupvit_small_patch16_224", **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    assert m.forward_features(x).shape == (2, 64, 48)
    assert m(x).shape == (2, 3)
    maps = m.attention_maps(x)
    assert [a.shape for a in maps] == [(2, 4, 9, 64)] * 2
    assert m.forward_intermediates(x, [0], output_fmt="NCHW")[0].shape == (2, 48, 8, 8)
    z = m.compress(m.embed(x), (8, 8))
    assert z.shape == (2, 9, 48)


def test_infusion_reuses_the_transposed_gather_logits():
    torch.manual_seed(0)
    blk = LookupBlock(32, 4)
    x, z = torch.randn(2, 20, 32), torch.randn(2, 5, 32)
    captured = {}
    blk.v_z.register_forward_hook(lambda mod, i, o: captured.__setitem__("vz", o))
    out_x, out_z, logits = blk.forward_with_attention(x, z)
    # recompute step 3 by hand from the step-1 logits
    vz = captured["vz"].reshape(2, 5, 4, 8).transpose(1, 2)
    a = logits.transpose(-2, -1).softmax(-1)  # (B, H, N, M): normalised over the compressed tokens
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 20))
    x_mid = x + blk.proj_x((a @ vz).transpose(1, 2).reshape(2, 20, 32))
    torch.testing.assert_close(out_x, x_mid + blk.mlp_x(blk.norm_x(x_mid)))
    # and the logits are the gather logits Q(z)·K(x)ᵀ/√d of the block's input
    q = blk.q_z(blk.norm_gather_z(z)).reshape(2, 5, 4, 8).transpose(1, 2)
    k = blk.kv_x(blk.norm_gather_x(x))[..., :32].reshape(2, 20, 4, 8).transpose(1, 2)
    torch.testing.assert_close(logits, q @ k.transpose(-2, -1) / 8**0.5)


def test_macs_grow_linearly_in_n_for_fixed_m():
    blk = LookupBlock(64, 4)
    macs = [blk.macs(n, 49) for n in (64, 256, 1024)]
    d1, d2 = macs[1] - macs[0], macs[2] - macs[1]
    assert d2 == pytest.approx(4 * d1)  # linear: equal increments per token
    from medvit.nn.flops import block_macs

    vit = [block_macs(n, 64) for n in (64, 256, 1024)]
    assert (vit[2] - vit[1]) > 4.5 * (vit[1] - vit[0])  # quadratic for the plain ViT


def test_analytic_macs_equal_measured():
    m = create_model("lookupvit_small_patch16_224", **TINY)
    x = torch.randn(1, 3, 32, 32)
    assert measured_macs(m, x) == m.analytic_macs()


@pytest.mark.parametrize("bad", [dict(compressed_grid=9), dict(compressed_grid=0), dict(lookup_mlp_ratio=0)])
def test_illegal_lookupvit_arguments(bad):
    with pytest.raises(ValueError):
        create_model("lookupvit_small_patch16_224", **{**TINY, **bad})


@pytest.mark.parametrize("size", [32, 24])
def test_forward_until_from_split_anywhere_exactly(size):
    torch.manual_seed(0)
    m = create_model("lookupvit_small_patch16_224", **{**TINY, "depth": 3}).eval()
    x = torch.randn(2, 3, size, size)
    n = (size // 4) ** 2
    full, feats = m(x), m.forward_features(x)
    for k in range(len(m.blocks) + 1):
        t = m.forward_until(x, k)
        assert t.shape == (2, n + 9, 48)  # N lookup tokens, then the M = 3x3 compressed tokens
        assert torch.equal(m.forward_from(t, k), feats)
        assert torch.equal(m.forward_head(m.forward_from(t, k)), full)
    # k = 0 is the embedding and its compression; the carried compressed tokens change block by block
    t0 = m.forward_until(x, 0)
    assert torch.equal(t0[:, :n], m.embed(x)) and torch.equal(t0[:, n:], m.compress(m.embed(x), (size // 4,) * 2))
    assert not torch.equal(m.forward_until(x, 1)[:, n:], t0[:, n:])
    with pytest.raises(ValueError, match="k must be"):
        m.forward_until(x, 4)
    with pytest.raises(ValueError, match="lookup then compressed"):
        m.forward_from(t0[:, :5], 1)
    with pytest.raises(ValueError, match="forward_until"):
        m.run_blocks(m.embed(x), 1)
