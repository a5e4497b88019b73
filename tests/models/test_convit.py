"""ConViT gated positional self-attention (ICML'21): general-vision notes, entry 17."""

from __future__ import annotations

import math

import pytest
import torch

from medvit.models import create_model
from medvit.nn import Attention
from medvit.nn.gpsa import GPSA, head_offsets, relative_offsets


def test_local_init_attends_to_the_expected_neighbour():
    torch.manual_seed(0)
    attn = GPSA(48, 4, (8, 8), locality_strength=10.0)
    probs = attn.attention(torch.randn(2, 64, 48))
    centre = 3 * 8 + 3  # query at row 3, column 3
    for h, (dx, dy) in enumerate(head_offsets(4)):
        target = (3 + dy) * 8 + (3 + dx)
        assert probs[:, h, centre].argmax(-1).tolist() == [target, target]
    assert head_offsets(4) == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert set(head_offsets(9)) == {(x, y) for x in (-1, 0, 1) for y in (-1, 0, 1)}
    torch.testing.assert_close(attn.v.weight, torch.eye(48))


def test_rows_sum_to_one_and_gate_starts_at_sigmoid_one():
    attn = GPSA(32, 4, (4, 4))
    probs = attn.attention(torch.randn(3, 16, 32))
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 4, 16))
    assert torch.sigmoid(attn.gating_param).tolist() == pytest.approx([0.731] * 4, abs=1e-3)


@pytest.mark.parametrize(("heads", "grid"), [(4, (4, 4)), (8, (2, 3, 3))], ids=["2d", "3d"])
def test_gate_to_minus_infinity_is_vanilla_attention(heads, grid):
    torch.manual_seed(0)
    g = GPSA(32, heads, grid, qkv_bias=True)
    with torch.no_grad():
        g.gating_param.fill_(-1e4)
        torch.nn.init.normal_(g.v.weight, std=0.1)
    ref = Attention(32, heads, qkv_bias=True)
    with torch.no_grad():
        ref.qkv.weight.copy_(torch.cat([g.qk.weight, g.v.weight]))
        ref.qkv.bias.copy_(torch.cat([g.qk.bias, g.v.bias]))
        ref.proj.load_state_dict(g.proj.state_dict())
    x = torch.randn(2, math.prod(grid), 32)
    out, probs = g(x, return_attention=True)
    ref_out, ref_probs = ref(x, return_attention=True)
    torch.testing.assert_close(probs, ref_probs)
    torch.testing.assert_close(out, ref_out)


def test_relative_offsets():
    r = relative_offsets((2, 3))
    assert r.shape == (6, 6, 3)
    assert r[0, 5].tolist() == [2.0, 1.0, 5.0]  # from (row 0, col 0) to (row 1, col 2)


def test_cls_token_joins_after_the_gpsa_blocks():
    m = create_model("convit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=4,
                     num_heads=4, local_up_to_layer=2, num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    assert [a.shape[-1] for a in m.attention_maps(x)] == [16, 16, 17, 17]
    assert [type(b).__name__ for b in m.blocks] == ["GPSABlock", "GPSABlock", "Block", "Block"]
    assert m.forward_features(x).shape == (2, 17, 48)
    # forward_until / forward_from split anywhere and give the same logits
    for k in (0, 2, 3):
        torch.testing.assert_close(m.forward_head(m.forward_from(m.forward_until(x, k), k)), m(x))


@pytest.mark.parametrize("bad", [dict(num_heads=3, embed_dim=48), dict(local_up_to_layer=4),
                                 dict(spatial_dims=3, img_size=32)])
def test_illegal_convit_arguments(bad):
    kw = dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=4)
    with pytest.raises(ValueError):
        create_model("convit_tiny_patch16_224", **{**kw, **bad})


# ---------------------------------------------------------------------------------------------- 3D GPSA
def test_3d_local_init_attends_to_the_expected_neighbour():
    torch.manual_seed(0)
    attn = GPSA(48, 8, (5, 5, 5), locality_strength=10.0)
    assert attn.pos_proj.in_features == 4
    probs = attn.attention(torch.randn(2, 125, 48))
    centre = 2 * 25 + 2 * 5 + 2  # (z, y, x) = (2, 2, 2), tokens (d, h, w) row-major
    offsets = head_offsets(8, 3)
    assert offsets == [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 1), (1, 1, 1)]
    for h, (dx, dy, dz) in enumerate(offsets):
        target = (2 + dz) * 25 + (2 + dy) * 5 + (2 + dx)
        assert probs[:, h, centre].argmax(-1).tolist() == [target, target]
    assert set(head_offsets(27, 3)) == {(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1)}
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 8, 125))
    with pytest.raises(ValueError, match="cube number of heads in 3D, got 4"):
        GPSA(48, 4, (2, 2, 2))


def test_3d_relative_offsets():
    r = relative_offsets((2, 2, 3))
    assert r.shape == (12, 12, 4)
    assert r[0, 11].tolist() == [2.0, 1.0, 1.0, 6.0]  # (z, y, x) (0, 0, 0) -> (1, 1, 2)
    torch.testing.assert_close(relative_offsets((1, 2, 3))[..., [0, 1]], relative_offsets((2, 3))[..., :2])


def test_3d_convit_cls_joins_after_the_gpsa_blocks():
    m = create_model("convit_small_patch16_96_3d", img_size=16, patch_size=8, embed_dim=48, depth=3,
                     local_up_to_layer=2, num_classes=3).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    assert [a.shape[-1] for a in m.attention_maps(x)] == [8, 8, 9]
    with torch.no_grad():
        for k in range(4):
            torch.testing.assert_close(m.forward_from(m.forward_until(x, k), k), m.forward_features(x))
        assert m(x).shape == (2, 3)
