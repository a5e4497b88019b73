"""Full fine-tuning: every backbone parameter trains (the reference the other methods are measured against)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medvit.peft.base import MethodConfig, register_method


@dataclass
class FullConfig(MethodConfig):
    """No extra fields: all parameters train (fixed sin-cos position tables stay fixed)."""


@register_method("full", FullConfig, "full fine-tuning of every backbone parameter")
def inject(model: nn.Module, cfg: FullConfig) -> nn.Module:
    """Unfreeze everything except a fixed (``pos_embed="sincos"``) position table."""
    fixed_pos = getattr(model, "pos_embed_kind", "learn") != "learn"
    for name, p in model.named_parameters():
        p.requires_grad_(not (fixed_pos and name == "pos_embed"))
    return model
