"""(IA)³ (Liu et al. 2022) through huggingface ``peft``: learned per-channel rescaling of linears."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medvit.config import option
from medvit.peft.base import register_method
from medvit.peft.hf import TargetedConfig, inject_hf, resolve
from medvit.peft.targets import resolve_targets


@dataclass
class IA3Config(TargetedConfig):
    """Scale vectors (init 1) on the outputs of targeted linears and the inputs of feed-forward ones."""

    targets: list[str] = option(default_factory=lambda: ["attention", "mlp"], help="layers that get a scale vector")
    feedforward: list[str] = option(default_factory=lambda: ["mlp.fc2"], help="subset scaled on the input side")


@register_method("ia3", IA3Config, "(IA)^3 learned activation rescaling on attention/MLP linears (huggingface peft)",
                 mergeable=True)
def inject(model: nn.Module, cfg: IA3Config) -> nn.Module:
    """Adapt the targeted linears with (IA)³; only the ``ia3_l`` vectors train."""
    import peft

    names = resolve(model, cfg)
    ff = resolve_targets(model, cfg.feedforward, cfg.layers) if cfg.feedforward else []
    outside = [n for n in ff if n not in names]
    if outside:
        raise ValueError(f"feedforward modules {outside} are not among the targets; add them to targets")
    pc = peft.IA3Config(target_modules=names, feedforward_modules=ff)
    return inject_hf(model, pc, names)
