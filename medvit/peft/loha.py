"""LoHa (Hyeon-Woo et al. 2022, FedPara) through huggingface ``peft``: Hadamard product of two low-rank updates."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medvit.peft.base import register_method
from medvit.peft.hf import TargetedConfig, inject_hf, resolve
from medvit.peft.targets import check_rank


@dataclass
class LohaConfig(TargetedConfig):
    """ΔW = (W1a W1b) ⊙ (W2a W2b) · alpha / r on each targeted ``nn.Linear``."""

    r: int = 8  # rank of each factor pair; must not exceed any targeted layer's min(in, out)
    alpha: float = 8.0  # scaling numerator (update × alpha / r)
    rank_dropout: float = 0.0  # dropout over ranks during training
    module_dropout: float = 0.0  # probability of skipping the whole update during training

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        for k in ("rank_dropout", "module_dropout"):
            if not 0.0 <= getattr(self, k) < 1.0:
                raise ValueError(f"{k} must be in [0, 1), got {getattr(self, k)}")


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
