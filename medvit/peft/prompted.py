"""A frozen medvit backbone with N prompt tokens inserted between its prefix (CLS) and patch tokens.

Token layout inside the blocks: ``[prefix (P) | prompts (N) | patches (L)]``. The wrapper uses only the
backbone's public interface: ``embed`` (patch + prefix tokens with positions), ``blocks``, ``norm``,
``forward_head`` / ``fc_norm`` / ``head_drop`` / ``head`` for pooling and classification. Subclasses
(VPT, DVPT) decide what happens at each block via :meth:`PromptedViT.block_forward`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

PromptPool = Literal["backbone", "prompts"]


def block_index(i: int, depth: int) -> int:
    """Block index ``i`` (negative counts from the end) checked against ``depth``."""
    j = i + depth if i < 0 else i
    if not 0 <= j < depth:
        raise ValueError(f"layers: block index {i} out of range for a {depth}-block model")
    return j


def device_of(module: nn.Module) -> torch.device:
    """Device of a module's first parameter (CPU when it has none)."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def prompt_init_bound(backbone: nn.Module) -> float:
    """Xavier-uniform bound of VPT's prompt init: sqrt(6 / (fan_in of a patch + D))."""
    fan_in = backbone.in_chans * math.prod(backbone.patch_size)
    return math.sqrt(6.0 / float(fan_in + backbone.embed_dim))


class WrappedBackbone(nn.Module):
    """Base of PEFT wrappers around a medvit backbone (``self.backbone``): delegates its public attributes."""

    backbone: nn.Module

    # ------------------------------------------------------------------ delegated attributes
    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    @property
    def num_prefix_tokens(self) -> int:
        return self.backbone.num_prefix_tokens

    @property
    def num_classes(self) -> int:
        return self.backbone.num_classes

    @property
    def arch_name(self) -> str | None:
        return getattr(self.backbone, "arch_name", None)

    @property
    def model_args(self) -> dict[str, Any]:
        return getattr(self.backbone, "model_args", {})

    @property
    def head(self) -> nn.Module:
        return self.backbone.head

    def patch_token_slice(self, n_tokens: int) -> slice:
        """Where the backbone's patch tokens sit among the ``n_tokens`` a block sees (default: the last ones,
        after prefix and prompt tokens). Used to read per-patch attention (Hint-Aug's detector)."""
        n_patch = math.prod(self.backbone.grid_size)
        return slice(n_tokens - n_patch, n_tokens)


class PromptedViT(WrappedBackbone):
    """Backbone wrapper with ``num_prompts`` prompt tokens; same interface as the backbone.

    Args:
        backbone: a medvit ``VisionTransformer`` (frozen by :func:`medvit.peft.apply_peft`).
        num_prompts: N, prompt tokens inserted after the P prefix tokens.
        pool: "backbone" drops the prompts and pools as the backbone does (CLS or patch mean);
            "prompts" averages the prefix and prompt tokens (DVPT's released code).
    """

    def __init__(self, backbone: nn.Module, num_prompts: int, pool: PromptPool = "backbone"):
        super().__init__()
        if num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
        if pool not in ("backbone", "prompts"):
            raise ValueError(f"pool must be 'backbone' or 'prompts', got {pool!r}")
        self.backbone = backbone
        self.num_prompts = num_prompts
        self.prompt_pool = pool

    # ------------------------------------------------------------------ hooks for subclasses
    def initial_prompts(self, batch_size: int) -> torch.Tensor:
        """Prompt tokens entering block 0: -> (B, N, D)."""
        raise NotImplementedError

    def block_forward(self, index: int, block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """Run block ``index`` on ``tokens`` (B, P + N + L, D); subclasses add their per-block work."""
        return block(tokens)

    # ------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> normalised tokens (B, P + N + L, D), prompts at positions P..P+N-1."""
        t = self.backbone.embed(x)
        p = self.num_prefix_tokens
        t = torch.cat([t[:, :p], self.initial_prompts(t.shape[0]).to(t.dtype), t[:, p:]], dim=1)
        for i, blk in enumerate(self.backbone.blocks):
            t = self.block_forward(i, blk, t)
        return self.backbone.norm(t)

    def strip_prompts(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P + N + L, D) -> (B, P + L, D): the backbone's own token layout."""
        p, n = self.num_prefix_tokens, self.num_prompts
        return torch.cat([tokens[:, :p], tokens[:, p + n :]], dim=1)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, P + N + L, D) -> logits (B, K) (or pooled features (B, D) with ``pre_logits``)."""
        if self.prompt_pool == "backbone":
            return self.backbone.forward_head(self.strip_prompts(tokens), pre_logits=pre_logits)
        pooled = tokens[:, : self.num_prefix_tokens + self.num_prompts].mean(dim=1)
        pooled = self.backbone.head_drop(self.backbone.fc_norm(pooled))
        return pooled if pre_logits else self.backbone.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> logits (B, K)."""
        return self.forward_head(self.forward_features(x))
