"""Task ``look_finetune``: supervised training with the LOOK leave-one-out kNN loss instead of cross-entropy
(Feng et al., ICLR'22; notes §22; no official code, so k, τ and the bank follow the notes' description).

Encoder + MLP head give the L2-normalised query; a momentum (EMA) copy gives keys that fill a FIFO memory bank
with their labels and sample ids. Loss = registered ``look``: −log of the share of same-class mass among each
query's k nearest bank neighbours (the sample itself left out). Classes may stay multi-modal, which is the point
for findings with sub-types. Model selection: kNN accuracy (TWLV-I kNN on the encoder features) on val at each
evaluation; test reported once at the end. Writes ``encoder/``, ``best/``, ``log.csv``, ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvit.config import option
from medvit.tasks.base import register_task
from medvit.tasks.ssl_common import EMA, SSLTaskConfig
from medvit.train.losses import LossSpec

logger = logging.getLogger(__name__)


@dataclass
class LOOKFinetuneConfig(SSLTaskConfig):
    """LOOK supervised (pre)training / fine-tuning of an encoder on a single-label dataset."""

    output_dir: str = option("runs/look_finetune", "run folder: encoder/, log.csv, summary.json")
    dataset: str = option("retina_phantom", "registered single-label dataset")
    loss: LossSpec = option(default_factory=lambda: LossSpec("look", {"k": 20, "temperature": 0.1,
                                                                     "bank_size": 1024}),
                            help="registered loss (look: k, temperature, bank_size)")
    proj_dim: int = option(128, "head output width (the LOOK embedding)")
    momentum: float = option(0.99, "EMA momentum of the key encoder")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.proj_dim < 1 or not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"need proj_dim >= 1 and 0 <= momentum < 1, got {self.proj_dim}, {self.momentum}")


class LOOKModel(nn.Module):
    """``forward(images (B, C, H, W))`` -> ``{"query": (B, P) (online), "key": (B, P) (momentum, no gradient)}``."""

    def __init__(self, encoder: nn.Module, proj_dim: int = 128, momentum: float = 0.99):
        super().__init__()
        d = int(encoder.embed_dim)
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, proj_dim))
        self.key_net = EMA(nn.Sequential(encoder, self.head), momentum)

    def on_train_step(self, step: int, total_steps: int) -> None:
        if self.training:
            self.key_net.update(nn.Sequential(self.encoder, self.head))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        q = F.normalize(self.head(self.encoder(images)), dim=-1)
        return {"query": q, "key": F.normalize(self.key_net(images), dim=-1)}


def run(cfg: LOOKFinetuneConfig) -> dict[str, Any]:
    """Train with LOOK; validation kNN accuracy selects the step; returns a summary with val/test reports."""
    from medvit.data.augment import build_eval_transform, build_train_transform
    from medvit.eval.frozen import knn_scores
    from medvit.tasks.m3i_pretrain import num_classes_of
    from medvit.tasks.ssl_common import build_split, frozen_report, make_encoder, normalization, save_encoder
    from medvit.train import Trainer
    from medvit.train.losses import loss_step

    mean, std = normalization(cfg)
    n_cls = num_classes_of(cfg)
    tcfg = dataclasses.replace(cfg.train, output_dir=cfg.output_dir)
    torch.manual_seed(tcfg.seed)
    model = LOOKModel(make_encoder(cfg), cfg.proj_dim, cfg.momentum)
    aug = build_train_transform(cfg.image_size, mean, std, cfg.rrc_scale, hflip_prob=cfg.hflip, in_chans=cfg.in_chans)
    ev = build_eval_transform(cfg.image_size, mean, std, in_chans=cfg.in_chans)

    def tf(item: dict[str, Any], g: torch.Generator) -> dict[str, Any]:
        return {"image": aug({"image": item["image"]}, g)["image"], "label": item["label"], "index": item["index"]}

    train_ds, val_ds = build_split(cfg, "train"), build_split(cfg, "val")

    def embed(m: LOOKModel, ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
        dev = next(m.parameters()).device
        fs, ys = [], []
        for i in range(0, len(ds), 64):
            items = [ds[j] for j in range(i, min(i + 64, len(ds)))]
            x = torch.stack([ev({"image": it["image"]})["image"] for it in items]).to(dev)
            fs.append(m.encoder(x).float().cpu())
            ys.append(torch.stack([it["label"] for it in items]))
        return torch.cat(fs), torch.cat(ys)

    def evaluate(m: nn.Module) -> dict[str, float]:
        base = m.module if hasattr(m, "module") else m
        xb, yb = embed(base, train_ds)
        xv, yv = embed(base, val_ds)
        s = knn_scores(xb, yb.numpy(), xv, k=min(20, len(xb)), num_classes=n_cls)
        return {"val_knn_accuracy": float((s.argmax(1) == yv.numpy()).mean())}

    trainer = Trainer(model, tcfg, train_ds, loss_step(cfg.loss), transform=tf, evaluate=evaluate,
                      select_metric="val_knn_accuracy")
    result = trainer.fit()
    summary: dict[str, Any] = {"task": "look_finetune", "steps": result.steps,
                               "first_loss": result.losses[0] if result.losses else None,
                               "last_loss": result.losses[-1] if result.losses else None,
                               "best": result.best, "samples_per_s": result.samples_per_s}
    if not trainer.dist.is_main or not result.finished:
        return summary
    summary["encoder_dir"] = str(save_encoder(model.encoder, cfg, "look_finetune", result.steps, mean, std))
    if cfg.evaluate:
        summary["frozen_eval"] = frozen_report(model.encoder, cfg, ev)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


register_task("look_finetune", LOOKFinetuneConfig,
              "supervised training with the LOOK leave-one-out kNN loss (momentum-key memory bank)")(run)
