"""Learning-rate schedules as pure functions of the optimizer step (MAE ``util/lr_sched.py``, per iteration).

``lr(step) = base_lr · step / warmup`` during warmup, then a half-cycle cosine from ``base_lr`` down to
``min_lr`` at ``total_steps``. Nothing is stored: resuming only needs the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def scaled_lr(blr: float, effective_batch: int) -> float:
    """Linear scaling rule: ``lr = blr × effective_batch / 256`` (MAE/BEiT convention)."""
    if effective_batch < 1:
        raise ValueError(f"effective batch must be >= 1, got {effective_batch}")
    return blr * effective_batch / 256.0


def _decayed(step: float, base_lr: float, total_steps: int, warmup_steps: int, min_lr: float,
             shape: Callable[[float], float]) -> float:
    """Linear warmup to ``base_lr``, then ``min_lr + (base_lr − min_lr)·shape(progress)``, progress in [0, 1]."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    span = total_steps - warmup_steps
    progress = (step - warmup_steps) / span if span > 0 else 1.0
    return min_lr + (base_lr - min_lr) * shape(progress)


def warmup_cosine_lr(
    step: float, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0
) -> float:
    """LR at (possibly fractional) ``step`` in [0, total_steps]: linear warmup, then half-cycle cosine.

    Matches the reference: ``lr·s/w`` for ``s < w``, else
    ``min_lr + (lr − min_lr)·½·(1 + cos(π·(s − w)/(T − w)))``. Steps past ``total_steps`` return ``min_lr``.
    """
    return _decayed(step, base_lr, total_steps, warmup_steps, min_lr, lambda p: 0.5 * (1.0 + math.cos(math.pi * p)))


def constant_lr(step: float, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> float:
    """Linear warmup then constant ``base_lr`` (``min_lr`` unused; same signature as the cosine)."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    return base_lr


def poly_lr(step: float, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> float:
    """Linear warmup, then polynomial decay of power 1 to ``min_lr`` at ``total_steps`` (MMSeg ``LinearLR`` +
    ``PolyLR(power=1.0)``, the BenchX segmentation schedule)."""
    return _decayed(step, base_lr, total_steps, warmup_steps, min_lr, lambda p: 1.0 - p)


SCHEDULES = {"cosine": warmup_cosine_lr, "constant": constant_lr, "poly": poly_lr}
