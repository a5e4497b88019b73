"""ConViT backbones: the first blocks use gated positional self-attention (GPSA) on patch tokens only.

d'Ascoli et al., ICML 2021 (general-vision notes, entry 17; written from the paper's equations, the
official file is CC-BY-NC). Blocks ``0 .. local_up_to_layer-1`` are :class:`~medvit.nn.gpsa.GPSABlock`
on the N patch tokens; the CLS token is concatenated just before block ``local_up_to_layer``, and the
remaining blocks are plain ViT blocks. The CLS token keeps the base class's position slot (a learned
constant added to a learned token: the same function class as the paper's CLS without a slot).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from medvit.models.factory import register_backbone
from medvit.models.family import vit_signature
from medvit.models.vit import VisionTransformer, intermediate_output
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

    def _blocks(self, t: torch.Tensor, start: int, stop: int, maps: list[torch.Tensor] | None = None) -> torch.Tensor:
        for i in range(start, stop):
            if i == self.local_up_to_layer:
                t = torch.cat([self.prefix_tokens(t.shape[0]).to(t.dtype), t], dim=1)
            if maps is None:
                t = self.blocks[i](t)
            else:
                t, a = self.blocks[i].forward_with_attention(t)
                maps.append(a)
        return t

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, D) -> normalised (B, 1 + N, D) (the CLS token joins on the way)."""
        return self.norm(self._blocks(tokens, 0, len(self.blocks)))

    def forward_until(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Blocks 0..k-1: (B, N, D) while k ≤ ``local_up_to_layer``, else (B, 1 + N, D)."""
        if not 0 <= k <= len(self.blocks):
            raise ValueError(f"k must be in [0, {len(self.blocks)}], got {k}")
        return self._blocks(self.embed(x), 0, k)

    def forward_from(self, tokens: torch.Tensor, k: int) -> torch.Tensor:
        if not 0 <= k <= len(self.blocks):
            raise ValueError(f"k must be in [0, {len(self.blocks)}], got {k}")
        return self.norm(self._blocks(tokens, k, len(self.blocks)))

    # ------------------------------------------------------------------ introspection
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        output_fmt: Literal["NLC", "NCHW"] = "NLC",
        return_prefix_tokens: bool = False,
    ) -> list[torch.Tensor]:
        """Outputs of the chosen blocks; GPSA blocks have no prefix token to return."""
        wanted = self._resolve_indices(indices)
        grid = self.patch_embed.dynamic_grid(tuple(x.shape[2:]))
        t = self.embed(x)
        outs = []
        for i in range(max(wanted) + 1):
            t = self._blocks(t, i, i + 1)
            if i in wanted:
                o = self.norm(t) if norm else t
                p = self.num_prefix_tokens if i >= self.local_up_to_layer else 0
                outs.append(intermediate_output(o, grid, p, output_fmt, return_prefix_tokens))
        return outs

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Attention of every block: (B, H, N, N) for GPSA blocks, (B, H, 1 + N, 1 + N) after."""
        maps: list[torch.Tensor] = []
        self._blocks(self.embed(x), 0, len(self.blocks), maps)
        return maps

    def extra_repr(self) -> str:
        return super().extra_repr() + f", local_up_to_layer={self.local_up_to_layer}"


_SIZES = {  # 48 dims per head, heads a perfect square (paper Table 1)
    "tiny": dict(embed_dim=192, depth=12, num_heads=4),
    "small": dict(embed_dim=432, depth=12, num_heads=9),
    "base": dict(embed_dim=768, depth=12, num_heads=16),
}
for _size, _shape in _SIZES.items():
    register_backbone(
        f"convit_{_size}_patch16_224", ConViT,
        description=f"ConViT-{_size[0].upper()}/16: 10 GPSA blocks (locality prior) then 2 ViT blocks",
        img_size=224, patch_size=16, qkv_bias=False, **_shape,
    )
register_backbone(
    "convit_small_patch16_96_3d", ConViT,
    description="3D ConViT-S/16 for 96^3 volumes: 10 GPSA blocks with (Δx, Δy, Δz) offsets, 8 heads, sin-cos positions",
    img_size=96, patch_size=16, in_chans=1, spatial_dims=3, pos_embed="sincos", qkv_bias=False,
    embed_dim=384, depth=12, num_heads=8,
)
