"""LGViT early-exit heads, the confidence/entropy exit policy and the exit self-distillation loss.

Xu et al., "LGViT: Dynamic Early Exiting for Accelerating Vision Transformer", ACM MM 2023
(general-vision notes, entry 14). Shallow exits use a *local perception* head (patch tokens as a
map → 3×3 conv → GELU → BN → pooling → linear), deeper exits a *global aggregation* head (attention
pooling over all tokens → linear). At inference a sample leaves at the first exit whose confidence
(max softmax) reaches τ, or whose normalised entropy falls to τ.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class LocalPerceptionHead(nn.Module):
    """Patch tokens (B, N, D) on ``grid`` -> logits (B, K): 3×3 conv, GELU, BN, average pool, linear."""

    def __init__(self, dim: int, num_classes: int, spatial_dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        self.conv = conv(dim, dim, 3, padding=1)
        self.act = nn.GELU()
        self.bn = bn(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, patch_tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        B, N, D = patch_tokens.shape
        t = patch_tokens.transpose(1, 2).reshape(B, D, *grid)
        t = self.bn(self.act(self.conv(t)))
        return self.head(t.flatten(2).mean(-1))

    def macs(self, num_patches: int) -> int:
        c = self.conv
        k = math.prod(c.kernel_size)
        return num_patches * c.in_channels * c.out_channels * k + self.head.in_features * self.head.out_features


class GlobalAggregationHead(nn.Module):
    """All tokens (B, T, D) -> logits (B, K) by single-query attention pooling, LayerNorm, linear."""

    def __init__(self, dim: int, num_classes: int, norm_eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.query, std=0.02)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        k, v = self.kv(self.norm(tokens)).chunk(2, dim=-1)
        a = (self.query @ k.transpose(1, 2) / math.sqrt(k.shape[-1])).softmax(-1)  # (B, 1, T)
        return self.head(self.out_norm((a @ v)[:, 0]))

    def macs(self, num_tokens: int) -> int:
        D = self.kv.in_features
        return 2 * num_tokens * D * D + 2 * num_tokens * D + D * self.head.out_features


Criterion = Literal["confidence", "entropy", "sigmoid"]


def exit_scores(logits: torch.Tensor, criterion: Criterion = "confidence") -> torch.Tensor:
    """(B, K) logits -> (B,) score.

    "confidence": max softmax (single-label); "entropy": softmax entropy / log K, in [0, 1];
    "sigmoid": multi-label confidence min_k max(σ(z_k), 1 − σ(z_k)), in [0.5, 1] (every finding
    decided with at least that probability).
    """
    if criterion == "sigmoid":
        p = logits.float().sigmoid()
        return torch.maximum(p, 1 - p).min(-1).values
    p = logits.float().softmax(-1)
    if criterion == "confidence":
        return p.max(-1).values
    if criterion == "entropy":
        return -(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(p.shape[-1])
    raise ValueError(f"criterion must be 'confidence', 'entropy' or 'sigmoid', got {criterion!r}")


def should_exit(logits: torch.Tensor, threshold: float, criterion: Criterion = "confidence") -> torch.Tensor:
    """(B,) bool: score ≥ τ ("confidence", "sigmoid"), or normalised entropy ≤ τ ("entropy")."""
    s = exit_scores(logits, criterion)
    return s <= threshold if criterion == "entropy" else s >= threshold


def exit_distillation_loss(
    exit_logits: torch.Tensor,
    final_logits: torch.Tensor,
    temperature: float = 1.0,
    exit_features: torch.Tensor | None = None,
    final_features: torch.Tensor | None = None,
    multilabel: bool = False,
) -> torch.Tensor:
    """Self-distillation of an exit from the final classifier (stage 2 of LGViT training).

    Single-label: T²·KL(softmax(final/T) ‖ softmax(exit/T)). Multi-label: T²·Σ_k KL between the
    Bernoulli distributions σ(final_k/T) and σ(exit_k/T), averaged over samples. Plus
    MSE(exit features, final features) when both are given. The final side is detached; the loss is
    zero when the exit reproduces the final logits (and features).
    """
    t = temperature
    if multilabel:
        p_logit = final_logits.detach() / t
        p = p_logit.sigmoid()
        # KL(Bern(p) || Bern(q)) = BCE(q; p) − H(p); both from logits (autocast-safe)
        bce = F.binary_cross_entropy_with_logits(exit_logits / t, p, reduction="none")
        ent = F.binary_cross_entropy_with_logits(p_logit, p, reduction="none")
        loss = (bce - ent).sum(-1).mean() * t * t
    else:
        target = (final_logits.detach() / t).log_softmax(-1)
        loss = F.kl_div((exit_logits / t).log_softmax(-1), target, log_target=True, reduction="batchmean") * t * t
    if exit_features is not None and final_features is not None:
        loss = loss + F.mse_loss(exit_features, final_features.detach())
    return loss
