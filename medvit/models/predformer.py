"""PredFormer: a recurrence-free spatio-temporal predictor built from gated space-time blocks.

Tang et al. (general-vision notes, entry 24). Input and output are clips (B, T, C, *S) with S 2D
(cine MRI, ultrasound) or 3D (a volume per time point): per-frame patch embedding, a fixed
sinusoidal position embedding over the T·N tokens, the blocks of the chosen variant, a LayerNorm
and a linear head mapping every token back to its patch — the prediction of the next T frames.

It is a sequence-to-sequence model, not a classifier, so it is not a registered ``backbone`` (the
uniform backbone interface and its registry tests do not apply); create it directly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medvit.nn.init import mae_init_
from medvit.nn.patch_embed import PatchEmbed
from medvit.nn.spacetime import SpaceTimeBlock, variant_pattern


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """Fixed 1D sinusoidal table (length, dim): [sin(p·ω_i) | cos(p·ω_i)], ω_i = 10000^(−2i/dim)."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    omega = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)[None]
    return torch.cat([torch.sin(pos * omega), torch.cos(pos * omega)], dim=1).float()


class PredFormer(nn.Module):
    """Clip (B, T, C, *S) -> predicted clip (B, T, C, *S).

    Args:
        img_size, patch_size, in_chans, spatial_dims: frame geometry (as the ViT patch embed).
        frames: T, the number of input (and predicted) frames.
        embed_dim, num_heads, depth, mlp_ratio: GTB shape; ``depth`` repeats the variant's unit.
        variant: a key of :data:`medvit.nn.spacetime.VARIANTS` ("full", "fac_st", "quadruplet_tsst", …).
        drop_path_rate: stochastic depth, rising linearly over the blocks.
    """

    def __init__(
        self,
        img_size: int | tuple[int, ...] = 64,
        patch_size: int | tuple[int, ...] = 8,
        in_chans: int = 1,
        frames: int = 10,
        embed_dim: int = 256,
        num_heads: int = 8,
        depth: int = 6,
        mlp_ratio: float = 4.0,
        variant: str = "quadruplet_tsst",
        spatial_dims: int = 2,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.pattern = variant_pattern(variant, depth)
        self.variant = variant
        self.frames = frames
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, spatial_dims)
        n = self.patch_embed.num_patches
        self.register_buffer("pos_embed", sinusoid_table(frames * n, embed_dim).reshape(1, frames, n, embed_dim),
                             persistent=False)
        L = len(self.pattern)
        self.blocks = nn.ModuleList(
            SpaceTimeBlock(a, embed_dim, num_heads, mlp_ratio, drop_path=drop_path_rate * i / max(L - 1, 1))
            for i, a in enumerate(self.pattern)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, in_chans * math.prod(self.patch_embed.patch_size))
        for m in self.modules():
            mae_init_(m)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        pe = self.patch_embed
        if clip.ndim != pe.spatial_dims + 3 or clip.shape[1] != self.frames:
            raise ValueError(
                f"expected a clip (B, {self.frames}, C, {pe.spatial_dims} spatial axes), got {tuple(clip.shape)}"
            )
        B, T, C = clip.shape[:3]
        grid = pe.dynamic_grid(tuple(clip.shape[3:]))
        if tuple(grid) != tuple(pe.grid_size):
            raise ValueError(f"frame size {tuple(clip.shape[3:])} differs from the model's {pe.img_size}")
        t = pe(clip.reshape(B * T, C, *clip.shape[3:])).reshape(B, T, pe.num_patches, -1) + self.pos_embed
        for blk in self.blocks:
            t = blk(t)
        return self.unpatchify(self.head(self.norm(t)), C)

    def unpatchify(self, patches: torch.Tensor, channels: int) -> torch.Tensor:
        """(B, T, N, C·prod(p)) -> (B, T, C, *S), the inverse of the patch layout (row-major grid)."""
        B, T, N, _ = patches.shape
        g, p = self.patch_embed.grid_size, self.patch_embed.patch_size
        nd = len(g)
        x = patches.reshape(B, T, *g, channels, *p)
        # (B, T, g1..gd, C, p1..pd) -> (B, T, C, g1, p1, ..., gd, pd)
        order = [0, 1, 2 + nd] + [a for i in range(nd) for a in (2 + i, 3 + nd + i)]
        x = x.permute(*order)
        return x.reshape(B, T, channels, *(gi * pi for gi, pi in zip(g, p)))
