"""Masked autoencoder (He et al. 2022) around any registered backbone, through its public interface only.

``patchify → random_masking → forward_encoder → forward_decoder → forward_loss``, 2D or 3D, any channel count.
The encoder is used via ``patch_tokens`` (patch embedding + positions), ``prefix_tokens`` (CLS),
``forward_tokens`` (blocks + final norm), ``patch_embed.patch_size/grid_size``, ``embed_dim`` and
``num_prefix_tokens`` — never via its attribute names — so PEFT-wrapped or other ViTs with that interface work.

Decoder parameter names follow facebookresearch/mae (``decoder_embed``, ``mask_token``, ``decoder_pos_embed``,
``decoder_blocks``, ``decoder_norm``, ``decoder_pred``); encoder parameters sit under ``encoder.``. Patches are
flattened in (p_h, p_w, C) order (HF ViTMAE / MAE ``patchify``), 3D in (p_d, p_h, p_w, C).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medvit.nn import Block, sincos_pos_embed
from medvit.nn.init import mae_init_


@dataclass(frozen=True)
class DecoderPreset:
    """Decoder shape of a published MAE configuration."""

    backbone: str  # registered encoder backbone
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int = 16


#: thorax-MAE presets (medical-notes §1.2) and the original MAE default
MAE_PRESETS: dict[str, DecoderPreset] = {
    "mae_vit_small_patch16_dec512d2b": DecoderPreset("vit_small_patch16_224", 512, 2),
    "mae_vit_small_patch16_dec512d8b": DecoderPreset("vit_small_patch16_224", 512, 8),
    "mae_vit_small_patch16_dec128d2b": DecoderPreset("vit_small_patch16_224", 128, 2),
    "mae_vit_base_patch16_dec512d8b": DecoderPreset("vit_base_patch16_224", 512, 8),
    "mae_vit_large_patch16_dec512d8b": DecoderPreset("vit_large_patch16_224", 512, 8),
}


def check_mask_ratio(mask_ratio: float, num_patches: int) -> None:
    """Raise ValueError (naming ``mask_ratio``) unless at least one patch is kept and one is masked."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}; 1.0 would leave the encoder no tokens")
    keep = int(num_patches * (1 - mask_ratio))
    if keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} keeps no patch of {num_patches}; lower mask_ratio or use "
                         "smaller patches")


