"""Analytic multiply-accumulate (MAC) counts for ViT components, and a measured count to check them.

One formula shared by every token-changing component (EViT, LookupViT, LGViT exits, ChannelViT):
a pre-norm transformer block with ``N_in`` tokens entering attention and ``N_out`` tokens entering
the MLP costs

    4·N_in·D²  (qkv + output projection)  +  2·N_in²·D  (QKᵀ and A·V)  +  2·r·N_out·D²  (MLP, ratio r)

MACs, i.e. ``Σ(4·N_in·D² + 2·N_in²·D + 8·N_out·D²)`` for r = 4 (general-vision notes, "Design notes
for the core"). Norms, softmax, GELU and additions are not counted (they are O(N·D)). One MAC is two
FLOPs; :func:`measured_macs` reports torch's FLOP counter divided by two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def block_macs(n_in: int, dim: int, mlp_ratio: float = 4.0, n_out: int | None = None) -> int:
    """MACs of one pre-norm block: 4·N_in·D² + 2·N_in²·D + 2·r·N_out·D² (``n_out`` defaults to ``n_in``)."""
    n_out = n_in if n_out is None else n_out
    return int(4 * n_in * dim**2 + 2 * n_in**2 * dim + round(2 * mlp_ratio * dim) * n_out * dim)


def cross_attention_macs(n_q: int, n_kv: int, dim: int, kv_dim: int | None = None, proj_out: bool = True) -> int:
    """MACs of cross-attention: q (N_q·D²), k and v (2·N_kv·D·D_kv), QKᵀ and A·V (2·N_q·N_kv·D), out (N_q·D²)."""
    kv_dim = dim if kv_dim is None else kv_dim
    return int(n_q * dim * dim + 2 * n_kv * kv_dim * dim + 2 * n_q * n_kv * dim + (n_q * dim * dim if proj_out else 0))


def patch_embed_macs(num_patches: int, in_chans: int, patch_size: Sequence[int], dim: int) -> int:
    """MACs of the strided-convolution patch embed: N·C·prod(p)·D."""
    k = 1
    for p in patch_size:
        k *= int(p)
    return int(num_patches * in_chans * k * dim)


def vit_macs(
    tokens_per_block: Sequence[int | tuple[int, int]],
    dim: int,
    mlp_ratio: float = 4.0,
    num_patches: int = 0,
    in_chans: int = 3,
    patch_size: Sequence[int] = (16, 16),
    num_classes: int = 0,
) -> int:
    """MACs of a ViT whose block i sees ``tokens_per_block[i]`` tokens (an int, or (N_in, N_out)).

    Adds the patch embed when ``num_patches`` > 0 and the linear head when ``num_classes`` > 0.
    Example (EViT notes): DeiT-S, 197 tokens, r = 0.7 at blocks 3/6/9 → 4.60 → 3.03 GMACs.
    """
    total = 0
    for t in tokens_per_block:
        n_in, n_out = (t, t) if isinstance(t, int) else t
        total += block_macs(n_in, dim, mlp_ratio, n_out)
    if num_patches:
        total += patch_embed_macs(num_patches, in_chans, patch_size, dim)
    return total + dim * num_classes


def _cpu_sdpa_flops(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> int:
    """FLOPs of CPU fused attention: 2·(B·H·Nq·Nk·d) for QKᵀ plus the same for A·V."""
    b, h, nq, d = query.shape
    nk, dv = key.shape[-2], value.shape[-1]
    return 2 * b * h * nq * nk * d + 2 * b * h * nq * nk * dv


_cpu_sdpa_flops._get_raw = True  # type: ignore[attr-defined]  (FlopCounterMode: pass tensors, not shapes)


def measured_macs(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Run ``fn(*args, **kwargs)`` under ``torch.utils.flop_counter.FlopCounterMode``; return FLOPs / 2.

    Counts matmuls, linears and convolutions (and CPU fused attention, whose kernel torch's counter
    does not map by default). Run it with autograd enabled: torch's fused inference encoder kernel
    is one opaque op the counter does not see.
    """
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() // 2
