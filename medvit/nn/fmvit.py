"""FMViT blocks: multi-frequency mixing of a local convolution branch and attention at several
resolutions, with every linear part re-parameterisable into one convolution for deployment.

Tan et al., "FMViT: A multiple-frequency mixing Vision Transformer", arXiv 2311.05707 (general-vision
notes, entry 3). The official code is unreleased ("code coming soon") and the notes tag the details
``[paper]``/``[verify]``; this module follows the paper's description and keeps the unverified
choices as arguments:

- :class:`RepConv` — the convolutional branch of the CFB: a depthwise k×k conv + BN, a depthwise
  1×1 conv + BN and an identity BN summed while training (RepVGG/MobileOne form), fused into one
  depthwise k×k conv with bias for inference.
- :class:`RLMHSA` — lightweight MHSA: q, shared k = v (``share_kv``, [verify]) and output
  projections are :class:`~medvit.nn.reparam_mlp.ReparamGroupConv` (gMLP-style multi-group 1×1 convs
  with BN), keys/values optionally average-pooled by ``kv_pool``.
- :class:`CFB` — convolutional fusion block: x + proj(GELU(RepConv(x))), then x + gMLP(x).
- :class:`FMBlock` — the multi-frequency mixing block: the channels are split into a high-frequency
  part (RepConv, local) and one low-frequency part per pooling rate s in ``freqs`` (RLMHSA on the map
  average-pooled by s, upsampled back); the concatenation is fused by a 1×1 multi-group conv (the
  heads' output projection), then x + gMLP(x). ``freqs = (1, 2)`` mixes global attention at full
  and half resolution. Where a train-mode BN would cancel a constant shift of its input (and leave
  a bias without gradient) the projection has no BN (``ReparamGroupConv(norm=False)``).

Every block has ``reparameterize()``: in eval mode (BN statistics frozen) the fused block computes the
same function as the training form (max |Δ| < 1e-5, tested). Maps are (B, C, *S) with ``spatial_dims``
2 or 3; :class:`FMBlock` also takes tokens (B, N, D) of its grid, as the backbone passes them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medvit.nn.drop_path import DropPath
from medvit.nn.reparam_mlp import (
    ReparamGroupConv,
    ReparamGroupMLP,
    bn_class,
    bn_scale_shift,
    conv_class,
    fused_conv,
)


class RepConv(nn.Module):
    """Depthwise k×k conv re-parameterised from three branches: BN(dw k×k) + BN(dw 1×1) + BN(x).

    x: (B, C, *S) -> (B, C, *S) ("same" padding). After :meth:`reparameterize` only ``fused`` (a
    depthwise k×k conv with bias) remains; in eval mode it computes exactly the branch sum.
    """

    def __init__(self, channels: int, kernel_size: int = 3, spatial_dims: int = 2):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        conv, bn = conv_class(spatial_dims), bn_class(spatial_dims)
        self.channels, self.kernel_size, self.spatial_dims = channels, kernel_size, spatial_dims
        pad = kernel_size // 2
        self.conv_k = nn.Sequential(conv(channels, channels, kernel_size, padding=pad, groups=channels, bias=False),
                                    bn(channels))
        self.conv_1 = nn.Sequential(conv(channels, channels, 1, groups=channels, bias=False), bn(channels))
        self.identity = bn(channels)
        self.fused: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        return self.conv_k(x) + self.conv_1(x) + self.identity(x)

    @torch.no_grad()
    def fused_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Depthwise kernel (C, 1, k, ..., k) and bias (C,) of the eval-mode branch sum."""
        k, c, d = self.kernel_size, self.channels, self.spatial_dims
        centre = (slice(None), slice(None)) + (k // 2,) * d
        w1 = torch.zeros_like(self.conv_k[0].weight)
        w1[centre] = self.conv_1[0].weight.reshape(c, 1)
        wid = torch.zeros_like(w1)
        wid[centre] = 1.0
        W = torch.zeros_like(w1)
        b = torch.zeros(c, dtype=w1.dtype, device=w1.device)
        for w, bn in ((self.conv_k[0].weight, self.conv_k[1]), (w1, self.conv_1[1]), (wid, self.identity)):
            s, t = bn_scale_shift(bn)
            W += w * s.view(-1, *([1] * (w.dim() - 1)))
            b += t
        return W, b

    def macs(self, n: int) -> int:
        """MACs at ``n`` positions: (k^d + 1)·C·n while multi-branch (the identity BN is not counted), k^d·C·n fused."""
        k = self.kernel_size**self.spatial_dims
        return (k if self.fused is not None else k + 1) * self.channels * n

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the three branches by one depthwise k×k conv with bias (inference form)."""
        if self.fused is not None:
            return
        W, b = self.fused_weight_and_bias()
        self.fused = fused_conv(self.spatial_dims, W, b, padding=self.kernel_size // 2, groups=self.channels)
        del self.conv_k, self.conv_1, self.identity


class RLMHSA(nn.Module):
    """Re-parameterisable lightweight multi-head self-attention over the positions of a map.

    Args:
        dim: attention width and output channels; num_heads: heads (dim divisible by it).
        in_dim: input channels (None: ``dim``).
        groups: group counts of the multi-group 1×1 projection branches (gMLP re-parameterisation).
        share_kv: one projection serves as keys and values (the "lightweight" part, [verify]).
        kv_pool: average-pool the keys/values by this factor per axis (1 = none).
        spatial_dims: 2 or 3.
        proj_out: end with a re-parameterisable output projection (False when the caller fuses the
            heads' outputs itself, as :class:`FMBlock`'s mixing conv does).
    Shapes: ``forward(x)``: (B, C_in, *S) -> (B, dim, *S); with ``return_attention`` also (B, H, N, N_kv).
    """

    def __init__(self, dim: int, num_heads: int, groups: tuple[int, ...] = (1, 2), share_kv: bool = True,
                 kv_pool: int = 1, spatial_dims: int = 2, in_dim: int | None = None, proj_out: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"RLMHSA dim {dim} must be divisible by num_heads {num_heads}")
        if kv_pool < 1:
            raise ValueError(f"kv_pool must be >= 1, got {kv_pool}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.share_kv, self.kv_pool, self.spatial_dims = share_kv, kv_pool, spatial_dims
        self.dim = dim
        c_in = dim if in_dim is None else in_dim
        self.q = ReparamGroupConv(c_in, dim, _dividing(groups, c_in, dim), spatial_dims=1)
        self.kv = ReparamGroupConv(c_in, dim if share_kv else 2 * dim, _dividing(groups, c_in, dim), spatial_dims=1)
        self.proj = ReparamGroupConv(dim, dim, groups, spatial_dims=1) if proj_out else None

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        B, C = x.shape[0], self.dim
        size = x.shape[2:]
        src = x
        if self.kv_pool > 1:
            pooled = [max(1, s // self.kv_pool) for s in size]
            src = F.adaptive_avg_pool2d(x, pooled) if self.spatial_dims == 2 else F.adaptive_avg_pool3d(x, pooled)
        H, hd = self.num_heads, self.head_dim
        q = self.q(x.flatten(2)).reshape(B, H, hd, -1).transpose(-2, -1)  # (B, H, N, hd)
        kv = self.kv(src.flatten(2))
        k = kv[:, :C].reshape(B, H, hd, -1).transpose(-2, -1)
        v = k if self.share_kv else kv[:, C:].reshape(B, H, hd, -1).transpose(-2, -1)
        if return_attention:
            probs = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            out = probs @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-2, -1).reshape(B, C, -1)
        if self.proj is not None:
            out = self.proj(out)
        out = out.reshape(B, C, *size)
        return (out, probs) if return_attention else out

    def macs(self, n: int, n_kv: int | None = None) -> int:
        """MACs for ``n`` query and ``n_kv`` key/value positions (default ``n``; with ``kv_pool`` > 1 pass the
        pooled count): projections + QKᵀ and A·V (2·n·n_kv·dim)."""
        n_kv = n if n_kv is None else n_kv
        out = self.proj.macs(n) if self.proj is not None else 0
        return self.q.macs(n) + self.kv.macs(n_kv) + 2 * n * n_kv * self.dim + out

    def reparameterize(self) -> None:
        """Fuse the q, kv and output projections into single 1×1 convolutions."""
        for m in (self.q, self.kv, self.proj):
            if m is not None:
                m.reparameterize()


class _ChannelMLP(nn.Module):
    """x + DropPath(gMLP(x)) on a map; the gMLP's branch BNs are its normalisation (no pre-norm)."""

    def __init__(self, dim: int, mlp_ratio: float, groups: tuple[int, ...], spatial_dims: int, drop_path: float):
        super().__init__()
        self.mlp = ReparamGroupMLP(dim, mlp_ratio, groups, spatial_dims)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path2(self.mlp(x))

    def reparameterize(self) -> None:
        self.mlp.reparameterize()


class CFB(nn.Module):
    """Convolutional fusion block: x + proj(GELU(RepConv(x))), then x + gMLP(x). (B, C, *S) -> same."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, kernel_size: int = 3, groups: tuple[int, ...] = (1, 2),
                 spatial_dims: int = 2, drop_path: float = 0.0):
        super().__init__()
        self.local = RepConv(dim, kernel_size, spatial_dims)
        self.proj = ReparamGroupConv(dim, dim, groups, spatial_dims)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.ffn = _ChannelMLP(dim, mlp_ratio, groups, spatial_dims, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.proj(F.gelu(self.local(x))))
        return self.ffn(x)

    def reparameterize(self) -> None:
        self.local.reparameterize()
        self.proj.reparameterize()
        self.ffn.reparameterize()


def low_frequency_dim(dim: int, num_heads: int, num_freqs: int) -> int:
    """Channels of each low-frequency (attention) branch: whole heads, about dim/(num_freqs + 1)."""
    head_dim = dim // num_heads
    d = head_dim * max(1, round(num_heads / (num_freqs + 1)))
    if num_freqs * d >= dim:
        raise ValueError(f"FMBlock: {num_freqs} attention branches of {d} channels leave no local channels of {dim}")
    return d


class FMBlock(nn.Module):
    """Multi-frequency mixing block (FMViT), on a fixed token grid.

    Args:
        dim, num_heads: width and the heads that set the attention head width (dim // num_heads).
        grid_size: token grid of the training resolution; other square/cubic grids are inferred.
        freqs: pooling rates of the low-frequency attention branches ((1, 2): full and half resolution).
        mlp_ratio, kernel_size, groups: gMLP expansion, local kernel, gMLP branch group counts.
        share_kv: RLMHSA shares its key/value projection.
    Shapes: ``forward(x)``: tokens (B, N, D) or a map (B, D, *grid) -> the same layout.
    ``forward_with_attention``: also the probabilities (B, h, N, N') of the first attention branch.
    Raises:
        ValueError: empty or non-positive ``freqs``, widths that do not split into whole heads.
    """

    def __init__(self, dim: int, num_heads: int, grid_size: tuple[int, ...], freqs: tuple[int, ...] = (1, 2),
                 mlp_ratio: float = 4.0, kernel_size: int = 3, groups: tuple[int, ...] = (1, 2),
                 share_kv: bool = True, drop_path: float = 0.0):
        super().__init__()
        if not freqs or any(int(s) < 1 for s in freqs):
            raise ValueError(f"freqs must be pooling rates >= 1, got {freqs!r}")
        self.grid_size = tuple(int(g) for g in grid_size)
        sd = len(self.grid_size)
        self.spatial_dims = sd
        self.freqs = tuple(int(s) for s in freqs)
        d_low = low_frequency_dim(dim, num_heads, len(self.freqs))
        self.low_dim = d_low
        self.high_dim = dim - len(self.freqs) * d_low
        self.high = RepConv(self.high_dim, kernel_size, sd)
        self.low = nn.ModuleList(
            RLMHSA(d_low, d_low // (dim // num_heads), groups, share_kv, 1, sd, in_dim=dim, proj_out=False)
            for _ in self.freqs
        )
        self.mix = ReparamGroupConv(dim, dim, groups, sd, norm=False)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.ffn = _ChannelMLP(dim, mlp_ratio, groups, sd, drop_path)

    def _grid(self, n: int) -> tuple[int, ...]:
        if n == math.prod(self.grid_size):
            return self.grid_size
        s = round(n ** (1 / self.spatial_dims))
        if s**self.spatial_dims != n:
            raise ValueError(f"FMBlock got {n} tokens: neither the {self.grid_size} grid nor a square/cubic grid")
        return (s,) * self.spatial_dims

    def _mixer(self, x: torch.Tensor, want_attention: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = x.shape[2:]
        parts = [F.gelu(self.high(x[:, : self.high_dim]))]
        first = None
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        for s, attn in zip(self.freqs, self.low):
            y = x
            if s > 1:
                pooled = [max(1, g // s) for g in size]
                y = F.adaptive_avg_pool2d(y, pooled) if self.spatial_dims == 2 else F.adaptive_avg_pool3d(y, pooled)
            if want_attention and first is None:
                y, first = attn(y, return_attention=True)
            else:
                y = attn(y)
            if s > 1:
                y = F.interpolate(y, size=size, mode=mode, align_corners=False)
            parts.append(y)
        return self.mix(torch.cat(parts, dim=1)), first

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: tokens (B, N, D) or map (B, D, *grid) -> (same layout, probabilities of the first attention branch)."""
        return self._forward(x, True)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x, False)[0]

    def _forward(self, x: torch.Tensor, want_attention: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens = x.dim() == 3
        if tokens:
            B, N, D = x.shape
            x = x.transpose(1, 2).reshape(B, D, *self._grid(N))
        m, probs = self._mixer(x, want_attention)
        x = self.ffn(x + self.drop_path1(m))
        if tokens:
            x = x.flatten(2).transpose(1, 2)
        return x, probs

    def macs(self, grid: tuple[int, ...] | None = None) -> int:
        """Analytic MACs of the block on a token ``grid`` (default: its training grid), in its current form
        (multi-branch or fused): the :mod:`medvit.nn.flops` convention (matmuls/convs; norms, pooling,
        resizing and activations not counted)."""
        grid = self.grid_size if grid is None else tuple(grid)
        n = math.prod(grid)
        total = self.high.macs(n) + self.mix.macs(n) + self.ffn.mlp.macs(n)
        for s, attn in zip(self.freqs, self.low):
            n_s = math.prod(max(1, g // s) for g in grid) if s > 1 else n
            total += attn.macs(n_s)
        return total

    def reparameterize(self) -> None:
        """Fuse every branch (RepConv, attention projections, mixing conv, gMLP) for inference."""
        self.high.reparameterize()
        for attn in self.low:
            attn.reparameterize()
        self.mix.reparameterize()
        self.ffn.reparameterize()


def _dividing(groups: tuple[int, ...], c_in: int, c_out: int) -> tuple[int, ...]:
    """The group counts that divide both channel counts (1 always does)."""
    return tuple(g for g in groups if c_in % g == 0 and c_out % g == 0) or (1,)
