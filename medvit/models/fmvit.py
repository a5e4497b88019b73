"""FMViT backbones: a ViT whose blocks are multi-frequency mixing blocks (:class:`~medvit.nn.fmvit.FMBlock`).

Tan et al., arXiv 2311.05707 (general-vision notes, entry 3; code unreleased). The paper's network is
hierarchical (a convolutional stem and stages of CFBs and FMBs at falling resolution); medvit keeps
the uniform isotropic interface of its backbone family instead: patch embed (2D or 3D) → FMBlocks
on the token grid → average pool. The blocks are the paper's components (CFB convolution branch,
RLMHSA at several resolutions, gMLP), and :meth:`FMViT.reparameterize` turns the trained model into
its deployment form (same outputs in eval mode within 1e-5, tested).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medvit.models.factory import register_sizes
from medvit.models.family import vit_signature
from medvit.models.vit import VisionTransformer
from medvit.nn.flops import patch_embed_macs
from medvit.nn.fmvit import FMBlock


class FMViT(VisionTransformer):
    """Isotropic FMViT: :class:`VisionTransformer` with :class:`~medvit.nn.fmvit.FMBlock` blocks.

    Args:
        freqs: pooling rates of the low-frequency attention branches of every block.
        kernel_size: kernel of the high-frequency (depthwise re-parameterised) branch.
        reparam_groups: group counts of the multi-group 1×1 branches (gMLP re-parameterisation).
        share_kv: RLMHSA shares one key/value projection ([verify] against the paper's code).
        **vit_kwargs: :class:`VisionTransformer` arguments (``class_token`` False, ``global_pool``
            "avg" by registration). Blocks use BatchNorm: train with batches of more than one image.
    Raises:
        ValueError: as :class:`VisionTransformer`; ``freqs`` that leave no local channels.
    """

    @vit_signature
    def __init__(
        self,
        *,
        freqs: tuple[int, ...] | list[int] = (1, 2),
        kernel_size: int = 3,
        reparam_groups: tuple[int, ...] | list[int] = (1, 2),
        share_kv: bool = True,
        **vit_kwargs: Any,
    ):
        super().__init__(**vit_kwargs)
        old = self.blocks
        dpr = [getattr(b.drop_path1, "p", 0.0) for b in old]
        self.freqs = tuple(int(s) for s in freqs)
        self.blocks = nn.ModuleList(
            FMBlock(self.embed_dim, old[0].attn.num_heads, self.patch_embed.grid_size, self.freqs,
                    mlp_ratio=old[0].mlp.fc1.out_features / self.embed_dim, kernel_size=kernel_size,
                    groups=tuple(int(g) for g in reparam_groups), share_kv=share_kv, drop_path=dpr[i])
            for i in range(len(old))
        )
        self.reparameterized = False

    def reparameterize(self) -> FMViT:
        """Fuse every block into its inference form in place (puts the model in eval mode); returns self.

        Afterwards the state dict has the fused layout: save the training form for fine-tuning.
        """
        self.eval()
        for blk in self.blocks:
            blk.reparameterize()
        self.reparameterized = True
        return self

    def analytic_macs(self, num_patches: int | None = None) -> int:
        """MACs of one image in the current form (training or re-parameterised): patch embed + blocks + head.

        ``num_patches`` must be the training grid's count (FMBlocks need the grid shape). Raises ValueError otherwise.
        """
        n = self.patch_embed.num_patches
        if num_patches is not None and num_patches != n:
            raise ValueError(f"FMViT.analytic_macs counts the training grid ({n} patches), got {num_patches}")
        pe = patch_embed_macs(n, self.in_chans, self.patch_size, self.embed_dim)
        return pe + sum(b.macs() for b in self.blocks) + self.embed_dim * self.num_classes

    def extra_repr(self) -> str:
        return super().extra_repr() + f", freqs={self.freqs}, reparameterized={self.reparameterized}"


register_sizes("fmvit_{size}_patch16_224", FMViT,
               "FMViT-{S}/16 (isotropic): multi-frequency mixing blocks, re-parameterisable", sizes=("tiny", "small"),
               img_size=224, patch_size=16, class_token=False, global_pool="avg", freqs=(1, 2))
register_sizes("fmvit_{size}_patch16_96_3d", FMViT,
               "3D FMViT-{S}/16 (isotropic) for 96^3 volumes, 1 channel, sin-cos positions", sizes=("small",),
               img_size=96, patch_size=16, in_chans=1, spatial_dims=3, pos_embed="sincos", class_token=False,
               global_pool="avg", freqs=(1, 2))
