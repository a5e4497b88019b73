"""Task ``finetune_segmentation``: a segmentation model (kind ``segmentation``) trained on a dataset's masks.

The dataset must give ``masks`` (dict name → (H, W) bool) with ``with_masks=True`` (the chest and retina
phantoms do). Each contract label is the union of the masks named ``label`` or ``label_<suffix>`` (so
``effusion`` joins ``effusion_left`` and ``effusion_right``). Loss: per-pixel binary cross-entropy + soft Dice
(Milletari et al., V-Net 2016); the epoch kept is the one with the best mean validation Dice, and the test
split is evaluated once with it. The loss is a registered ``loss`` (YAML ``loss: {name, args}``; default
``bce_dice``). ``output_dir/model`` is a checkpoint whose contract carries the
segmentation contract (labels, colours, SNOMED CT concepts from
:data:`medvit.models.segmentation.KNOWN_CONCEPTS`, DICOM SEG type), the preprocessing and the scope, so
``medvit infer`` writes DICOM SEG with it; ``summary.json`` and ``results.md`` hold Dice per label.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvit.config import option
from medvit.tasks.base import register_task
from medvit.train.losses import LossFeed, LossSpec, check_direct_loss, direct_loss

logger = logging.getLogger(__name__)


@dataclass
class FinetuneSegmentationConfig:
    """Segmentation training on a dataset's masks; every field can be overridden as ``key=value``."""

    output_dir: str = option("runs/finetune_segmentation", "run folder: model/, summary.json, results.md")
    dataset: str = option("cxr_phantom", "registered dataset giving masks with with_masks=True")
    dataset_args: dict[str, Any] = option(default_factory=dict, help="build_dataset kwargs, e.g. {n: 1500}")
    labels: list[str] = option(default_factory=lambda: ["lung_right", "lung_left", "heart"],
                               help="contract labels, one output channel each (mask name or its prefix)")
    segmenter: str = option("vit_linear_seg", "registered segmentation model (`medvit list segmentation`)")
    segmenter_args: dict[str, Any] = option(default_factory=dict, help="segmentation model arguments (upsample)")
    backbone: str = option("vit_tiny_patch16_224", "registered backbone inside the segmentation model")
    backbone_args: dict[str, Any] = option(default_factory=dict, help="backbone overrides (patch_size, depth, ...)")
    pretrained: str | None = option(None, "backbone weights (checkpoint dir / weight tag); None = random init")
    image_size: int = option(64, "training size (square; phantoms are generated at this size)")
    in_chans: int = option(1, "model input channels")
    epochs: int = option(20, "passes over the training split")
    batch_size: int = option(32, "images per step")
    lr: float = option(1e-3, "AdamW peak learning rate (cosine decay, 1 warm-up epoch)")
    weight_decay: float = option(0.05, "AdamW weight decay")
    seed: int = option(0, "seed of initialisation and batch order")
    threshold: float = option(0.5, "per-pixel probability threshold recorded in the contract")
    seg_type: str = option("BINARY", "DICOM SEG type `medvit infer` writes: BINARY | FRACTIONAL")
    threads: int = option(0, "torch threads (0 = torch default)")
    model_name: str = option("", 'contract name ("" = "<dataset>-<segmenter>")')
    model_version: str = option("1", "contract version")
    source: str = option("", "free text stored in the contract")
    modalities: list[str] = option(default_factory=list, help="contract scope, e.g. [CR, DX]")
    view_positions: list[str] = option(default_factory=list, help="contract scope, e.g. [PA, AP]")
    body_parts: list[str] = option(default_factory=list, help="contract scope, e.g. [CHEST]")
    loss: LossSpec | None = option(None, "training loss by registered name (`medvit list loss`) on batch 'mask' "
                                         "(K, H, W) targets; null = bce_dice (per-pixel BCE + soft Dice)")

    def loss_feed(self, meta: dict[str, Any]) -> LossFeed:
        """What the training step hands the loss: ``{"mask": (B, K, H, W)}``, K = len(labels); default bce_dice."""
        return LossFeed(("mask",), None, len(self.labels), LossSpec("bce_dice"), "finetune_segmentation")

    def __post_init__(self) -> None:
        if self.loss is not None:
            check_direct_loss(self.loss.name)
        if not self.labels:
            raise ValueError("labels must name at least one mask")
        if self.seg_type not in ("BINARY", "FRACTIONAL"):
            raise ValueError(f"seg_type must be BINARY or FRACTIONAL, got {self.seg_type!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.epochs < 1 or self.batch_size < 1 or self.image_size < 1:
            raise ValueError("epochs, batch_size and image_size must be >= 1")


def label_masks(masks: dict[str, Any], labels: list[str], size: tuple[int, int]) -> np.ndarray:
    """(K, H, W) bool: label k = union of the masks named ``labels[k]`` or ``labels[k] + "_..."`` (empty if none)."""
    out = np.zeros((len(labels), *size), bool)
    for k, lab in enumerate(labels):
        for name, m in masks.items():
            if name == lab or name.startswith(lab + "_"):
                out[k] |= np.asarray(m, bool)
    return out


def _tensors(ds: Any, labels: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N, C, S, S) float in [0, 1] and masks (N, K, S, S) bool of ``ds`` (held in memory)."""
    xs, ys = [], []
    for i in range(len(ds)):
        item = ds[i]
        x = item["image"]
        if tuple(x.shape[-2:]) != (size, size):
            raise ValueError(f"dataset image {i} is {tuple(x.shape[-2:])}, expected {size}x{size}: set "
                             "dataset_args.image_size to image_size")
        xs.append(x)
        ys.append(torch.from_numpy(label_masks({k: v.numpy() for k, v in item["masks"].items()}, labels,
                                               (size, size))))
    return torch.stack(xs), torch.stack(ys)


def _evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mean: float, std: float,
              threshold: float, bs: int = 64) -> np.ndarray:
    """Dice per label (K,), averaged over images of (x, y)."""
    from medvit.models.segmentation import dice_per_label

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), bs):
            p = torch.sigmoid(model((x[i:i + bs] - mean) / std))
            out.append(dice_per_label(p, y[i:i + bs], threshold))
    return torch.cat(out).mean(0).numpy()


def run(cfg: FinetuneSegmentationConfig) -> dict[str, Any]:
    """Train, select on validation Dice, test once, save the checkpoint with its segmentation contract."""
    from medvit.data import build_dataset, dataset_normalization
    from medvit.models import WeightContract, create_model, save_checkpoint
    from medvit.models.segmentation import SegmentationContract, phantom_segment_labels
    from medvit.tasks.finetune_multilabel import preprocessing_contract

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    seg_labels = phantom_segment_labels(cfg.labels)
    args = {**cfg.dataset_args, "image_size": cfg.dataset_args.get("image_size", cfg.image_size), "with_masks": True}
    data = {s: _tensors(build_dataset(cfg.dataset, s, **args), cfg.labels, cfg.image_size)
            for s in ("train", "val", "test")}
    for s, (x, _) in data.items():
        if len(x) == 0:
            raise ValueError(f"dataset {cfg.dataset!r} split {s!r} is empty (dataset_args {cfg.dataset_args})")
    mean_t, std_t = dataset_normalization(cfg.dataset)
    mean, std = float(mean_t[0]), float(std_t[0])
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.segmenter, backbone=cfg.backbone, num_labels=len(cfg.labels),
                         backbone_args={**cfg.backbone_args, "img_size": cfg.image_size, "in_chans": cfg.in_chans},
                         backbone_pretrained=cfg.pretrained, **cfg.segmenter_args)
    model.model_args["backbone_pretrained"] = None  # the checkpoint holds every weight
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = direct_loss(cfg.loss, cfg.loss_feed({}).default)
    xtr, ytr = data["train"]
    steps_per_epoch = math.ceil(len(xtr) / cfg.batch_size)
    total, warm = cfg.epochs * steps_per_epoch, steps_per_epoch
    def lr_factor(s: int) -> float:  # linear warm-up over the first epoch, then cosine to 0
        return (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    g = torch.Generator().manual_seed(cfg.seed)
    best, best_state, history = -1.0, None, []
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        losses = []
        for i in range(0, len(xtr), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            x, y = (xtr[idx] - mean) / std, ytr[idx].float()
            loss = loss_fn(model(x), {"mask": y})
            lv = loss.item()  # one read of the loss per step (the check and the epoch mean)
            if not math.isfinite(lv):  # stop before NaN/inf reaches the weights: no NaN model is ever saved
                raise FloatingPointError(f"loss is not finite ({lv}) at epoch {epoch + 1}, step "
                                         f"{i // cfg.batch_size + 1}; nothing saved: check loss.args and lower lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(lv)
        val = _evaluate(model, *data["val"], mean, std, cfg.threshold)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_dice": [round(float(v), 4)
                                                                                         for v in val]})
        logger.info("epoch %d loss %.4f val dice %s", epoch + 1, np.mean(losses), np.round(val, 3).tolist())
        if float(val.mean()) > best:
            best = float(val.mean())
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    val = _evaluate(model, *data["val"], mean, std, cfg.threshold)
    test = _evaluate(model, *data["test"], mean, std, cfg.threshold)
    base = preprocessing_contract(cfg, (mean,), (std,))
    fields = base.to_dict()
    fields.update(crop_mode="pad", interpolation="bilinear",
                  segmentation=SegmentationContract(seg_labels, seg_type=cfg.seg_type).to_dict(),
                  label_names=list(cfg.labels), thresholds=[cfg.threshold] * len(cfg.labels),
                  modalities=list(cfg.modalities), view_positions=list(cfg.view_positions),
                  body_parts=list(cfg.body_parts), name=cfg.model_name or f"{cfg.dataset}-{cfg.segmenter}",
                  version=cfg.model_version, source=cfg.source,
                  description="segmentation: per-label masks, written as DICOM SEG by medvit infer")
    contract = WeightContract(**fields)
    save_checkpoint(model, out / "model", contract=contract,
                    extra={"task": "finetune_segmentation", "val_dice": val.tolist(), "test_dice": test.tolist()})
    summary = {"labels": cfg.labels, "val_dice": dict(zip(cfg.labels, map(float, val), strict=True)),
               "test_dice": dict(zip(cfg.labels, map(float, test), strict=True)),
               "mean_val_dice": float(val.mean()), "mean_test_dice": float(test.mean()),
               "n": {s: len(v[0]) for s, v in data.items()}, "seconds": round(time.perf_counter() - t0, 1),
               "history": history, "model": str(out / "model")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    rows = "\n".join(f"| {k} | {summary['val_dice'][k]:.3f} | {summary['test_dice'][k]:.3f} |" for k in cfg.labels)
    (out / "results.md").write_text(f"# {contract.name}: Dice per label (epoch chosen on validation)\n\n"
                                    f"| label | val Dice | test Dice |\n|---|---|---|\n{rows}\n")
    return summary


register_task("finetune_segmentation", FinetuneSegmentationConfig,
              "segmentation model on a dataset's masks (BCE + soft Dice, selection on validation Dice)")(run)
