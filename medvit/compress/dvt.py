"""Denoising Vision Transformers (DVT, Yang et al., ECCV'24): stage 1 splits ViT features into a clean part and a
position-dependent artefact, without retraining the backbone.

Noise model (DVT): the feature map of a view (a random resized crop, maybe flipped) of one image is

    ViT(view)[u] = F(global coordinate of u) + G(u) (+ h)

with u the patch position *within the view*. F is a neural feature field over the image's global coordinates
(shared by all views), G a learnable artefact map read at view-local coordinates (``grid_sample``; shared by all
views, the position-dependent artefact), h a residual. :func:`fit_dvt` fits F and G on many views of one image
with DVT's loss (MSE + (1 − cosine)); the denoised features of any view are ``raw − G(local)``
(:meth:`DVTDecomposition.denoise`).

Stage 2 (DVT's online denoiser, :class:`DVTDenoiser`): one ViT block (D/64 heads, MLP ratio 4) plus a learnable
position embedding, applied to the frozen backbone's raw (D, h, w) feature map and trained
(:func:`fit_denoiser`) to regress the stage-1 clean features of many images (:func:`stage1_targets`), so new
images are denoised in one forward pass without a per-image fit. Loss as DVT: MSE + (1 − cosine) per patch.

Views are described by boxes ``(x0, y0, x1, y1)`` in global coordinates [−1, 1] and a horizontal-flip flag;
``view_features(box, flip)`` returns the frozen backbone's (D, h, w) feature map of that view (for a medvit ViT:
crop, resize, ``forward_intermediates(..., output_fmt="NCHW")``; :func:`vit_view_features`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medvit.nn.block import Block

Box = tuple[float, float, float, float]


def local_grid(h: int, w: int) -> torch.Tensor:
    """Patch-centre coordinates of an h × w view grid in [−1, 1] (align_corners=False): (h, w, 2) as (x, y)."""
    ys = (torch.arange(h) + 0.5) / h * 2 - 1
    xs = (torch.arange(w) + 0.5) / w * 2 - 1
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)


def global_coords(box: Box, flip: bool, h: int, w: int) -> torch.Tensor:
    """Global coordinates (h, w, 2) of the patch centres of a view ``box`` (flipped views mirror x)."""
    g = local_grid(h, w)
    ux = -g[..., 0] if flip else g[..., 0]
    x0, y0, x1, y1 = box
    return torch.stack([x0 + (ux + 1) / 2 * (x1 - x0), y0 + (g[..., 1] + 1) / 2 * (y1 - y0)], -1)


def random_boxes(n: int, scale: tuple[float, float] = (0.3, 1.0), generator: torch.Generator | None = None
                 ) -> list[tuple[Box, bool]]:
    """``n`` random square-ish crops (area fraction in ``scale``) with random horizontal flips."""
    out = []
    for _ in range(n):
        s = math.sqrt(float(torch.empty(1).uniform_(*scale, generator=generator)))
        cx, cy = (float(torch.empty(1).uniform_(-1 + s, 1 - s, generator=generator)) if s < 1 else 0.0
                  for _ in range(2))
        flip = bool(torch.rand(1, generator=generator) < 0.5)
        out.append(((cx - s, cy - s, cx + s, cy + s), flip))
    return out


class DVTDecomposition(nn.Module):
    """F (Fourier-feature MLP field over global coords) + G (artefact map (1, D, gh, gw), read at local coords)."""

    def __init__(self, dim: int, artifact_size: tuple[int, int], hidden: int = 128, n_freq: int = 6):
        super().__init__()
        self.register_buffer("freqs", (2.0 ** torch.arange(n_freq)) * math.pi, persistent=False)
        self.field = nn.Sequential(nn.Linear(2 + 4 * n_freq, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                   nn.Linear(hidden, dim))
        self.artifact = nn.Parameter(torch.zeros(1, dim, *artifact_size))

    def field_at(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) global coords -> (..., D)."""
        ang = coords[..., None] * self.freqs  # (..., 2, n_freq)
        enc = torch.cat([coords, ang.sin().flatten(-2), ang.cos().flatten(-2)], -1)
        return self.field(enc)

    def artifact_at(self, h: int, w: int) -> torch.Tensor:
        """G read at the local patch centres of an h × w view: (D, h, w)."""
        grid = local_grid(h, w)[None].to(self.artifact)
        return F.grid_sample(self.artifact, grid, mode="bilinear", align_corners=False)[0]

    def forward(self, box: Box, flip: bool, h: int, w: int) -> torch.Tensor:
        """Predicted raw features of a view: (D, h, w)."""
        f = self.field_at(global_coords(box, flip, h, w).to(self.artifact)).permute(2, 0, 1)
        return f + self.artifact_at(h, w)

    def denoise(self, features: torch.Tensor) -> torch.Tensor:
        """(D, h, w) or (B, D, h, w) raw features -> features minus the artefact at their positions."""
        g = self.artifact_at(features.shape[-2], features.shape[-1])
        return features - g


@dataclass
class DVTFit:
    """Fitted decomposition and the loss per step."""

    model: DVTDecomposition
    losses: list[float]


