"""Dynamic-resolution tiling (InternLM-XComposer2-4KHD): aspect-preserving tile grid + global view.

Dong et al., "InternLM-XComposer2-4KHD", 2024 (general-vision notes, entry 25). For a W×H image:

1. transpose a portrait image to landscape; r = W / H;
2. pick the largest scale s with s·⌈s / r⌉ ≤ hd_num;
3. resize the width to tile·s keeping the aspect ratio (height ⌊tile·s / r⌋), pad the height
   (centred) to a multiple of ``tile``; that gives a grid of tile×tile crops;
4. add a global tile×tile view; transpose back if the image was portrait.

After the encoder, :class:`TileTokenLayout` merges 2×2 neighbouring tokens by channel concatenation
and lays the tokens out in reading order with a learnable newline token after every token row and a
separator between the global and the local part. For mammography / large DX the crops keep full
detail while the global view keeps context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TileLayout:
    """Geometry of one image's tiling (sizes in pixels, in the image's own orientation)."""

    transposed: bool  #: the image was portrait and was tiled transposed
    scale: int  #: s, tiles along the long side
    resized_hw: tuple[int, int]  #: size after the aspect-preserving resize, before padding
    padded_hw: tuple[int, int]  #: size after padding, multiples of ``tile``
    rows: int  #: tile rows of the padded image
    cols: int  #: tile columns of the padded image
    tile: int  #: tile side

    @property
    def num_crops(self) -> int:
        return self.rows * self.cols


def hd_layout(height: int, width: int, hd_num: int = 16, tile: int = 336) -> TileLayout:
    """The 4KHD tile layout of an ``height``×``width`` image (pure function; see the module doc).

    Raises:
        ValueError: non-positive sizes, ``hd_num`` < 1 or ``tile`` < 1.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if hd_num < 1 or tile < 1:
        raise ValueError(f"hd_num and tile must be >= 1, got hd_num={hd_num}, tile={tile}")
    transposed = width < height
    w, h = (height, width) if transposed else (width, height)
    ratio = w / h
    s = 1
    while (s + 1) * math.ceil((s + 1) / ratio) <= hd_num:
        s += 1
    new_w = tile * s
    new_h = max(1, int(new_w / ratio))
    pad_h = math.ceil(new_h / tile) * tile
    rows, cols = pad_h // tile, s
    if transposed:
        return TileLayout(True, s, (new_w, new_h), (new_w, pad_h), cols, rows, tile)
    return TileLayout(False, s, (new_h, new_w), (pad_h, new_w), rows, cols, tile)


def hd_tiles(
    image: torch.Tensor, hd_num: int = 16, tile: int = 336, pad_value: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, TileLayout]:
    """Tile one image: (C, H, W) -> (global view (C, tile, tile), crops (rows·cols, C, tile, tile), layout).

    Crops are in row-major order of the (possibly transposed-back) padded image. ``pad_value`` fills
    the padding (the paper pads with white; 0 suits intensity-normalised radiographs).
    """
    if image.ndim != 3:
        raise ValueError(f"expected one image (C, H, W), got shape {tuple(image.shape)}")
    C, H, W = image.shape
    lay = hd_layout(H, W, hd_num, tile)
    x = image.float()[None]
    resized = F.interpolate(x, size=lay.resized_hw, mode="bilinear", align_corners=False, antialias=True)
    ph, pw = lay.padded_hw[0] - lay.resized_hw[0], lay.padded_hw[1] - lay.resized_hw[1]
    padded = F.pad(resized, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], value=pad_value)[0]
    crops = padded.reshape(C, lay.rows, tile, lay.cols, tile).permute(1, 3, 0, 2, 4).reshape(-1, C, tile, tile)
    glob = F.interpolate(x, size=(tile, tile), mode="bilinear", align_corners=False, antialias=True)[0]
    return glob, crops, lay


def merge_2x2(tokens: torch.Tensor) -> torch.Tensor:
    """Concatenate the channels of 2×2 neighbouring tokens: (B, h, w, D) -> (B, h/2, w/2, 4D)."""
    B, h, w, D = tokens.shape
    if h % 2 or w % 2:
        raise ValueError(f"token grid {h}x{w} must have even sides for the 2x2 merge")
    t = tokens.reshape(B, h // 2, 2, w // 2, 2, D).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(B, h // 2, w // 2, 4 * D)


class TileTokenLayout(nn.Module):
    """Lay out global-view and crop tokens as one sequence with newline and separator tokens.

    ``forward(global_tokens (g, g, D), crop_tokens (rows·cols, g, g, D), layout)`` ->
    ``(g·(g + 1) + 1 + rows·g·(cols·g + 1), D)``: the global grid with a newline after each token
    row, the separator, then the crops stitched into one (rows·g)×(cols·g) grid with a newline after
    each token row.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.newline = nn.Parameter(torch.zeros(dim))
        self.separator = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.newline, std=0.02)
        nn.init.normal_(self.separator, std=0.02)

    def _rows_with_newlines(self, grid: torch.Tensor) -> torch.Tensor:
        h, w, D = grid.shape
        nl = self.newline.to(grid.dtype).expand(h, 1, D)
        return torch.cat([grid, nl], dim=1).reshape(h * (w + 1), D)

    def forward(self, global_tokens: torch.Tensor, crop_tokens: torch.Tensor, layout: TileLayout) -> torch.Tensor:
        n, gh, gw, D = crop_tokens.shape
        if n != layout.num_crops:
            raise ValueError(f"got {n} crops' tokens for a layout of {layout.rows}x{layout.cols} crops")
        big = crop_tokens.reshape(layout.rows, layout.cols, gh, gw, D).permute(0, 2, 1, 3, 4)
        big = big.reshape(layout.rows * gh, layout.cols * gw, D)
        sep = self.separator.to(global_tokens.dtype)[None]
        return torch.cat([self._rows_with_newlines(global_tokens), sep, self._rows_with_newlines(big)], dim=0)

    @staticmethod
    def num_tokens(tokens_per_side: int, layout: TileLayout) -> int:
        """Sequence length for g = ``tokens_per_side`` tokens per crop side."""
        g = tokens_per_side
        return g * (g + 1) + 1 + layout.rows * g * (layout.cols * g + 1)
