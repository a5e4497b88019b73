"""FIBER gated cross-attention fusion: gate 0 = unimodal backbones exactly; gates open → the streams interact."""

from __future__ import annotations

import pytest
import torch

from medvit.nn.gated_cross_attention import GatedCrossAttention
from medvit.vlm.fiber import FiberFusion


def _models(seed: int = 0):
    from transformers import BertConfig, BertModel

    from medvit.models import create_model

    torch.manual_seed(seed)
    img = create_model("vit_tiny_patch16_224", embed_dim=48, depth=3, num_heads=4, img_size=32, in_chans=1,
                       num_classes=0).eval()
    txt = BertModel(BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=32), add_pooling_layer=False).eval()
    return img, txt


def _inputs():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, 32, 32, generator=g)
    ids = torch.randint(5, 60, (2, 7), generator=g)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    return images, ids, mask


def test_gate_zero_equals_unimodal_forward():
    img, txt = _models()
    fused = FiberFusion(img, txt, num_fused=2).eval()
    images, ids, mask = _inputs()
    with torch.no_grad():
        fi, ft = fused(images, ids, mask)
        assert torch.equal(fi, img.forward_features(images))
        ref_t = txt(input_ids=ids, attention_mask=mask).last_hidden_state
    # the text stream is run layer by layer by FiberFusion; huggingface's own forward is the reference
    assert torch.equal(ft[mask.bool()], ref_t[mask.bool()])


def test_open_gates_text_changes_image_features_padding_does_not():
    img, txt = _models()
    fused = FiberFusion(img, txt, num_fused=2).eval()
    with torch.no_grad():
        for a in fused.gates():
            a.fill_(1.0)
    images, ids, mask = _inputs()
    with torch.no_grad():
        fi, ft = fused(images, ids, mask)
        other = ids.clone()
        other[:, :2] = (other[:, :2] + 7) % 60
        fi2, _ = fused(images, other, mask)
        assert (fi2 - fi).abs().max() > 1e-4, "text does not reach the image stream"
        assert (ft - txt(input_ids=ids, attention_mask=mask).last_hidden_state).abs().max() > 1e-4
        padded = ids.clone()
        padded[1, 4:] = 3  # change only the padded text tokens of sample 1
        fi3, ft3 = fused(images, padded, mask)
        torch.testing.assert_close(fi3, fi, atol=1e-6, rtol=0)
        torch.testing.assert_close(ft3[mask.bool()], ft[mask.bool()], atol=1e-6, rtol=0)
    # every fusion parameter (gates included) receives a gradient; the gate starts the only path at 0
    fused.train()
    fi, ft = fused(images, ids, mask)
    (fi.sum() + ft.sum()).backward()
    for n, p in list(fused.i2t.named_parameters()) + list(fused.t2i.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


def test_gated_cross_attention_all_padding_and_errors():
    m = GatedCrossAttention(8, 6, num_heads=2, gate_init=1.0)
    x, y = torch.randn(2, 3, 8), torch.randn(2, 4, 6)
    out = m(x, y, torch.tensor([[True] * 4, [False] * 4]))
    assert torch.equal(out[1], x[1]) and not torch.equal(out[0], x[0])
    with pytest.raises(ValueError, match="not divisible"):
        GatedCrossAttention(10, 6, num_heads=4)
    with pytest.raises(ValueError, match="context_mask shape"):
        m(x, y, torch.ones(2, 3, dtype=torch.bool))
    img, txt = _models()
    with pytest.raises(ValueError, match=r"num_fused=4 must be in \[1, 3\]"):
        FiberFusion(img, txt, num_fused=4)
    with pytest.raises(ValueError, match="no embeddings"):
        FiberFusion(img, torch.nn.Linear(2, 2), num_fused=1)
