"""LoHa (Hyeon-Woo et al. 2022, FedPara) through huggingface ``peft``: Hadamard product of two low-rank updates."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medvit.peft.base import register_method
from medvit.peft.hf import LycorisConfig, inject_hf, resolve
from medvit.peft.targets import check_rank


@dataclass
class LohaConfig(LycorisConfig):
    """ΔW = (W1a W1b) ⊙ (W2a W2b) · alpha / r on each targeted ``nn.Linear``."""



@register_method("loha", LohaConfig, "LoHa Hadamard low-rank updates on attention/MLP linears (huggingface peft)",
                 mergeable=True)
def inject(model: nn.Module, cfg: LohaConfig) -> nn.Module:
    """Adapt the targeted linears with LoHa; only the ``hada_*`` factors train."""
    import peft

    names = resolve(model, cfg)
    check_rank(model, names, cfg.r)
    pc = peft.LoHaConfig(r=cfg.r, alpha=cfg.alpha, rank_dropout=cfg.rank_dropout,
                         module_dropout=cfg.module_dropout, target_modules=names)
    return inject_hf(model, pc, names)
