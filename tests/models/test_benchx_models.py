"""UperNet on a plain ViT (shapes, out_indices, neck scales) and the R2Gen decoder (learns three reports; beam
search with trigram blocking)."""

from __future__ import annotations

import pytest
import torch

from medvit.models import create_model
from medvit.models.r2gen import EOS, R2GenDecoder, ReportTokenizer
from medvit.models.upernet import UperNetViT, scaled_out_indices


def _vit(depth: int = 4):
    return create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=depth, num_heads=2,
                        in_chans=1, num_classes=0)


def test_upernet_shapes_and_indices():
    assert scaled_out_indices(12) == [3, 5, 7, 11] and scaled_out_indices(4) == [0, 1, 1, 3]
    m = UperNetViT(_vit(), num_classes=2)
    seg = create_model("upernet_vit", backbone="vit_tiny_patch16_224", num_labels=1,
                       backbone_args={"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2,
                                      "in_chans": 1})
    assert seg(torch.randn(2, 1, 32, 32)).shape == (2, 1, 32, 32) and seg.num_classes == 1
    x = torch.randn(2, 1, 32, 32)
    out = m(x)
    assert out.shape == (2, 2, 32, 32)
    feats = [torch.randn(2, 32, 4, 4) for _ in range(4)]
    assert [f.shape[-1] for f in m.neck(feats)] == [16, 8, 4, 2]  # scales 4, 2, 1, 0.5
    out.sum().backward()
    assert m.backbone.blocks[0].attn.qkv.weight.grad is not None
    with pytest.raises(ValueError, match="exceed"):
        UperNetViT(_vit(2), out_indices=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="neck scales"):
        UperNetViT(_vit(), out_indices=[0, 1], scales=[1.0])


def test_r2gen_learns_and_beam_search_blocks_trigrams():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    reps = ["no effusion . heart normal .", "small left effusion . heart normal .", "large mass right ."] * 2
    tok = ReportTokenizer.build(reps, 1)
    assert tok.decode(tok.encode("no effusion . zebra", 10)[1:]) == "no effusion . <unk>"
    m = R2GenDecoder(8, len(tok), d_model=32, d_ff=32, num_layers=2, heads=4, slots=3, max_len=12, dropout=0.0)
    feats = torch.zeros(6, 3, 8)
    feats[torch.arange(6), 0, torch.arange(6) % 3] = 3.0
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    toks = tok.batch(reps, 12)
    for _ in range(60):
        loss = m.loss(feats, toks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    out = [tok.decode(o) for o in m.generate(feats[:3], beam=3)]
    assert out == reps[:3]
    # trigram blocking: a hypothesis never repeats a trigram
    for ids in m.generate(torch.randn(2, 3, 8), beam=3, max_len=12):
        tri = [tuple(ids[i : i + 3]) for i in range(len(ids) - 2)]
        assert len(tri) == len(set(tri)) and EOS not in ids
