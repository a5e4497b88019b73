"""FMViT gMLP re-parameterisation: general-vision notes, entry 3."""

from __future__ import annotations

import pytest
import torch

from medvit.nn.reparam_mlp import ReparamGroupConv, ReparamGroupMLP


def _train_bn_stats(m, x):
    m.train()
    for _ in range(3):  # non-trivial running statistics and affine parameters
        m(x + torch.randn_like(x))
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            torch.nn.init.uniform_(mod.weight, 0.5, 1.5)
            torch.nn.init.uniform_(mod.bias, -0.5, 0.5)
    return m.eval()


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_fused_equals_training_form(spatial_dims):
    torch.manual_seed(0)
    m = ReparamGroupMLP(16, 2.0, (1, 2, 4), spatial_dims)
    x = torch.randn(4, 10, 16) if spatial_dims == 1 else torch.randn(2, 16, *(5,) * spatial_dims)
    _train_bn_stats(m, x)
    with torch.no_grad():
        ref = m(x)
        m.reparameterize()
        out = m(x)
    assert (out - ref).abs().max().item() < 1e-5


def test_fused_parameter_count_is_one_dense_conv():
    m = ReparamGroupConv(8, 12, (1, 2, 4))
    _train_bn_stats(m, torch.randn(2, 8, 4, 4))
    m.reparameterize()
    assert sum(p.numel() for p in m.parameters()) == 8 * 12 + 12
    assert len(m.branches) == 0


def test_block_diagonal_expansion_of_a_grouped_branch():
    m = ReparamGroupConv(4, 4, (2,)).eval()
    with torch.no_grad():
        m.branches[0][0].weight.copy_(torch.arange(8.0).reshape(4, 2, 1, 1))
    W, b = m.fused_weight_and_bias()
    s = 1 / (1 + 1e-5) ** 0.5  # fresh BN: mean 0, var 1, γ 1, β 0
    expect = torch.tensor([[0, 1, 0, 0], [2, 3, 0, 0], [0, 0, 4, 5], [0, 0, 6, 7.0]]) * s
    torch.testing.assert_close(W, expect)
    torch.testing.assert_close(b, torch.zeros(4))


def test_groups_must_divide_channels():
    with pytest.raises(ValueError, match="divide"):
        ReparamGroupConv(6, 8, (4,))
