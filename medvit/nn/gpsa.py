"""Gated positional self-attention (GPSA), the locality prior of ConViT.

d'Ascoli et al., "ConViT: Improving Vision Transformers with Soft Convolutional Inductive Biases",
ICML 2021 (general-vision notes, entry 17), written from the paper's equations::

    A_h = (1 − σ(λ_h))·softmax(Q_h K_hᵀ / √d) + σ(λ_h)·softmax(v_posᵀ r_ij),   rows renormalised

with r_ij = (Δx, Δy, Δx² + Δy²) the offset from query patch i to key patch j, v_pos = ``pos_proj``
(Linear(3, heads)) and λ_h the per-head gate (initialised to 1: σ(1) ≈ 0.73 on the positional
term). Local init: V = identity, and head h = h1 + k·h2 on a k×k grid (k = √heads) gets the
positional row α·(2Δx_h, 2Δy_h, −1) with Δ_h = (h1 − c, h2 − c), c = ⌊(k − 1)/2⌋, so its score
α(2Δ_h·r − |r|²) = −α|r − Δ_h|² + const peaks at the neighbour at offset Δ_h: a convolution-like
head. With λ → −∞ GPSA is vanilla self-attention.

3D (volumes): the equations carry over unchanged with r_ij = (Δx, Δy, Δz, |Δ|²) (``pos_proj`` =
Linear(4, heads)) and head h = h1 + k·h2 + k²·h3 on a k×k×k grid (k = ∛heads, heads a perfect cube).
The paper and the notes describe 2D only; this extension is medvit's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medvit.nn.block import LayerScale
from medvit.nn.drop_path import DropPath
from medvit.nn.mlp import Mlp


def relative_offsets(grid: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    """r_ij for every query i and key j of an (h, w) or (d, h, w) grid: -> (N, N, 3) or (N, N, 4).

    2D: (Δx, Δy, Δx² + Δy²), Δx the column and Δy the row offset of key j from query i (tokens
    row-major). 3D: (Δx, Δy, Δz, Δx² + Δy² + Δz²), Δz the slice offset.
    Raises ValueError for a grid that is not 2D or 3D.
    """
    if len(grid) not in (2, 3):
        raise ValueError(f"GPSA offsets need a 2D or 3D token grid, got {tuple(grid)}")
    axes = torch.meshgrid(*[torch.arange(g, device=device) for g in grid], indexing="ij")
    coords = [a.reshape(-1).float() for a in reversed(axes)]  # x (last axis) first, then y, then z
    deltas = [c[None, :] - c[:, None] for c in coords]
    return torch.stack([*deltas, sum(d**2 for d in deltas)], dim=-1)


def head_offsets(num_heads: int, spatial_dims: int = 2) -> list[tuple[int, ...]]:
    """Initial attention offset of each head on the k^dims head grid: (Δx, Δy) with h = h1 + k·h2 in 2D,
    (Δx, Δy, Δz) with h = h1 + k·h2 + k²·h3 in 3D. Raises ValueError unless heads = k^dims."""
    k = round(num_heads ** (1 / spatial_dims))
    if k**spatial_dims != num_heads:
        kind = "square" if spatial_dims == 2 else "cube"
        raise ValueError(f"GPSA local init needs a {kind} number of heads in {spatial_dims}D, got {num_heads}")
    c = (k - 1) // 2
    return [tuple((h // k**a) % k - c for a in range(spatial_dims)) for h in range(num_heads)]


class GPSA(nn.Module):
    """Gated positional self-attention over the patch tokens of a 2D or 3D grid.

    Args:
        dim, num_heads: embedding width and heads (a perfect square in 2D, a cube in 3D, for the local init).
        grid_size: (h, w) or (d, h, w) token grid of the training resolution; other square / cubic
            grids are inferred.
        qkv_bias: bias on the q, k and v projections.
        locality_strength: α of the local init (1 in the paper; larger → harder attention).
        gate_init: initial λ_h (1 in the paper).
    Shapes: ``forward(x)``: (B, N, D) -> (B, N, D); with ``return_attention`` also (B, H, N, N).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: tuple[int, ...],
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        locality_strength: float = 1.0,
        gate_init: float = 1.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.grid_size = tuple(grid_size)
        if len(self.grid_size) not in (2, 3):
            raise ValueError(f"GPSA grid_size must be (h, w) or (d, h, w), got {grid_size!r}")
        self.spatial_dims = len(self.grid_size)
        self.qk = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.pos_proj = nn.Linear(self.spatial_dims + 1, num_heads)
        self.gating_param = nn.Parameter(torch.full((num_heads,), float(gate_init)))
        self.locality_strength = locality_strength
        self.local_init_()

    @torch.no_grad()
    def local_init_(self) -> None:
        """V = identity; head h's positional scores peak at offset Δ_h (module docstring)."""
        self.v.weight.copy_(torch.eye(self.v.weight.shape[0]))
        for h, offset in enumerate(head_offsets(self.num_heads, self.spatial_dims)):
            self.pos_proj.weight[h] = self.locality_strength * torch.tensor([2.0 * d for d in offset] + [-1.0])
        self.pos_proj.bias.zero_()

    def _grid(self, n: int) -> tuple[int, ...]:
        if n == math.prod(self.grid_size):
            return self.grid_size
        d = self.spatial_dims
        s = round(n ** (1 / d))
        if s**d != n:
            raise ValueError(f"GPSA got {n} tokens: neither the {self.grid_size} grid nor a square/cubic grid")
        return (s,) * d

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Gated attention probabilities (B, H, N, N); each row sums to 1."""
        B, N, _ = x.shape
        qk = self.qk(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = qk.unbind(0)
        content = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        rel = relative_offsets(self._grid(N), x.device).to(x.dtype)
        positional = self.pos_proj(rel).permute(2, 0, 1).softmax(dim=-1)[None]  # (1, H, N, N)
        gate = torch.sigmoid(self.gating_param).view(1, -1, 1, 1)
        attn = (1.0 - gate) * content + gate * positional
        return attn / attn.sum(dim=-1, keepdim=True)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        B, N, D = x.shape
        probs = self.attention(x)
        v = self.v(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        out = (self.attn_drop(probs) @ v).transpose(1, 2).reshape(B, N, D)
        out = self.proj_drop(self.proj(out))
        return (out, probs) if return_attention else out


class GPSABlock(nn.Module):
    """Pre-norm block with GPSA in place of MHSA (same names as the ViT block: norm1, attn, norm2, mlp)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: tuple[int, ...],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float | None = None,
        norm_eps: float = 1e-6,
        locality_strength: float = 1.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = GPSA(dim, num_heads, grid_size, qkv_bias, attn_drop, drop, locality_strength)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D) patch tokens only (no CLS) -> (B, N, D)."""
        return self.forward_with_attention(x)[0]

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, N, D) -> ((B, N, D), gated attention probabilities (B, H, N, N))."""
        a, probs = self.attn(self.norm1(x), return_attention=True)
        x = x + self.drop_path1(self.ls1(a))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, probs
