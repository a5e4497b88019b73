"""OFT (Qiu et al. 2023) through huggingface ``peft``: block-diagonal orthogonal rotation of the weights."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medvit.config import option
from medvit.peft.base import register_method
from medvit.peft.hf import TargetedConfig, inject_hf, resolve


@dataclass
class OFTConfig(TargetedConfig):
    """W ← R W with R block-diagonal orthogonal (Cayley parametrised), blocks of ``block_size`` channels."""

    block_size: int = option(16, "channels per orthogonal block; must divide every targeted layer's in_features")
    coft: bool = option(False, "constrained OFT: keep R within ``eps`` of the identity")
    eps: float = option(6e-5, "COFT radius")
    block_share: bool = option(False, "one rotation block shared by all blocks of a layer")
    module_dropout: float = option(0.0, "probability of skipping the rotation (multiplicative dropout) in training")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if not 0.0 <= self.module_dropout < 1.0:
            raise ValueError(f"module_dropout must be in [0, 1), got {self.module_dropout}")


@register_method("oft", OFTConfig, "OFT orthogonal fine-tuning of attention/MLP linears (huggingface peft)",
                 mergeable=True)
def inject(model: nn.Module, cfg: OFTConfig) -> nn.Module:
    """Adapt the targeted linears with OFT; only the ``oft_R`` generators train."""
    import peft

    names = resolve(model, cfg)
    mods = dict(model.named_modules())
    for n in names:
        width = mods[n].in_features
        if cfg.block_size > width or width % cfg.block_size:
            raise ValueError(f"block_size={cfg.block_size} does not divide the width of layer {n!r} "
                             f"(in_features {width}); choose a divisor of {width}")
    pc = peft.OFTConfig(r=0, oft_block_size=cfg.block_size, coft=cfg.coft, eps=cfg.eps,
                        block_share=cfg.block_share, module_dropout=cfg.module_dropout, target_modules=names)
    return inject_hf(model, pc, names)
