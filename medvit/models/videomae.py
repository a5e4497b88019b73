"""VideoMAE V2 dual masking (Wang et al., CVPR'23) for 3D volumes and 2D+t series.

Two masks per sample on the token grid ``(T, H, W)`` of a 3D patch embedding (axis 0 = time for a 2D+t series
stored as ``(B, C, T, H, W)``, the slice axis for a volume; a tubelet of 2×16×16 is the patch ``(2, 16, 16)``):

- **encoder tube mask** (ρ_e = 0.9 in the paper): one random spatial mask of ``int(ρ_e·H·W)`` positions, repeated
  in every temporal index (``TubeMaskingGenerator`` of the official code);
- **decoder running-cell mask** (ρ_d = 0.5): each 2×2 spatial cell holds ``int(4·ρ_d)`` masked slots; the cell's
  pattern is a cyclic queue ``[1]*m + [0]*(4-m)`` read from a pointer that advances by one per temporal index, so
  the decoder-visible set moves every frame and four frames cover every position (``RunningCellMaskingGenerator``).

Mask convention (as in the official code): ``True`` = removed. The encoder sees ``~encoder_mask``; the decoder is
given the encoder's tokens plus a mask token at every position with ``~decoder_mask`` and predicts those only
(decoder sequence ``N_vis + N·(1 − ρ_d)`` instead of ``N``). ``decoder_mask_ratio = 0`` is VideoMAE V1: the decoder
predicts exactly the encoder-masked positions (``decoder_mask = ~encoder_mask``).

Loss (:func:`dual_masked_mse`): MSE on (per-patch-normalised) patches at the decoded positions. ``loss_on``:
``"masked"`` (default) averages over decoded positions the encoder did not see — "reconstruct only decoder-visible
masked tokens"; ``"decoded"`` averages over every decoded position, as the official engine does
(``labels = patches[~decode_masked_pos]``). The decoder computes the same tokens in both cases.

All masks are written from the paper's description and the notes (no code copied).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from medvit.models.mae import MaskedAutoencoder

#: ratios of the paper (VideoMAE V2 §3.3: encoder tube 90 %, decoder running cell 50 %)
PAPER_ENCODER_RATIO = 0.9
PAPER_DECODER_RATIO = 0.5
LOSS_ON = ("masked", "decoded")


def _check_grid(grid: tuple[int, ...]) -> tuple[int, int, int]:
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"dual masking needs a 3D token grid (T, H, W), got {tuple(grid)}")
    return int(grid[0]), int(grid[1]), int(grid[2])


def tube_mask(batch: int, grid: tuple[int, ...], ratio: float, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Encoder tube mask: (B, T·H·W) bool, True = masked, flattened in (t, h, w) order.

    Per sample one uniform random set of ``int(ratio·H·W)`` spatial positions is masked in every temporal index.
    Raises ``ValueError`` when a frame would keep no token or mask none (ratio must give 1 ≤ masked < H·W).
    """
    t, h, w = _check_grid(grid)
    hw = h * w
    n_mask = int(ratio * hw)
    if not 0 < n_mask < hw:
        raise ValueError(f"encoder mask ratio {ratio} masks {n_mask} of {hw} positions per frame; it must mask at "
                         "least one and keep at least one")
    noise = torch.rand(batch, hw, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # rank of each position; the n_mask lowest-noise are masked
    spatial = ranks < n_mask
    return spatial[:, None, :].expand(batch, t, hw).reshape(batch, t * hw).to(device)


def running_cell_patterns(grid: tuple[int, ...], ratio: float) -> torch.Tensor:
    """All running-cell decoder masks of a grid: (4, T·H·W) bool (one per starting phase), True = not decoded.

    Cell queue ``[1]*m + [0]*(4 − m)`` with ``m = int(4·ratio)`` (``0 < m < 4``); at temporal index t the 2×2 cell
    (row-major) reads the queue from pointer ``phase + t + 1`` (the official generator advances the pointer before
    reading the first frame) and is tiled over the H×W grid (H, W even).
    """
    t, h, w = _check_grid(grid)
    m = int(4 * ratio)
    if not 0 < m < 4:
        raise ValueError(f"decoder running-cell ratio {ratio} gives {m} masked slots per 2x2 cell; need 1..3")
    if h % 2 or w % 2:
        raise ValueError(f"running-cell masking tiles 2x2 cells: the token grid H, W must be even, got {h}x{w}")
    queue = torch.tensor([1] * m + [0] * (4 - m), dtype=torch.bool)
    out = []
    for phase in range(4):
        frames = []
        for ti in range(t):
            ptr = phase + ti + 1
            cell = queue[(torch.arange(4) + ptr) % 4].reshape(2, 2)
            frames.append(cell.repeat(h // 2, w // 2).reshape(-1))
        out.append(torch.stack(frames).reshape(-1))
    return torch.stack(out)


def running_cell_mask(batch: int, grid: tuple[int, ...], ratio: float, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """Decoder running-cell mask: (B, T·H·W) bool, True = not decoded; each sample draws one of the 4 phases."""
    pats = running_cell_patterns(grid, ratio)
    phase = torch.randint(0, 4, (batch,), generator=generator)
    return pats[phase].to(device)


def dual_masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_i w_i · mean_d (x̂_id − x_id)² / Σ_i w_i over decoded tokens: (B, M, P), (B, M, P), (B, M) -> scalar.

    ``weight`` None = every decoded token counts (official VideoMAE V2 engine); a 0/1 weight restricts the mean to
    the encoder-masked ones. A batch whose weights are all 0 gives 0 (denominator clamped to 1).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    err = (pred.float() - target.float()).pow(2).mean(dim=-1)
    if weight is None:
        return err.mean()
    if weight.shape != err.shape:
        raise ValueError(f"weight must have shape {tuple(err.shape)}, got {tuple(weight.shape)}")
    w = weight.float()
    return (err * w).sum() / w.sum().clamp(min=1.0)


def _ids_of(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the False entries of a (B, N) bool mask with an equal count per row, in grid order: (B, K)."""
    counts = (~mask).sum(1)
    if not torch.all(counts == counts[0]):
        raise ValueError(f"every sample must keep the same number of tokens, got {counts.tolist()}")
    return torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, : int(counts[0])]


class DualMaskedAutoencoder(MaskedAutoencoder):
    """3D MAE with VideoMAE V2 dual masking; ``forward(imgs)`` -> loss, decoded predictions and both masks.

    Args (besides :class:`~medvit.models.mae.MaskedAutoencoder`'s; ``mask_ratio`` is the encoder tube ratio ρ_e):
        decoder_mask_ratio: running-cell ratio ρ_d (0.5 in the paper; 0 = VideoMAE V1, decode every masked token).
        encoder_mask: ``"tube"`` (paper) or ``"random"`` (MAE's per-token random masking, e.g. for CT volumes).
        loss_on: ``"masked"`` or ``"decoded"`` (see module docstring).

    Input (B, C, T, H, W) with a 3D encoder (``spatial_dims=3``, patch ``(p_t, p_h, p_w)``); the token grid's H, W
    must be even for ρ_d > 0. Raises ``ValueError`` for a 2D encoder or a bad ratio.
    """

    def __init__(self, encoder: nn.Module, *args: Any, decoder_mask_ratio: float = PAPER_DECODER_RATIO,
                 encoder_mask: str = "tube", loss_on: str = "masked", **kw: Any):
        super().__init__(encoder, *args, **kw)
        if self.spatial_dims != 3:
            raise ValueError("dual masking needs a 3D encoder (spatial_dims=3, input (B, C, T, H, W))")
        if encoder_mask not in ("tube", "random"):
            raise ValueError(f"encoder_mask must be 'tube' or 'random', got {encoder_mask!r}")
        if loss_on not in LOSS_ON:
            raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
        if not 0.0 <= decoder_mask_ratio < 1.0:
            raise ValueError(f"decoder_mask_ratio must be in [0, 1), got {decoder_mask_ratio}")
        self.decoder_mask_ratio = float(decoder_mask_ratio)
        self.encoder_mask = encoder_mask
        self.loss_on = loss_on
        if self.decoder_mask_ratio > 0:
            running_cell_patterns(self.grid_size, self.decoder_mask_ratio)  # validate grid parity / ratio now
        if encoder_mask == "tube":
            tube_mask(1, self.grid_size, self.mask_ratio)

    def make_masks(self, batch: int, grid: tuple[int, ...], device: torch.device,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder_mask, decoder_mask), each (B, N) bool with True = removed."""
        if self.encoder_mask == "tube":
            enc = tube_mask(batch, grid, self.mask_ratio, generator, device)
        else:
            n = math.prod(grid)
            keep = int(n * (1 - self.mask_ratio))
            ranks = torch.rand(batch, n, generator=generator).argsort(1).argsort(1)
            enc = (ranks >= keep).to(device)
        if self.decoder_mask_ratio > 0:
            dec = running_cell_mask(batch, grid, self.decoder_mask_ratio, generator, device)
        else:
            dec = ~enc
        return enc, dec

    def forward(self, imgs: torch.Tensor, encoder_mask: torch.Tensor | None = None,  # type: ignore[override]
                decoder_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """(B, C, T, H, W) -> {"loss": (), "pred": (B, M, prod(p)·C), "target": (B, M, prod(p)·C),
        "weight": (B, M), "decode_ids": (B, M), "mask": (B, N) encoder mask, "decoder_mask": (B, N)}.

        ``M = N − Σ decoder_mask`` decoded tokens per sample; masks drawn with :meth:`make_masks` unless given.
        """
        grid = self._grid_of(imgs)
        b = imgs.shape[0]
        if encoder_mask is None or decoder_mask is None:
            e, d = self.make_masks(b, grid, imgs.device)
            encoder_mask = e if encoder_mask is None else encoder_mask
            decoder_mask = d if decoder_mask is None else decoder_mask
        n = math.prod(grid)
        for name, m in (("encoder_mask", encoder_mask), ("decoder_mask", decoder_mask)):
            if m.shape != (b, n) or m.dtype != torch.bool:
                raise ValueError(f"{name} must be a bool tensor of shape {(b, n)}, got {m.dtype} {tuple(m.shape)}")
        keep_ids = _ids_of(encoder_mask)
        dec_ids = _ids_of(decoder_mask)
        tokens = self.encoder.patch_tokens(imgs)
        d_enc = tokens.shape[-1]
        visible = torch.gather(tokens, 1, keep_ids[..., None].expand(-1, -1, d_enc))
        prefix = self.encoder.prefix_tokens(b).to(visible.dtype)
        latent = self.encoder.forward_tokens(torch.cat([prefix, visible], dim=1))
        x = self.decoder_embed(latent)
        p = self.num_prefix_tokens
        dd = x.shape[-1]
        pos = self.decoder_pos_embed if grid == self.grid_size else self._decoder_table(grid)[None].to(x.device)
        pos = pos.to(x.dtype).expand(b, -1, -1)
        pos_patch = pos[:, p:]
        vis = x[:, p:] + torch.gather(pos_patch, 1, keep_ids[..., None].expand(-1, -1, dd))
        queries = self.mask_token.to(x.dtype) + torch.gather(pos_patch, 1, dec_ids[..., None].expand(-1, -1, dd))
        seq = torch.cat([x[:, :p] + pos[:, :p], vis, queries], dim=1)
        for blk in self.decoder_blocks:
            seq = blk(seq)
        m = dec_ids.shape[1]
        pred = self.decoder_pred(self.decoder_norm(seq[:, -m:]))
        target = torch.gather(self.target(imgs), 1, dec_ids[..., None].expand(-1, -1, pred.shape[-1]))
        weight = (torch.gather(encoder_mask, 1, dec_ids) if self.loss_on == "masked"
                  else torch.ones_like(dec_ids, dtype=torch.bool))
        loss = dual_masked_mse(pred, target, weight)
        return {"loss": loss, "pred": pred, "target": target, "weight": weight, "decode_ids": dec_ids,
                "mask": encoder_mask, "decoder_mask": decoder_mask}

    @torch.no_grad()
    def reconstruction_loss(self, imgs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Quality probe independent of the decoder mask: MSE over **every** encoder-masked token (decoder given all
        of them, i.e. ``decoder_mask = ~encoder_mask``), encoder mask drawn from ``generator``. Scalar."""
        enc, _ = self.make_masks(imgs.shape[0], self._grid_of(imgs), imgs.device, generator)
        saved = self.loss_on
        try:
            self.loss_on = "masked"
            return self.forward(imgs, enc, ~enc)["loss"]
        finally:
            self.loss_on = saved


def create_dual_mae(backbone: str = "vit_small_patch16_96_3d", decoder_dim: int = 192, decoder_depth: int = 4,
                    decoder_heads: int = 3, mask_ratio: float = PAPER_ENCODER_RATIO,
                    decoder_mask_ratio: float = PAPER_DECODER_RATIO, encoder_mask: str = "tube",
                    loss_on: str = "masked", norm_pix_loss: bool = True, decoder_mlp_ratio: float = 4.0,
                    **backbone_overrides: Any) -> DualMaskedAutoencoder:
    """Build a :class:`DualMaskedAutoencoder` around ``create_model(backbone, num_classes=0, spatial_dims=3, ...)``.

    Defaults follow the paper where it is specific (ρ_e 0.9, ρ_d 0.5, decoder depth 4, normalised-pixel target).
    """
    from medvit.models.factory import create_model

    backbone_overrides.setdefault("global_pool", "token")
    backbone_overrides.setdefault("spatial_dims", 3)
    enc = create_model(backbone, num_classes=0, **backbone_overrides)
    return DualMaskedAutoencoder(enc, decoder_dim, decoder_depth, decoder_heads, mlp_ratio=decoder_mlp_ratio,
                                 mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss,
                                 norm_eps=float(enc.model_args.get("norm_eps", 1e-6)),
                                 decoder_mask_ratio=decoder_mask_ratio, encoder_mask=encoder_mask, loss_on=loss_on)
