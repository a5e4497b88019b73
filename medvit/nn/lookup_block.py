"""LookupViT block: a few compressed tokens do the heavy work, full-resolution lookup tokens are
updated through bidirectional cross-attention that reuses one attention matrix.

Koner et al., "LookupViT: Compressing visual information to a limited number of tokens", ECCV 2024
(general-vision notes, entry 21; no official code — written from the paper). With z the M
compressed tokens and x the N lookup tokens, one block computes

1. gather:  L = Q(z)·K(x)ᵀ/√d (B, H, M, N);   z ← z + O_z(softmax_N(L)·V(x))
2. refine:  z ← z + MHSA(z);  z ← z + MLP(z)               (the only O(M²) step)
3. infuse:  x ← x + O_x(softmax_M(Lᵀ)·V'(z));  x ← x + MLP_x(x)   (Lᵀ reused: no new Q·Kᵀ)

each with a pre-LayerNorm. The cost is O(N·M + M²) in tokens instead of O(N²).
"""

from __future__ import annotations

import torch
from torch import nn

from medvit.nn.attention import Attention
from medvit.nn.drop_path import DropPath
from medvit.nn.flops import block_macs
from medvit.nn.mlp import Mlp


class LookupBlock(nn.Module):
    """One LookupViT block. ``forward(x, z)``: x (B, N, D), z (B, M, D) -> (x', z').

    Args:
        dim, num_heads, qkv_bias, norm_eps: as the ViT block.
        mlp_ratio: MLP expansion of the compressed tokens (4).
        lookup_mlp_ratio: the smaller MLP expansion of the lookup tokens ([verify] against the paper;
            1.0 by default).
        drop_path: stochastic depth on every residual branch.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        lookup_mlp_ratio: float = 1.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.mlp_ratio, self.lookup_mlp_ratio = mlp_ratio, lookup_mlp_ratio
        # 1. gather (z <- x)
        self.norm_gather_z = nn.LayerNorm(dim, eps=norm_eps)
        self.norm_gather_x = nn.LayerNorm(dim, eps=norm_eps)
        self.q_z = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv_x = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj_z = nn.Linear(dim, dim)
        # 2. refine (z)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # 3. infuse (x <- z), reusing the gather logits
        self.norm_infuse_z = nn.LayerNorm(dim, eps=norm_eps)
        self.v_z = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_x = nn.Linear(dim, dim)
        self.norm_x = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp_x = Mlp(dim, max(1, int(dim * lookup_mlp_ratio)))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, _ = t.shape
        return t.reshape(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge(self, t: torch.Tensor) -> torch.Tensor:
        B, H, T, d = t.shape
        return t.transpose(1, 2).reshape(B, T, H * d)

    def forward_with_attention(
        self, x: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (x' (B, N, D), z' (B, M, D), gather logits L (B, H, M, N), pre-softmax)."""
        dp = self.drop_path
        q = self._heads(self.q_z(self.norm_gather_z(z)))
        k, v = self.kv_x(self.norm_gather_x(x)).chunk(2, dim=-1)
        logits = (q * self.scale) @ self._heads(k).transpose(-2, -1)  # (B, H, M, N)
        z = z + dp(self.proj_z(self._merge(logits.softmax(dim=-1) @ self._heads(v))))
        z = z + dp(self.attn(self.norm1(z)))
        z = z + dp(self.mlp(self.norm2(z)))
        vz = self._heads(self.v_z(self.norm_infuse_z(z)))
        x = x + dp(self.proj_x(self._merge(logits.transpose(-2, -1).softmax(dim=-1) @ vz)))
        x = x + dp(self.mlp_x(self.norm_x(x)))
        return x, z, logits

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, z, _ = self.forward_with_attention(x, z)
        return x, z

    def macs(self, n: int, m: int) -> int:
        """Analytic MACs for N lookup and M compressed tokens (linear in N for fixed M)."""
        D = self.q_z.in_features
        gather = m * D * D + 2 * n * D * D + 2 * m * n * D + m * D * D
        refine = block_macs(m, D, self.mlp_ratio)
        infuse = m * D * D + n * m * D + n * D * D + 2 * self.mlp_x.fc1.out_features * n * D
        return gather + refine + infuse
