"""Pooled F1 with invalid answers, bootstrap CI and McNemar against hand-computed values and scipy."""

import numpy as np
import pytest
from scipy.stats import binomtest, chi2

from medvit.eval.closed_ended import INVALID, confusion_with_invalid, mcnemar_test, pooled_f1, pooled_f1_ci
from medvit.registry import REGISTRY

OPTS = ["a", "b", "c"]


def test_pooled_f1_hand_computed():
    # TP: item0; FP: item2 (c->b), item3 (a->b); FN: item1 (b->invalid), item3  => P = R = F1 = 1/3
    r = pooled_f1(["a", "b", "c", "a"], ["a", "gibberish", "b", "b"], OPTS, ["a", "b"])
    assert (r.tp, r.fp, r.fn, r.invalid, r.n) == (1, 2, 2, 1, 4)
    assert r.f1 == pytest.approx(1 / 3) and r.precision == pytest.approx(1 / 3) and r.recall == pytest.approx(1 / 3)


def test_invalid_counts_against_recall_only():
    valid = pooled_f1(["a", "a", "c"], ["a", "c", "c"], OPTS, ["a"])  # P = 1, R = 1/2
    invalid = pooled_f1(["a", "a", "c"], ["a", INVALID, "c"], OPTS, ["a"])
    assert valid.f1 == pytest.approx(2 / 3) and invalid.f1 == pytest.approx(2 / 3)
    assert invalid.invalid == 1 and invalid.recall == pytest.approx(0.5) and invalid.precision == 1.0
    # a negative-class item answered invalidly costs nothing
    assert pooled_f1(["a", "c"], ["a", "zzz"], OPTS, ["a"]).f1 == 1.0


def test_pooled_f1_zero_and_multiclass_pooling():
    assert pooled_f1(["a", "b"], ["c", "c"], OPTS, ["a", "b"]).f1 == 0.0
    # pooled, not macro: class a 3/3 right, class b 0/1 => TP 3, FN 1, FP 1 (the b item predicted a) => F1 = 6/8
    r = pooled_f1(["a", "a", "a", "b"], ["a", "a", "a", "a"], OPTS, ["a", "b"])
    assert r.f1 == pytest.approx(0.75)


def test_confusion_matrix_has_invalid_column():
    cm = confusion_with_invalid(["a", "b", "c"], ["a", "nonsense", "a"], OPTS)
    assert cm.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]]


def test_bad_inputs():
    with pytest.raises(ValueError, match="outside the options"):
        pooled_f1(["z"], ["a"], OPTS, ["a"])
    with pytest.raises(ValueError, match="positive classes"):
        pooled_f1(["a"], ["a"], OPTS, ["q"])
    with pytest.raises(ValueError, match="differ in length"):
        pooled_f1(["a"], [], OPTS, ["a"])


def test_bootstrap_ci_hand_computed():
    # two items: a (right), c predicted a (FP). Resamples: {0,0} F1 1 (p 1/4), {1,1} F1 0 (1/4), mixed 2/3 (1/2):
    # the 2.5th and 97.5th percentiles are 0 and 1
    r = pooled_f1_ci(["a", "c"], ["a", "a"], OPTS, ["a"], n_resamples=2000, seed=1)
    assert r.f1 == pytest.approx(2 / 3) and r.ci == (0.0, 1.0) and r.n_resamples == 2000
    perfect = pooled_f1_ci(list("abcabc"), list("abcabc"), OPTS, ["a", "b"])
    assert perfect.ci == (1.0, 1.0)


def test_bootstrap_ci_deterministic_and_brackets():
    rng = np.random.default_rng(0)
    t = rng.choice(OPTS, 200).tolist()
    p = [x if rng.random() < 0.7 else rng.choice(OPTS + ["??"]) for x in t]
    r1, r2 = pooled_f1_ci(t, p, OPTS, ["a", "b"], seed=3), pooled_f1_ci(t, p, OPTS, ["a", "b"], seed=3)
    assert r1.ci == r2.ci and r1.ci[0] < r1.f1 < r1.ci[1] and r1.ci[1] - r1.ci[0] < 0.25


@pytest.mark.parametrize("exact", [False, True])
def test_mcnemar_parity_with_scipy(exact):
    rng = np.random.default_rng(4)
    t = rng.choice(OPTS, 120).tolist()
    a = [x if rng.random() < 0.8 else "c" for x in t]
    b = [x if rng.random() < 0.6 else "a" for x in t]
    r = mcnemar_test(t, a, b, exact=exact)
    n01, n10 = r["a_only"], r["b_only"]
    assert sum(map(sum, r["table"])) == 120
    assert n01 == sum(x == y != z for x, y, z in zip(t, a, b)) and n10 == sum(x == z != y for x, y, z in zip(t, a, b))
    if exact:
        want = binomtest(min(n01, n10), n01 + n10, 0.5).pvalue
    else:
        stat = (abs(n01 - n10) - 1) ** 2 / (n01 + n10)
        assert r["statistic"] == pytest.approx(stat)
        want = chi2.sf(stat, 1)
    assert r["pvalue"] == pytest.approx(want)


def test_mcnemar_without_discordant_pairs_is_p_one():
    r = mcnemar_test(["a", "b", "c"], ["a", "c", "c"], ["a", "c", "c"])
    assert r["pvalue"] == 1.0 and r["a_only"] == r["b_only"] == 0 and r["table"] == [[2, 0], [0, 1]]


def test_metrics_registered():
    for name in ("pooled_f1", "pooled_f1_ci", "mcnemar"):
        assert REGISTRY.get("metric", name) is not None
