"""FMViT's gMLP: a channel MLP whose projections are several parallel grouped 1×1 convolutions with
BatchNorm while training, re-parameterised into one dense 1×1 convolution for inference.

Tan et al., "FMViT: A multiple-frequency mixing Vision Transformer", arXiv 2311.05707 (general-vision
notes, entry 3; the paper's code is unreleased, so this follows the paper's description). Every
branch is linear in eval mode, so their sum is one linear map: a grouped kernel is expanded to its
block-diagonal dense kernel, BN is folded in (W·γ/σ, β − μ·γ/σ), and the branches are summed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_class(spatial_dims: int) -> type[nn.Module]:
    """nn.Conv1d / Conv2d / Conv3d for ``spatial_dims`` 1 / 2 / 3."""
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def bn_class(spatial_dims: int) -> type[nn.Module]:
    """nn.BatchNorm1d / 2d / 3d for ``spatial_dims`` 1 / 2 / 3."""
    return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims]


def bn_scale_shift(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = s·x + t per channel: s = γ/√(σ² + ε), t = β − μ·s, each (C,)."""
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return s, bn.bias - bn.running_mean * s


def fused_conv(spatial_dims: int, weight: torch.Tensor, bias: torch.Tensor, padding: int = 0,
               groups: int = 1) -> nn.Module:
    """The inference form of a re-parameterised branch sum: one conv with bias holding ``weight``
    (C_out, C_in / groups, *kernel) and ``bias`` (C_out,), on their device and dtype."""
    c_out, c_in_g = weight.shape[:2]
    conv = conv_class(spatial_dims)(c_in_g * groups, c_out, tuple(weight.shape[2:]), padding=padding, groups=groups,
                                    bias=True).to(weight.device, weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


class ReparamGroupConv(nn.Module):
    """Σ_g BN_g(GroupConv1×1_g(x)) over ``groups`` (e.g. (1, 2, 4)), fusable into one dense 1×1 conv.

    x: (B, C_in, *S) -> (B, C_out, *S); ``spatial_dims`` 1 (token sequences as (B, D, N)), 2 or 3.
    ``norm=False``: branches are grouped convs with bias and no BN (Σ_g GroupConv_g(x)), for a
    projection whose output a train-mode BN would otherwise make partly redundant.
    After :meth:`reparameterize` the module holds only ``fused`` (a dense conv with bias).
    """

    def __init__(self, in_channels: int, out_channels: int, groups: tuple[int, ...] = (1, 2, 4), spatial_dims: int = 2,
                 norm: bool = True):
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if not groups:
            raise ValueError("groups must name at least one branch")
        for g in groups:
            if g < 1 or in_channels % g or out_channels % g:
                raise ValueError(
                    f"group count {g} must divide in_channels {in_channels} and out_channels {out_channels}"
                )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, tuple(groups)
        self.spatial_dims = spatial_dims
        conv, bn = conv_class(spatial_dims), bn_class(spatial_dims)
        self.norm = norm
        self.branches = nn.ModuleList(
            nn.Sequential(conv(in_channels, out_channels, 1, groups=g, bias=False), bn(out_channels)) if norm
            else nn.Sequential(conv(in_channels, out_channels, 1, groups=g, bias=True))
            for g in groups
        )
        self.fused: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        return sum(branch(x) for branch in self.branches)

    @torch.no_grad()
    def fused_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent dense kernel (C_out, C_in) and bias (C_out,) of the eval-mode branches."""
        ref = self.branches[0][0].weight
        W = ref.new_zeros(self.out_channels, self.in_channels)
        b = ref.new_zeros(self.out_channels)
        for branch, g in zip(self.branches, self.groups):
            conv = branch[0]
            w = conv.weight.reshape(self.out_channels, self.in_channels // g)
            dense = w.new_zeros(self.out_channels, self.in_channels)
            co, ci = self.out_channels // g, self.in_channels // g
            for j in range(g):  # block-diagonal expansion of the grouped kernel
                dense[j * co : (j + 1) * co, j * ci : (j + 1) * ci] = w[j * co : (j + 1) * co]
            if self.norm:
                scale, shift = bn_scale_shift(branch[1])
            else:
                scale, shift = torch.ones_like(b), conv.bias
            W += dense * scale[:, None]
            b += shift
        return W, b

    def macs(self, n: int) -> int:
        """MACs at ``n`` positions: Σ_g C_in·C_out/g·n while multi-branch, C_in·C_out·n once fused (BN not counted)."""
        if self.fused is not None:
            return self.in_channels * self.out_channels * n
        return sum(self.in_channels * self.out_channels // g for g in self.groups) * n

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one dense 1×1 conv computing the same eval-mode function."""
        if self.fused is not None:
            return
        W, b = self.fused_weight_and_bias()
        self.fused = fused_conv(self.spatial_dims, W.reshape(*W.shape, *([1] * self.spatial_dims)), b)
        del self.branches
        self.branches = nn.ModuleList()


class ReparamGroupMLP(nn.Module):
    """gMLP channel mixer: ReparamGroupConv(D → r·D) → GELU → ReparamGroupConv(r·D → D).

    Accepts maps (B, D, *S) for ``spatial_dims`` 2/3, or tokens (B, N, D) when ``spatial_dims=1``.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, groups: tuple[int, ...] = (1, 2, 4), spatial_dims: int = 2):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.tokens = spatial_dims == 1
        self.fc1 = ReparamGroupConv(dim, hidden, groups, spatial_dims)
        self.fc2 = ReparamGroupConv(hidden, dim, groups, spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            return self.fc2(F.gelu(self.fc1(x.transpose(1, 2)))).transpose(1, 2)
        return self.fc2(F.gelu(self.fc1(x)))

    def macs(self, n: int) -> int:
        """MACs at ``n`` positions (both projections; GELU not counted)."""
        return self.fc1.macs(n) + self.fc2.macs(n)

    def reparameterize(self) -> None:
        """Fuse both projections (inference / deployment form)."""
        self.fc1.reparameterize()
        self.fc2.reparameterize()
