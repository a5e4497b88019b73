"""Task ``ood_reference``: add an out-of-distribution reference to an existing checkpoint without retraining it.

Loads the checkpoint (weights unchanged, SHA-256 verified), reads the training / validation / test splits of the
dataset it was trained on through the checkpoint's own contract preprocessing
(:func:`medvit.data.augment.build_contract_eval_transform`), fits the reference of :mod:`medvit.eval.ood`
(mean + Ledoit-Wolf covariance of the pooled features, threshold at ``target_fpr`` on validation, FPR measured
on test), writes ``ood.safetensors`` beside the weights and records the ``ood`` entry in ``config.json``'s
contract. ``finetune_multilabel`` does the same at the end of training (``ood_fpr``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvit.config import option
from medvit.tasks.base import register_task

logger = logging.getLogger(__name__)


@dataclass
class OODReferenceConfig:
    """Which checkpoint, which data; every field can be overridden as ``key=value``."""

    model: str = option("", "checkpoint directory (model.safetensors + config.json); the reference is written into it")
    dataset: str = option("cxr_phantom", "registered dataset the model was trained on")
    dataset_args: dict[str, Any] = option(default_factory=dict, help="build_dataset kwargs (as in the training run)")
    train_split: str = option("train", "split the reference is fitted on")
    val_split: str = option("val", "split the threshold is chosen on")
    test_split: str = option("test", 'split the false-positive rate is reported on ("" = none)')
    target_fpr: float = option(0.05, "fraction of validation images flagged")
    max_train: int = option(10000, "training images used (evenly spaced)")
    batch_size: int = option(128, "feature-extraction batch size")

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model: give the checkpoint directory (model=DIR)")
        if not 0.0 < self.target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in (0, 1), got {self.target_fpr}")


def run(cfg: OODReferenceConfig) -> dict[str, Any]:
    """Fit and store the reference; returns the contract's ``ood`` entry."""
    from medvit.data import build_dataset
    from medvit.data.augment import build_contract_eval_transform
    from medvit.eval.predict import cache_dataset
    from medvit.io.safe_write import atomic_write
    from medvit.models import load_model
    from medvit.models.checkpoint import CONFIG_NAME, FILE_MODE
    from medvit.tasks.finetune_multilabel import fit_ood

    ckpt = Path(cfg.model)
    model = load_model(ckpt).eval()
    if model.contract is None:
        raise ValueError(f"{ckpt}: checkpoint has no weight contract; the reference needs its preprocessing")
    tf = build_contract_eval_transform(model.contract)
    args = dict(cfg.dataset_args)
    train = build_dataset(cfg.dataset, cfg.train_split, **args)
    val = cache_dataset(build_dataset(cfg.dataset, cfg.val_split, **args), tf, keys=("image",))
    test = cache_dataset(build_dataset(cfg.dataset, cfg.test_split, **args), tf, keys=("image",)) \
        if cfg.test_split else None
    info = fit_ood(model, train, val, test, tf, cfg.target_fpr, cfg.max_train, cfg.batch_size, "cpu", ckpt)
    info["fitted_on"] = f"{cfg.dataset} {args} splits {cfg.train_split}/{cfg.val_split}/{cfg.test_split or '-'}"
    doc = json.loads((ckpt / CONFIG_NAME).read_text())
    doc["contract"]["ood"] = info
    atomic_write(ckpt / CONFIG_NAME, json.dumps(doc, indent=2), mode=FILE_MODE)
    logger.info("OOD reference written to %s: threshold %.3f, val FPR %.3f, test FPR %s", ckpt, info["threshold"],
                info["val_fpr"], info.get("test_fpr"))
    return info


# registered when medvit.tasks is imported
register_task("ood_reference", OODReferenceConfig, "add an out-of-distribution reference (Mahalanobis, "
              "threshold at a validation FPR) to a trained checkpoint")(run)
