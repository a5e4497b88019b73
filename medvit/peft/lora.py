"""LoRA (Hu et al. 2021) through huggingface ``peft``: W + (alpha / r) B A on the targeted linears."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medvit.config import option
from medvit.peft.base import register_method
from medvit.peft.hf import TargetedConfig, inject_hf, resolve
from medvit.peft.targets import check_rank


@dataclass
class LoraConfig(TargetedConfig):
    """Low-rank update B·A (B zero-initialised) on each targeted ``nn.Linear``."""

    r: int = option(8, "rank of the update; must not exceed any targeted layer's min(in, out)")
    alpha: float = option(16.0, "scaling numerator: the update is multiplied by alpha / r")
    dropout: float = option(0.0, "dropout on the LoRA branch input")
    use_dora: bool = option(False, "DoRA: weight-decomposed LoRA (magnitude vector + direction update)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@register_method("lora", LoraConfig, "LoRA low-rank updates on attention/MLP linears (huggingface peft)",
                 mergeable=True)
def inject(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Adapt the targeted linears with LoRA; only ``lora_A``/``lora_B`` (and DoRA magnitudes) train."""
    import peft

    names = resolve(model, cfg)
    check_rank(model, names, cfg.r)
    pc = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, use_dora=cfg.use_dora,
                         target_modules=names)
    return inject_hf(model, pc, names)
