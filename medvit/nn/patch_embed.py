"""Image → patch tokens with a strided convolution, 2D or 3D."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import nn


def to_tuple(v: int | tuple[int, ...] | list[int], n: int, what: str) -> tuple[int, ...]:
    """Broadcast an int to an n-tuple, or check a sequence has n entries; each side a positive int (an integral
    float such as ``224.0`` is taken). :class:`ValueError` starting with ``what`` otherwise (``img_size: -32``)."""
    def side(i: Any) -> int:
        if (isinstance(i, bool) or not isinstance(i, (numbers.Integral, float))
                or (isinstance(i, float) and not (math.isfinite(i) and i.is_integer())) or i < 1):
            raise ValueError(f"{what} must be a positive int or {n} positive ints for spatial_dims={n}, got {v!r}")
        return int(i)

    if isinstance(v, (numbers.Number, str)) or not isinstance(v, (tuple, list, torch.Size)):
        return (side(v),) * n
    t = tuple(side(i) for i in v)
    if len(t) != n:
        raise ValueError(f"{what} must be an int or {n} ints for spatial_dims={n}, got {v!r}")
    return t


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping patches and project each to ``embed_dim``.

    2D: (B, C, H, W) -> (B, H/p * W/p, D); 3D: (B, C, D, H, W) -> (B, N, D). Tokens are in row-major
    (H-outer) order. Inputs of another size than ``img_size`` are accepted when each side is a
    multiple of the patch size (the caller resamples position embeddings).
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
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        self.spatial_dims = spatial_dims
        self.img_size = to_tuple(img_size, spatial_dims, "img_size")
        self.patch_size = to_tuple(patch_size, spatial_dims, "patch_size")
        for s, p in zip(self.img_size, self.patch_size):
            if p < 1 or s % p != 0:
                raise ValueError(
                    f"patch_size {self.patch_size} must divide img_size {self.img_size}; "
                    "pick a patch size that divides each side"
                )
        self.grid_size = tuple(s // p for s, p in zip(self.img_size, self.patch_size))
        self.num_patches = math.prod(self.grid_size)
        self.in_chans = in_chans
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.proj = conv(in_chans, embed_dim, self.patch_size, self.patch_size, bias=bias)

    def dynamic_grid(self, spatial_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Token grid for an input of ``spatial_shape``; raises if the patch size does not divide it."""
        if len(spatial_shape) != self.spatial_dims:
            raise ValueError(
                f"expected a {self.spatial_dims}D image (B, C, {'D, ' if self.spatial_dims == 3 else ''}H, W), "
                f"got spatial shape {tuple(spatial_shape)}"
            )
        for s, p in zip(spatial_shape, self.patch_size):
            if s % p != 0:
                raise ValueError(
                    f"input size {tuple(spatial_shape)} is not a multiple of patch size {self.patch_size}; "
                    "resize or pad the image"
                )
        return tuple(s // p for s, p in zip(spatial_shape, self.patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *spatial) -> (B, N, D)."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"expected a {self.spatial_dims + 2}D tensor (B, C, spatial...), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_chans:
            raise ValueError(f"model expects {self.in_chans} input channels, got {x.shape[1]}")
        self.dynamic_grid(tuple(x.shape[2:]))
        return self.proj(x).flatten(2).transpose(1, 2)
