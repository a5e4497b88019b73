"""PredFormer gated space-time blocks: general-vision notes, entry 24."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvit.models.predformer import PredFormer
from medvit.nn.spacetime import VARIANTS, SpaceTimeBlock, attention_pairs, variant_pattern


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_preserves_the_clip_shape(variant):
    m = PredFormer(img_size=16, patch_size=4, in_chans=2, frames=3, embed_dim=32, num_heads=2, depth=1,
                   variant=variant)
    clip = torch.randn(2, 3, 2, 16, 16)
    assert m(clip).shape == clip.shape


def test_3d_series():
    m = PredFormer(img_size=8, patch_size=4, in_chans=1, frames=2, embed_dim=24, num_heads=2, depth=1,
                   variant="fac_ts", spatial_dims=3)
    clip = torch.randn(1, 2, 1, 8, 8, 8)
    assert m(clip).shape == clip.shape


def test_unpatchify_inverts_the_patch_layout():
    m = PredFormer(img_size=(8, 12), patch_size=4, in_chans=3, frames=2, embed_dim=16, num_heads=2, depth=1)
    x = torch.randn(2, 2, 3, 8, 12)
    patches = x.reshape(2, 2, 3, 2, 4, 3, 4).permute(0, 1, 3, 5, 2, 4, 6).reshape(2, 2, 6, 48)
    torch.testing.assert_close(m.unpatchify(patches, 3), x)


def test_patterns_and_attention_pair_counts():
    assert variant_pattern("fac_st", 2) == "SSTT" and variant_pattern("quadruplet_tsst", 2) == "TSSTTSST"
    full, fac = attention_pairs("F", 10, 64), attention_pairs("ST", 10, 64)
    assert (full, fac) == (409_600, 47_360) and full / fac == pytest.approx(8.65, abs=0.01)
    with pytest.raises(KeyError, match="quadruplet_tsst"):
        variant_pattern("quad", 1)


def test_axis_equivariances():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 16)
    perm_n, perm_t = torch.randperm(6), torch.randperm(5)
    temporal, spatial = SpaceTimeBlock("T", 16, 2).eval(), SpaceTimeBlock("S", 16, 2).eval()
    # permuting the patch positions permutes a temporal block's output the same way
    torch.testing.assert_close(temporal(x[:, :, perm_n]), temporal(x)[:, :, perm_n])
    # and permuting time permutes a spatial block's output
    torch.testing.assert_close(spatial(x[:, perm_t]), spatial(x)[:, perm_t])
    # a temporal block mixes time but not positions: changing patch 0 leaves the others unchanged
    y = x.clone()
    y[:, :, 0] += 1
    torch.testing.assert_close(temporal(y)[:, :, 1:], temporal(x)[:, :, 1:])


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_tiny_model_learns_a_moving_square(one_thread):
    torch.manual_seed(0)

    def clip(start: int) -> torch.Tensor:
        frames = torch.zeros(8, 1, 16, 16)
        for t in range(8):
            c = (start + 2 * t) % 12
            frames[t, 0, 4:8, c : c + 4] = 1.0
        return frames

    data = torch.stack([clip(s) for s in range(4)])
    past, future = data[:, :4], data[:, 4:]
    m = PredFormer(img_size=16, patch_size=4, in_chans=1, frames=4, embed_dim=32, num_heads=2, depth=1,
                   variant="binary_ts")
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    losses = []
    for _ in range(100):
        loss = F.mse_loss(m(past), future)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
