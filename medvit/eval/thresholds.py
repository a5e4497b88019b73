"""Operating thresholds per label, chosen on a validation set (never on test).

``youden``: maximise sensitivity + specificity − 1; ``f1``: maximise F1 of the positive class. Candidate
thresholds are the distinct scores themselves; the chosen threshold is the midpoint between the best score and
the next lower one, so the operating point is stable to tiny score perturbations.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

ThresholdRule = Literal["youden", "f1"]


def _best_threshold(y: np.ndarray, p: np.ndarray, rule: ThresholdRule) -> float:
    """y (N,) 0/1, p (N,) probabilities -> threshold with ``p >= t`` predicted positive; 0.5 when undefined."""
    n_pos = int((y > 0.5).sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], (y[order] > 0.5).astype(np.float64)
    tp = np.cumsum(ys)
    fp = np.cumsum(1.0 - ys)
    last = np.r_[np.flatnonzero(ps[1:] != ps[:-1]), ps.size - 1]  # last index of each run of equal scores
    tp, fp = tp[last], fp[last]
    if rule == "youden":
        score = tp / n_pos - fp / n_neg
    elif rule == "f1":
        score = 2 * tp / (2 * tp + fp + (n_pos - tp))
    else:
        raise ValueError(f"threshold rule must be 'youden' or 'f1', got {rule!r}")
    i = int(np.argmax(score))
    hi = ps[last[i]]
    lo = ps[last[i] + 1] if last[i] + 1 < ps.size else hi - 1e-6
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
