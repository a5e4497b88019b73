"""Structurally pruned ViT (NViT, Yang et al., CVPR'23): per-block head counts and MLP widths, any embedding width.

A :class:`~medvit.models.vit.VisionTransformer` whose block i has ``block_heads[i]`` heads of width ``head_dim``
(inner width ``block_heads[i]·head_dim``, independent of ``embed_dim``) and an MLP of ``block_mlp[i]`` hidden
units. ``medvit.compress.prune`` writes the shapes it keeps into these arguments, so a pruned model is an
ordinary checkpoint (``config.json`` ``model_args`` records the shapes; ``load_model`` rebuilds it). Without
``block_heads`` / ``block_mlp`` it is the plain ViT. When ``block_heads`` is given, ``num_heads`` is unused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from medvit.models.factory import register_backbone
from medvit.models.family import vit_signature
from medvit.models.vit import VisionTransformer
from medvit.nn import Block
from medvit.nn.init import mae_init_


class PrunedViT(VisionTransformer):
    """ViT with per-block ``block_heads`` (each ≥ 1), ``head_dim`` and ``block_mlp`` (each ≥ 1) widths."""

    @vit_signature
    def __init__(self, *, block_heads: Sequence[int] | None = None, head_dim: int | None = None,
                 block_mlp: Sequence[int] | None = None, **vit_kwargs: Any):
        depth = int(vit_kwargs.get("depth", 12))
        for name, v in (("block_heads", block_heads), ("block_mlp", block_mlp)):
            if v is not None and (len(v) != depth or any(int(n) < 1 for n in v)):
                raise ValueError(f"{name} must list {depth} positive widths (one per block), got {list(v)}")
        if block_heads is not None and (head_dim is None or int(head_dim) < 1):
            raise ValueError(f"block_heads needs a positive head_dim, got {head_dim!r}")
        if block_heads is not None:
            vit_kwargs["num_heads"] = 1  # per-block counts replace it (embed_dim need not divide by it)
        super().__init__(**vit_kwargs)
        self.block_heads = list(block_heads) if block_heads is not None else None
        self.head_dim = head_dim
        self.block_mlp = list(block_mlp) if block_mlp is not None else None
        if block_heads is None and block_mlp is None:
            return
        dim, old = self.embed_dim, self.blocks
        new = []
        for i, b in enumerate(old):
            nb = Block(dim, block_heads[i] if block_heads is not None else b.attn.num_heads,
                       qkv_bias=b.attn.qkv.bias is not None, attn_drop=b.attn.attn_drop,
                       drop=b.attn.proj_drop.p, drop_path=getattr(b.drop_path1, "p", 0.0),
                       init_values=b.ls1.gamma.flatten()[0].item() if hasattr(b.ls1, "gamma") else None,
                       norm_eps=b.norm1.eps, head_dim=head_dim if block_heads is not None else b.attn.head_dim,
                       mlp_hidden=block_mlp[i] if block_mlp is not None else b.mlp.fc1.out_features)
            for m in nb.modules():
                mae_init_(m)
            new.append(nb)
        self.blocks = nn.ModuleList(new)


register_backbone("vit_pruned", PrunedViT, description="structurally pruned ViT (NViT): per-block heads / MLP "
                  "widths recorded in config.json; defaults = ViT-S/16", img_size=224, patch_size=16, embed_dim=384,
                  depth=12, num_heads=6)
