"""LookupViT backbones: M compressed tokens (bilinear downsample of the patch grid) exchange
information with the N full-resolution lookup tokens in every block (ECCV'24, notes entry 21).

``forward_features`` returns the normalised lookup tokens (B, N, D), so dense decoders and the
uniform interface see a patch-token map; the classifier averages them (they received the compressed
tokens' information in the last block). [verify] which tokens the paper's classifier pools.
``attention_maps`` returns each block's gather attention, compressed ← lookup: (B, H, M, N).
``forward_until(x, k)`` returns both token sets, (B, N + M, D) lookup then compressed, which
``forward_from`` splits again.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvit.models.factory import register_sizes
from medvit.models.family import vit_signature
from medvit.models.vit import BlockState, VisionTransformer
from medvit.nn.flops import patch_embed_macs
from medvit.nn.init import mae_init_
from medvit.nn.lookup_block import LookupBlock


class LookupViT(VisionTransformer):
    """ViT whose blocks are :class:`~medvit.nn.lookup_block.LookupBlock` (no class token, avg pool).

    Args:
        compressed_grid: side(s) of the compressed-token grid; None → 7 per axis (the paper's 7×7),
            capped at the patch grid.
        lookup_mlp_ratio: MLP expansion of the lookup tokens.
        **vit_kwargs: :class:`VisionTransformer` arguments (``class_token`` False, ``global_pool``
            "avg" by registration).
    """

    plain_blocks = False

    @vit_signature
    def __init__(
        self,
        *,
        compressed_grid: int | tuple[int, ...] | None = None,
        lookup_mlp_ratio: float = 1.0,
        **vit_kwargs: Any,
    ):
        super().__init__(**vit_kwargs)
        grid = self.patch_embed.grid_size
        if compressed_grid is None:
            cg = tuple(min(7, g) for g in grid)
        else:
            cg = (compressed_grid,) * len(grid) if isinstance(compressed_grid, int) else tuple(compressed_grid)
        if len(cg) != len(grid) or any(not 1 <= c <= g for c, g in zip(cg, grid)):
            raise ValueError(f"compressed_grid {compressed_grid!r} must be {len(grid)} sides in [1, patch grid {grid}]")
        if lookup_mlp_ratio <= 0:
            raise ValueError(f"lookup_mlp_ratio must be > 0, got {lookup_mlp_ratio}")
        self.compressed_grid = cg
        old = self.blocks
        dpr = [getattr(b.drop_path1, "p", 0.0) for b in old]
        self.blocks = nn.ModuleList(
            LookupBlock(
                self.embed_dim, old[0].attn.num_heads, old[0].mlp.fc1.out_features / self.embed_dim,
                lookup_mlp_ratio, qkv_bias=old[0].attn.qkv.bias is not None, drop_path=dpr[i],
                norm_eps=old[0].norm1.eps,
            )
            for i in range(len(old))
        )
        for m in self.blocks.modules():
            mae_init_(m)

    def compress(self, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Lookup tokens (B, N, D) on ``grid`` -> compressed tokens (B, M, D) by (bi/tri)linear resize."""
        B, N, D = tokens.shape
        t = tokens.transpose(1, 2).reshape(B, D, *grid)
        mode = "bilinear" if len(grid) == 2 else "trilinear"
        return F.interpolate(t, size=self.compressed_grid, mode=mode, align_corners=False).flatten(2).transpose(1, 2)

    def _grid_of(self, n: int) -> tuple[int, ...]:
        if n == self.patch_embed.num_patches:
            return self.patch_embed.grid_size
        raise ValueError(
            f"LookupViT.forward_tokens got {n} tokens but the grid has {self.patch_embed.num_patches}; "
            "call forward_features(x) for other input sizes"
        )

    def walk_start(self, tokens: torch.Tensor, start: int = 0, grid: tuple[int, ...] | None = None,
                   carried: bool = False, **kwargs: Any) -> BlockState:
        """Lookup tokens (B, N, D) on ``grid`` (None: the training grid) and their compressed tokens (B, M, D).

        ``carried``: ``tokens`` is (B, N + M, D), the lookup tokens followed by the compressed tokens of a
        split walk (:meth:`forward_until`); a walk without them starts at block 0 and compresses ``tokens``.
        Raises ValueError for a later start without carried tokens, or carried tokens not longer than M.
        """
        if carried:
            m = self.num_compressed
            if tokens.shape[1] <= m:
                raise ValueError(f"LookupViT carried tokens must be (B, N + {m}, D) (lookup then compressed), "
                                 f"got {tuple(tokens.shape)}")
            return BlockState(start - 1, tokens[:, :-m], 0, aux=tokens[:, -m:])
        if start:
            raise ValueError("LookupViT blocks carry two token sets; a walk from block > 0 needs the "
                             "tokens of forward_until (lookup + compressed)")
        grid = self._grid_of(tokens.shape[1]) if grid is None else grid
        return BlockState(-1, tokens, 0, aux=self.compress(tokens, grid))

    @property
    def num_compressed(self) -> int:
        """M, the number of compressed tokens (product of ``compressed_grid``)."""
        m = 1
        for c in self.compressed_grid:
            m *= c
        return m

    def block_step(self, state: BlockState, i: int, attention: bool = False, **kwargs: Any) -> BlockState:
        """Block i on both token sets; ``attention``: the gather attention (B, H, M, N), rows sum to 1."""
        x, z, logits = self.blocks[i].forward_with_attention(state.tokens, state.aux)
        return BlockState(i, x, 0, logits.softmax(dim=-1) if attention else None, aux=z)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> normalised lookup tokens (B, N, D) (any size divisible by the patch)."""
        grid = self.patch_embed.dynamic_grid(tuple(x.shape[2:]))
        return self.norm(self.run_blocks(self.embed(x), grid=grid).tokens)

    def forward_until(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Embed and run blocks 0..k-1 (no final norm): (B, C, *S) -> (B, N + M, D), the N lookup tokens
        followed by the M compressed tokens (both sets flow between blocks; :meth:`forward_from` splits them).
        k = 0: the embedding and its bilinear compression. Raises ValueError for k outside [0, depth]."""
        if not 0 <= k <= len(self.blocks):
            raise ValueError(f"k must be in [0, {len(self.blocks)}], got {k}")
        grid = self.patch_embed.dynamic_grid(tuple(x.shape[2:]))
        state = self.run_blocks(self.embed(x), 0, k, grid=grid)
        return torch.cat([state.tokens, state.aux], dim=1)

    def forward_from(self, tokens: torch.Tensor, k: int) -> torch.Tensor:
        """Blocks k.. and the final norm on :meth:`forward_until`'s (B, N + M, D) -> lookup tokens (B, N, D);
        ``forward_from(forward_until(x, k), k)`` is ``forward_features(x)`` exactly."""
        if not 0 <= k <= len(self.blocks):
            raise ValueError(f"k must be in [0, {len(self.blocks)}], got {k}")
        return self.norm(self.run_blocks(tokens, k, carried=True).tokens)

    def analytic_macs(self, num_patches: int | None = None) -> int:
        """MACs of one image: patch embed + blocks (linear in N for a fixed compressed grid) + head."""
        n = self.patch_embed.num_patches if num_patches is None else num_patches
        m = self.num_compressed
        pe = patch_embed_macs(n, self.in_chans, self.patch_size, self.embed_dim)
        return pe + sum(b.macs(n, m) for b in self.blocks) + self.embed_dim * self.num_classes

    def extra_repr(self) -> str:
        return super().extra_repr() + f", compressed_grid={self.compressed_grid}"


register_sizes("lookupvit_{size}_patch16_224", LookupViT,
               "LookupViT-{S}/16: 7x7 compressed tokens, bidirectional cross-attention", sizes=("small", "base"),
               img_size=224, patch_size=16, class_token=False, global_pool="avg")
