"""The optimiser step the compression training loops (ElasticViT supernet, SN-Netv2 stitches) share."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
                   params: Sequence[torch.nn.Parameter], clip_grad: float | None) -> None:
    """Backward ``loss``, clip the gradient norm of ``params`` to ``clip_grad`` (None/0: no clipping), step the
    optimiser and the LR schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad:
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    opt.step()
    sched.step()
