"""Task ``m3i_pretrain``: M3I-style single-stage pretraining with several targets (Su et al., arXiv 2211.09807;
notes §31; no code released, so the form is ours where the paper is not specific, see ``[verify]``).

Two augmented views per image. The online encoder + projector embeds a (optionally patch-masked) view 1 as the
query; the targets are (a) ``view``: view 2 through a momentum (EMA) copy of encoder + projector — self-supervised;
(b) ``class``: learnable class embeddings (C, P) — supervised, positive = the item's label. Loss = registered
``m3i_info_nce`` (Σ_s w_s InfoNCE_s). The paired-text target of the paper needs a text encoder and is not wired
here. Writes ``encoder/`` (medvit checkpoint), ``log.csv``, ``summary.json`` (+ kNN / linear probe of the encoder).
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
from medvit.tasks.ssl_common import EMA, SSLTaskConfig
from medvit.train.losses import LossSpec

logger = logging.getLogger(__name__)


@dataclass
class M3IPretrainConfig(SSLTaskConfig):
    """Multi-target InfoNCE pretraining (another view + class embeddings) of an encoder on a labelled set."""

    output_dir: str = option("runs/m3i_pretrain", "run folder: encoder/, log.csv, summary.json")
    dataset: str = option("retina_phantom", "registered single-label dataset (items with a class index 'label')")
    loss: LossSpec = option(default_factory=lambda: LossSpec("m3i_info_nce"), help="registered loss (m3i_info_nce)")
    targets: list[str] = option(default_factory=lambda: ["view", "class"], help="target sources: view and/or class")
    proj_dim: int = option(128, "projector output width (query and keys)")
    momentum: float = option(0.996, "EMA momentum of the target encoder")
    mask_ratio: float = option(0.0, "fraction of the query view's patches zeroed (masked input; 0 = off) [verify]")

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = set(self.targets) - {"view", "class"}
        if bad or not self.targets:
            raise ValueError(f"targets must be a non-empty subset of ['view', 'class'], got {self.targets}")
        if self.proj_dim < 1 or not 0.0 <= self.mask_ratio < 1.0 or not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"need proj_dim >= 1, 0 <= mask_ratio < 1, 0 <= momentum < 1; got {self.proj_dim}, "
                             f"{self.mask_ratio}, {self.momentum}")


def _projector(d: int, p: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 2 * p), nn.GELU(), nn.Linear(2 * p, p))


class M3IModel(nn.Module):
    """``forward(views (B, 2, C, H, W))`` -> ``{"query" (B, P), "targets": {"view": (B, P), "class": (K, P)}}``."""

    def __init__(self, encoder: nn.Module, num_classes: int, proj_dim: int = 128, momentum: float = 0.996,
                 targets: tuple[str, ...] = ("view", "class"), mask_ratio: float = 0.0):
        super().__init__()
        self.encoder = encoder
        self.projector = _projector(int(encoder.embed_dim), proj_dim)
        self.targets = tuple(targets)
        self.mask_ratio = float(mask_ratio)
        self.target_net = EMA(nn.Sequential(encoder, self.projector), momentum) if "view" in targets else None
        self.class_embed = nn.Parameter(torch.randn(num_classes, proj_dim) * 0.02) if "class" in targets else None

    def on_train_step(self, step: int, total_steps: int) -> None:
        """Momentum update of the target network (the loop calls it before each optimizer step)."""
        if self.target_net is not None and self.training:
            self.target_net.update(nn.Sequential(self.encoder, self.projector))

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask_ratio <= 0 or not self.training:
            return x
        p = self.encoder.patch_embed.patch_size
        gh, gw = x.shape[-2] // p[0], x.shape[-1] // p[1]
        keep = (torch.rand(x.shape[0], 1, gh, gw, device=x.device) >= self.mask_ratio).to(x.dtype)
        return x * keep.repeat_interleave(p[0], -2).repeat_interleave(p[1], -1)

    def forward(self, views: torch.Tensor) -> dict[str, Any]:
        if views.ndim != 5 or views.shape[1] != 2:
            raise ValueError(f"expected views (B, 2, C, H, W), got {tuple(views.shape)}")
        q = self.projector(self.encoder(self._mask(views[:, 0])))
        targets: dict[str, torch.Tensor] = {}
        if self.target_net is not None:
            targets["view"] = self.target_net(views[:, 1])
        if self.class_embed is not None:
            targets["class"] = self.class_embed
        return {"query": q, "targets": targets}


def two_views(cfg: SSLTaskConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """(item, generator) -> {"views": (2, C, H, W), "label", "index"}: two independent augmentations."""
    from medvit.data.augment import build_train_transform

    aug = build_train_transform(cfg.image_size, mean, std, cfg.rrc_scale, hflip_prob=cfg.hflip, in_chans=cfg.in_chans)

    def tf(item: dict[str, Any], g: torch.Generator) -> dict[str, Any]:
        v = torch.stack([aug({"image": item["image"]}, g)["image"] for _ in range(2)])
        return {"views": v, "label": item["label"], "index": item["index"]}

    return tf


def num_classes_of(cfg: SSLTaskConfig) -> int:
    from medvit.registry import REGISTRY

    meta = REGISTRY.entry("dataset", cfg.dataset).meta
    if "class_names" not in meta:
        raise ValueError(f"dataset {cfg.dataset!r} registers no class_names; this task needs a single-label "
                         "(class index) dataset")
    return len(meta["class_names"])


def run(cfg: M3IPretrainConfig) -> dict[str, Any]:
    """Pretrain; returns a summary (steps, losses, frozen-encoder report, encoder path)."""
    from medvit.data.augment import build_eval_transform
    from medvit.tasks.ssl_common import build_split, frozen_report, make_encoder, normalization, save_encoder
    from medvit.train import Trainer
    from medvit.train.losses import loss_step

    mean, std = normalization(cfg)
    tcfg = dataclasses.replace(cfg.train, output_dir=cfg.output_dir)
    torch.manual_seed(tcfg.seed)
    model = M3IModel(make_encoder(cfg), num_classes_of(cfg), cfg.proj_dim, cfg.momentum, tuple(cfg.targets),
                     cfg.mask_ratio)
    trainer = Trainer(model, tcfg, build_split(cfg, "train"), loss_step(cfg.loss, input_key="views"),
                      transform=two_views(cfg, mean, std))
    result = trainer.fit()
    summary: dict[str, Any] = {"task": "m3i_pretrain", "targets": list(cfg.targets), "steps": result.steps,
                               "first_loss": result.losses[0] if result.losses else None,
                               "last_loss": result.losses[-1] if result.losses else None,
                               "samples_per_s": result.samples_per_s}
    if not trainer.dist.is_main or not result.finished:
        return summary
    summary["encoder_dir"] = str(save_encoder(model.encoder, cfg, "m3i_pretrain", result.steps, mean, std))
    if cfg.evaluate:
        summary["frozen_eval"] = frozen_report(model.encoder, cfg,
                                               build_eval_transform(cfg.image_size, mean, std, in_chans=cfg.in_chans))
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


register_task("m3i_pretrain", M3IPretrainConfig,
              "M3I multi-target InfoNCE pretraining (momentum-view + class-embedding targets)")(run)
