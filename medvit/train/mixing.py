"""Batch-level Mixup (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019), drawn either from torch's global
generator (DeiT-LT's out-of-distribution batches) or from a seed derived from the batch's per-sample augmentation
seeds (TinyViT's logit store replays the mixing of every batch: Wu et al., ECCV 2022, §3.2)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def batch_mix_seed(aug_seeds: Any) -> int:
    """63-bit seed of one batch's Mixup/CutMix draw from its samples' augmentation seeds (B,) in batch order (the
    loop's :func:`medvit.train.sampler.sample_seed` values): ``SeedSequence`` over their 32-bit halves. The same
    batch (same samples, same order, same epoch) always gets the same seed, so a teacher pass that forms the
    loop's batches can replay the mixing of the student run (TinyViT, Wu et al. 2022, §3.2: "the random seeds of
    data augmentation (RandAugment, Mixup, CutMix) are stored")."""
    words: list[int] = []
    for s in [int(v) for v in torch.as_tensor(aug_seeds).reshape(-1).tolist()]:
        s &= (1 << 64) - 1
        words += [s >> 32, s & 0xFFFFFFFF]
    if not words:
        raise ValueError("batch_mix_seed: empty batch")
    st = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32).astype(np.uint64)
    return int(st[0]) << 31 | int(st[1] >> 1)


def mix_images(x: torch.Tensor, mixup: float, cutmix: float,
               rng: Any = None) -> tuple[torch.Tensor, float]:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) of a batch with the batch reversed as partner (timm's
    ``Mixup`` rule; CutMix or Mixup chosen with probability 1/2 when both are on). x (B, C, H, W) -> (mixed x, λ),
    λ = the weight of each image itself (CutMix: 1 - box area / image area). Draws (choice, λ ~ Beta(α, α), box
    centre) from ``rng`` (a ``numpy.random.Generator``, e.g. seeded by :func:`batch_mix_seed`) when given, else
    from torch's global generator. Both α 0: x unchanged, λ 1."""
    if rng is None:
        use_cut = cutmix > 0 and (mixup <= 0 or bool(torch.rand(()) < 0.5))
    else:
        use_cut = cutmix > 0 and (mixup <= 0 or bool(rng.random() < 0.5))
    alpha = cutmix if use_cut else mixup
    if alpha <= 0:
        return x, 1.0
    lam = float(torch.distributions.Beta(alpha, alpha).sample()) if rng is None else float(rng.beta(alpha, alpha))
    if use_cut:
        h, w = x.shape[-2:]
        rh, rw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        if rng is None:
            cy, cx = int(torch.randint(0, h, ())), int(torch.randint(0, w, ()))
        else:
            cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, h)
        x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
        return x, 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return lam * x + (1 - lam) * x.flip(0), lam
