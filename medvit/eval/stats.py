"""Paired statistics for method comparisons over seeds (same splits and seeds per method).

``paired_bootstrap``: percentile bootstrap of the mean paired difference (``scipy.stats.bootstrap`` with
``paired=True``), with a two-sided bootstrap p-value (twice the smaller share of resampled means on either side of
0). ``sign_test``: exact two-sided binomial sign test on the signs of the differences, ties dropped
(``scipy.stats.binomtest``; Conover, *Practical Nonparametric Statistics*, §3.4). ``compare`` gathers both with
mean ± sd per method and a verdict wording used by the benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medvit.eval.metrics import mean_sd


def _pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples must be two 1-D sequences of one length, got {x.shape} and {y.shape}")
    if x.size < 2:
        raise ValueError(f"paired statistics need at least 2 pairs, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired samples contain NaN or infinite values")
    return x, y


@dataclass(frozen=True)
class BootstrapResult:
    """Mean paired difference a − b, its percentile confidence interval and the two-sided bootstrap p-value."""

    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_resamples: int


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_resamples: int = 10000, confidence: float = 0.95,
                     seed: int = 0) -> BootstrapResult:
    """Percentile bootstrap of ``mean(a - b)`` resampling pairs (seeds) with replacement.

    Args:
        a, b: (n,) scores of two methods, element i from the same seed / split.
        n_resamples: bootstrap resamples; seed: their random seed (deterministic).
    Returns:
        :class:`BootstrapResult`; ``p_value`` = min(1, 2·min(P*(mean ≤ 0), P*(mean ≥ 0))) over the resamples.
    Raises:
        ValueError: unpaired lengths, fewer than 2 pairs, or non-finite values.
    """
    from scipy.stats import bootstrap

    x, y = _pairs(a, b)
    d = x - y
    if np.all(d == d[0]):  # degenerate: every resample has the same mean
        p = 1.0 if d[0] == 0 else 2.0 / (n_resamples + 1)
        return BootstrapResult(float(d[0]), float(d[0]), float(d[0]), p, n_resamples)
    res = bootstrap((x, y), lambda u, v, axis=-1: np.mean(u - v, axis=axis), paired=True, vectorized=True,
                    n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                    rng=np.random.default_rng(seed))
    dist = res.bootstrap_distribution
    p = min(1.0, 2.0 * min(float(np.mean(dist <= 0)), float(np.mean(dist >= 0))))
    return BootstrapResult(float(d.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high),
                           p, n_resamples)


@dataclass(frozen=True)
class SignTestResult:
    """Signs of a − b (ties dropped) and the exact two-sided binomial p-value (1.0 when all pairs tie)."""

    n_positive: int
    n_negative: int
    n_ties: int
    p_value: float


def sign_test(a: Sequence[float], b: Sequence[float]) -> SignTestResult:
    """Exact sign test of ``a - b`` (scipy.stats.binomtest, p = 0.5, two-sided).

    Raises:
        ValueError: unpaired lengths, fewer than 2 pairs, or non-finite values.
    """
    from scipy.stats import binomtest

    x, y = _pairs(a, b)
    d = x - y
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    p = 1.0 if pos + neg == 0 else float(binomtest(pos, pos + neg, 0.5, alternative="two-sided").pvalue)
    return SignTestResult(pos, neg, int(d.size - pos - neg), p)


def compare(a: Sequence[float], b: Sequence[float], name_a: str = "a", name_b: str = "b", alpha: float = 0.05,
            sign_alpha: float = 0.1, n_resamples: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Paired comparison of two methods' per-seed scores with a plain-words outcome.

    ``outcome``: ``"<a> better"`` / ``"<b> better"`` when the bootstrap CI of the mean difference excludes 0, the
    bootstrap p-value is below ``alpha`` *and* the exact sign test p-value is below ``sign_alpha``; else
    ``"not separable"``. The sign test guards against the bootstrap's optimism with few pairs (with 5 seeds it
    needs all 5 differences of one sign: p = 2/2**5 = 0.0625 < 0.1; 4 pairs can never pass).
    """
    boot = paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed)
    sign = sign_test(a, b)
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    separable = (boot.ci_low > 0 or boot.ci_high < 0) and boot.p_value < alpha and sign.p_value < sign_alpha
    outcome = "not separable" if not separable else (f"{name_a} better" if boot.mean_diff > 0 else f"{name_b} better")
    return {"a": name_a, "b": name_b, "n": len(a), "mean_a": ma, "sd_a": sa, "mean_b": mb, "sd_b": sb,
            "bootstrap": asdict(boot), "sign_test": asdict(sign), "outcome": outcome}
