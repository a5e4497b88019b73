"""Visual Prompt Tuning (Jia et al. 2022): learnable tokens prepended to the patch sequence.

- ``vpt_shallow``: N prompts enter block 0 and flow through the frozen network.
- ``vpt_deep``: fresh prompts replace the previous block's prompt outputs at the input of every
  block in ``layers`` (block 0 always gets prompts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medvit.config import option
from medvit.peft.base import MethodConfig, register_method
from medvit.peft.prompted import PromptedViT, block_index, device_of, prompt_init_bound


@dataclass
class VPTConfig(MethodConfig):
    """Prompt tokens (N × D per prompted block)."""

    num_prompts: int = option(10, "N prompt tokens")
    dropout: float = option(0.0, "dropout on the prompt tokens when they are inserted")
    layers: list[int] | None = option(None, "vpt_deep: blocks whose input prompts are fresh (None = all; 0 always)")
    pool: str = option("backbone", '"backbone": pool as the backbone does, prompts dropped; "prompts": mean of '
                                   "CLS+prompts")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1, got {self.num_prompts}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pool not in ("backbone", "prompts"):
            raise ValueError(f"pool must be 'backbone' or 'prompts', got {self.pool!r}")


class VPTViT(PromptedViT):
    """Backbone + VPT prompts: ``prompts`` (S, N, D), S = 1 (shallow) or the number of prompted blocks."""

    def __init__(self, backbone: nn.Module, cfg: VPTConfig, deep: bool):
        super().__init__(backbone, cfg.num_prompts, pool=cfg.pool)  # type: ignore[arg-type]
        depth = len(backbone.blocks)
        if deep:
            idx = {0} | {block_index(i, depth) for i in (cfg.layers if cfg.layers is not None else range(depth))}
        else:
            idx = {0}
        self.prompt_blocks = sorted(idx)
        self._slot = {b: s for s, b in enumerate(self.prompt_blocks)}
        bound = prompt_init_bound(backbone)
        self.prompts = nn.Parameter(torch.empty(len(self.prompt_blocks), cfg.num_prompts, backbone.embed_dim))
        nn.init.uniform_(self.prompts, -bound, bound)
        self.prompt_drop = nn.Dropout(cfg.dropout)

    def initial_prompts(self, batch_size: int) -> torch.Tensor:
        return self.prompt_drop(self.prompts[0]).expand(batch_size, -1, -1)

    def block_forward(self, index: int, block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        s = self._slot.get(index)
        if index > 0 and s is not None:  # replace the previous block's prompt outputs
            p, n = self.num_prefix_tokens, self.num_prompts
            fresh = self.prompt_drop(self.prompts[s]).expand(tokens.shape[0], -1, -1).to(tokens.dtype)
            tokens = torch.cat([tokens[:, :p], fresh, tokens[:, p + n :]], dim=1)
        return block(tokens)



@register_method("vpt_shallow", VPTConfig, "VPT-shallow: N learnable prompt tokens at the input of block 0")
def inject_shallow(model: nn.Module, cfg: VPTConfig) -> nn.Module:
    """Wrap the frozen backbone; only ``prompts`` (1, N, D) train."""
    if cfg.layers is not None:
        raise ValueError("vpt_shallow prompts only block 0; 'layers' applies to vpt_deep")
    return VPTViT(model, cfg, deep=False).to(device_of(model))


@register_method("vpt_deep", VPTConfig, "VPT-deep: fresh learnable prompt tokens at the input of every block")
def inject_deep(model: nn.Module, cfg: VPTConfig) -> nn.Module:
    """Wrap the frozen backbone; only ``prompts`` (S, N, D) train."""
    return VPTViT(model, cfg, deep=True).to(device_of(model))
