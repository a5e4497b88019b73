"""Evaluation: metrics registered under kind ``"metric"`` (classification: scikit-learn; text generation:
pycocoevalcap) and operating-threshold selection."""

from medvit.eval.closed_ended import INVALID, mcnemar_test, pooled_f1, pooled_f1_ci
from medvit.eval.metrics import AUROCResult, binary_auroc, mean_auroc, quadratic_weighted_kappa
from medvit.eval.text_metrics import normalize_report, report_generation_scores
from medvit.eval.thresholds import choose_thresholds

__all__ = [
    "INVALID",
    "AUROCResult",
    "binary_auroc",
    "choose_thresholds",
    "mcnemar_test",
    "mean_auroc",
    "normalize_report",
    "pooled_f1",
    "pooled_f1_ci",
    "quadratic_weighted_kappa",
    "report_generation_scores",
]
