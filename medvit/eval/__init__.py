"""Evaluation: metrics registered under kind ``"metric"`` (classification: scikit-learn; text generation:
pycocoevalcap) and operating-threshold selection."""

from medvit.eval.metrics import AUROCResult, binary_auroc, mean_auroc, quadratic_weighted_kappa
from medvit.eval.text_metrics import normalize_report, report_generation_scores
from medvit.eval.thresholds import choose_thresholds

__all__ = [
    "AUROCResult",
    "binary_auroc",
    "choose_thresholds",
    "mean_auroc",
    "normalize_report",
    "quadratic_weighted_kappa",
    "report_generation_scores",
]
