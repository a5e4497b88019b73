"""Honest headline numbers for thresholded multi-label predictions: per-label agreement next to what answering
"no finding" everywhere scores, and per-finding sensitivity / specificity.

A single agreement figure flatters a model on rare findings: with 15 % prevalence an all-negative answer agrees
on 85 % of labels. :func:`operating_summary` therefore always reports that baseline beside the model's figure,
with the confusion counts of every finding (sensitivity = TP / (TP + FN), specificity = TN / (TN + FP)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FindingOperatingPoint:
    """Confusion counts of one finding at its threshold; sensitivity/specificity NaN when undefined."""

    name: str
    tp: int
    fn: int
    tn: int
    fp: int

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else math.nan


@dataclass(frozen=True)
class OperatingSummary:
    """Agreement of thresholded predictions with the truth, the all-negative baseline, and per-finding points."""

    agree: int
    total: int
    all_negative_agree: int
    findings: tuple[FindingOperatingPoint, ...]

    @property
    def agreement(self) -> float:
        return self.agree / self.total if self.total else math.nan

    @property
    def all_negative_agreement(self) -> float:
        return self.all_negative_agree / self.total if self.total else math.nan

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly: agreement, baseline and ``findings`` {name: {tp, fn, tn, fp, sensitivity, specificity}}."""
        return {"agree": self.agree, "total": self.total, "agreement": self.agreement,
                "all_negative_agree": self.all_negative_agree, "all_negative_agreement": self.all_negative_agreement,
                "findings": {f.name: {**{k: v for k, v in asdict(f).items() if k != "name"},
                                      "sensitivity": f.sensitivity, "specificity": f.specificity}
                             for f in self.findings}}

    def headline(self) -> str:
        """One line: ``agreement a/n (x %) vs all-negative baseline b/n (y %)``."""
        if not self.total:
            return "per-label agreement: no labels"
        base = 100 * self.all_negative_agreement
        return (f"per-label agreement {self.agree}/{self.total} ({100 * self.agreement:.0f} %) vs "
                f"all-negative baseline {self.all_negative_agree}/{self.total} ({base:.0f} %)")

    def table(self) -> str:
        """Markdown table: finding, positives/negatives, sensitivity, specificity."""
        rows = ["| finding | pos / neg | sensitivity | specificity |", "|---|---|---|---|"]
        for f in self.findings:
            rows.append(f"| {f.name} | {f.tp + f.fn} / {f.tn + f.fp} | {_fmt(f.sensitivity, f.tp, f.tp + f.fn)} | "
                        f"{_fmt(f.specificity, f.tn, f.tn + f.fp)} |")
        return "\n".join(rows)


def _fmt(v: float, k: int, n: int) -> str:
    return "n/a (none)" if math.isnan(v) else f"{v:.2f} ({k}/{n})"


def operating_summary(y_true: Any, y_pred: Any, label_names: Sequence[str], mask: Any = None) -> OperatingSummary:
    """Agreement, all-negative baseline and per-finding confusion counts.

    Args:
        y_true: (N, K) 0/1 truth.
        y_pred: (N, K) 0/1 or bool thresholded predictions (positive at the model's threshold).
        label_names: K names, in column order.
        mask: optional (N, K) bool, False where the truth is unknown (excluded everywhere).
    Raises:
        ValueError: shapes disagree or ``label_names`` has not K entries.
    """
    y = np.asarray(y_true, dtype=np.float64) > 0.5
    p = np.asarray(y_pred, dtype=np.float64) > 0.5
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"y_true {y.shape} and y_pred {p.shape} must both be (N, K)")
    if len(label_names) != y.shape[1]:
        raise ValueError(f"{len(label_names)} label names for {y.shape[1]} columns")
    known = np.ones_like(y) if mask is None else np.asarray(mask, dtype=bool)
    if known.shape != y.shape:
        raise ValueError(f"mask {known.shape} must be {y.shape}")
    pts = tuple(FindingOperatingPoint(str(name), int((y[:, k] & p[:, k] & known[:, k]).sum()),
                                      int((y[:, k] & ~p[:, k] & known[:, k]).sum()),
                                      int((~y[:, k] & ~p[:, k] & known[:, k]).sum()),
                                      int((~y[:, k] & p[:, k] & known[:, k]).sum()))
                for k, name in enumerate(label_names))
    return OperatingSummary(agree=int(((y == p) & known).sum()), total=int(known.sum()),
                            all_negative_agree=int((~y & known).sum()), findings=pts)


def operating_at(logits: Any, y_true: Any, mask: Any, thresholds: Sequence[float],
                 label_names: Sequence[str]) -> OperatingSummary:
    """:func:`operating_summary` of multi-label logits (N, K) thresholded as ``sigmoid(logit) >= threshold[k]``
    (the rule of the weight contract, thresholds chosen on validation)."""
    z = np.asarray(logits, dtype=np.float64)
    prob = 1.0 / (1.0 + np.exp(-z))
    return operating_summary(y_true, prob >= np.asarray(thresholds, dtype=np.float64)[None, :], label_names, mask)
