"""Heatmap methods: shapes, ranges, class specificity, and locality on a planted signal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medvit
from medvit.visualize import attention_rollout, colormap, explain, grad_cam, overlay


def _model(**kw):
    torch.manual_seed(0)
    m = medvit.create_model("vit_tiny_patch16_224", img_size=64, in_chans=1, num_classes=3, depth=2, **kw).eval()
    torch.nn.init.normal_(m.head.weight, std=0.5)
    return m


@pytest.mark.parametrize("kw", [{}, {"global_pool": "avg", "class_token": False}])
@pytest.mark.parametrize("method", ["gradcam", "rollout"])
def test_explain_shape_and_range(kw, method):
    m = _model(**kw)
    h = explain(m, torch.randn(2, 1, 64, 64), method)
    assert h.shape == (2, 64, 64)
    assert float(h.min()) == 0.0 and abs(float(h.max()) - 1.0) < 1e-6


def test_gradcam_is_class_specific():
    m = _model()
    x = torch.randn(1, 1, 64, 64)
    a, b = grad_cam(m, x, 0), grad_cam(m, x, 1)
    assert a.shape == (1, 4, 4)
    assert not torch.allclose(a, b)


def test_rollout_identity_attention_is_uniform_over_patches():
    """With zeroed qkv the attention is uniform, so rollout gives every patch the same weight (all zero)."""
    m = _model()
    for blk in m.blocks:
        torch.nn.init.zeros_(blk.attn.qkv.weight)
        torch.nn.init.zeros_(blk.attn.qkv.bias)
    r = attention_rollout(m, torch.randn(1, 1, 64, 64))
    assert torch.allclose(r, torch.zeros_like(r))


def test_gradcam_finds_planted_patch():
    """A head that reads one patch-embedding direction localises the patch that carries the signal."""
    m = medvit.create_model("vit_tiny_patch16_224", img_size=64, in_chans=1, num_classes=1, depth=1,
                            global_pool="avg", class_token=False).eval()
    with torch.no_grad():
        for blk in m.blocks:  # blocks become identity: zero the residual branches
            blk.attn.proj.weight.zero_()
            blk.attn.proj.bias.zero_()
            blk.mlp.fc2.weight.zero_()
            blk.mlp.fc2.bias.zero_()
        m.pos_embed.zero_()
    x = torch.zeros(1, 1, 64, 64)
    x[..., 16:32, 32:48] = 1.0  # patch (row 1, col 2)
    cam = grad_cam(m, x, 0)[0]
    if float(cam.max()) == 0.0:  # the head's sign may point away from the patch: flip it
        with torch.no_grad():
            m.head.weight.neg_()
        cam = grad_cam(m, x, 0)[0]
    assert tuple(np.unravel_index(int(cam.argmax()), cam.shape)) == (1, 2)


def test_overlay_and_colormap():
    heat = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    cm = colormap(heat)
    assert cm.dtype == np.uint8 and cm.shape == (4, 4, 3)
    assert cm[0, 0, 2] > cm[0, 0, 0] and cm[3, 3, 0] > cm[3, 3, 2]  # cold blue, hot red
    grey = np.full((4, 4), 128, np.uint8)
    out = overlay(grey, np.zeros_like(heat))
    assert (out == 128).all()  # zero heat leaves the image unchanged
    with pytest.raises(ValueError, match="differ in shape"):
        overlay(grey, np.zeros((3, 3), np.float32))
