"""PredFormer gated transformer blocks with full, factorised or interleaved space-time attention.

Tang et al., "PredFormer: Transformers Are Effective Spatial-Temporal Predictive Learners"
(general-vision notes, entry 24). A Gated Transformer Block (GTB) is pre-norm MHSA plus a pre-norm
SwiGLU feed-forward (``fc2(SiLU(fc1_g x) · fc1_x x)``). Applied to a token tensor (B, T, N, D):

- spatial ("S"): attention within each frame, on (B·T, N, D);
- temporal ("T"): attention along time at each patch position, on (B·N, T, D);
- full ("F"): joint attention over all T·N tokens.

A variant is a pattern of these letters (:data:`VARIANTS`): full = "F"; factorised FacST = a stack of
spatial blocks then a stack of temporal blocks; interleaved Binary / Triplet / Quadruplet repeat a
unit such as "TSST".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medvit.nn.attention import Attention
from medvit.nn.drop_path import DropPath


class SwiGLU(nn.Module):
    """Gated feed-forward: x (…, D) -> fc2(SiLU(fc1_g(x)) · fc1_x(x)) (…, D)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden)
        self.fc1_x = nn.Linear(dim, hidden)
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.silu(self.fc1_g(x)) * self.fc1_x(x)))


class GatedTransformerBlock(nn.Module):
    """Pre-norm MHSA + pre-norm SwiGLU on a sequence: (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwiGLU(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SpaceTimeBlock(GatedTransformerBlock):
    """A GTB attending over space ("S"), time ("T") or both ("F"): tokens (B, T, N, D) -> (B, T, N, D)."""

    def __init__(self, axis: str, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0):
        if axis not in ("S", "T", "F"):
            raise ValueError(f"axis must be 'S' (space), 'T' (time) or 'F' (full), got {axis!r}")
        super().__init__(dim, num_heads, mlp_ratio, drop, drop_path)
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, N, D = x.shape
        if self.axis == "S":
            return super().forward(x.reshape(B * T, N, D)).reshape(B, T, N, D)
        if self.axis == "T":
            y = super().forward(x.transpose(1, 2).reshape(B * N, T, D))
            return y.reshape(B, N, T, D).transpose(1, 2)
        return super().forward(x.reshape(B, T * N, D)).reshape(B, T, N, D)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


#: variant name -> the letter unit repeated ``depth`` times ("fac_*" stack depth × each letter instead)
VARIANTS: dict[str, str] = {
    "full": "F",
    "fac_st": "ST",
    "fac_ts": "TS",
    "binary_st": "ST",
    "binary_ts": "TS",
    "triplet_sts": "STS",
    "triplet_tst": "TST",
    "quadruplet_tsst": "TSST",
    "quadruplet_stts": "STTS",
}


def variant_pattern(variant: str, depth: int) -> str:
    """The axis letters of every block: "fac_st", depth 2 -> "SSTT"; "binary_st", depth 2 -> "STST"."""
    if variant not in VARIANTS:
        raise KeyError(f"unknown space-time variant {variant!r}; choose one of {sorted(VARIANTS)}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    unit = VARIANTS[variant]
    if variant.startswith("fac_"):
        return "".join(letter * depth for letter in unit)
    return unit * depth


def attention_pairs(pattern: str, frames: int, patches: int) -> int:
    """Query-key pairs one sample's attention computes over the blocks of ``pattern``."""
    per = {"F": (frames * patches) ** 2, "S": frames * patches**2, "T": patches * frames**2}
    return sum(per[c] for c in pattern)
