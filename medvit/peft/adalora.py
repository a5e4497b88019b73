"""AdaLoRA (Zhang et al. 2023) through huggingface ``peft``: SVD-form LoRA with an adaptive rank budget.

Training needs two hooks, exposed on the registered method: ``on_step(model, step)`` after each
optimizer step (importance scores → rank budget, via peft's rank allocator) and ``regularizer(model)``,
the orthogonality penalty on the singular vectors P (``lora_B``) and Q (``lora_A``), added to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medvit.config import option
from medvit.peft.base import register_method
from medvit.peft.hf import TargetedConfig, adapter_layers, inject_hf, resolve, tuner
from medvit.peft.targets import check_rank


@dataclass
class AdaLoraConfig(TargetedConfig):
    """P Λ Q updates whose total rank is pruned from ``init_r`` to ``target_r`` per layer on average."""

    init_r: int = option(12, "initial rank per layer; must not exceed any targeted layer's min(in, out)")
    target_r: int = option(8, "average rank per layer after budgeting")
    alpha: float = option(8.0, "scaling numerator")
    dropout: float = option(0.0, "dropout on the AdaLoRA branch input")
    total_step: int | None = option(None, "total training steps (required; the prompt_tune task fills it in)")
    tinit: int = option(0, "warm-up steps before the budget starts shrinking")
    tfinal: int = option(0, "final steps with the budget fixed")
    delta_t: int = option(1, "steps between two budget allocations")
    beta1: float = option(0.85, "EMA of importance (sensitivity)")
    beta2: float = option(0.85, "EMA of importance uncertainty")
    orth_reg_weight: float = option(0.5, "weight of the orthogonality penalty returned by ``regularizer``")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_r < 1 or self.target_r < 1:
            raise ValueError(f"init_r and target_r must be >= 1, got {self.init_r}, {self.target_r}")
        if self.target_r > self.init_r:
            raise ValueError(f"target_r ({self.target_r}) must not exceed init_r ({self.init_r})")
        if self.orth_reg_weight < 0:
            raise ValueError(f"orth_reg_weight must be >= 0, got {self.orth_reg_weight}")
        if self.total_step is not None and self.tinit + self.tfinal >= self.total_step:
            raise ValueError(f"tinit + tfinal ({self.tinit} + {self.tfinal}) must be < total_step ({self.total_step})")


def on_step(model: nn.Module, step: int) -> None:
    """Update importance scores and mask ranks; call after ``optimizer.step()``, before ``zero_grad()``."""
    tuner(model).update_and_allocate(step)


def regularizer(model: nn.Module) -> torch.Tensor | None:
    """Orthogonality penalty mean_l(‖Q_l Q_lᵀ − I‖_F + ‖P_lᵀ P_l − I‖_F) × ``orth_reg_weight``."""
    info = model.peft_info
    terms = []
    for layer in adapter_layers(model).values():
        for a in layer.lora_A.values():
            terms.append(torch.linalg.matrix_norm(a @ a.T - torch.eye(a.shape[0], device=a.device, dtype=a.dtype)))
        for b in layer.lora_B.values():
            terms.append(torch.linalg.matrix_norm(b.T @ b - torch.eye(b.shape[1], device=b.device, dtype=b.dtype)))
    if not terms:
        return None
    return info.config.orth_reg_weight * torch.stack(terms).mean()


@register_method("adalora", AdaLoraConfig, "AdaLoRA adaptive-rank SVD updates on attention/MLP linears "
                 "(huggingface peft)", mergeable=True, on_step=on_step, regularizer=regularizer)
def inject(model: nn.Module, cfg: AdaLoraConfig) -> nn.Module:
    """Adapt the targeted linears with AdaLoRA; ``lora_A``/``lora_B``/``lora_E`` train."""
    import peft

    if cfg.total_step is None:
        raise ValueError("adalora: total_step is required (the number of optimizer steps of the run)")
    names = resolve(model, cfg)
    check_rank(model, names, cfg.init_r, field="init_r")
    pc = peft.AdaLoraConfig(init_r=cfg.init_r, target_r=cfg.target_r, lora_alpha=cfg.alpha,
                            lora_dropout=cfg.dropout, total_step=cfg.total_step, tinit=cfg.tinit,
                            tfinal=cfg.tfinal, deltaT=cfg.delta_t, beta1=cfg.beta1, beta2=cfg.beta2,
                            orth_reg_weight=cfg.orth_reg_weight, target_modules=names)
    return inject_hf(model, pc, names)
