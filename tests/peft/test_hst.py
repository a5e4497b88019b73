"""HST: multi-scale side outputs, small trainable fraction, frozen backbone, meta-token ablation."""

from __future__ import annotations

import pytest
import torch

from medvit.peft import apply_peft, trainable_report
from medvit.peft.hst import HSTViT
from tests.peft.conftest import make_base


def test_pyramid_shapes_and_trainable_fraction(images):
    model = apply_peft(make_base(depth=4, embed_dim=96, img_size=64), "hst", {"side_dims": [4, 6, 8, 8]})
    assert isinstance(model, HSTViT) and model.taps == [0, 1, 2, 3]
    x = torch.rand(2, 1, 64, 64)
    outs = model.forward_pyramid(x)
    assert [tuple(o.shape) for o in outs] == [(2, 4, 16, 16), (2, 6, 8, 8), (2, 8, 4, 4), (2, 8, 2, 2)]
    assert model(x).shape == (2, 3)
    rep = trainable_report(model)
    assert 0 < rep["trainable_pct"] < 15, rep


def test_backbone_bit_identical_after_a_step_and_taps(images):
    base = make_base(depth=4)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = apply_peft(base, "hst", {"side_dims": [4, 6, 8, 8], "taps": [0, 1, -2, -1]})
    assert model.taps == [0, 1, 2, 3]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    meta0 = model.meta_tokens.detach().clone()
    model(images).sum().backward()
    opt.step()
    assert all(torch.equal(v, before[k]) for k, v in model.backbone.state_dict().items() if not k.startswith("head."))
    assert not torch.equal(model.meta_tokens, meta0)


def test_without_meta_tokens_backbone_needs_no_graph(images):
    """Ablation: with meta tokens off nothing trainable sits in the backbone, so its taps carry no graph."""
    model = apply_peft(make_base(), "hst", {"side_dims": [4, 6, 8, 8], "meta_tokens": False})
    assert model.meta_tokens is None
    taps = model._vit_taps(images)
    assert all(t.grad_fn is None and m is None for t, m in taps)
    on = apply_peft(make_base(), "hst", {"side_dims": [4, 6, 8, 8]})
    assert all(t.grad_fn is not None for t, _ in on._vit_taps(images))


@pytest.mark.parametrize("cfg, match", [({"side_dims": [4, 4]}, "4 positive"), ({"taps": [0, 1]}, "4 blocks"),
                                        ({"taps": [0, 1, 2, 9]}, "out of range")])
def test_hst_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        apply_peft(make_base(), "hst", cfg)
