"""Task ``tov_vicreg``: TOV-VICReg self-supervised pretraining on 2D+t series (Goulão & Oliveira; notes §27).

Per series item (C, T, H, W) a frame index t is drawn (``gap`` ≤ t < T − ``gap``); four 2D views enter the model:
x, y = two augmentations of frame t, z = an augmentation of frame t − gap, w = of frame t + gap. The encoder
embeds all four; VICReg acts on the projector outputs of (x, y); the order head ``Linear(3D → 1)`` sees the
encoder outputs of (z, x, w) put in one of the six orders (0 = true order) and is trained with BCE. Loss =
registered ``tov_vicreg`` (weights 10 / 10 / 10 / 0.1). Writes ``encoder/`` (medvit checkpoint), ``log.csv``,
``summary.json`` (with a kNN / linear-probe report of the frozen encoder on per-frame embeddings pooled over time).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvit.config import option
from medvit.tasks.base import register_task
from medvit.tasks.ssl_common import SSLTaskConfig
from medvit.train.losses import LossSpec

logger = logging.getLogger(__name__)


@dataclass
class TOVVICRegConfig(SSLTaskConfig):
    """TOV-VICReg pretraining of a 2D encoder on 2D+t series (dataset items (C, T, H, W))."""

    output_dir: str = option("runs/tov_vicreg", "run folder: encoder/, log.csv, summary.json")
    dataset: str = option("cine_phantom", "registered 2D+t dataset (items (C, T, H, W))")
    loss: LossSpec = option(default_factory=lambda: LossSpec("tov_vicreg"), help="registered loss (tov_vicreg)")
    proj_dim: int = option(512, "projector output width (512 in TOV-VICReg)")
    gap: int = option(1, "frame distance of the neighbouring frames z (t - gap) and w (t + gap)")
    identity_prob: float | None = option(None, "probability of the true order for the order head (None = one of "
                                               "six orders uniformly)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.proj_dim < 1 or self.gap < 1:
            raise ValueError(f"proj_dim and gap must be >= 1, got {self.proj_dim}, {self.gap}")


class TOVVICRegModel(nn.Module):
    """Encoder + projector (Linear-BN-ReLU-Linear) + order head; ``forward(views (B, 4, C, H, W))`` ->
    ``{"z_a", "z_b" (B, P), "order_logit" (B,), "order_label" (B,)}`` with views (x, y, z, w)."""

    def __init__(self, encoder: nn.Module, proj_dim: int = 512, identity_prob: float | None = None):
        super().__init__()
        d = int(encoder.embed_dim)
        self.encoder = encoder
        self.projector = nn.Sequential(nn.Linear(d, proj_dim), nn.BatchNorm1d(proj_dim), nn.ReLU(inplace=True),
                                       nn.Linear(proj_dim, proj_dim))
        self.order_head = nn.Linear(3 * d, 1)
        self.identity_prob = identity_prob

    def forward(self, views: torch.Tensor) -> dict[str, torch.Tensor]:
        from medvit.train.ssl_losses import order_permutations

        if views.ndim != 5 or views.shape[1] != 4:
            raise ValueError(f"expected views (B, 4, C, H, W) = (x, y, z, w), got {tuple(views.shape)}")
        b = views.shape[0]
        h = self.encoder(views.flatten(0, 1)).reshape(b, 4, -1)
        seq = torch.stack([h[:, 2], h[:, 0], h[:, 3]], 1)  # (previous, current, next)
        perm, label = order_permutations(b, None, self.identity_prob)
        perm = perm.to(h.device)
        shuffled = torch.gather(seq, 1, perm[..., None].expand(-1, -1, h.shape[-1]))
        return {"z_a": self.projector(h[:, 0]), "z_b": self.projector(h[:, 1]),
                "order_logit": self.order_head(shuffled.flatten(1)).squeeze(-1), "order_label": label.to(h.device)}


def views_transform(cfg: TOVVICRegConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """(item with image (C, T, H, W), generator) -> {"views": (4, C, H, W)} (x, y at t; z at t − gap; w at t + gap)."""
    from medvit.data.augment import build_train_transform

    aug = build_train_transform(cfg.image_size, mean, std, cfg.rrc_scale, hflip_prob=cfg.hflip, in_chans=cfg.in_chans)

    def tf(item: dict[str, Any], g: torch.Generator) -> dict[str, Any]:
        img = item["image"]
        if img.ndim != 4:
            raise ValueError(f"tov_vicreg needs series items (C, T, H, W); dataset {cfg.dataset!r} gave "
                             f"{tuple(img.shape)}")
        n_t = img.shape[1]
        if n_t < 2 * cfg.gap + 1:
            raise ValueError(f"series of {n_t} frames is too short for gap {cfg.gap}")
        t = int(torch.randint(cfg.gap, n_t - cfg.gap, (1,), generator=g))
        frames = [img[:, t], img[:, t], img[:, t - cfg.gap], img[:, t + cfg.gap]]
        return {"views": torch.stack([aug({"image": f}, g)["image"] for f in frames]), "index": item["index"]}

    return tf


def run(cfg: TOVVICRegConfig) -> dict[str, Any]:
    """Pretrain; returns a summary (steps, final loss terms, frozen-encoder kNN / probe report, paths)."""
    from medvit.data.augment import build_eval_transform
    from medvit.tasks.ssl_common import build_split, frozen_report, make_encoder, normalization, save_encoder
    from medvit.train import Trainer
    from medvit.train.losses import loss_step

    mean, std = normalization(cfg)
    tcfg = dataclasses.replace(cfg.train, output_dir=cfg.output_dir)
    torch.manual_seed(tcfg.seed)
    model = TOVVICRegModel(make_encoder(cfg), cfg.proj_dim, cfg.identity_prob)
    trainer = Trainer(model, tcfg, build_split(cfg, "train"), loss_step(cfg.loss, input_key="views"),
                      transform=views_transform(cfg, mean, std))
    result = trainer.fit()
    summary: dict[str, Any] = {"task": "tov_vicreg", "steps": result.steps, "total_steps": result.total_steps,
                               "first_loss": result.losses[0] if result.losses else None,
                               "last_loss": result.losses[-1] if result.losses else None,
                               "samples_per_s": result.samples_per_s}
    if not trainer.dist.is_main or not result.finished:
        return summary
    summary["encoder_dir"] = str(save_encoder(model.encoder, cfg, "tov_vicreg", result.steps, mean, std))
    if cfg.evaluate:
        ev = build_eval_transform(cfg.image_size, mean, std, in_chans=cfg.in_chans)
        summary["frozen_eval"] = frozen_report(model.encoder, cfg, ev, frame="series")
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


register_task("tov_vicreg", TOVVICRegConfig,
              "TOV-VICReg pretraining on 2D+t series (VICReg + temporal-order verification)")(run)
