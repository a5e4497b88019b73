"""The analytic MAC formula shared by every component agrees with torch's measured FLOP count."""

from __future__ import annotations

import pytest
import torch

from medvit.models import create_model
from medvit.nn.flops import block_macs, measured_macs, vit_macs


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_plain_vit_analytic_equals_measured(spatial_dims):
    size = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    m = create_model(
        "vit_tiny_patch16_224", img_size=size, patch_size=8, embed_dim=48, depth=3, num_heads=4,
        num_classes=5, spatial_dims=spatial_dims, in_chans=2,
    )
    n = m.patch_embed.num_patches
    x = torch.randn(1, 2, *size)
    analytic = vit_macs([1 + n] * 3, 48, num_patches=n, in_chans=2, patch_size=m.patch_size, num_classes=5)
    assert measured_macs(m, x) == analytic


def test_block_formula_terms():
    # 4·N·D² + 2·N²·D + 8·N·D² for N = 10, D = 4
    assert block_macs(10, 4) == 4 * 10 * 16 + 2 * 100 * 4 + 8 * 10 * 16
    assert block_macs(10, 4, n_out=5) == 4 * 10 * 16 + 2 * 100 * 4 + 8 * 5 * 16
