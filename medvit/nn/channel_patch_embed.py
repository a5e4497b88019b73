"""ChannelViT patch embedding: one token per (channel, patch), a learned embedding per channel, and
Hierarchical Channel Sampling (HCS).

Bao et al., "Channel Vision Transformers: An Image Is Worth 1 x 16 x 16 Words", ICLR 2024
(general-vision notes, entry 4). A single-channel patch projection is shared by all channels, so
each input channel gives its own N patch tokens; ``channel_embed[c]`` is added to every token of
channel c. Because the projection never mixes channels, any subset of the channels seen in training
can be fed at test time (multi-sequence MRI with a missing sequence, CT with fewer windows).
"""

from __future__ import annotations

import torch
from torch import nn

from medvit.nn.patch_embed import PatchEmbed


def hierarchical_channel_sampling(num_channels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """HCS: m ~ U{1..C}, then m of the C channels without replacement -> sorted indices (m,).

    Never returns an empty set. Sampled once per batch (all images of a batch share the subset).
    """
    if num_channels < 1:
        raise ValueError(f"num_channels must be >= 1, got {num_channels}")
    m = int(torch.randint(1, num_channels + 1, (1,), generator=generator))
    return torch.randperm(num_channels, generator=generator)[:m].sort().values


class PerChannelPatchEmbed(PatchEmbed):
    """(B, C, *S) + channel ids (B, C) -> tokens (B, C·N, D), channel-major, channel embedding added.

    Args:
        img_size, patch_size, spatial_dims, embed_dim: as :class:`~medvit.nn.patch_embed.PatchEmbed`.
        in_chans: C_total, the number of distinct channels the model knows (the channel vocabulary).
    ``proj`` is a 1-input-channel convolution shared by all channels.
    """

    def __init__(
        self,
        img_size: int | tuple[int, ...] = 224,
        patch_size: int | tuple[int, ...] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        spatial_dims: int = 2,
        bias: bool = True,
    ):
        super().__init__(img_size, patch_size, 1, embed_dim, spatial_dims, bias)
        self.in_chans = in_chans
        self.channel_embed = nn.Parameter(torch.zeros(in_chans, embed_dim))
        nn.init.normal_(self.channel_embed, std=0.02)

    def check_channels(self, x: torch.Tensor, channels: torch.Tensor | None) -> torch.Tensor:
        """Validate ``channels`` for input x (B, C, *S); default arange(C) (then C must be C_total)."""
        B, C = x.shape[:2]
        if channels is None:
            if C != self.in_chans:
                raise ValueError(
                    f"got {C} channels but the model knows {self.in_chans}; pass `channels` (B, {C}) naming "
                    "which of them are present"
                )
            return torch.arange(C, device=x.device).expand(B, -1)
        channels = torch.as_tensor(channels, device=x.device)
        if channels.ndim == 1:
            channels = channels.expand(B, -1)
        if channels.shape != (B, C):
            raise ValueError(
                f"channels must have shape ({B}, {C}) for input {tuple(x.shape)}, got {tuple(channels.shape)}"
            )
        if channels.min() < 0 or channels.max() >= self.in_chans:
            raise ValueError(f"channel ids must be in [0, {self.in_chans}), got {channels.unique().tolist()}")
        return channels.long()

    def forward(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, *S), channels: (B, C) ids or None -> (B, C·N, D)."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}D tensor (B, C, spatial...), got {tuple(x.shape)}")
        channels = self.check_channels(x, channels)
        self.dynamic_grid(tuple(x.shape[2:]))
        B, C = x.shape[:2]
        t = self.proj(x.reshape(B * C, 1, *x.shape[2:])).flatten(2).transpose(1, 2)  # (B·C, N, D)
        t = t.reshape(B, C, t.shape[1], t.shape[2]) + self.channel_embed[channels][:, :, None]
        return t.reshape(B, -1, t.shape[-1])
