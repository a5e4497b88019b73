"""Evaluation: metrics (registered under kind ``"metric"``) and operating-threshold selection."""

from medvit.eval.metrics import AUROCResult, binary_auroc, mean_auroc, quadratic_weighted_kappa
from medvit.eval.thresholds import choose_thresholds

__all__ = ["AUROCResult", "binary_auroc", "choose_thresholds", "mean_auroc", "quadratic_weighted_kappa"]
