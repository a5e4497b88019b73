"""ConViT backbones: the first blocks use gated positional self-attention (GPSA) on patch tokens only.

d'Ascoli et al., ICML 2021 (general-vision notes, entry 17; written from the paper's equations, the
official file is CC-BY-NC). Blocks ``0 .. local_up_to_layer-1`` are :class:`~medvit.nn.gpsa.GPSABlock`
on the N patch tokens; the CLS token is concatenated just before block ``local_up_to_layer``, and the
remaining blocks are plain ViT blocks. The CLS token keeps the base class's position slot (a learned
constant added to a learned token: the same function class as the paper's CLS without a slot).
"""

from __future__ import annotations

from typing import Any

import torch

from medvit.models.factory import register_backbone, register_sizes
from medvit.models.family import vit_signature
from medvit.models.vit import BlockState, VisionTransformer
from medvit.nn.gpsa import GPSABlock, head_offsets
from medvit.nn.init import mae_init_


class ConViT(VisionTransformer):
    """ViT whose first ``local_up_to_layer`` blocks are GPSA blocks (2D, or 3D with (Δx, Δy, Δz) offsets).

    Args:
        local_up_to_layer: number of GPSA blocks; None → ⌊10·depth/12⌋ (10 of 12, the paper's).
            Must be < depth (the CLS token joins before the first non-local block).
        locality_strength: α of the GPSA local init.
        **vit_kwargs: :class:`VisionTransformer` arguments; ``num_heads`` must be a perfect square
            (2D) or cube (3D, e.g. 8 or 27).
    """

    plain_blocks = False

    @vit_signature
    def __init__(
        self,
        *,
        local_up_to_layer: int | None = None,
        locality_strength: float = 1.0,
        **vit_kwargs: Any,
    ):
        super().__init__(**vit_kwargs)
        if not self.num_prefix_tokens:
            raise ValueError("ConViT concatenates a CLS token after the GPSA blocks; it needs class_token=True")
        depth = len(self.blocks)
        n_local = (10 * depth) // 12 if local_up_to_layer is None else int(local_up_to_layer)
        if not 0 <= n_local < depth:
            raise ValueError(f"local_up_to_layer must be in [0, {depth - 1}] for depth {depth}, got {n_local}")
        first = self.blocks[0]
        heads = first.attn.num_heads
        head_offsets(heads, self.spatial_dims)  # raises unless heads is a perfect square (2D) / cube (3D)
        self.local_up_to_layer = n_local
        for i in range(n_local):
            old = self.blocks[i]
            blk = GPSABlock(
                self.embed_dim, heads, self.patch_embed.grid_size,
                mlp_ratio=old.mlp.fc1.out_features / self.embed_dim,
                qkv_bias=old.attn.qkv.bias is not None,
                drop=old.mlp.drop1.p,
                attn_drop=old.attn.attn_drop,
                drop_path=getattr(old.drop_path1, "p", 0.0),
                init_values=float(old.ls1.gamma[0]) if hasattr(old.ls1, "gamma") else None,
                norm_eps=old.norm1.eps,
                locality_strength=locality_strength,
            )
            for m in blk.modules():
                mae_init_(m)
            blk.attn.local_init_()
            self.blocks[i] = blk

    # ------------------------------------------------------------------ stages
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> patch tokens with positions, no CLS: (B, C, *S) -> (B, N, D)."""
        return self.pos_drop(self.patch_tokens(x))

    def walk_start(self, tokens: torch.Tensor, start: int = 0, grid: tuple[int, ...] | None = None,
                   **kwargs: Any) -> BlockState:
        """Before block ``local_up_to_layer`` the tokens are patch tokens only (no prefix)."""
        return BlockState(start - 1, tokens, self.num_prefix_tokens if start > self.local_up_to_layer else 0)

    def block_step(self, state: BlockState, i: int, attention: bool = False, **kwargs: Any) -> BlockState:
        """Block i; the CLS token is concatenated just before block ``local_up_to_layer``.

        Tokens: (B, N, D) while i < ``local_up_to_layer``, else (B, 1 + N, D); GPSA attention (B, H, N, N).
        """
        t = state.tokens
        if i == self.local_up_to_layer:
            t = torch.cat([self.prefix_tokens(t.shape[0]).to(t.dtype), t], dim=1)
        P = self.num_prefix_tokens if i >= self.local_up_to_layer else 0
        if attention:
            t, probs = self.blocks[i].forward_with_attention(t)
            return BlockState(i, t, P, probs)
        return BlockState(i, self.blocks[i](t), P)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", local_up_to_layer={self.local_up_to_layer}"


_SIZES = {  # 48 dims per head, heads a perfect square (paper Table 1)
    "tiny": dict(embed_dim=192, depth=12, num_heads=4),
    "small": dict(embed_dim=432, depth=12, num_heads=9),
    "base": dict(embed_dim=768, depth=12, num_heads=16),
}
register_sizes("convit_{size}_patch16_224", ConViT, "ConViT-{S}/16: 10 GPSA blocks (locality prior) then 2 ViT blocks",
               sizes=_SIZES, img_size=224, patch_size=16, qkv_bias=False)
register_backbone(
    "convit_small_patch16_96_3d", ConViT,
    description="3D ConViT-S/16 for 96^3 volumes: 10 GPSA blocks with (Δx, Δy, Δz) offsets, 8 heads, sin-cos positions",
    img_size=96, patch_size=16, in_chans=1, spatial_dims=3, pos_embed="sincos", qkv_bias=False,
    embed_dim=384, depth=12, num_heads=8,
)
