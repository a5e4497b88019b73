"""LoKr (Edalati et al. 2022; LyCORIS) through huggingface ``peft``: Kronecker-product updates."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medvit.config import option
from medvit.peft.base import register_method
from medvit.peft.hf import LycorisConfig, inject_hf, resolve
from medvit.peft.targets import check_rank


@dataclass
class LokrConfig(LycorisConfig):
    """ΔW = W1 ⊗ (W2a W2b) · alpha / r on each targeted ``nn.Linear``."""

    decompose_both: bool = option(False, "also factor the left Kronecker matrix W1 into a low-rank product")
    decompose_factor: int = option(-1, "split of the dimensions into Kronecker factors (-1: as square as possible)")


@register_method("lokr", LokrConfig, "LoKr Kronecker updates on attention/MLP linears (huggingface peft)",
                 mergeable=True)
def inject(model: nn.Module, cfg: LokrConfig) -> nn.Module:
    """Adapt the targeted linears with LoKr; only the ``lokr_*`` factors train."""
    import peft

    names = resolve(model, cfg)
    check_rank(model, names, cfg.r)
    pc = peft.LoKrConfig(r=cfg.r, alpha=cfg.alpha, decompose_both=cfg.decompose_both,
                         decompose_factor=cfg.decompose_factor, rank_dropout=cfg.rank_dropout,
                         module_dropout=cfg.module_dropout, target_modules=names)
    return inject_hf(model, pc, names)
