"""Gated cross-attention: the fusion layer FIBER inserts into both backbones (Dou et al., NeurIPS'22).

``x ← x + α · Proj(softmax((W_q LN(x)) (W_k y)ᵀ / √d + mask) (W_v y))`` with ``α`` a learnable scalar
initialised to 0, so the pretrained unimodal backbone is reproduced exactly at the start of fusion
training (general-vision notes, entry 6; ``microsoft/FIBER`` ``WindowAttention`` ``*_i2t`` branches).
"""

from __future__ import annotations

import torch
from torch import nn


class GatedCrossAttention(nn.Module):
    """Tokens ``x`` (B, N, dim) attend to context ``y`` (B, L, context_dim); residual gated by ``alpha``.

    Args:
        dim: width of the attending stream.
        context_dim: width of the attended stream.
        num_heads: attention heads (``dim`` must be divisible by it).
        gate_init: initial ``alpha`` (0 = identity map at start).
    Forward:
        ``x`` (B, N, dim), ``context`` (B, L, context_dim), ``context_mask`` (B, L) bool, True = a real
        token (padding excluded), or None. Returns (B, N, dim). A sample whose context is all padding
        gets no update.
    Raises:
        ValueError: ``dim`` not divisible by ``num_heads``; mismatched batch / mask shapes at forward.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int = 8, gate_init: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.alpha = nn.Parameter(torch.tensor(float(gate_init)))

    def attend(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The ungated update Proj(Attn(LN(x), y)): (B, N, dim)."""
        b, n, d = x.shape
        if context.shape[0] != b:
            raise ValueError(f"context batch {context.shape[0]} != tokens batch {b}")
        if context_mask is not None and context_mask.shape != context.shape[:2]:
            raise ValueError(f"context_mask shape {tuple(context_mask.shape)} != context (B, L) "
                             f"{tuple(context.shape[:2])}")
        q = self.q(self.norm(x)).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5  # (B, H, N, L)
        if context_mask is not None:
            keep = context_mask.bool()[:, None, None, :]
            logits = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)
        out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, d)
        out = self.proj(out)
        if context_mask is not None:  # no real context token: no update (instead of attending to padding)
            out = out * context_mask.bool().any(dim=1).to(out.dtype)[:, None, None]
        return out

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.alpha * self.attend(x, context, context_mask)
