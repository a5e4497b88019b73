"""Shared pieces of the issue-20 pretraining / fine-tuning / distillation tasks (``tov_vicreg``, ``m3i_pretrain``,
``look_finetune``, ``unip_distill``): the common config fields, in-memory data with sample indices, the
frozen-encoder evaluation (TWLV-I kNN + linear probe, :mod:`medvit.eval.frozen`) and the encoder checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medvit.config import option
from medvit.train.config import TrainConfig
from medvit.train.losses import LossSpec

logger = logging.getLogger(__name__)


def _train_default() -> TrainConfig:
    return TrainConfig(epochs=10, batch_size=32, blr=1e-3, betas=(0.9, 0.95), weight_decay=0.05, warmup_epochs=1,
                       progress=False)


@dataclass
class SSLTaskConfig:
    """Fields every issue-20 self-supervised / metric / distillation task shares."""

    output_dir: str = option("runs/ssl", "run folder: encoder/ (medvit checkpoint), log.csv, summary.json")
    dataset: str = option("retina_phantom", "registered dataset")
    dataset_args: dict[str, Any] = option(default_factory=dict, help="build_dataset kwargs, e.g. {n: 600, "
                                                                     "image_size: 64}")
    backbone: str = option("vit_tiny_patch16_224", "registered backbone (the encoder trained)")
    backbone_args: dict[str, Any] = option(default_factory=dict, help="backbone overrides (embed_dim, depth, "
                                                                      "patch_size, ...)")
    pretrained: str | None = option(None, "start the encoder from this checkpoint / weight tag")
    image_size: int = option(64, "square training size")
    in_chans: int = option(1, "encoder input channels")
    mean: list[float] | None = option(None, "normalisation mean; None = the dataset's registered default")
    std: list[float] | None = option(None, "normalisation std; None = the dataset's registered default")
    rrc_scale: tuple[float, float] = option((0.5, 1.0), "random resized crop area range of the views")
    hflip: float = option(0.5, "horizontal flip probability of the views")
    loss: LossSpec = option(default_factory=lambda: LossSpec("masked_bce"),
                            help="registered loss {name, args} (`medvit list loss`)")
    evaluate: bool = option(True, "kNN + linear probe of the frozen encoder on val and test at the end")
    train: TrainConfig = option(default_factory=_train_default, help="optimisation (AdamW, cosine schedule)")

    def __post_init__(self) -> None:
        from medvit.tasks.finetune_multilabel import check_backbone

        check_backbone(self.backbone, self.backbone_args, self.image_size)
        if self.in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {self.in_chans}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither (dataset default)")
        if not (0.0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1.0):
            raise ValueError(f"rrc_scale must satisfy 0 < lo <= hi <= 1, got {self.rrc_scale}")


def normalization(cfg: SSLTaskConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if cfg.mean is not None and cfg.std is not None:
        return tuple(cfg.mean), tuple(cfg.std)
    from medvit.data import dataset_normalization

    return dataset_normalization(cfg.dataset, cfg.in_chans)


class Indexed(torch.utils.data.Dataset):
    """Items of ``base`` reduced to ``image`` / ``label`` (+ ``frame_times``) plus ``index`` (position, long)."""

    def __init__(self, base: Any):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        it = self.base[i]
        out = {"image": it["image"], "index": torch.tensor(i, dtype=torch.long)}
        if "label" in it:
            out["label"] = torch.as_tensor(it["label"])
        return out


def build_split(cfg: SSLTaskConfig, split: str) -> Indexed:
    from medvit.data import build_dataset

    return Indexed(build_dataset(cfg.dataset, split, **cfg.dataset_args))


def make_encoder(cfg: SSLTaskConfig) -> nn.Module:
    """The registered backbone of ``cfg`` without a head (pooled features (B, D))."""
    from medvit.models import create_model

    return create_model(cfg.backbone, pretrained=cfg.pretrained, num_classes=0, img_size=cfg.image_size,
                        in_chans=cfg.in_chans, **cfg.backbone_args)


class EMA(nn.Module):
    """A frozen exponential-moving-average copy of ``online`` (the target / momentum encoder of MoCo-style
    methods): ``update()`` sets θ_t ← m·θ_t + (1 − m)·θ_o. Its parameters never take gradients."""

    def __init__(self, online: nn.Module, momentum: float = 0.996):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.module = copy.deepcopy(online)
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        for t, o in zip(self.module.parameters(), online.parameters()):
            t.mul_(self.momentum).add_(o.detach(), alpha=1 - self.momentum)
        for t, o in zip(self.module.buffers(), online.buffers()):
            t.copy_(o)

    def forward(self, *args: Any, **kw: Any) -> Any:
        with torch.no_grad():
            return self.module(*args, **kw)


@torch.no_grad()
def frozen_report(encoder: nn.Module, cfg: SSLTaskConfig, eval_tf: Any, frame: str = "") -> dict[str, Any]:
    """TWLV-I kNN + linear probe of the frozen ``encoder`` (train split as bank/training set) on val and test.

    ``frame="series"``: series items (C, T, H, W) are embedded frame by frame and described by the per-dimension
    mean and standard deviation over time (2·D features), so motion is visible to the probe.
    """
    from medvit.eval.frozen import frozen_eval

    was = encoder.training
    encoder.eval()
    dev = next(encoder.parameters()).device
    feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "val", "test"):
        ds = build_split(cfg, split)
        fs, ys = [], []
        for i in range(0, len(ds), 64):
            items = [ds[j] for j in range(i, min(i + 64, len(ds)))]
            if frame == "series":
                for it in items:
                    img = it["image"]
                    frames = torch.stack([eval_tf({"image": img[:, t]})["image"] for t in range(img.shape[1])])
                    f = encoder(frames.to(dev)).float().cpu()
                    fs.append(torch.cat([f.mean(0), f.std(0)])[None])
            else:
                imgs = [eval_tf({"image": it["image"]})["image"] for it in items]
                fs.append(encoder(torch.stack(imgs).to(dev)).float().cpu())
            ys.append(torch.stack([it["label"] for it in items]))
        feats[split] = (torch.cat(fs).numpy(), torch.cat(ys).numpy())
    encoder.train(was)
    names = None
    out = {}
    for split in ("val", "test"):
        rep = frozen_eval(feats["train"][0], feats["train"][1], feats[split][0], feats[split][1], names,
                          k=min(20, len(feats["train"][0])), seed=cfg.train.seed)
        out[split] = {"knn": {k: v for k, v in rep["knn"].items() if not isinstance(v, (list, dict))},
                      "linear_probe": {k: v for k, v in rep["linear_probe"].items()
                                       if not isinstance(v, (list, dict))}}
    return out


def save_encoder(encoder: nn.Module, cfg: SSLTaskConfig, task: str, steps: int,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> Path:
    """``output_dir/encoder``: a medvit checkpoint of the trained encoder with its preprocessing contract."""
    from medvit.models import save_checkpoint
    from medvit.tasks.finetune_multilabel import preprocessing_contract

    contract = dataclasses.replace(preprocessing_contract(cfg, mean, std), research_only=True,
                                   source=f"medvit {task} on {cfg.dataset} ({steps} steps)",
                                   description=f"{task} encoder (no classification head)")
    out = Path(cfg.output_dir) / "encoder"
    save_checkpoint(encoder, out, contract=contract, extra={"task": task, "steps": steps})
    return out
