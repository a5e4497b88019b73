"""Core hooks the general-vision components use: forward_until / forward_from, num_output_tokens."""

from __future__ import annotations

import pytest
import torch

from medvit.models import create_model


def test_forward_until_and_from_split_the_plain_vit_anywhere():
    m = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=4,
                     num_classes=2).eval()
    x = torch.randn(2, 3, 32, 32)
    ref = m(x)
    for k in range(4):
        t = m.forward_until(x, k)
        assert t.shape == (2, 17, 48)
        torch.testing.assert_close(m.forward_head(m.forward_from(t, k)), ref)
    assert m.num_output_tokens(16) == 17
    with pytest.raises(ValueError, match="k must be"):
        m.forward_until(x, 4)


def test_attention_logits_are_the_pre_softmax_scores():
    from medvit.nn import Attention

    attn = Attention(32, 4)
    x = torch.randn(2, 7, 32)
    logits = attn.attention_logits(x)
    _, probs = attn(x, return_attention=True)
    assert logits.shape == (2, 4, 7, 7)
    torch.testing.assert_close(logits.softmax(-1), probs)


def test_replaced_attn_and_mlp_modules_are_used_at_inference():
    from medvit.nn.spacetime import SwiGLU

    m = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4,
                     num_classes=2).eval()
    m.blocks[1].mlp = SwiGLU(48, 96)
    calls = []
    m.blocks[1].mlp.register_forward_hook(lambda *a: calls.append(1))
    blk = m.blocks[1]
    with torch.no_grad():
        out = blk(torch.randn(2, 17, 48))  # would take the fused kernel if the swap were not checked
    assert out.shape == (2, 17, 48) and calls == [1]
