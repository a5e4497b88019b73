"""Closed-ended evaluation statistics of RetinaVLM: F1 pooled over positive classes with an "Invalid response"
outcome, percentile bootstrap confidence intervals, McNemar's test between two models.

Source: Holland et al., "Specialized curricula for training vision-language models in retinal image analysis"
(npj Digital Medicine 2025; arXiv 2407.08410), Methods "Closed-ended evaluation": F1 = 2PR/(P+R) with TP/FP/FN
pooled over the task's positive classes; the confusion matrix has an extra "Invalid response" column so unparseable
answers count against recall; 95 % CIs from 2,000 bootstrap resamples; McNemar's test for paired comparisons.
Registered under registry kind ``"metric"`` as ``pooled_f1``, ``pooled_f1_ci`` and ``mcnemar``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix

from medvit.registry import REGISTRY

#: the extra outcome of an answer that parses to no option (counts as a miss for every true positive class)
INVALID = "Invalid response"


def _codes(y_true: Sequence[str], y_pred: Sequence[str], options: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    opts = list(options)
    if len(set(opts)) != len(opts) or INVALID in opts or not opts:
        raise ValueError(f"options must be distinct, non-empty and not contain {INVALID!r}: {opts}")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred differ in length ({len(y_true)} vs {len(y_pred)})")
    index = {o: i for i, o in enumerate(opts)}
    bad = sorted({str(t) for t in y_true if t not in index})
    if bad:
        raise ValueError(f"y_true has labels outside the options {opts}: {bad[:5]}")
    t = np.array([index[x] for x in y_true], dtype=np.int64)
    p = np.array([index.get(x, len(opts)) for x in y_pred], dtype=np.int64)  # anything else: invalid
    return t, p


def confusion_with_invalid(y_true: Sequence[str], y_pred: Sequence[str], options: Sequence[str]) -> np.ndarray:
    """(K, K + 1) int confusion matrix: rows = true option, columns = predicted option then ``INVALID``.

    A prediction that is not one of ``options`` lands in the last column. Raises ``ValueError`` when a true label is
    not an option or the lengths differ.
    """
    t, p = _codes(y_true, y_pred, options)
    k = len(options)
    return confusion_matrix(t, p, labels=list(range(k + 1)))[:k]


def _positive_codes(options: Sequence[str], positive: Sequence[str]) -> np.ndarray:
    bad = [x for x in positive if x not in options]
    if bad or not positive:
        raise ValueError(f"positive classes must be a non-empty subset of the options {list(options)}; unknown: {bad}")
    return np.array([list(options).index(x) for x in positive])


def _pooled(t: np.ndarray, p: np.ndarray, pos: np.ndarray, axis: int = -1) -> np.ndarray:
    t_pos, p_pos, hit = np.isin(t, pos), np.isin(p, pos), t == p
    tp = (t_pos & hit).sum(axis)
    fp = (p_pos & ~hit).sum(axis)
    fn = (t_pos & ~hit).sum(axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)  # = 2PR/(P+R); 0 when P or R is 0
    return f1


@dataclass
class PooledF1:
    """F1 pooled over positive classes with its counts; ``ci`` = (low, high) when bootstrapped."""

    f1: float
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int
    n: int
    invalid: int
    ci: tuple[float, float] | None = None
    n_resamples: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pooled_f1(y_true: Sequence[str], y_pred: Sequence[str], options: Sequence[str],
              positive: Sequence[str]) -> PooledF1:
    """F1 with TP/FP/FN summed over the ``positive`` classes (RetinaVLM's staging/referral/biomarker metric).

    For each positive class c: TP_c = #(true c, predicted c), FP_c = #(true ≠ c, predicted c), FN_c = #(true c,
    predicted ≠ c — invalid answers included). P = ΣTP/(ΣTP+ΣFP), R = ΣTP/(ΣTP+ΣFN), F1 = 2PR/(P+R), 0 when P or R is 0.

    Raises:
        ValueError: lengths differ, a true label is not an option, or ``positive`` is not a subset of ``options``.
    """
    t, p = _codes(y_true, y_pred, options)
    pos = _positive_codes(options, positive)
    t_pos, p_pos, hit = np.isin(t, pos), np.isin(p, pos), t == p
    tp, fp, fn = int((t_pos & hit).sum()), int((p_pos & ~hit).sum()), int((t_pos & ~hit).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return PooledF1(float(_pooled(t, p, pos)), prec, rec, tp, fp, fn, len(t), int((p == len(options)).sum()))


def pooled_f1_ci(y_true: Sequence[str], y_pred: Sequence[str], options: Sequence[str], positive: Sequence[str],
                 n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> PooledF1:
    """:func:`pooled_f1` plus a percentile bootstrap CI over images (``scipy.stats.bootstrap``, paired resampling
    of (truth, prediction); 2,000 resamples and 95 % as in the paper; deterministic per ``seed``).
    """
    from scipy.stats import bootstrap

    res = pooled_f1(y_true, y_pred, options, positive)
    t, p = _codes(y_true, y_pred, options)
    pos = _positive_codes(options, positive)
    if len(t) < 2:
        raise ValueError("a bootstrap CI needs at least 2 items")
    boot = bootstrap((t, p), lambda a, b, axis=-1: _pooled(a, b, pos, axis), paired=True, vectorized=True,
                     n_resamples=int(n_resamples), confidence_level=confidence, method="percentile",
                     rng=np.random.default_rng(seed))
    lo, hi = boot.confidence_interval
    res.ci, res.n_resamples = (float(lo), float(hi)), int(n_resamples)
    return res


def mcnemar_test(y_true: Sequence[str], pred_a: Sequence[str], pred_b: Sequence[str], exact: bool = False,
                 correction: bool = True) -> dict[str, Any]:
    """McNemar's test of paired correctness of models A and B on the same items (``statsmodels``).

    Table [[both right, A right B wrong], [A wrong B right, both wrong]]; default chi-square with continuity
    correction (as RetinaVLM's ``mcnemar(table, exact=False)``); ``exact=True`` gives the binomial test.
    Returns ``{"statistic", "pvalue", "table", "a_only", "b_only"}``; without discordant pairs p = 1.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    if not (len(y_true) == len(pred_a) == len(pred_b)):
        raise ValueError(f"lengths differ: truth {len(y_true)}, A {len(pred_a)}, B {len(pred_b)}")
    t, a, b = (np.asarray(x, dtype=object) for x in (y_true, pred_a, pred_b))
    ra, rb = a == t, b == t
    table = np.array([[int((ra & rb).sum()), int((ra & ~rb).sum())], [int((~ra & rb).sum()), int((~ra & ~rb).sum())]])
    if table[0, 1] + table[1, 0] == 0:  # no discordant pair: no evidence of a difference (statsmodels gives p=0)
        return {"statistic": 0.0, "pvalue": 1.0, "table": table.tolist(), "a_only": 0, "b_only": 0}
    r = mcnemar(table, exact=exact, correction=correction)
    return {"statistic": float(r.statistic), "pvalue": float(r.pvalue), "table": table.tolist(),
            "a_only": int(table[0, 1]), "b_only": int(table[1, 0])}


def _register() -> None:
    REGISTRY.add("metric", "pooled_f1", pooled_f1, higher_is_better=True,
                 description="F1 pooled over positive classes with invalid answers counted against recall (RetinaVLM)")
    REGISTRY.add("metric", "pooled_f1_ci", pooled_f1_ci, higher_is_better=True,
                 description="pooled F1 with a 95 % percentile bootstrap CI (2,000 resamples)")
    REGISTRY.add("metric", "mcnemar", mcnemar_test, higher_is_better=False,
                 description="McNemar's test of paired correctness between two models (statsmodels)")


_register()
