"""Task ``frozen_eval``: TWLV-I frozen-embedding evaluation (kNN k=200 τ=0.1 + linear probe) of any registered
backbone on any registered dataset, with per-class results (:mod:`medvit.eval.frozen`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medvit.config import option
from medvit.tasks.base import register_task

logger = logging.getLogger(__name__)


@dataclass
class FrozenEvalConfig:
    """Embed a dataset's train and test splits with a frozen backbone; score kNN and a linear probe."""

    output_dir: str = option("runs/frozen_eval", "where summary.json goes")
    dataset: str = option("cxr_phantom", "registered dataset name (`medvit list dataset`)")
    dataset_args: dict[str, Any] = option(default_factory=dict, help="build_dataset kwargs, e.g. {n: 400, seed: 0}")
    train_split: str = option("train", "split whose embeddings form the kNN bank and the probe's training set")
    test_split: str = option("test", "split evaluated")
    backbone: str = option("vit_small_patch16_224", "registered backbone")
    backbone_args: dict[str, Any] = option(default_factory=dict, help="constructor overrides")
    pretrained: str | None = option(None, "checkpoint dir / weights file / weight tag; None = random init")
    image_size: int = option(224, "evaluation size (square)")
    in_chans: int = option(1, "model input channels")
    k: int = option(200, "kNN neighbours (TWLV-I: 200)")
    tau: float = option(0.1, "kNN temperature (TWLV-I: 0.1)")
    probe_c: float = option(1.0, "linear probe inverse L2 strength (scikit-learn C)")
    batch_size: int = option(64, "images per forward pass")

    def __post_init__(self) -> None:
        if self.k < 1 or self.tau <= 0 or self.batch_size < 1:
            raise ValueError(f"need k >= 1, tau > 0, batch_size >= 1 (got {self.k}, {self.tau}, {self.batch_size})")


def _target(ds: Any) -> tuple[str, list[str]]:
    """("class", class_names) when items carry a class index, ("multilabel", label_names) for 0/1 vectors."""
    lab = ds[0]["label"]
    if getattr(lab, "ndim", 0) == 0:
        n = getattr(ds, "class_names", None)
        return "class", list(n) if n else []
    return "multilabel", list(getattr(ds, "label_names", None) or [])


def run(cfg: FrozenEvalConfig) -> dict[str, Any]:
    """Embed, then kNN + linear probe; writes ``summary.json`` with overall and per-class results."""
    from medvit.data import build_dataset, dataset_normalization
    from medvit.data.augment import build_eval_transform
    from medvit.eval.frozen import embed_dataset, frozen_eval
    from medvit.eval.predict import cache_dataset
    from medvit.models import create_model

    mean, std = dataset_normalization(cfg.dataset, cfg.in_chans)
    tf = build_eval_transform(cfg.image_size, mean, std, in_chans=cfg.in_chans)
    train_ds = build_dataset(cfg.dataset, cfg.train_split, **cfg.dataset_args)
    test_ds = build_dataset(cfg.dataset, cfg.test_split, **cfg.dataset_args)
    if not len(train_ds) or not len(test_ds):
        raise ValueError(f"frozen_eval: {cfg.dataset} split {cfg.train_split!r} has {len(train_ds)} and "
                         f"{cfg.test_split!r} {len(test_ds)} items; both must be non-empty")
    target, names = _target(train_ds)

    def items(ds: Any) -> Any:
        return cache_dataset(ds, tf, keys=("image", "label"))

    model = create_model(cfg.backbone, pretrained=cfg.pretrained, in_chans=cfg.in_chans, img_size=cfg.image_size,
                         num_classes=0, **cfg.backbone_args)
    xtr, ytr = embed_dataset(model, items(train_ds), cfg.batch_size)
    xte, yte = embed_dataset(model, items(test_ds), cfg.batch_size)
    ytr, yte = (ytr.astype(int), yte.astype(int)) if target == "class" else (ytr.round(), yte.round())
    rep = frozen_eval(xtr, ytr, xte, yte, class_names=names or None, k=cfg.k, tau=cfg.tau, probe_c=cfg.probe_c)
    summary = {"backbone": cfg.backbone, "pretrained": cfg.pretrained, "dataset": cfg.dataset, "target": target,
               "n_train": len(xtr), "n_test": len(xte), "embed_dim": int(xtr.shape[1]), **rep}
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    head = "accuracy" if target == "class" else "mean_auroc"
    logger.info("frozen_eval %s on %s: kNN %s %.4f, linear probe %.4f", cfg.backbone, cfg.dataset, head,
                rep["knn"][head] or np.nan, rep["linear_probe"][head] or np.nan)
    return summary


register_task("frozen_eval", FrozenEvalConfig,
              "TWLV-I frozen-embedding kNN (k=200, τ=0.1) + linear probe with per-class results")(run)
