"""FMViT blocks (arXiv 2311.05707, general-vision notes entry 3): the re-parameterised inference form
equals the multi-branch training form in eval mode within 1e-5."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medvit.models import create_model
from medvit.nn.flops import measured_macs
from medvit.nn.fmvit import CFB, RLMHSA, FMBlock, RepConv, low_frequency_dim


def _random_bn_(module: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters (as after training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.randn(c, generator=g) * 0.5 + 1.0)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)


def _assert_reparam_equal(module: nn.Module, x: torch.Tensor) -> None:
    _random_bn_(module)
    module.eval()
    with torch.no_grad():
        before = module(x)
        module.reparameterize()
        after = module(x)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    assert (before - after).abs().max().item() < 1e-5


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_repconv_fuses_to_one_depthwise_conv(spatial_dims):
    conv = RepConv(8, 3, spatial_dims)
    x = torch.randn(2, 8, *([6] * spatial_dims))
    _assert_reparam_equal(conv, x)
    assert sum(p.numel() for p in conv.parameters()) == 8 * 3**spatial_dims + 8  # one dw k×k kernel + bias


def test_repconv_identity_branch_is_the_input_at_neutral_bn():
    conv = RepConv(4, 3).eval()
    with torch.no_grad():
        for seq in (conv.conv_k, conv.conv_1):
            seq[1].weight.zero_()  # switch the conv branches off: only BN(x) = x remains
    conv.identity.eps = 0.0  # running var 1: BN(x) = x exactly
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(conv(x), x)
    conv.reparameterize()
    torch.testing.assert_close(conv(x), x)
    w = conv.fused.weight
    assert w[:, 0, 1, 1].tolist() == pytest.approx([1.0] * 4) and w.abs().sum().item() == pytest.approx(4.0)


def test_rlmhsa_shares_keys_and_values_and_pools_them():
    attn = RLMHSA(16, 2, kv_pool=2).eval()
    x = torch.randn(2, 16, 4, 4)
    out, probs = attn(x, return_attention=True)
    assert out.shape == x.shape and probs.shape == (2, 2, 16, 4)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 16))
    assert attn.kv.out_channels == 16  # one projection serves as keys and values
    with torch.no_grad():
        torch.testing.assert_close(attn(x), out, atol=1e-6, rtol=1e-5)  # fused SDPA = explicit path
    _assert_reparam_equal(attn, x)
    assert RLMHSA(16, 2, share_kv=False).kv.out_channels == 32


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cfb_reparameterised_equals_training_form(spatial_dims):
    _assert_reparam_equal(CFB(16, 2.0, spatial_dims=spatial_dims), torch.randn(2, 16, *([4] * spatial_dims)))


@pytest.mark.parametrize("grid", [(4, 4), (2, 4, 4)])
def test_fmblock_reparameterised_equals_training_form(grid):
    blk = FMBlock(48, 4, grid, freqs=(1, 2), mlp_ratio=2.0)
    assert blk.low_dim == 12 and blk.high_dim == 24
    n = 1
    for g in grid:
        n *= g
    _assert_reparam_equal(blk, torch.randn(2, n, 48))  # tokens (B, N, D)


def test_fmblock_attention_and_maps():
    blk = FMBlock(48, 4, (4, 4), freqs=(1, 2)).eval()
    t = torch.randn(2, 16, 48)
    out, probs = blk.forward_with_attention(t)
    assert probs.shape == (2, 1, 16, 16)  # the full-resolution branch: 12 channels = one 12-wide head
    m = t.transpose(1, 2).reshape(2, 48, 4, 4)  # the same tokens as a map give the same map
    torch.testing.assert_close(blk(m).flatten(2).transpose(1, 2), out)


def test_low_frequency_dim_errors():
    assert low_frequency_dim(384, 6, 2) == 128
    with pytest.raises(ValueError, match="leave no local channels"):
        low_frequency_dim(48, 4, 4)
    with pytest.raises(ValueError, match="freqs"):
        FMBlock(48, 4, (4, 4), freqs=())


@pytest.mark.parametrize("name", ["fmvit_tiny_patch16_224", "fmvit_small_patch16_96_3d"])
def test_fmvit_backbone_reparameterised_equals_trained(name):
    m = create_model(name, img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, num_classes=3)
    x = torch.randn(4, m.in_chans, *m.img_size)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    m.train()
    for _ in range(3):  # BN statistics and weights move away from their init
        opt.zero_grad()
        m(x).square().mean().backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        ref = m(x)
        n_train = sum(p.numel() for p in m.parameters())
        m.reparameterize()
        out = m(x)
    assert (out - ref).abs().max().item() < 1e-5
    assert sum(p.numel() for p in m.parameters()) < n_train
    assert "reparameterized=True" in repr(m).replace("\n", " ")


@pytest.mark.parametrize("name", ["fmvit_tiny_patch16_224", "fmvit_small_patch16_96_3d"])
def test_fmvit_analytic_macs_equal_the_measured_count(name):
    m = create_model(name, img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, num_classes=3).eval()
    x = torch.randn(1, m.in_chans, *m.img_size)
    train_form = m.analytic_macs()
    assert train_form == measured_macs(m, x)
    m.reparameterize()
    assert m.analytic_macs() == measured_macs(m, x) < train_form
    with pytest.raises(ValueError, match="training grid"):
        m.analytic_macs(7)
