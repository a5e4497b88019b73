"""Multi-head self-attention on fused SDPA, with an explicit path that returns probabilities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (timm / MAE weight layout).

    ``head_dim`` (default ``dim // num_heads``) lets the inner width H·hd differ from ``dim`` (pruned heads, NViT).
    ``forward(x)`` uses ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels).
    ``forward(x, return_attention=True)`` computes softmax(QKᵀ/√d) explicitly and also returns the
    attention probabilities (B, H, T, T) — the input of attention rollout and other explanations.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        head_dim: int | None = None,
    ):
        super().__init__()
        if head_dim is None and dim % num_heads != 0:
            raise ValueError(f"embed dim {dim} must be divisible by num_heads {num_heads}")
        if num_heads < 1 or (head_dim is not None and head_dim < 1):
            raise ValueError(f"num_heads and head_dim must be >= 1, got {num_heads}, {head_dim}")
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads  # explicit head_dim: inner width H·hd may differ from dim
        inner = self.num_heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, inner * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def attention_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax attention logits QKᵀ/√d: (B, T, D) -> (B, H, T, T) (softmax over the last axis
        gives the probabilities ``forward(x, return_attention=True)`` returns)."""
        B, T, _ = x.shape
        qk = self.qkv(x)[..., : 2 * self.num_heads * self.head_dim]
        q, k = qk.reshape(B, T, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return (q * self.scale) @ k.transpose(-2, -1)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D) -> (B, T, D); with ``return_attention`` also (B, H, T, T) probabilities."""
        B, T, _ = x.shape
        D = self.num_heads * self.head_dim
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, T, hd)
        if return_attention:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            probs = attn
            if self.training and self.attn_drop > 0:
                attn = F.dropout(attn, self.attn_drop)
            out = attn @ v
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop if self.training else 0.0
            )
        out = out.transpose(1, 2).reshape(B, T, D)
        out = self.proj_drop(self.proj(out))
        return (out, probs) if return_attention else out
