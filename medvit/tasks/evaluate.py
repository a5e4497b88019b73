"""Task ``evaluate`` (``medvit eval``): a trained model on a dataset split, with the model's own preprocessing.

The model directory is a medvit checkpoint (``model.safetensors`` + ``config.json``) or a PEFT adapter directory;
its weight contract gives the label names, the operating thresholds and the serving preprocessing
(:func:`medvit.data.augment.build_contract_eval_transform`, the numbers ``medvit infer`` feeds the model). Writes
``summary.json`` and the report of :func:`medvit.visualize.report.write_report` (ROC / PR per label, reliability
diagram, confusion table at the thresholds) into ``output_dir``.
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
class EvaluateConfig:
    """Evaluate a trained multi-label model; every field can be overridden as ``key=value``."""

    model: str = option("", "trained model directory (model.safetensors + config.json) or PEFT adapter directory")
    output_dir: str = option("runs/eval", "where summary.json, report.md/html and the figures go")
    dataset: str = option("cxr_phantom", "registered dataset (`medvit list dataset`)")
    dataset_args: dict[str, Any] = option(default_factory=dict, help="build_dataset kwargs, e.g. {root: DIR}")
    split: str = option("test", "split evaluated")
    thresholds: str = option("contract", '"contract" (the model\'s operating thresholds) or "youden" / "f1" / '
                                         '"accuracy" chosen on this split (optimistic: report only)')
    batch_size: int = option(64, "images per forward pass")
    precision: str = option("fp32", '"fp32" or "bf16" (autocast)')
    device: str = option("auto", '"auto" (cuda if available), "cpu" or "cuda[:i]"')
    n_bins: int = option(10, "reliability diagram bins on [0, 1]")
    channels_present: list[int] = option(default_factory=list, help="missing-channel study: 0-based input channels "
                                         "present at test time (empty = all); per-channel-token models (ChannelViT) "
                                         "get only these, other models get the absent channels zero-filled")

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model: give the trained model directory (model=DIR or --model DIR)")
        from medvit.eval.thresholds import THRESHOLD_RULES

        if self.thresholds not in ("contract", *THRESHOLD_RULES):
            raise ValueError(f"thresholds must be contract or one of {', '.join(THRESHOLD_RULES)}, got "
                             f"{self.thresholds!r}")
        if self.batch_size < 1 or self.n_bins < 2:
            raise ValueError("batch_size must be >= 1 and n_bins >= 2")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")


def load_trained(path: str | Path) -> tuple[torch.nn.Module, Any, str]:
    """(model in eval mode, weight contract, weights SHA-256) of a checkpoint or adapter directory.

    Raises FileNotFoundError when ``path`` is not a directory and ValueError naming the file when no contract
    (labels, thresholds, preprocessing) is recorded."""
    from medvit.models import WeightContract, load_model
    from medvit.peft.checkpoint import load_adapter, read_adapter_config

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"model {p}: not a directory (a checkpoint or adapter directory is expected)")
    if (p / "adapter_config.json").is_file():
        cfg = read_adapter_config(p)
        if not cfg.get("contract"):
            raise ValueError(f"{p / 'adapter_config.json'}: no weight contract (labels, thresholds, preprocessing)")
        contract = WeightContract.from_dict(cfg["contract"], source=str(p / "adapter_config.json"))
        return load_adapter(p, check_base=True).eval(), contract, str(cfg.get("sha256", ""))
    model = load_model(p)
    if model.contract is None:
        raise ValueError(f"{p / 'config.json'}: no weight contract (labels, thresholds, preprocessing)")
    return model.eval(), model.contract, model.checkpoint_sha256


def run(cfg: EvaluateConfig) -> dict[str, Any]:
    """Predict the split, score it and write the report; returns the summary (also ``summary.json``)."""
    from medvit.data import build_dataset
    from medvit.data.augment import build_contract_eval_transform
    from medvit.eval import choose_thresholds, mean_auroc
    from medvit.eval.predict import predict_multilabel
    from medvit.train.distributed import resolve_device
    from medvit.visualize.report import write_report

    model, contract, sha = load_trained(cfg.model)
    if not contract.multilabel:
        raise ValueError(f"{cfg.model}: the contract says softmax over labels (multilabel: false); medvit eval scores "
                         "multi-label models (per-label sigmoid), graded models report QWK in their tuning summary")
    names = list(contract.label_names)
    ds = build_dataset(cfg.dataset, cfg.split, **cfg.dataset_args)
    ds_names = list(getattr(ds, "label_names", []))
    if ds_names != names:
        raise ValueError(f"dataset {cfg.dataset!r} labels {ds_names} differ from the model's {names} "
                         f"({cfg.model}); evaluate on data with the model's label vocabulary")
    ds.transform = build_contract_eval_transform(contract)
    dev = resolve_device(cfg.device)
    if cfg.channels_present:
        from medvit.eval.channels import ChannelSubset

        model = ChannelSubset(model, cfg.channels_present, int(contract.in_chans)).eval()
    logits, y, mask = predict_multilabel(model, ds, cfg.batch_size, dev, cfg.precision)
    prob = torch.sigmoid(logits.float()).numpy()
    if cfg.thresholds == "contract":
        th = list(contract.thresholds) if contract.thresholds else [0.5] * len(names)
    else:
        th = choose_thresholds(y.numpy(), prob, mask.numpy(), cfg.thresholds)
    auc = mean_auroc(y, logits, mask, names)
    out = Path(cfg.output_dir)
    rep = write_report(out, y.numpy(), prob, mask.numpy(), names, th,
                       title=f"{contract.name or Path(cfg.model).name} on {cfg.dataset}/{cfg.split}", n_bins=cfg.n_bins)
    summary = {"task": "evaluate", "model": str(cfg.model), "model_sha256": sha, "dataset": cfg.dataset,
               "split": cfg.split, "n": len(ds), "mean_auroc": auc.mean, "auroc": auc.as_dict(), "ece": rep["ece"],
               "thresholds": dict(zip(names, th)), "threshold_source": cfg.thresholds, "report": str(out / "report.md"),
               "channels_present": list(cfg.channels_present) or "all"}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    logger.info("mean AUROC %.4f on %s/%s (%d images)", auc.mean, cfg.dataset, cfg.split, len(ds))
    return summary


register_task("evaluate", EvaluateConfig,
              "evaluate a trained model on a split: AUROC, ROC/PR curves, reliability, confusion at thresholds")(run)
