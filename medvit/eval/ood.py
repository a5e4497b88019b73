"""Out-of-distribution reference: a Gaussian over the training data's pooled features, scored by Mahalanobis distance.

Following Lee et al. (NeurIPS 2018, "A simple unified framework for detecting out-of-distribution samples"), the
reference is a mean and a shared covariance of the features the classifier head reads (the pooled, normalised
``pre_logits`` vector, i.e. the input of ``model.head``); multi-label outputs have no exclusive classes, so one mean
is fitted. The covariance is Ledoit-Wolf shrunk (:class:`sklearn.covariance.LedoitWolf`), so it is invertible for
any number of images. The score of an image is its Mahalanobis distance ``sqrt((f - mu)^T S^-1 (f - mu))``; the
threshold is the ``1 - target_fpr`` quantile of the validation split's scores, so in-distribution images are
flagged at about ``target_fpr``.

Storage: ``ood.safetensors`` (``mean`` (D,), ``precision`` (D, D), float32) in the checkpoint directory, and the
contract's ``ood`` entry (method, threshold, target and measured false-positive rates, feature dimension, the
file's SHA-256, which is checked at load).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

OOD_NAME = "ood.safetensors"
METHOD = "mahalanobis-ledoitwolf"


class FeatureTap:
    """Context manager capturing the input of ``model.head`` (pooled pre-logits features, (B, D)) per forward."""

    def __init__(self, model: nn.Module) -> None:
        head = getattr(model, "head", None)
        if not isinstance(head, nn.Module):
            raise ValueError(f"{type(model).__name__} has no `head` module; the OOD reference reads its input")
        self.head, self.features, self.handle = head, None, None

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.features = args[0].detach().float().cpu()

    def __enter__(self) -> FeatureTap:
        self.handle = self.head.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


@torch.no_grad()
def extract_features(model: nn.Module, ds: Any, batch_size: int = 128,
                     device: str | torch.device = "cpu") -> np.ndarray:
    """(N, D) float64 pre-logits features of ``model`` over dataset ``ds`` (items with a transformed ``image``)."""
    was = model.training
    model.eval()
    out = []
    with FeatureTap(model) as tap:
        for batch in torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False):
            model(batch["image"].to(device))
            out.append(tap.features.numpy().astype(np.float64))
    model.train(was)
    return np.concatenate(out)


@dataclass
class OODReference:
    """Mean (D,) and precision (D, D) of the training features, and the flag threshold on the distance."""

    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    info: dict[str, Any]  # the contract's ``ood`` entry

    def score(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, D) features -> (B,) Mahalanobis distances (float32)."""
        f = np.asarray(features, dtype=np.float64) - self.mean
        d2 = np.einsum("bi,ij,bj->b", f, self.precision, f)
        return np.sqrt(np.clip(d2, 0.0, None)).astype(np.float32)

    def flag(self, scores: np.ndarray) -> np.ndarray:
        """(B,) bool: outside the training distribution (score >= threshold)."""
        return np.asarray(scores) >= self.threshold


def fit_reference(train_features: np.ndarray, val_features: np.ndarray, target_fpr: float = 0.05,
                  test_features: np.ndarray | None = None) -> OODReference:
    """Fit mean + Ledoit-Wolf covariance on ``train_features`` (N, D); threshold at ``target_fpr`` on validation.

    Raises ValueError when there are fewer than 2 training or 1 validation images, or ``target_fpr`` is not in (0, 1).
    """
    from sklearn.covariance import LedoitWolf

    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    if len(train_features) < 2 or len(val_features) < 1:
        raise ValueError(f"the OOD reference needs >= 2 training and >= 1 validation images, got "
                         f"{len(train_features)} and {len(val_features)}")
    lw = LedoitWolf().fit(train_features)
    ref = OODReference(lw.location_.astype(np.float64), lw.precision_.astype(np.float64), 0.0, {})
    val = ref.score(val_features)
    ref.threshold = float(np.quantile(val, 1.0 - target_fpr, method="higher"))
    ref.info = {"method": METHOD, "features": "pre_logits (input of the classifier head)",
                "threshold": ref.threshold, "target_fpr": float(target_fpr),
                "val_fpr": float(np.mean(ref.flag(val))), "n_train": int(len(train_features)),
                "n_val": int(len(val_features)), "dim": int(train_features.shape[1]),
                "train_score_median": float(np.median(ref.score(train_features)))}
    if test_features is not None and len(test_features):
        ref.info["test_fpr"] = float(np.mean(ref.flag(ref.score(test_features))))
        ref.info["n_test"] = int(len(test_features))
    logger.info("OOD reference: threshold %.3f (val FPR %.3f at target %.3f)", ref.threshold, ref.info["val_fpr"],
                target_fpr)
    return ref


def save_reference(ref: OODReference, ckpt_dir: str | Path) -> dict[str, Any]:
    """Write ``ckpt_dir/ood.safetensors``; returns the contract ``ood`` entry (with the file's SHA-256)."""
    from safetensors.torch import save_file

    out = Path(ckpt_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (OOD_NAME + ".tmp")
    save_file({"mean": torch.from_numpy(ref.mean.astype(np.float32)),
               "precision": torch.from_numpy(ref.precision.astype(np.float32)).contiguous()}, str(tmp),
              metadata={"format": "medvit-ood/1", "method": METHOD})
    os.replace(tmp, out / OOD_NAME)
    return {**ref.info, "sha256": hashlib.sha256((out / OOD_NAME).read_bytes()).hexdigest()}


def load_reference(ckpt_dir: str | Path, info: dict[str, Any]) -> OODReference:
    """Read ``ckpt_dir/ood.safetensors`` for the contract entry ``info``; ValueError on a missing/changed file."""
    from safetensors.torch import load_file

    f = Path(ckpt_dir) / OOD_NAME
    if not f.is_file():
        raise ValueError(f"{f} is missing; the model's contract declares an OOD reference (restore the file or "
                         "remove 'ood' from config.json)")
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    if info.get("sha256") and sha != info["sha256"]:
        raise ValueError(f"{f}: SHA-256 {sha[:16]}... does not match the contract ({str(info['sha256'])[:16]}...)")
    t = load_file(str(f))
    if info.get("method", METHOD) != METHOD:
        raise ValueError(f"{f}: unknown OOD method {info.get('method')!r}; this medvit knows {METHOD!r}")
    mean, prec = t["mean"].double().numpy(), t["precision"].double().numpy()
    if prec.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"{f}: precision {tuple(prec.shape)} does not fit mean {tuple(mean.shape)}")
    return OODReference(mean, prec, float(info["threshold"]), dict(info))


def fit_for_model(model: nn.Module, train_ds: Any, val_ds: Any, test_ds: Any = None, target_fpr: float = 0.05,
                  batch_size: int = 128, device: str | torch.device = "cpu") -> OODReference:
    """Features of ``model`` over transformed datasets -> :func:`fit_reference` (test split: FPR reported only)."""
    tr = extract_features(model, train_ds, batch_size, device)
    va = extract_features(model, val_ds, batch_size, device)
    te = extract_features(model, test_ds, batch_size, device) if test_ds is not None else None
    return fit_reference(tr, va, target_fpr, te)
