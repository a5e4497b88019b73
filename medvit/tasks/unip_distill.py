"""Task ``unip_distill``: UNIP NMI-guided hybrid-attention distillation (casiatao/UNIP; notes §23).

A frozen teacher (any medvit checkpoint / weight tag with a ViT attention interface) provides the pre-softmax
attention logits of one block; the student's **last** block's logits are trained towards them with the registered
``attention_kl`` loss (KL(softmax(teacher) ‖ softmax(student)), mean over batch·heads·queries). The teacher block
is ``teacher_layer`` or, with ``teacher_layer: auto``, chosen by normalised mutual information (NMI) of the
teacher's attention on training images: the "hybrid" block whose mean NMI is closest to the midpoint of the
blocks' NMI range (global ≈ 0, local ≈ 1; our reading of "hybrid", ``[verify]`` against the paper's selection).
Teacher and student need the same token layout (image size, patch size, prefix tokens). Writes ``encoder/`` (the
student, a medvit checkpoint), ``log.csv``, ``summary.json`` (per-block teacher NMI, val KL before/after).
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
class UNIPDistillConfig(SSLTaskConfig):
    """Attention-map distillation of a student ViT's last block from a teacher block chosen by NMI."""

    output_dir: str = option("runs/unip_distill", "run folder: encoder/ (student), log.csv, summary.json")
    dataset: str = option("cxr_phantom", "registered image dataset (labels unused)")
    teacher: str = option("", "teacher: medvit checkpoint directory or weight tag (required)")
    teacher_backbone: str | None = option(None, "teacher backbone name when `teacher` is a weight tag / file")
    teacher_args: dict[str, Any] = option(default_factory=dict, help="teacher backbone overrides (weight tags)")
    teacher_layer: str = option("auto", 'teacher block index (0-based, negative from the end) or "auto" (NMI)')
    nmi_images: int = option(32, "training images used to measure the teacher's per-block NMI")
    loss: LossSpec = option(default_factory=lambda: LossSpec("attention_kl"), help="registered loss (attention_kl)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.teacher:
            raise ValueError("teacher: give a medvit checkpoint directory or a weight tag")
        if self.teacher_layer != "auto":
            try:
                int(self.teacher_layer)
            except ValueError:
                raise ValueError(f"teacher_layer must be an integer or 'auto', got {self.teacher_layer!r}") from None
        if self.nmi_images < 1:
            raise ValueError(f"nmi_images must be >= 1, got {self.nmi_images}")


def resolve_layer(layer: int, depth: int, key: str = "teacher_layer") -> int:
    """Block index ``layer`` (negative from the end) of a ``depth``-block model as 0..depth-1; ``ValueError`` naming
    ``key`` and the valid range ``[-depth, depth)`` when it is out of range (no silent wrap-around)."""
    if not -depth <= layer < depth:
        raise ValueError(f"{key}={layer} is out of range for a {depth}-block teacher: give an index in "
                         f"[{-depth}, {depth}) or 'auto'")
    return layer % depth


def block_logits(model: nn.Module, x: torch.Tensor, layer: int) -> torch.Tensor:
    """Pre-softmax attention logits (B, H, T, T) of block ``layer`` (negative from the end) of a medvit ViT;
    ``ValueError`` when ``layer`` is outside ``[-depth, depth)``."""
    n = len(model.blocks)
    k = resolve_layer(layer, n, "layer")
    t = model.forward_until(x, k)
    blk = model.blocks[k]
    return blk.attn.attention_logits(blk.norm1(t))


@torch.no_grad()
def teacher_nmi(teacher: nn.Module, x: torch.Tensor) -> list[float]:
    """Mean NMI of each teacher block's attention (heads and images averaged)."""
    from medvit.train.ssl_losses import attention_nmi

    return [float(attention_nmi(a).mean()) for a in teacher.attention_maps(x)]


def pick_hybrid_layer(nmi: list[float]) -> int:
    """Index of the block whose NMI is closest to the midpoint of the range (the "hybrid" pattern)."""
    mid = (min(nmi) + max(nmi)) / 2
    return min(range(len(nmi)), key=lambda i: abs(nmi[i] - mid))


class UNIPStep(nn.Module):
    """The loop's step: teacher logits (no gradient) vs the student's last-block logits through the loss."""

    def __init__(self, teacher: nn.Module, layer: int, loss: nn.Module):
        super().__init__()
        self.teacher, self.layer, self.loss = teacher, int(layer), loss
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> UNIPStep:  # the teacher stays in eval mode
        super().train(mode)
        self.teacher.eval()
        return self

    def outputs(self, student: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            t = block_logits(self.teacher, x, self.layer)
        s = block_logits(student.module if hasattr(student, "module") else student, x, -1)
        return {"teacher_logits": t, "student_logits": s}

    def forward(self, student: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return self.loss(self.outputs(student, batch["image"]), batch)


def load_teacher(cfg: UNIPDistillConfig) -> nn.Module:
    from medvit.models import create_model, load_model

    p = Path(cfg.teacher)
    if p.is_dir():
        return load_model(p)
    if not cfg.teacher_backbone:
        raise ValueError(f"teacher {cfg.teacher!r} is not a checkpoint directory; set teacher_backbone to load it "
                         "as a weight tag / file")
    return create_model(cfg.teacher_backbone, pretrained=cfg.teacher, num_classes=0, **cfg.teacher_args)


def run(cfg: UNIPDistillConfig) -> dict[str, Any]:
    """Distil; returns a summary (teacher NMI per block, chosen block, val KL before/after, student path)."""
    from medvit.data.augment import build_eval_transform, build_train_transform
    from medvit.tasks.ssl_common import build_split, make_encoder, normalization, save_encoder
    from medvit.train import Trainer
    from medvit.train.losses import build_loss

    mean, std = normalization(cfg)
    tcfg = dataclasses.replace(cfg.train, output_dir=cfg.output_dir)
    torch.manual_seed(tcfg.seed)
    teacher = load_teacher(cfg).eval()
    student = make_encoder(cfg)
    ev = build_eval_transform(cfg.image_size, mean, std, in_chans=cfg.in_chans)
    train_ds, val_ds = build_split(cfg, "train"), build_split(cfg, "val")
    x_nmi = torch.stack([ev({"image": train_ds[i]["image"]})["image"] for i in range(min(cfg.nmi_images,
                                                                                         len(train_ds)))])
    x_val = torch.stack([ev({"image": val_ds[i]["image"]})["image"] for i in range(min(64, len(val_ds)))])
    for name, m in (("teacher", teacher), ("student", student)):
        if not hasattr(m, "forward_until") or not hasattr(m, "blocks"):
            raise ValueError(f"{name} has no ViT block interface (forward_until / blocks); UNIP needs attention logits")
    nmi = teacher_nmi(teacher, x_nmi)
    layer = pick_hybrid_layer(nmi) if cfg.teacher_layer == "auto" else resolve_layer(int(cfg.teacher_layer),
                                                                                     len(teacher.blocks))
    step = UNIPStep(teacher, layer, build_loss(cfg.loss))
    with torch.no_grad():
        out = step.outputs(student, x_val)
        if out["teacher_logits"].shape[-1] != out["student_logits"].shape[-1]:
            raise ValueError(f"teacher block {layer} has {out['teacher_logits'].shape[-1]} tokens, the student's last "
                             f"block {out['student_logits'].shape[-1]}: use the same image size, patch size and "
                             "prefix tokens")
        kl_before = float(step.loss(out, {}))
    aug = build_train_transform(cfg.image_size, mean, std, cfg.rrc_scale, hflip_prob=cfg.hflip, in_chans=cfg.in_chans)

    def tf(item: dict[str, Any], g: torch.Generator) -> dict[str, Any]:
        return {"image": aug({"image": item["image"]}, g)["image"]}

    trainer = Trainer(student, tcfg, train_ds, step, transform=tf)
    result = trainer.fit()
    dev = next(student.parameters()).device
    with torch.no_grad():
        student.eval()
        kl_after = float(step.loss(step.outputs(student, x_val.to(dev)), {}))
    summary: dict[str, Any] = {"task": "unip_distill", "teacher_nmi": [round(v, 4) for v in nmi],
                               "teacher_layer": layer, "val_kl_before": kl_before, "val_kl_after": kl_after,
                               "steps": result.steps, "samples_per_s": result.samples_per_s}
    if not trainer.dist.is_main or not result.finished:
        return summary
    summary["encoder_dir"] = str(save_encoder(student, cfg, "unip_distill", result.steps, mean, std))
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


register_task("unip_distill", UNIPDistillConfig,
              "UNIP attention-map distillation from an NMI-chosen teacher block into the student's last block")(run)
