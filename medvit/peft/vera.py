"""VeRA (Kopiczko et al. 2024) through huggingface ``peft``: shared frozen random projections, trained scales."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medvit.config import option
from medvit.peft.base import register_method
from medvit.peft.hf import TargetedConfig, inject_hf, resolve
from medvit.peft.targets import check_rank


@dataclass
class VeraConfig(TargetedConfig):
    """ΔW = Λ_b B Λ_d A with A, B frozen random matrices shared by all layers; only Λ_b, Λ_d train."""

    r: int = option(64, "rank of the shared random projections; must not exceed any targeted layer's min(in, out)")
    d_initial: float = option(0.1, "initial value of the Λ_d scales")
    dropout: float = option(0.0, "dropout on the VeRA branch input")
    projection_prng_key: int = option(0, "seed of the shared random projections (saved with the adapter anyway)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@register_method("vera", VeraConfig, "VeRA scaled shared random projections on attention/MLP linears "
                 "(huggingface peft)", mergeable=True)
def inject(model: nn.Module, cfg: VeraConfig) -> nn.Module:
    """Adapt the targeted linears with VeRA; only ``vera_lambda_b``/``vera_lambda_d`` train."""
    import peft

    names = resolve(model, cfg)
    check_rank(model, names, cfg.r)
    pc = peft.VeraConfig(r=cfg.r, d_initial=cfg.d_initial, vera_dropout=cfg.dropout,
                         projection_prng_key=cfg.projection_prng_key, save_projection=True, target_modules=names)
    return inject_hf(model, pc, names)
