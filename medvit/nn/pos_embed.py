"""Position embeddings: fixed sin-cos tables (2D/3D, MAE layout) and resampling to a new grid."""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """pos: (M,) -> (M, dim) as [sin(pos·ω) | cos(pos·ω)], ω_i = 1/10000^(i/(dim/2))."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding dim must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.double().reshape(-1)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_pos_embed(embed_dim: int, grid_size: tuple[int, ...], num_prefix_tokens: int = 0) -> torch.Tensor:
    """Fixed sin-cos table, (num_prefix + prod(grid), D), prefix rows zero.

    2D follows MAE: half of D encodes the column (w) index, half the row (h) index, laid out as
    [sin_w | cos_w | sin_h | cos_h], tokens in row-major (H-outer) order. 3D splits D into three
    even parts for (w, h, d) in that order, tokens D-outer.
    """
    n = len(grid_size)
    if n == 2:
        if embed_dim % 4:
            raise ValueError(f"2D sin-cos position embedding needs embed_dim divisible by 4, got {embed_dim}")
        gh, gw = grid_size
        hh, ww = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        emb = torch.cat([_sincos_1d(embed_dim // 2, ww), _sincos_1d(embed_dim // 2, hh)], dim=1)
    elif n == 3:
        if embed_dim % 6:
            raise ValueError(f"3D sin-cos position embedding needs embed_dim divisible by 6, got {embed_dim}")
        gd, gh, gw = grid_size
        dd, hh, ww = torch.meshgrid(torch.arange(gd), torch.arange(gh), torch.arange(gw), indexing="ij")
        part = embed_dim // 3
        emb = torch.cat([_sincos_1d(part, ww), _sincos_1d(part, hh), _sincos_1d(part, dd)], dim=1)
    else:
        raise ValueError(f"grid must be 2D or 3D, got {grid_size}")
    if num_prefix_tokens:
        emb = torch.cat([torch.zeros(num_prefix_tokens, embed_dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, ...],
    old_grid: tuple[int, ...] | None = None,
    num_prefix_tokens: int = 1,
    mode: str | None = None,
) -> torch.Tensor:
    """Interpolate a position table to another token grid, keeping prefix rows.

    pos_embed: (1, P + prod(old_grid), D) -> (1, P + prod(new_grid), D). ``old_grid`` defaults to a
    square (2D) grid inferred from the token count. Bicubic in 2D, trilinear in 3D.
    """
    if pos_embed.ndim == 2:
        pos_embed = pos_embed[None]
    n_old = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = int(round(math.sqrt(n_old)))
        if side * side != n_old:
            raise ValueError(
                f"cannot infer the grid of a position table with {n_old} patch tokens; pass old_grid"
            )
        old_grid = (side, side) if len(new_grid) == 2 else (round(n_old ** (1 / 3)),) * 3
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    if math.prod(old_grid) != n_old:
        raise ValueError(f"old_grid {old_grid} does not match {n_old} patch tokens")
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    D = grid.shape[-1]
    grid = grid.reshape(1, *old_grid, D).movedim(-1, 1).float()
    mode = mode or ("bicubic" if len(new_grid) == 2 else "trilinear")
    grid = F.interpolate(grid, size=tuple(new_grid), mode=mode, align_corners=False)
    grid = grid.movedim(1, -1).reshape(1, -1, D).to(pos_embed.dtype)
    logger.debug("resampled position embedding %s -> %s", old_grid, new_grid)
    return torch.cat([prefix, grid], dim=1)
