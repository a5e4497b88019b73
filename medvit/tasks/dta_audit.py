"""Task ``dta_audit``: how much a tuned model's accuracy drops under the Downstream Transfer Attack crafted on the
public backbone it was tuned from (DTA, arXiv 2408.01705; :mod:`medvit.eval.dta`).

The attacker holds only ``backbone_checkpoint`` (the pre-trained weights): PGD in an ℓ∞ ball of radius ``eps``
(pixel-intensity units, images scaled to [0, 1] before the contract's normalisation) minimises the clean/perturbed
token cosine at the backbone's most vulnerable block (searched on ``search_images`` unless ``layer`` ≥ 0). The
tuned model ``checkpoint`` is then evaluated on ``split`` clean, under the attack, and under random ±eps sign
noise of the same norm. ``summary.json``: loss, metric (mean AUROC for multi-label heads, accuracy otherwise)
and accuracy at the contract's thresholds (multi-label: per label-entry) for the three inputs, and the drops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from medvit.config import option
from medvit.tasks.base import register_task
from medvit.tasks.compress_tasks import _load_checkpoint, _metric, _stack, _write, input_mismatch

logger = logging.getLogger(__name__)


@dataclass
class DTAAuditConfig:
    """Accuracy drop of a tuned checkpoint under DTA crafted on its pre-trained backbone."""

    checkpoint: str = option("", "the tuned (downstream) medvit checkpoint, with a weight contract")
    backbone_checkpoint: str = option("", "the public pre-trained backbone it was tuned from (medvit checkpoint)")
    output_dir: str = option("runs/dta_audit", "where summary.json goes")
    dataset: str = option("cxr_phantom", "registered dataset name (`medvit list dataset`)")
    dataset_args: dict[str, Any] = option(default_factory=dict, help="build_dataset kwargs, e.g. {n: 400, seed: 0}")
    split: str = option("test", "split the tuned model is evaluated on")
    max_images: int = option(0, "evaluate at most this many images of the split (0 = all)")
    eps: float = option(4 / 255, "ℓ∞ radius in pixel-intensity units (images in [0, 1])")
    steps: int = option(10, "PGD steps")
    layer: int = option(-1, "backbone block attacked; -1 = the most vulnerable one (short attack on search_images)")
    search_images: int = option(16, "images the vulnerable-block search runs on")
    batch_size: int = option(32, "images per attack / forward batch")
    seed: int = option(0, "random start and noise seed")

    def __post_init__(self) -> None:
        if not self.eps > 0 or self.steps < 1:
            raise ValueError(f"need eps > 0 and steps >= 1, got eps={self.eps}, steps={self.steps}")


def _label_accuracy(logits: torch.Tensor, y: torch.Tensor, thresholds: list[float] | None) -> float:
    if y.dim() == 1:
        return float((logits.argmax(1) == y).float().mean())
    th = torch.tensor(thresholds if thresholds else [0.5] * y.shape[1])
    return float(((torch.sigmoid(logits) >= th) == (y >= 0.5)).float().mean())


def run_dta_audit(cfg: DTAAuditConfig) -> dict[str, Any]:
    """Craft DTA on the backbone, evaluate the tuned model clean / attacked / noised; returns the summary."""
    from medvit.data import build_dataset
    from medvit.data.augment import build_contract_eval_transform
    from medvit.eval.dta import dta_attack, most_vulnerable_layer, transfer_report
    from medvit.eval.predict import cache_dataset

    tuned = _load_checkpoint(cfg.checkpoint)
    if not cfg.backbone_checkpoint:
        raise ValueError("backbone_checkpoint is required (the pre-trained backbone the attacker holds)")
    from medvit.models import load_model

    backbone = load_model(cfg.backbone_checkpoint).eval()
    if not hasattr(backbone, "forward_intermediates") or not hasattr(backbone, "blocks"):
        raise ValueError(f"{cfg.backbone_checkpoint}: {getattr(backbone, 'arch_name', '?')} has no ViT blocks / "
                         "forward_intermediates to attack")
    if cfg.layer >= len(backbone.blocks):
        raise ValueError(f"layer {cfg.layer} >= the backbone's {len(backbone.blocks)} blocks")
    c = tuned.contract
    if c.segmentation is not None:
        raise ValueError(f"checkpoint {cfg.checkpoint}: a segmentation model (its contract has key 'segmentation'); "
                         "dta_audit scores a classifier tuned from the backbone (per-image logits)")
    why = input_mismatch(tuned, "checkpoint", backbone, "backbone_checkpoint")
    if why:  # the attack is crafted in the tuned model's input space: the backbone must take the same tensor
        raise ValueError(f"the tuned checkpoint and the backbone it is attacked through take different inputs: {why}")
    ds = cache_dataset(build_dataset(cfg.dataset, cfg.split, **cfg.dataset_args), build_contract_eval_transform(c),
                       keys=("image", "label"))
    if not len(ds):
        raise ValueError(f"{cfg.dataset}: split {cfg.split!r} is empty")
    x, y = _stack(ds, cfg.max_images or None)
    n_out = len(c.label_names) if c.label_names else None
    if y.dim() == 2 and n_out is not None and y.shape[1] != n_out:
        raise ValueError(f"checkpoint {cfg.checkpoint}: contract key 'label_names' has {n_out} labels, the dataset "
                         f"{cfg.dataset!r} gives {y.shape[1]} per image")
    y = y.float() if y.dim() == 2 else y.long()
    loss_fn = F.binary_cross_entropy_with_logits if y.dim() == 2 else F.cross_entropy
    mean, std = torch.tensor(c.mean, dtype=torch.float64), torch.tensor(c.std, dtype=torch.float64)
    eps_in = float(cfg.eps / std.max())  # ≤ eps in pixel units on every channel
    clamp = (float(((0 - mean) / std).max()), float(((1 - mean) / std).min()))
    if cfg.layer >= 0:
        layer, scores = cfg.layer, {}
    else:
        layer, scores = most_vulnerable_layer(backbone, x[:cfg.search_images], eps_in, steps=3)
    logits: dict[str, list[torch.Tensor]] = {"clean": [], "dta": [], "noise": []}
    cos = []
    for i in range(0, len(x), cfg.batch_size):
        xb, yb = x[i:i + cfg.batch_size], y[i:i + cfg.batch_size]
        xa, info = dta_attack(backbone, xb, eps_in, layer, cfg.steps, clamp=clamp, seed=cfg.seed + i)
        cos.append(info["cosine"])
        z: dict[str, torch.Tensor] = {}
        transfer_report(tuned, xb, yb, xa, eps_in, loss_fn=loss_fn, seed=cfg.seed + i, clamp=clamp, logits=z)
        for k in logits:
            logits[k].append(z[k])
    out: dict[str, Any] = {"checkpoint": cfg.checkpoint, "backbone_checkpoint": cfg.backbone_checkpoint,
                           "split": cfg.split, "images": int(len(x)), "eps_pixels": cfg.eps, "eps_input": eps_in,
                           "layer": layer, "layer_search_cosine": scores,
                           "backbone_token_cosine": float(torch.cat(cos).mean())}
    for k, v in logits.items():
        zz = torch.cat(v)
        out[k] = {"loss": float(loss_fn(zz, y)), **_metric(zz, y),
                  "label_accuracy": _label_accuracy(zz, y, list(c.thresholds) if c.thresholds else None)}
    key = "mean_auroc" if y.dim() == 2 else "accuracy"
    out["drop"] = {f"{key}_dta": out["clean"][key] - out["dta"][key],
                   f"{key}_noise": out["clean"][key] - out["noise"][key],
                   "label_accuracy_dta": out["clean"]["label_accuracy"] - out["dta"]["label_accuracy"],
                   "label_accuracy_noise": out["clean"]["label_accuracy"] - out["noise"]["label_accuracy"]}
    _write(Path(cfg.output_dir), out)
    logger.info("dta_audit: block %d, %s clean %.4f → DTA %.4f (noise %.4f)", layer, key, out["clean"][key],
                out["dta"][key], out["noise"][key])
    return out


register_task("dta_audit", DTAAuditConfig, "accuracy drop of a tuned model under the DTA attack crafted on its "
              "pre-trained backbone")(run_dta_audit)
