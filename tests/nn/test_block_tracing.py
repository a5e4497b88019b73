"""The fused inference call of medvit.nn.Block stays out of traced graphs (ONNX / OpenVINO see the plain ops)."""

from __future__ import annotations

import torch

import medvit


def test_traced_block_uses_plain_ops_with_the_same_result():
    torch.manual_seed(0)
    m = medvit.create_model("vit_tiny_patch16_224", img_size=32, in_chans=1, num_classes=3, depth=2).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        eager = m(x)
        assert m.blocks[0]._fused_inference_ok(m.blocks[0].norm1(torch.zeros(2, 5, m.embed_dim)))  # eager: fused
        traced = torch.jit.trace(m, x)
        assert "_transformer_encoder_layer_fwd" not in str(traced.graph)
        torch.testing.assert_close(traced(x), eager, atol=1e-5, rtol=1e-5)
