"""Operating thresholds per label, chosen on a validation set (never on test).

``youden``: maximise sensitivity + specificity − 1; ``f1``: maximise F1 of the positive class; ``accuracy``: maximise
the share of correct answers (TP + TN) / N, the per-label agreement that ``medvit demo`` prints (at a prevalence of
10–20 % Youden and F1 trade many false positives for a few true ones and can score below answering "no finding"
everywhere; accuracy cannot on the set it is chosen on). Candidate
thresholds are the distinct scores themselves, with their true/false positive rates from
``sklearn.metrics.roc_curve``; the chosen threshold is the midpoint between the best score and
the next lower one, so the operating point is stable to tiny score perturbations.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

ThresholdRule = Literal["youden", "f1", "accuracy"]
#: the rules :func:`choose_thresholds` knows (task configs validate against this tuple)
THRESHOLD_RULES: tuple[str, ...] = ("youden", "f1", "accuracy")


def _best_threshold(y: np.ndarray, p: np.ndarray, rule: ThresholdRule) -> float:
    """y (N,) 0/1, p (N,) probabilities -> threshold with ``p >= t`` predicted positive; 0.5 when undefined."""
    n_pos = int((y > 0.5).sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y > 0.5, p, drop_intermediate=False)  # thr[0] = inf, then distinct scores descending
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]
    if rule == "youden":
        score = tpr - fpr
    elif rule == "f1":
        tp, fp = tpr * n_pos, fpr * n_neg
        score = 2 * tp / (2 * tp + fp + (n_pos - tp))
    elif rule == "accuracy":
        score = tpr * n_pos + (1 - fpr) * n_neg
    else:
        raise ValueError(f"threshold rule must be one of {', '.join(THRESHOLD_RULES)}, got {rule!r}")
    i = int(np.argmax(score))
    hi = thr[i]
    lo = thr[i + 1] if i + 1 < thr.size else hi - 1e-6
    return float((hi + lo) / 2.0)


def choose_thresholds(
    y_true: np.ndarray, y_prob: np.ndarray, mask: np.ndarray | None = None, rule: ThresholdRule = "youden"
) -> list[float]:
    """Per-label thresholds: y_true (N, K), y_prob (N, K) probabilities, mask (N, K) bool -> K floats.

    Labels without both classes among the known values get 0.5.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"y_true {y.shape} and y_prob {p.shape} must both be (N, K)")
    known = np.isfinite(y) if mask is None else (np.asarray(mask, dtype=bool) & np.isfinite(y))
    out = []
    for k in range(y.shape[1]):
        sel = known[:, k]
        t = _best_threshold(y[sel, k], p[sel, k], rule)
        out.append(float(min(max(t, 0.0), 1.0)) if math.isfinite(t) else 0.5)
    return out
