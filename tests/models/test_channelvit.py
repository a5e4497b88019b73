"""ChannelViT + Hierarchical Channel Sampling (ICLR'24): general-vision notes, entry 4."""

from __future__ import annotations

import pytest
import torch

from medvit.models import create_model
from medvit.nn.channel_patch_embed import hierarchical_channel_sampling
from medvit.nn.flops import measured_macs

TINY = dict(img_size=16, patch_size=8, in_chans=5, embed_dim=48, depth=2, num_heads=4, num_classes=0)


def test_token_counts_eval_and_hcs_train():
    m = create_model("channelvit_small_patch16_224", **TINY)
    x = torch.randn(2, 5, 16, 16)
    m.eval()
    assert m.forward_features(x).shape == (2, 1 + 4 * 5, 48)
    m.train()
    seen = set()
    for _ in range(40):
        n = m.embed(x).shape[1]
        assert (n - 1) % 4 == 0 and 1 <= (n - 1) // 4 <= 5
        seen.add((n - 1) // 4)
    assert seen == {1, 2, 3, 4, 5}


def test_channel_permutation_leaves_the_cls_output_unchanged():
    m = create_model("channelvit_small_patch16_224", **TINY).eval()
    x = torch.randn(2, 5, 16, 16)
    perm = torch.tensor([3, 0, 4, 1, 2])
    ref = m(x)
    out = m(x[:, perm], channels=perm)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_any_channel_subset_runs_without_reinitialisation():
    m = create_model("channelvit_small_patch16_224", **TINY).eval()
    x = torch.randn(2, 5, 16, 16)
    for subset in ([2], [0, 4], [1, 2, 3]):
        out = m.forward_features(x[:, subset], channels=torch.tensor(subset))
        assert out.shape == (2, 1 + 4 * len(subset), 48)
    # a channel's tokens carry its embedding: the same pixels named as another channel differ
    a = m(x[:, [0]], channels=torch.tensor([0]))
    b = m(x[:, [0]], channels=torch.tensor([1]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="pass `channels`"):
        m(x[:, :3])
    with pytest.raises(ValueError, match="channel ids"):
        m(x[:, :2], channels=torch.tensor([0, 7]))


def test_hcs_never_drops_every_channel_and_samples_without_replacement():
    g = torch.Generator().manual_seed(0)
    sizes = []
    for _ in range(500):
        s = hierarchical_channel_sampling(4, g)
        assert 1 <= s.numel() <= 4 and s.unique().numel() == s.numel() and s.max() < 4
        sizes.append(s.numel())
    counts = torch.bincount(torch.tensor(sizes), minlength=5)[1:]
    assert counts.min() > 90  # m ~ U{1..4}: about 125 each


def test_3d_multi_sequence_volume_and_macs():
    m = create_model("channelvit_small_patch16_96_3d", img_size=16, patch_size=8, embed_dim=48, depth=1,
                     num_heads=4, num_classes=2).eval()
    x = torch.randn(1, 4, 16, 16, 16)
    assert m.forward_features(x).shape == (1, 1 + 4 * 8, 48)
    assert m(x[:, [0, 2]], channels=torch.tensor([0, 2])).shape == (1, 2)
    assert measured_macs(m, x) == m.analytic_macs()
    assert measured_macs(m, x[:, :1], channels=torch.tensor([0])) == m.analytic_macs(1)
