"""EViT token reorganisation (ICLR'22): the properties listed in the general-vision notes, entry 19."""

from __future__ import annotations

import pytest
import torch

from medvit.models import VisionTransformer, create_model
from medvit.nn.flops import measured_macs
from medvit.nn.token_reorganize import keep_rate_schedule, reorganize_tokens

TINY = dict(img_size=32, patch_size=4, embed_dim=48, depth=6, num_heads=4, keep_locs=(1, 3, 5))


def test_token_counts_65_47_35_26():
    m = create_model("evit_small_patch16_224", keep_rate=0.7, num_classes=3, **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    seen = [a.shape[-1] for a in m.attention_maps(x)]  # tokens entering each block's attention
    assert seen == [65, 65, 47, 47, 35, 35]
    assert m.forward_features(x).shape == (2, 26, 48)
    assert [t for _, t in m.tokens_per_block(64)] == [65, 47, 47, 35, 35, 26]
    kept = m.kept_token_map(x)
    # 24 non-CLS, non-fused slots; an earlier fused token may hold one of them (it can be kept too)
    assert kept.shape == (2, 8, 8) and all(22 <= s <= 24 for s in kept.sum(dim=(1, 2)).tolist())


def test_keep_rate_one_is_the_plain_vit():
    m = create_model("evit_small_patch16_224", keep_rate=1.0, num_classes=4, **TINY).eval()
    args = {k: v for k, v in m.model_args.items() if k not in ("keep_rate", "keep_locs", "fuse_token")}
    vit = VisionTransformer(**args).eval()
    vit.load_state_dict(m.state_dict())  # same parameter names
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(m(x), vit(x))
    assert m.forward_features(x).shape == vit.forward_features(x).shape


def test_fused_token_is_the_attention_weighted_sum():
    torch.manual_seed(1)
    B, N, D = 2, 6, 5
    x = torch.randn(B, 1 + N, D)
    a = torch.rand(B, N)
    out, idx = reorganize_tokens(x, a, keep_rate=0.5, index=torch.arange(N).expand(B, -1))
    assert out.shape == (B, 1 + 3 + 1, D)
    for b in range(B):
        top = sorted(a[b].argsort(descending=True)[:3].tolist())
        rest = [j for j in range(N) if j not in top]
        assert idx[b].tolist() == top + [-1]
        torch.testing.assert_close(out[b, 0], x[b, 0])
        torch.testing.assert_close(out[b, 1:4], x[b, 1:][top])
        fused = sum(a[b, j] * x[b, 1 + j] for j in rest)  # not renormalised
        torch.testing.assert_close(out[b, 4], fused)
    no_fuse, _ = reorganize_tokens(x, a, keep_rate=0.5, fuse_token=False)
    assert no_fuse.shape == (B, 4, D)


def test_deit_small_macs_fall_34_percent_at_r07():
    m = create_model("evit_small_patch16_224", num_classes=1000)
    assert [t for _, t in m.tokens_per_block(196)][2::3] == [197, 140, 100, 72]
    full, pruned = m.analytic_macs(keep_rate=1.0), m.analytic_macs()
    assert full / 1e9 == pytest.approx(4.60, abs=0.01)
    assert pruned / 1e9 == pytest.approx(3.03, abs=0.03)
    assert 1 - pruned / full == pytest.approx(0.341, abs=0.005)


def test_analytic_macs_equal_measured():
    m = create_model("evit_small_patch16_224", keep_rate=0.6, num_classes=3, **TINY)
    x = torch.randn(1, 3, 32, 32)
    assert measured_macs(m, x) == m.analytic_macs()


def test_intermediates_map_tokens_back_to_their_patches():
    m = create_model("evit_small_patch16_224", num_classes=0, **TINY).eval()
    x = torch.randn(1, 3, 32, 32)
    nlc = m.forward_intermediates(x, indices=[5])[0]
    nchw = m.forward_intermediates(x, indices=[5], output_fmt="NCHW")[0]
    assert nlc.shape == (1, 25, 48) and nchw.shape == (1, 48, 8, 8)
    kept = m.kept_token_map(x)[0]
    assert (nchw[0].abs().sum(0) > 0).eq(kept).all()


def test_keep_rate_schedule():
    assert keep_rate_schedule(0, 0.7, 5, 15) == 1.0
    assert keep_rate_schedule(15, 0.7, 5, 15) == 0.7
    vals = [keep_rate_schedule(s, 0.7, 5, 15) for s in range(5, 16)]
    assert all(a >= b for a, b in zip(vals, vals[1:])) and vals[5] == pytest.approx(0.85)


@pytest.mark.parametrize("bad", [dict(keep_rate=0.0), dict(keep_rate=1.5), dict(keep_locs=(9,)),
                                 dict(class_token=False, global_pool="avg")])
def test_illegal_evit_arguments(bad):
    with pytest.raises(ValueError):
        create_model("evit_small_patch16_224", **{**TINY, **bad})


def test_keep_stage_map_keeps_everything_at_r_one():
    m = create_model("evit_small_patch16_224", keep_rate=1.0, num_classes=2, **TINY).eval()
    stages = m.keep_stage_map(torch.randn(2, 3, 32, 32))
    assert stages.shape == (2, 8, 8) and stages.dtype == torch.int64
    assert bool((stages == 3).all())


@pytest.mark.parametrize("fuse", [False, True])
def test_keep_stage_map_counts_are_the_model_token_counts(fuse):
    torch.manual_seed(0)
    m = create_model("evit_small_patch16_224", keep_rate=0.7, fuse_token=fuse, num_classes=2, **TINY).eval()
    x = torch.randn(3, 3, 32, 32)
    stages = m.keep_stage_map(x)
    after = [m.tokens_per_block(64)[i][1] - 1 for i in m.keep_locs]  # tokens after each stage, CLS excluded
    assert after == ([45, 32, 23] if not fuse else [46, 34, 25])
    for s, n in enumerate(after):
        alive = (stages > s).flatten(1).sum(dim=1).tolist()
        if fuse:  # each stage adds one fused slot; a kept earlier fused slot takes a patch's place
            assert all(n - 1 - s <= a <= n - 1 for a in alive), (s, alive)
        else:
            assert alive == [n] * 3
    # the map is monotone bookkeeping of the same walk: "kept to the end" is the kept-token map
    assert torch.equal(stages == 3, m.kept_token_map(x))
    # and the patches alive after the last stage are exactly those the NCHW layout fills
    feats = m.forward_intermediates(x, indices=[5], output_fmt="NCHW")[0]
    assert torch.equal(feats.abs().sum(dim=1) > 0, stages == 3)
