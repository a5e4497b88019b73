"""Paired statistics and operating summaries against hand-computed values."""

import math

import numpy as np
import pytest

from medvit.eval.operating import operating_summary
from medvit.eval.stats import compare, paired_bootstrap, sign_test


def test_sign_test_exact_binomial_values():
    # 5 of 5 positive: 2 * (1/2)^5 = 0.0625; 4 of 5: 2 * (C(5,4) + C(5,5)) / 32 = 0.375
    r = sign_test([0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.1, 0.1, 0.1, 0.1])
    assert (r.n_positive, r.n_negative, r.n_ties) == (5, 0, 0)
    assert r.p_value == pytest.approx(0.0625)
    assert sign_test([1, 1, 1, 1, 0], [0, 0, 0, 0, 1]).p_value == pytest.approx(0.375)
    # ties are dropped: 2 positive of 2 -> 2 * 1/4 = 0.5
    r = sign_test([0.5, 0.6, 0.7], [0.5, 0.5, 0.5])
    assert (r.n_positive, r.n_ties, r.p_value) == (2, 1, pytest.approx(0.5))
    assert sign_test([0.3, 0.3], [0.3, 0.3]).p_value == 1.0


def test_paired_bootstrap_two_pairs_hand_computed():
    # differences (0, 1): resampled means are 0, 0.5, 0.5, 1 with probability 1/4, 1/2, 1/4
    r = paired_bootstrap([0.5, 1.5], [0.5, 0.5], n_resamples=20000, seed=1)
    assert r.mean_diff == pytest.approx(0.5)
    assert (r.ci_low, r.ci_high) == (pytest.approx(0.0), pytest.approx(1.0))
    assert r.p_value == pytest.approx(0.5, abs=0.02)  # 2 * P*(mean <= 0) = 2 * 1/4


def test_paired_bootstrap_is_paired_and_deterministic():
    # a is b + 0.01 on every seed while b varies a lot across seeds: unpaired tests would not see it
    b = np.array([0.60, 0.90, 0.70, 0.80, 0.65])
    a = b + np.array([0.01, 0.012, 0.008, 0.011, 0.009])
    r = paired_bootstrap(a, b, seed=3)
    assert r == paired_bootstrap(a, b, seed=3)
    assert r.mean_diff == pytest.approx(0.01)
    assert 0.008 <= r.ci_low < r.ci_high <= 0.012
    assert r.p_value < 0.001
    c = compare(a, b, "new", "old")
    assert c["outcome"] == "new better" and c["sign_test"]["p_value"] == pytest.approx(0.0625)
    assert c["mean_a"] == pytest.approx(a.mean()) and c["sd_b"] == pytest.approx(b.std(ddof=1))
    assert compare([0.5, 0.6, 0.4], [0.55, 0.45, 0.5])["outcome"] == "not separable"


def test_paired_inputs_validated():
    with pytest.raises(ValueError, match="one length"):
        sign_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        paired_bootstrap([1], [2])
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap([1, math.nan], [2, 3])


def test_operating_summary_hand_computed():
    y = [[1, 0], [0, 0], [1, 1]]
    p = [[1, 1], [0, 0], [0, 1]]
    s = operating_summary(y, p, ["A", "B"])
    assert (s.agree, s.total, s.all_negative_agree) == (4, 6, 3)
    a, b = s.findings
    assert (a.tp, a.fn, a.tn, a.fp, a.sensitivity, a.specificity) == (1, 1, 1, 0, 0.5, 1.0)
    assert (b.tp, b.fn, b.tn, b.fp, b.sensitivity, b.specificity) == (1, 0, 1, 1, 1.0, 0.5)
    assert s.headline() == "per-label agreement 4/6 (67 %) vs all-negative baseline 3/6 (50 %)"
    assert "| A | 2 / 1 | 0.50 (1/2) | 1.00 (1/1) |" in s.table()
    # unknown labels are excluded; a finding without positives has no sensitivity
    s = operating_summary(y, p, ["A", "B"], mask=[[1, 0], [1, 0], [1, 0]])
    assert (s.agree, s.total) == (2, 3) and math.isnan(s.findings[1].sensitivity)
    with pytest.raises(ValueError, match="label names"):
        operating_summary(y, p, ["A"])
