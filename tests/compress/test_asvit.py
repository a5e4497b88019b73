"""As-ViT probes on hand-checkable networks: NTK condition number of a linear model = cond(X Xᵀ); length
distortion of f(x) = c·x is c·(number of points)·radius; tiny ViTs give finite values and a ranking."""

from __future__ import annotations

import math

import torch
from torch import nn

from medvit.compress.asvit import length_distortion, ntk_condition_number, ntk_gram, rank_candidates


def test_ntk_of_a_linear_model_is_the_gram_matrix():
    torch.manual_seed(0)
    x = torch.randn(5, 7)
    lin = nn.Linear(7, 1, bias=False)
    torch.testing.assert_close(ntk_gram(lin, x), (x @ x.T).double(), rtol=1e-6, atol=1e-8)
    ev = torch.linalg.eigvalsh((x @ x.T).double())
    k = ntk_condition_number(lambda: nn.Linear(7, 1, bias=False), x, repeat=2)
    assert math.isclose(k, float(ev[-1] / ev[0]), rel_tol=1e-6)  # independent of the initialisation


def test_length_distortion_of_a_scaled_identity():
    class Scale(nn.Module):
        def forward(self, x):
            return 3.0 * x

    le = length_distortion(Scale(), (2, 4, 4), n_points=100, radius=2.0)
    # ‖∂x/∂θ‖ = radius on the circle; f scales it by 3: 100 points × 3 × 2
    assert math.isclose(le, 600.0, rel_tol=1e-5)


def test_tiny_vit_probes_are_finite_and_rank():
    x = torch.randn(4, 1, 16, 16)
    base = dict(img_size=16, patch_size=8, in_chans=1, num_classes=2, num_heads=2, embed_dim=16)
    rows = rank_candidates([dict(base, depth=1), dict(base, depth=2)], "vit_small_patch16_224", x, repeat=1,
                           n_points=50)
    assert len(rows) == 2
    for r in rows:
        assert 0 < r["ntk_cond"] < math.inf and r["length_distortion"] > 0
    assert rows[0]["rank_score"] <= rows[1]["rank_score"]
