"""LGViT backbones: a ViT with heterogeneous early exits (local perception heads at the shallower
exits, global aggregation heads at the deeper ones) and per-sample exit at inference.

Xu et al., ACM MM 2023 (general-vision notes, entry 14). Two-stage training:
``set_training_stage(1)`` trains the backbone and final head (exits frozen, the state after
construction); ``set_training_stage(2)`` freezes them and trains the exits with cross-entropy plus
:func:`~medvit.nn.early_exit.exit_distillation_loss` from the final classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from medvit.models.factory import register_sizes
from medvit.models.family import vit_signature
from medvit.models.vit import BlockState, VisionTransformer
from medvit.nn.early_exit import Criterion, GlobalAggregationHead, LocalPerceptionHead, should_exit
from medvit.nn.flops import block_macs, patch_embed_macs


@dataclass
class EarlyExitOutput:
    """Result of :meth:`LGViT.forward_early_exit` for a batch of B images."""

    logits: torch.Tensor  #: (B, K) logits of the exit each sample left at
    exit_index: torch.Tensor  #: (B,) exit number (0 .. num_exits-1; num_exits = the final head)
    exit_block: torch.Tensor  #: (B,) 0-based index of the last block each sample ran
    macs: torch.Tensor  #: (B,) analytic MACs spent on each sample (all exits tried included)


class LGViT(VisionTransformer):
    """ViT with early exits after ``exit_layers`` (0-based block indices, excluding the last block).

    Args:
        exit_layers: blocks followed by an exit head; None → depth/3 .. depth-2 (4..10 for 12).
        num_local_exits: how many of the first exits are local perception heads (None: half).
        exit_classes: classes of the exit heads; None → ``num_classes`` (must then be > 0).
    """

    @vit_signature
    def __init__(
        self,
        *,
        exit_layers: tuple[int, ...] | list[int] | None = None,
        num_local_exits: int | None = None,
        exit_classes: int | None = None,
        **vit_kwargs: Any,
    ):
        super().__init__(**vit_kwargs)
        depth = len(self.blocks)
        layers = tuple(range(depth // 3, depth - 1)) if exit_layers is None else tuple(int(i) for i in exit_layers)
        if not layers and exit_layers is None:
            layers = (0,) if depth > 1 else ()
        if any(not 0 <= i < depth - 1 for i in layers) or list(layers) != sorted(set(layers)):
            raise ValueError(f"exit_layers {layers} must be increasing block indices in [0, {depth - 2}]")
        k = self.num_classes if exit_classes is None else exit_classes
        if k < 1:
            if exit_layers is not None:
                raise ValueError("LGViT exits need classes: set num_classes > 0 or exit_classes")
            layers = ()  # a feature extractor (num_classes = 0) has no exits
        n_local = len(layers) // 2 if num_local_exits is None else num_local_exits
        if not 0 <= n_local <= len(layers):
            raise ValueError(f"num_local_exits must be in [0, {len(layers)}], got {n_local}")
        self.exit_layers = layers
        self.num_local_exits = n_local
        self.exits = nn.ModuleList(
            LocalPerceptionHead(self.embed_dim, k, self.spatial_dims) if j < n_local
            else GlobalAggregationHead(self.embed_dim, k)
            for j in range(len(layers))
        )
        self.training_stage = 1
        self.set_training_stage(1)

    def set_training_stage(self, stage: Literal[1, 2]) -> None:
        """1: backbone + final head trainable, exits frozen. 2: only the exit heads trainable."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        self.training_stage = stage
        for name, p in self.named_parameters():
            is_exit = name.startswith("exits.")
            frozen_pos = self.pos_embed is not None and p is self.pos_embed and self.pos_embed_kind == "sincos"
            p.requires_grad_((is_exit if stage == 2 else not is_exit) and not frozen_pos)

    def _exit_logits(self, j: int, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        head = self.exits[j]
        if isinstance(head, LocalPerceptionHead):
            return head(tokens[:, self.num_prefix_tokens :], grid)
        return head(tokens)

    def forward_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit and of the final head: list of num_exits + 1 tensors (B, K)."""
        grid = self.patch_embed.dynamic_grid(tuple(x.shape[2:]))
        outs: list[torch.Tensor] = []

        def exit_head(state: BlockState) -> None:
            if state.index in self.exit_layers:
                outs.append(self._exit_logits(self.exit_layers.index(state.index), state.tokens, grid))

        t = self.run_blocks(self.embed(x), grid=grid, on_block=exit_head).tokens
        outs.append(self.forward_head(self.norm(t)))
        return outs

    def _macs_until(self, j: int, n: int) -> int:
        """Analytic MACs when leaving at exit j (j = num_exits: the final head), all earlier exits tried."""
        D, P = self.embed_dim, self.num_prefix_tokens
        mlp_ratio = self.blocks[0].mlp.fc1.out_features / D
        last = self.exit_layers[j] if j < len(self.exits) else len(self.blocks) - 1
        total = patch_embed_macs(n, self.in_chans, self.patch_size, D) + (last + 1) * block_macs(P + n, D, mlp_ratio)
        for e in range(min(j + 1, len(self.exits))):
            head = self.exits[e]
            total += head.macs(n) if isinstance(head, LocalPerceptionHead) else head.macs(P + n)
        if j == len(self.exits):
            total += D * self.num_classes
        return total

    @torch.no_grad()
    def forward_early_exit(
        self, x: torch.Tensor, threshold: float, criterion: Criterion = "confidence"
    ) -> EarlyExitOutput:
        """Per-sample early exit: a sample leaves at the first exit meeting τ; the rest continue."""
        grid = self.patch_embed.dynamic_grid(tuple(x.shape[2:]))
        n = self.patch_embed.num_patches if tuple(grid) == self.grid_size else int(torch.tensor(grid).prod())
        B = x.shape[0]
        if self.exits and self.exits[0].head.out_features != self.num_classes:
            raise ValueError("forward_early_exit needs exit heads with the final head's num_classes")
        t = self.embed(x)
        active = torch.arange(B, device=x.device)
        logits = x.new_zeros(B, self.num_classes if self.num_classes else self.embed_dim)
        exit_index = torch.full((B,), len(self.exits), dtype=torch.long, device=x.device)
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i in self.exit_layers and active.numel():
                j = self.exit_layers.index(i)
                lg = self._exit_logits(j, t, grid)
                leave = should_exit(lg, threshold, criterion)
                logits[active[leave]] = lg[leave].to(logits.dtype)
                exit_index[active[leave]] = j
                active, t = active[~leave], t[~leave]
            if not active.numel():
                break
        if active.numel():
            logits[active] = self.forward_head(self.norm(t)).to(logits.dtype)
        blocks = [self.exit_layers[j] if j < len(self.exits) else len(self.blocks) - 1 for j in exit_index.tolist()]
        macs = torch.tensor([self._macs_until(j, n) for j in exit_index.tolist()])
        return EarlyExitOutput(logits, exit_index, torch.tensor(blocks), macs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", exit_layers={self.exit_layers}, local_exits={self.num_local_exits}"


register_sizes("lgvit_{size}_patch16_224", LGViT,
               "LGViT-{S}/16: ViT with local-perception and global-aggregation early exits", sizes=("small", "base"),
               img_size=224, patch_size=16)