class MaskedAutoencoder(nn.Module):
    """MAE with a transformer decoder; ``forward(imgs, noise=None)`` -> ``{"loss", "pred", "mask", "ids_restore"}``.

    Args:
        encoder: a backbone with the uniform interface (e.g. ``create_model(name, num_classes=0)``).
        decoder_dim, decoder_depth, decoder_heads, mlp_ratio: decoder transformer shape.
        mask_ratio: fraction of patches removed (0.75 MAE, 0.90 thorax-MAE).
        norm_pix_loss: per-patch normalised target ``(t − mean) / sqrt(var + 1e-6)``.
        norm_eps: LayerNorm epsilon of the decoder (1e-6 MAE; HF uses its config's layer_norm_eps).

    Position tables: the encoder's ``pos_embed`` (when it is an ``nn.Parameter``) is set to
    ``requires_grad=False`` here, so during MAE pretraining it stays the fixed 2-D/3-D sin-cos table —
    no gradient, no AdamW step, no weight decay (``param_groups`` takes ``requires_grad`` params only) —
    as in facebookresearch/mae ``models_mae.py`` and thorax-MAE (medical-notes §1.2); the decoder table
    is fixed likewise. The key ``encoder.pos_embed`` stays in the state dict. Fine-tuning: the reference
    builds a timm ViT whose ``pos_embed`` is a learnable parameter initialised from the checkpoint;
    medvit does the same — ``load_pretrained_encoder`` copies the table into a fresh backbone whose
    ``pos_embed`` is ``"learn"`` by default (trainable, in the stem layer group of layer decay), and
    ``pos_embed="sincos"`` keeps it fixed there too if wanted.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
        norm_eps: float = 1e-6,
        qkv_bias: bool = True,
    ):
        super().__init__()
        pe = encoder.patch_embed
        self.encoder = encoder
        enc_pos = getattr(encoder, "pos_embed", None)
        if isinstance(enc_pos, nn.Parameter):
            enc_pos.requires_grad_(False)  # fixed sin-cos table during pretraining (facebookresearch/mae)
        self.patch_size: tuple[int, ...] = tuple(pe.patch_size)
        self.grid_size: tuple[int, ...] = tuple(pe.grid_size)
        self.spatial_dims = len(self.patch_size)
        self.in_chans = int(getattr(encoder, "in_chans", getattr(pe, "in_chans", 3)))
        self.num_prefix_tokens = int(encoder.num_prefix_tokens)
        check_mask_ratio(mask_ratio, math.prod(self.grid_size))
        if decoder_dim % decoder_heads:
            raise ValueError(f"decoder_dim {decoder_dim} must be divisible by decoder_heads {decoder_heads}")
        if decoder_depth < 1:
            raise ValueError(f"decoder_depth must be >= 1, got {decoder_depth}")
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.decoder_dim = decoder_dim
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        n_pos = math.prod(self.grid_size) + self.num_prefix_tokens
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n_pos, decoder_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_dim, decoder_heads, mlp_ratio, qkv_bias=qkv_bias, norm_eps=norm_eps)
             for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=norm_eps)
        self.decoder_pred = nn.Linear(decoder_dim, math.prod(self.patch_size) * self.in_chans, bias=True)
        self._init_decoder()

    def _init_decoder(self) -> None:
        """MAE init: fixed sin-cos decoder table, N(0, .02) mask token, xavier-uniform linears, unit LayerNorms."""
        with torch.no_grad():
            self.decoder_pos_embed.copy_(self._decoder_table(self.grid_size)[None])
        nn.init.normal_(self.mask_token, std=0.02)
        for name, m in self.named_modules():
            if name.startswith("decoder"):
                mae_init_(m)

    def _decoder_table(self, grid: tuple[int, ...]) -> torch.Tensor:
        if self.spatial_dims == 3 and self.decoder_dim % 6:
            raise ValueError(f"3D sin-cos decoder positions need decoder_dim divisible by 6, got {self.decoder_dim}")
        return sincos_pos_embed(self.decoder_dim, grid, self.num_prefix_tokens)

    # ------------------------------------------------------------------ patches
    def _grid_of(self, imgs: torch.Tensor) -> tuple[int, ...]:
        if imgs.ndim != self.spatial_dims + 2 or imgs.shape[1] != self.in_chans:
            raise ValueError(f"expected images (B, {self.in_chans}, {'D, ' if self.spatial_dims == 3 else ''}H, W), "
                             f"got shape {tuple(imgs.shape)}")
        for s, p in zip(imgs.shape[2:], self.patch_size):
            if s % p:
                raise ValueError(f"image size {tuple(imgs.shape[2:])} is not a multiple of patch size "
                                 f"{self.patch_size}")
        return tuple(s // p for s, p in zip(imgs.shape[2:], self.patch_size))

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, N, prod(p)·C), each patch flattened as (p_h, p_w, C) [(p_d, p_h, p_w, C) in 3D]."""
        grid = self._grid_of(imgs)
        b, c = imgs.shape[:2]
        n = self.spatial_dims
        shape = [b, c]
        for g, p in zip(grid, self.patch_size):
            shape += [g, p]
        x = imgs.reshape(shape)
        # dims: 0 b, 1 c, then (g_i, p_i) pairs at 2 + 2i, 3 + 2i
        perm = [0] + [2 + 2 * i for i in range(n)] + [3 + 2 * i for i in range(n)] + [1]
        return x.permute(perm).reshape(b, math.prod(grid), math.prod(self.patch_size) * c)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        """(B, N, prod(p)·C) -> (B, C, *S); inverse of :meth:`patchify`."""
        grid = tuple(grid or self.grid_size)
        n = self.spatial_dims
        b = x.shape[0]
        x = x.reshape(b, *grid, *self.patch_size, self.in_chans)
        # dims: 0 b, 1..n grid, n+1..2n patch, 2n+1 c  ->  b, c, (g_i, p_i)...
        perm = [0, 2 * n + 1]
        for i in range(n):
            perm += [1 + i, n + 1 + i]
        x = x.permute(perm)
        return x.reshape(b, self.in_chans, *[g * p for g, p in zip(grid, self.patch_size)])

    # ------------------------------------------------------------------ masking
    def random_masking(
        self, x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep a random subset of tokens per sample by sorting uniform noise.

        x: (B, N, D) -> (visible (B, K, D), mask (B, N) with 1 = removed, ids_restore (B, N)),
        K = int(N·(1 − mask_ratio)). ``noise`` (B, N) makes the choice explicit (lowest noise is kept).
        """
        b, n, d = x.shape
        keep = int(n * (1 - mask_ratio))
        if noise is None:
            noise = torch.rand(b, n, device=x.device)
        elif noise.shape != (b, n):
            raise ValueError(f"noise must have shape {(b, n)}, got {tuple(noise.shape)}")
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        mask = torch.ones(b, n, device=x.device, dtype=x.dtype)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return visible, mask, ids_restore

    # ------------------------------------------------------------------ stages
    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C, *S) -> (latent (B, P + K, D), mask (B, N), ids_restore (B, N))."""
        tokens = self.encoder.patch_tokens(imgs)  # (B, N, D), positions added
        visible, mask, ids_restore = self.random_masking(tokens, mask_ratio, noise)
        prefix = self.encoder.prefix_tokens(imgs.shape[0]).to(visible.dtype)
        latent = self.encoder.forward_tokens(torch.cat([prefix, visible], dim=1))
        return latent, mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor,
                        grid: tuple[int, ...] | None = None) -> torch.Tensor:
        """(B, P + K, D), (B, N) -> predicted patches (B, N, prod(p)·C)."""
        p = self.num_prefix_tokens
        x = self.decoder_embed(latent)
        b, n = ids_restore.shape
        visible = x[:, p:]
        fill = self.mask_token.to(x.dtype).expand(b, n - visible.shape[1], -1)
        full = torch.cat([visible, fill], dim=1)
        full = torch.gather(full, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :p], full], dim=1)
        grid = tuple(grid or self.grid_size)
        pos = self.decoder_pos_embed if grid == self.grid_size else self._decoder_table(grid)[None].to(x.device)
        x = x + pos.to(x.dtype)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, p:]

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        """Reconstruction target (B, N, prod(p)·C): patches, per-patch normalised with ``norm_pix_loss``."""
        t = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = t.mean(dim=-1, keepdim=True)
            var = t.var(dim=-1, keepdim=True)
            t = (t - mean) / (var + 1.0e-6) ** 0.5
        return t

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the masked patches: Σ m_i·mean_d (x̂ − x)² / Σ m_i."""
        err = (pred.float() - self.target(imgs).float()).pow(2).mean(dim=-1)
        mask = mask.float()
        return (err * mask).sum() / mask.sum()

    def forward(self, imgs: torch.Tensor, noise: torch.Tensor | None = None,
                mask_ratio: float | None = None) -> dict[str, torch.Tensor]:
        """(B, C, *S) -> {"loss": (), "pred": (B, N, prod(p)·C), "mask": (B, N), "ids_restore": (B, N)}."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        grid = self._grid_of(imgs)
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio, noise)
        pred = self.forward_decoder(latent, ids_restore, grid)
        return {"loss": self.forward_loss(imgs, pred, mask), "pred": pred, "mask": mask, "ids_restore": ids_restore}

    # ------------------------------------------------------------------ optimiser hooks
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """The encoder's grouping under ``encoder.``; decoder parameters fall after the last block."""
        inner = self.encoder.group_matcher(coarse)

        def pref(rx: str) -> str:
            return "|".join("^encoder\\." + a.lstrip("^") for a in rx.split("|"))

        return {"stem": pref(inner["stem"]), "blocks": [(pref(rx), s) for rx, s in inner["blocks"]]}

    def no_weight_decay(self) -> set[str]:
        """Like the MAE reference (timm ``add_weight_decay`` without a skip list): only 1-D params and biases."""
        return set()


