"""The token-changing families carry over to volumes (spatial_dims=3): shapes, counts and MACs."""

from __future__ import annotations

import torch

from medvit.models import create_model
from medvit.nn.flops import measured_macs

VOL = dict(img_size=16, patch_size=4, in_chans=1, embed_dim=48, depth=2, num_heads=4, spatial_dims=3,
           pos_embed="sincos", num_classes=2)


def test_evit_3d():
    m = create_model("evit_small_patch16_224", keep_rate=0.5, keep_locs=(0, 1), **VOL).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    assert m.forward_features(x).shape == (1, m.num_output_tokens(64), 48) and m.num_output_tokens(64) == 19
    assert m.kept_token_map(x).shape == (1, 4, 4, 4)
    assert measured_macs(m, x) == m.analytic_macs()


def test_lookupvit_3d():
    m = create_model("lookupvit_small_patch16_224", compressed_grid=2, **{**VOL, "class_token": False,
                                                                            "global_pool": "avg"}).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    assert m.forward_features(x).shape == (1, 64, 48)
    assert m.attention_maps(x)[0].shape == (1, 4, 8, 64)


def test_lgvit_3d_local_exit():
    m = create_model("lgvit_small_patch16_224", exit_layers=(0,), num_local_exits=1, **VOL).eval()
    out = m.forward_early_exit(torch.randn(2, 1, 16, 16, 16), threshold=0.0)
    assert out.exit_index.tolist() == [0, 0] and out.logits.shape == (2, 2)