def fit_dvt(view_features: Callable[[Box, bool], torch.Tensor], dim: int, artifact_size: tuple[int, int],
            steps: int = 200, views_per_step: int = 4, lr: float = 1e-2, seed: int = 0,
            scale: tuple[float, float] = (0.3, 1.0)) -> DVTFit:
    """Fit F and G to ``view_features`` of random views (DVT stage 1 loss: MSE + (1 − cos) per patch).

    ``view_features(box, flip)`` -> (D, h, w) frozen-backbone features of that view. Returns :class:`DVTFit`.
    Raises ``ValueError`` when a view's channel count is not ``dim``."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DVTDecomposition(dim, artifact_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    cache: dict[tuple[Box, bool], torch.Tensor] = {}
    losses = []
    for _ in range(steps):
        loss = torch.zeros(())
        for box, flip in random_boxes(views_per_step, scale, g):
            key = (box, flip)
            if key not in cache:
                with torch.no_grad():
                    cache[key] = view_features(box, flip).float()
            raw = cache[key]
            if raw.shape[0] != dim:
                raise ValueError(f"view features have {raw.shape[0]} channels, expected dim={dim}")
            pred = model(box, flip, raw.shape[-2], raw.shape[-1])
            loss = loss + F.mse_loss(pred, raw) + (1 - F.cosine_similarity(pred, raw, dim=0)).mean()
        opt.zero_grad()
        (loss / views_per_step).backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()) / views_per_step)
        cache.clear()
    return DVTFit(model, losses)


def vit_view_features(model: nn.Module, image: torch.Tensor, block: int = -1, size: int | None = None
                      ) -> Callable[[Box, bool], torch.Tensor]:
    """``view_features`` for a medvit ViT and one image (C, H, W): crop the box, resize to the model's input
    size, flip, return block ``block``'s patch tokens as a (D, h, w) map."""
    size = size or int(model.patch_embed.img_size[0])

    def fn(box: Box, flip: bool) -> torch.Tensor:
        _, H, W = image.shape
        x0, y0, x1, y1 = box
        c = image[:, int((y0 + 1) / 2 * H):max(int((y1 + 1) / 2 * H), int((y0 + 1) / 2 * H) + 1),
                  int((x0 + 1) / 2 * W):max(int((x1 + 1) / 2 * W), int((x0 + 1) / 2 * W) + 1)]
        v = F.interpolate(c[None], size=(size, size), mode="bilinear", align_corners=False)
        if flip:
            v = v.flip(-1)
        return model.forward_intermediates(v, [block], output_fmt="NCHW")[0][0]

    return fn


FULL_VIEW: Box = (-1.0, -1.0, 1.0, 1.0)


def stage1_targets(view_fns: list[Callable[[Box, bool], torch.Tensor]], dim: int, artifact_size: tuple[int, int],
                   steps: int = 200, views_per_step: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1 per image: for each image's ``view_features`` fit F + G and denoise its full, unflipped view.
    Returns (raw (N, D, h, w), clean (N, D, h, w)) — the pairs stage 2 learns from."""
    raw, clean = [], []
    for i, fn in enumerate(view_fns):
        fit = fit_dvt(fn, dim, artifact_size, steps=steps, views_per_step=views_per_step, seed=seed + i)
        with torch.no_grad():
            r = fn(FULL_VIEW, False).float()
            raw.append(r)
            clean.append(fit.model.denoise(r))
    return torch.stack(raw), torch.stack(clean)


class DVTDenoiser(nn.Module):
    """DVT stage 2: (B, D, h, w) raw features -> (B, D, h, w) denoised; one ViT block over the h·w patch tokens
    with a learnable position embedding (1, h·w, D) (zero init) added before it."""

    def __init__(self, dim: int, grid: tuple[int, int], num_heads: int | None = None, mlp_ratio: float = 4.0):
        super().__init__()
        self.grid = tuple(grid)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))
        heads = num_heads or max(1, dim // 64)
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {heads}")
        self.block = Block(dim, heads, mlp_ratio=mlp_ratio)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) with (h, w) = ``grid`` -> (B, D, h, w). Raises ``ValueError`` on another grid."""
        B, D, h, w = features.shape
        if (h, w) != self.grid:
            raise ValueError(f"feature grid {(h, w)} differs from the denoiser's {self.grid}")
        t = features.flatten(2).transpose(1, 2) + self.pos_embed
        return self.block(t).transpose(1, 2).reshape(B, D, h, w)


def fit_denoiser(raw: torch.Tensor, clean: torch.Tensor, steps: int = 500, lr: float = 1e-3, batch_size: int = 16,
                 seed: int = 0, num_heads: int | None = None) -> tuple[DVTDenoiser, list[float]]:
    """Train a :class:`DVTDenoiser` on stage-1 pairs raw, clean (N, D, h, w) (MSE + (1 − cos) over channels,
    AdamW, cosine LR). Returns (denoiser in eval mode, loss per step). Raises ``ValueError`` on shape mismatch."""
    if raw.shape != clean.shape or raw.dim() != 4:
        raise ValueError(f"raw {tuple(raw.shape)} and clean {tuple(clean.shape)} must both be (N, D, h, w)")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = DVTDenoiser(raw.shape[1], (raw.shape[2], raw.shape[3]), num_heads)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(raw), (min(batch_size, len(raw)),), generator=g)
        pred, tgt = model(raw[idx]), clean[idx]
        loss = F.mse_loss(pred, tgt) + (1 - F.cosine_similarity(pred, tgt, dim=1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return model.eval(), losses