def create_mae(
    backbone: str = "vit_small_patch16_224",
    preset: str | None = None,
    decoder_dim: int | None = None,
    decoder_depth: int | None = None,
    decoder_heads: int | None = None,
    mask_ratio: float = 0.75,
    norm_pix_loss: bool = False,
    decoder_mlp_ratio: float = 4.0,
    **backbone_overrides: Any,
) -> MaskedAutoencoder:
    """Build an MAE around ``create_model(backbone, num_classes=0, **overrides)``.

    ``preset`` (a key of :data:`MAE_PRESETS`) fixes backbone and decoder; explicit decoder arguments override it.
    """
    from medvit.models.factory import create_model

    dd, dp, dh = 512, 8, 16
    if preset is not None:
        if preset not in MAE_PRESETS:
            from medvit.registry import did_you_mean

            hint = did_you_mean(preset, MAE_PRESETS, n=2)
            raise ValueError(f"unknown MAE preset {preset!r}" + (f"; {hint}" if hint else "")
                             + f"; known: {', '.join(MAE_PRESETS)}")
        p = MAE_PRESETS[preset]
        backbone, dd, dp, dh = p.backbone, p.decoder_dim, p.decoder_depth, p.decoder_heads
    backbone_overrides.setdefault("global_pool", "token")
    enc = create_model(backbone, num_classes=0, **backbone_overrides)
    return MaskedAutoencoder(enc, decoder_dim or dd, decoder_depth or dp, decoder_heads or dh,
                             mlp_ratio=decoder_mlp_ratio, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss,
                             norm_eps=float(enc.model_args.get("norm_eps", 1e-6)))
