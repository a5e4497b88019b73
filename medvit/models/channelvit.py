"""ChannelViT backbones: per-channel patch tokens, channel embeddings, Hierarchical Channel Sampling.

Bao et al., ICLR 2024 (general-vision notes, entry 4). The sequence is ``[CLS] + C·N`` tokens
(channel-major); every channel's N tokens share the spatial position embedding and carry their
channel's embedding. In training mode with ``hcs=True`` one random channel subset is drawn per
batch (HCS); at test time any subset of the known channels can be given with ``channels``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from medvit.models.factory import register_sizes
from medvit.models.family import vit_signature
from medvit.models.vit import BlockState, VisionTransformer
from medvit.nn.channel_patch_embed import PerChannelPatchEmbed, hierarchical_channel_sampling
from medvit.nn.flops import patch_embed_macs, vit_macs


class ChannelViT(VisionTransformer):
    """ViT over (channel, patch) tokens.

    Args:
        hcs: sample a channel subset per batch in training mode (the paper's HCS).
        **vit_kwargs: :class:`VisionTransformer` arguments; ``in_chans`` is the channel vocabulary
            C_total (e.g. 4 MRI sequences T1/T1c/T2/FLAIR, or 3 CT windows).
    Call ``model(x, channels)`` with x (B, C, *S) and channels (B, C) or (C,) ids of the channels
    present (default: all, in order).
    """

    @vit_signature
    def __init__(self, *, hcs: bool = True, **vit_kwargs: Any):
        super().__init__(**vit_kwargs)
        pe = self.patch_embed
        self.patch_embed = PerChannelPatchEmbed(
            pe.img_size, pe.patch_size, self.in_chans, self.embed_dim, self.spatial_dims
        )
        self.hcs = hcs
        w = self.patch_embed.proj.weight
        torch.nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        torch.nn.init.zeros_(self.patch_embed.proj.bias)

    def patch_tokens(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, *S) -> (B, C·N, D): per-channel tokens + shared spatial position + channel embedding."""
        grid = self.patch_embed.dynamic_grid(tuple(x.shape[2:]))
        channels = self.patch_embed.check_channels(x, channels)
        if self.training and self.hcs:
            keep = hierarchical_channel_sampling(x.shape[1]).to(x.device)
            x, channels = x[:, keep], channels[:, keep]
        t = self.patch_embed(x, channels)
        pos = self._pos_for_grid(grid)
        if pos is not None:
            spatial = pos[:, self.num_prefix_tokens :]
            t = t + spatial.repeat(1, x.shape[1], 1)
        return t

    def embed(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, *S) -> (B, P + C'·N, D) (C' = C, or the HCS subset in training)."""
        t = self.patch_tokens(x, channels)
        t = torch.cat([self.prefix_tokens(x.shape[0]).to(t.dtype), t], dim=1)
        return self.pos_drop(t)

    def forward_features(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_tokens(self.embed(x, channels))

    def forward(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, channels))

    def forward_until(self, x: torch.Tensor, k: int, channels: torch.Tensor | None = None) -> torch.Tensor:
        """Embed (``channels`` as in :meth:`forward`) and run blocks 0..k-1: -> (B, P + C'·N, D)."""
        if not 0 <= k <= len(self.blocks):
            raise ValueError(f"k must be in [0, {len(self.blocks)}], got {k}")
        return self.run_blocks(self.embed(x, channels), 0, k).tokens

    def num_output_tokens(self, num_patches: int, num_channels: int | None = None) -> int:
        """P + C·N for ``num_channels`` channels present (default: all of them)."""
        return self.num_prefix_tokens + (self.in_chans if num_channels is None else num_channels) * num_patches

    def analytic_macs(self, num_channels: int | None = None) -> int:
        """MACs of one image with ``num_channels`` channels present (attention grows as (C·N)²)."""
        c = self.in_chans if num_channels is None else num_channels
        n = self.patch_embed.num_patches
        mlp_ratio = self.blocks[0].mlp.fc1.out_features / self.embed_dim
        pe = patch_embed_macs(c * n, 1, self.patch_size, self.embed_dim)
        t = self.num_output_tokens(n, c)
        return vit_macs([t] * len(self.blocks), self.embed_dim, mlp_ratio, num_classes=self.num_classes) + pe

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        output_fmt: Literal["NLC", "NCHW"] = "NLC",
        return_prefix_tokens: bool = False,
        channels: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """"NLC": (B, [P +] C·N, D) per block; "NCHW": the channel mean of the patch tokens (B, D, *grid)."""
        grid = self.patch_embed.dynamic_grid(tuple(x.shape[2:]))
        return self.intermediates_from(self.embed(x, channels), grid, indices, norm, output_fmt, return_prefix_tokens)

    def intermediate(
        self, tokens: torch.Tensor, state: BlockState, grid: tuple[int, ...], output_fmt: str,
        return_prefix_tokens: bool,
    ) -> torch.Tensor:
        if output_fmt != "NCHW":
            return super().intermediate(tokens, state, grid, output_fmt, return_prefix_tokens)
        B, _, D = tokens.shape
        return tokens[:, state.num_prefix :].reshape(B, -1, *grid, D).mean(1).movedim(-1, 1)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Attention probabilities of every block, (B, H, P + C'·N, P + C'·N)."""
        return self.attention_maps_from(self.embed(x, channels), self.patch_embed.dynamic_grid(tuple(x.shape[2:])))

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"patch_embed.channel_embed"}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", hcs={self.hcs}"


register_sizes("channelvit_{size}_patch16_224", ChannelViT,
               "ChannelViT-{S}/16: one token per (channel, patch), HCS in training", sizes=("tiny", "small"),
               img_size=224, patch_size=16, in_chans=3, hcs=True)
register_sizes("channelvit_{size}_patch16_96_3d", ChannelViT,
               "3D ChannelViT-{S}/16 for multi-sequence 96^3 volumes (4 sequences), sin-cos positions",
               sizes=("small",), img_size=96, patch_size=16, in_chans=4, spatial_dims=3, pos_embed="sincos", hcs=True)
