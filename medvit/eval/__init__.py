"""Evaluation: metrics registered under kind ``"metric"`` (classification: scikit-learn; text generation:
pycocoevalcap) and operating-threshold selection."""

from medvit.eval import dense_metrics as _dense_metrics  # noqa: F401  (registers dice, iou, retrieval)
from medvit.eval.closed_ended import INVALID, mcnemar_test, pooled_f1, pooled_f1_ci
from medvit.eval.metrics import AUROCResult, binary_auroc, mean_auroc, quadratic_weighted_kappa
from medvit.eval.text_metrics import normalize_report, report_generation_scores
from medvit.eval.thresholds import choose_thresholds
from medvit.eval.vqa import exact_match, parse_yes_no, yes_no_f1

__all__ = [
    "INVALID",
    "AUROCResult",
    "binary_auroc",
    "choose_thresholds",
    "exact_match",
    "mcnemar_test",
    "mean_auroc",
    "normalize_report",
    "parse_yes_no",
    "pooled_f1",
    "pooled_f1_ci",
    "quadratic_weighted_kappa",
    "report_generation_scores",
    "yes_no_f1",
]
