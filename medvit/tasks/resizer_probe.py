"""Task ``resizer_probe``: a learnable resizer (MULLER) in front of a frozen backbone, against bilinear.

High-resolution images (``source_size``) are resized to the backbone's input (``image_size``) by each
resizer of :data:`medvit.nn.resizer.RESIZERS`; the backbone stays frozen and only the resizer (MULLER:
4 scalars) and a linear head on the pooled features are trained. The best epoch is chosen on val
mean AUROC and test is reported once, for each resizer on the same data, backbone and seed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medvit.config import option
from medvit.tasks.base import register_task

logger = logging.getLogger(__name__)


@dataclass
class ResizerProbeConfig:
    """Compare resizers in front of one frozen backbone on a multi-label dataset; writes ``summary.json``."""

    output_dir: str = option("runs/resizer_probe", "where summary.json and the resolved config go")
    dataset: str = option("cxr_phantom", "registered multi-label dataset built in memory (n=, seed=, image_size=)")
    n: int = option(600, "images over all splits (the dataset's patient-disjoint train/val/test)")
    seed: int = option(0, "dataset and initialisation seed")
    source_size: int = option(256, "side of the high-resolution images the resizer receives")
    image_size: int = option(64, "side of the backbone input the resizer produces")
    backbone: str = option("vit_tiny_patch16_224", "registered backbone name")
    backbone_args: dict = option(default_factory=dict, help="constructor overrides, e.g. {embed_dim: 48, depth: 2}")
    pretrained: str | None = option(None, "checkpoint dir / weights file / weight tag; None = random (frozen) init")
    in_chans: int = option(1, "channels fed to the backbone")
    resizers: list = option(default_factory=lambda: ["bilinear", "muller"],
                            help="resizer names compared (medvit.nn.resizer.RESIZERS)")
    epochs: int = option(5, "passes over the training split")
    batch_size: int = option(32, "images per step")
    lr: float = option(1e-2, "AdamW learning rate of the resizer and the linear head")
    device: str = option("cpu", '"cpu" or "cuda"')

    def __post_init__(self) -> None:
        from medvit.nn.resizer import RESIZERS

        for k in ("n", "source_size", "image_size", "epochs", "batch_size", "in_chans"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        bad = [r for r in self.resizers if r not in RESIZERS]
        if bad or not self.resizers:
            raise ValueError(f"resizers {bad or self.resizers!r} unknown; choose from {sorted(RESIZERS)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def _tensors(cfg: ResizerProbeConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from medvit.data import build_dataset

    ds = build_dataset(cfg.dataset, split, n=cfg.n, seed=cfg.seed, image_size=cfg.source_size)
    if getattr(ds, "classification", False):
        raise ValueError(f"resizer_probe needs a multi-label dataset; {cfg.dataset!r} is a classification set")
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([it["image"] for it in items])
    if x.shape[1] != cfg.in_chans:
        x = x[:, :1].expand(-1, cfg.in_chans, -1, -1).contiguous()
    return x, torch.stack([it["label"] for it in items])


def _features(model: torch.nn.Module, resizer: torch.nn.Module, x: torch.Tensor, bs: int, dev: str) -> torch.Tensor:
    return torch.cat([model(resizer(x[i : i + bs].to(dev))) for i in range(0, len(x), bs)])


def run(cfg: ResizerProbeConfig) -> dict[str, Any]:
    """Train each resizer + linear head on the frozen backbone; report val-selected test mean AUROC."""
    from medvit.eval.metrics import mean_auroc
    from medvit.models import create_model
    from medvit.nn.resizer import create_resizer

    data = {s: _tensors(cfg, s) for s in ("train", "val", "test")}
    dev = cfg.device
    results: dict[str, Any] = {}
    for name in cfg.resizers:
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.backbone, pretrained=cfg.pretrained, in_chans=cfg.in_chans, img_size=cfg.image_size,
                             num_classes=0, **cfg.backbone_args).to(dev).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        resizer = create_resizer(name, cfg.image_size).to(dev)
        head = torch.nn.Linear(model.embed_dim, data["train"][1].shape[1]).to(dev)
        opt = torch.optim.AdamW([*resizer.parameters(), *head.parameters()], lr=cfg.lr, weight_decay=0.0)
        xtr, ytr = data["train"]
        g = torch.Generator().manual_seed(cfg.seed)
        best: dict[str, Any] = {"val_auroc": -1.0}
        for epoch in range(cfg.epochs):
            perm = torch.randperm(len(xtr), generator=g)
            for i in range(0, len(xtr), cfg.batch_size):
                idx = perm[i : i + cfg.batch_size]
                logits = head(model(resizer(xtr[idx].to(dev))))
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, ytr[idx].to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                xv, yv = data["val"]
                val = mean_auroc(yv.numpy(), head(_features(model, resizer, xv, cfg.batch_size, dev)).cpu().numpy())
            logger.info("resizer %s epoch %d: val mean AUROC %.4f", name, epoch, val.mean)
            if val.mean > best["val_auroc"]:
                with torch.no_grad():
                    xt, yt = data["test"]
                    scores = head(_features(model, resizer, xt, cfg.batch_size, dev)).cpu().numpy()
                    test = mean_auroc(yt.numpy(), scores)
                best = {"val_auroc": round(val.mean, 4), "test_auroc": round(test.mean, 4), "epoch": epoch,
                        "resizer_parameters": {k: v.detach().cpu().tolist() for k, v in resizer.named_parameters()}}
        results[name] = best
    summary = {"dataset": cfg.dataset, "backbone": cfg.backbone, "source_size": cfg.source_size,
               "image_size": cfg.image_size, "split_sizes": {s: len(v[0]) for s, v in data.items()},
               "results": results}
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


# registered when medvit.tasks is imported
register_task("resizer_probe", ResizerProbeConfig,
              "compare learnable resizers (MULLER) against bilinear in front of a frozen backbone")(run)
