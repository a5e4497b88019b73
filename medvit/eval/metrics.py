"""Classification metrics: scikit-learn's, with medvit's input checks, label masks and NaN rules around them.

- :func:`binary_auroc`: area under the ROC curve of one label (``sklearn.metrics.roc_auc_score``; NaN, not an
  error, when one class is absent).
- :func:`mean_auroc`: per-class AUROC of a multi-label problem with optional label masking, and their mean
  over the classes where it is defined (both classes present) — the thorax-MAE paper's metric.
- :func:`quadratic_weighted_kappa`: Cohen's kappa with quadratic weights (``sklearn.metrics.cohen_kappa_score(
  y_true, y_pred, weights="quadratic")``), the usual metric of ordinal grading (e.g. AMD stage).

Metrics are registered under registry kind ``"metric"``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medvit.registry import REGISTRY

ArrayLike = Any  # numpy array, torch tensor or nested lists


def _to_numpy(a: ArrayLike, name: str) -> np.ndarray:
    """Tensor / list / array -> numpy array (torch tensors are detached and moved to the CPU)."""
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy() if a.dtype.is_floating_point else a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype == object:
        raise TypeError(f"{name} must be numeric, got an object array")
    return arr


def binary_auroc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """AUROC of one binary label: y_true (N,) in {0, 1}, y_score (N,) -> float; NaN if one class is absent."""
    y = _to_numpy(y_true, "y_true").reshape(-1)
    s = _to_numpy(y_score, "y_score").astype(np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but y_score has {s.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("y_score contains NaN or inf; check the model outputs (did the loss diverge?)")
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(pos, s))


@dataclass
class AUROCResult:
    """Per-class AUROC and their mean over the classes where it is defined."""

    per_class: list[float]  # AUROC per label (NaN where a label has only one class among known values)
    mean: float  # mean over the defined labels (NaN when none is defined)
    n_pos: list[int] = field(default_factory=list)  # known positives per label
    n_neg: list[int] = field(default_factory=list)  # known negatives per label
    label_names: list[str] = field(default_factory=list)  # optional names, same order as per_class

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (NaN -> None)."""
        names = self.label_names or [str(i) for i in range(len(self.per_class))]
        return {
            "mean_auroc": None if math.isnan(self.mean) else self.mean,
            "per_class": {n: (None if math.isnan(v) else v) for n, v in zip(names, self.per_class)},
            "n_pos": dict(zip(names, self.n_pos)),
            "n_neg": dict(zip(names, self.n_neg)),
        }

    def table(self) -> str:
        """Markdown table: label, AUROC, positives, negatives, then the mean."""
        names = self.label_names or [str(i) for i in range(len(self.per_class))]
        rows = ["| label | AUROC | pos | neg |", "|---|---|---|---|"]
        for n, v, p, q in zip(names, self.per_class, self.n_pos, self.n_neg):
            rows.append(f"| {n} | {'n/a' if math.isnan(v) else f'{v:.4f}'} | {p} | {q} |")
        rows.append(f"| **mean** | {'n/a' if math.isnan(self.mean) else f'{self.mean:.4f}'} | | |")
        return "\n".join(rows)


def mean_auroc(
    y_true: ArrayLike,
    y_score: ArrayLike,
    mask: ArrayLike | None = None,
    label_names: Sequence[str] | None = None,
) -> AUROCResult:
    """Per-class AUROC of multi-label predictions and their mean.

    Args:
        y_true: (N, K) 0/1 targets; NaN entries count as unknown.
        y_score: (N, K) scores (logits or probabilities; AUROC is rank-based so either works).
        mask: optional (N, K) bool, False = label unknown for that sample (excluded for that class).
        label_names: optional K names carried into the result.
    Returns:
        :class:`AUROCResult`; classes without both a known positive and a known negative get NaN and are
        left out of the mean (the reference code's ``AUC != 0`` rule, made explicit).
    """
    y = _to_numpy(y_true, "y_true").astype(np.float64)
    s = _to_numpy(y_score, "y_score").astype(np.float64)
    if y.ndim == 1:
        y, s = y[:, None], s.reshape(-1, 1)
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"y_true {y.shape} and y_score {s.shape} must both be (N, K)")
    known = np.isfinite(y)
    if mask is not None:
        m = _to_numpy(mask, "mask").astype(bool)
        if m.shape != y.shape:
            raise ValueError(f"mask {m.shape} must have the shape of y_true {y.shape}")
        known &= m
    if label_names is not None and len(label_names) != y.shape[1]:
        raise ValueError(f"{len(label_names)} label_names for {y.shape[1]} labels")
    per, n_pos, n_neg = [], [], []
    for k in range(y.shape[1]):
        sel = known[:, k]
        yk = y[sel, k]
        per.append(binary_auroc(yk, s[sel, k]))
        n_pos.append(int((yk > 0.5).sum()))
        n_neg.append(int((yk <= 0.5).sum()))
    valid = [v for v in per if not math.isnan(v)]
    mean = float(np.mean(valid)) if valid else math.nan
    return AUROCResult(per, mean, n_pos, n_neg, list(label_names or []))


def quadratic_weighted_kappa(
    y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[int] | None = None
) -> float:
    """Cohen's kappa with quadratic weights for ordinal classes: y_true (N,), y_pred (N,) ints -> float.

    ``labels`` fixes the ordered class list (default: sorted union of the values seen, as scikit-learn does);
    weights are (i - j)² over positions in that list. Returns NaN when the expected disagreement is zero
    (e.g. a single class in both arrays), like scikit-learn.
    """
    a = _to_numpy(y_true, "y_true").reshape(-1)
    b = _to_numpy(y_pred, "y_pred").reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"y_true has {a.size} values but y_pred has {b.size}")
    if a.size == 0:
        raise ValueError("quadratic_weighted_kappa needs at least one sample")
    seen = set(a.tolist()) | set(b.tolist())
    labs = sorted(seen) if labels is None else list(labels)
    missing = sorted(seen - set(labs))
    if missing:
        raise ValueError(f"value {missing[0]!r} is not in labels {labs}")
    if len(seen) == 1:
        return math.nan  # zero expected disagreement: undefined (sklearn's NaN, without its warnings)
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(a, b, labels=labs, weights="quadratic"))


def mean_sd(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds, skipping None/NaN: (NaN, NaN) when nothing is left,
    sd 0 for a single value."""
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _register() -> None:
    for name, fn, desc in (
        ("mean_auroc", mean_auroc, "per-class AUROC and their mean (multi-label; label mask supported)"),
        ("binary_auroc", binary_auroc, "AUROC of one binary label"),
        ("quadratic_weighted_kappa", quadratic_weighted_kappa, "Cohen's kappa with quadratic weights (ordinal)"),
    ):
        REGISTRY.add("metric", name, fn, description=desc, higher_is_better=True)


_register()
