"""EViT token reorganisation: keep the tokens the CLS token attends to, fuse the rest into one.

Liang et al., "Not All Patches are What You Need: Expediting Vision Transformers via Token
Reorganizations", ICLR 2022 (general-vision notes, entry 19). In a reorganising block the attentive
score of patch token i is the CLS attention averaged over heads, ``a_i = mean_h A[h, 0, i]``; the top
``k = ⌈r·(N-1)⌉`` are kept and the others are fused into ``x_f = Σ_{j∉top} a_j·x_j`` (no
renormalisation). The MLP then runs on ``[CLS, kept, x_f]`` and later blocks see that sequence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medvit.nn.attention import Attention
from medvit.nn.block import Block

#: index of the fused ("inattentive") token in the patch-index bookkeeping
FUSED_INDEX = -1


def num_kept(num_tokens: int, keep_rate: float) -> int:
    """⌈r·n⌉, the number of attentive tokens EViT keeps out of ``num_tokens`` non-prefix tokens."""
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    return min(num_tokens, math.ceil(keep_rate * num_tokens))


def reorganize_tokens(
    x: torch.Tensor,
    cls_attn: torch.Tensor,
    keep_rate: float,
    num_prefix_tokens: int = 1,
    fuse_token: bool = True,
    index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep the top ⌈r·N⌉ attentive tokens (in their original order) and fuse the rest.

    Args:
        x: tokens (B, P + N, D), the prefix tokens first.
        cls_attn: attentive scores (B, N) of the N non-prefix tokens (CLS attention, head mean).
        keep_rate: r in (0, 1]; r = 1 (or ⌈r·N⌉ = N) returns ``x`` unchanged.
        num_prefix_tokens: P, tokens that are never dropped.
        fuse_token: append x_f = Σ_{j dropped} a_j·x_j as one extra token.
        index: optional (B, N) original patch index of each non-prefix token (``FUSED_INDEX`` for a
            fused token); returned gathered the same way so callers know which patches survive.
    Returns:
        tokens (B, P + k [+ 1], D) and the updated index (None when ``index`` is None).
    """
    B, T, D = x.shape
    n = T - num_prefix_tokens
    if cls_attn.shape != (B, n):
        raise ValueError(f"cls_attn must have shape {(B, n)} for tokens {tuple(x.shape)}, got {tuple(cls_attn.shape)}")
    k = num_kept(n, keep_rate)
    if k == n:
        return x, index
    order = cls_attn.argsort(dim=1, descending=True)
    keep = order[:, :k].sort(dim=1).values  # original order: r = 1 reproduces the base ViT exactly
    drop = order[:, k:]
    prefix, patches = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
    kept = patches.gather(1, keep[..., None].expand(-1, -1, D))
    parts = [prefix, kept]
    new_index = index.gather(1, keep) if index is not None else None
    if fuse_token:
        dropped = patches.gather(1, drop[..., None].expand(-1, -1, D))
        weights = cls_attn.gather(1, drop)
        parts.append((dropped * weights[..., None]).sum(dim=1, keepdim=True))
        if new_index is not None:
            new_index = torch.cat([new_index, new_index.new_full((B, 1), FUSED_INDEX)], dim=1)
    return torch.cat(parts, dim=1), new_index


def cls_attention_scores(probs: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Attention probabilities (B, H, T, T) -> CLS attentiveness of the non-prefix tokens (B, T - P)."""
    return probs[:, :, 0, num_prefix_tokens:].mean(dim=1)


def attention_with_cls_scores(attn: Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention output via fused SDPA plus the CLS row of the attention probabilities.

    x: (B, T, D) -> (output (B, T, D), CLS attention probabilities (B, H, T)). The CLS row costs one
    extra (1 × T) product per head instead of materialising the (T × T) matrix.
    """
    B, T, D = x.shape
    qkv = attn.qkv(x).reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    drop = attn.attn_drop if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop).transpose(1, 2).reshape(B, T, D)
    cls = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)[:, :, 0]
    return attn.proj_drop(attn.proj(out)), cls


def block_forward_reorganize(
    block: Block,
    x: torch.Tensor,
    keep_rate: float,
    num_prefix_tokens: int = 1,
    fuse_token: bool = True,
    index: torch.Tensor | None = None,
    return_attention: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Run a ViT ``block`` as an EViT block: attention on all tokens, reorganise, MLP on the rest.

    x: (B, P + N, D) -> (tokens (B, P + k [+1], D), updated index, attention probs (B, H, T, T) when
    ``return_attention`` else None). With ``keep_rate=1`` it computes exactly ``block(x)`` (and uses
    the block's own fast path); a reorganising block uses fused attention plus the CLS row only.
    """
    if keep_rate >= 1.0 and not return_attention:
        return block(x), index, None
    if return_attention:
        a, probs = block.attn(block.norm1(x), return_attention=True)
        cls = probs[:, :, 0]
    else:
        a, cls = attention_with_cls_scores(block.attn, block.norm1(x))
        probs = None
    x = x + block.drop_path1(block.ls1(a))
    if keep_rate < 1.0:
        scores = cls[:, :, num_prefix_tokens:].mean(dim=1)
        x, index = reorganize_tokens(x, scores, keep_rate, num_prefix_tokens, fuse_token, index)
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, index, probs


def keep_rate_schedule(step: int, keep_rate: float, start_step: int, end_step: int) -> float:
    """EViT keep-rate warm-up, a pure function of the step.

    1 before ``start_step``; from ``start_step`` to ``end_step`` a cosine decrease from 1 to
    ``keep_rate``; ``keep_rate`` afterwards (the schedule of the EViT fine-tuning recipe, which keeps
    all tokens for the first epochs and then lowers r gradually).
    """
    if end_step < start_step:
        raise ValueError(f"end_step {end_step} must be >= start_step {start_step}")
    if step < start_step:
        return 1.0
    if step >= end_step:
        return keep_rate
    t = (step - start_step) / (end_step - start_step)
    return keep_rate + (1.0 - keep_rate) * 0.5 * (1.0 + math.cos(math.pi * t))
