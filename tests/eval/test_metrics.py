"""Metrics agree with scikit-learn; masking and undefined classes behave as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score, f1_score, roc_auc_score

from medvit.eval import choose_thresholds, mean_auroc, quadratic_weighted_kappa
from medvit.eval.metrics import binary_auroc
from medvit.registry import REGISTRY


@pytest.mark.parametrize("seed", range(5))
def test_binary_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # rounding creates many ties
    assert binary_auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_mean_auroc_matches_sklearn_per_class_and_mask():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (300, 4)).astype(np.float32)
    s = rng.normal(size=(300, 4)) + 0.8 * y
    mask = rng.random((300, 4)) > 0.2
    res = mean_auroc(torch.tensor(y), torch.tensor(s), torch.tensor(mask), label_names=list("abcd"))
    ref = [roc_auc_score(y[mask[:, k], k], s[mask[:, k], k]) for k in range(4)]
    np.testing.assert_allclose(res.per_class, ref, atol=1e-12)
    assert res.mean == pytest.approx(np.mean(ref))
    assert res.n_pos[0] == int(y[mask[:, 0], 0].sum())
    # masking must matter: the unmasked value differs
    assert mean_auroc(y, s).per_class[0] != pytest.approx(res.per_class[0], abs=1e-12)
    assert "| a |" in res.table() and res.as_dict()["per_class"]["a"] == pytest.approx(ref[0])


def test_mean_auroc_skips_undefined_classes_and_nan_labels():
    y = np.array([[0, 1, 1], [1, 1, np.nan], [0, 1, 0], [1, 1, 1]], dtype=float)
    s = np.array([[0.1, 0.2, 0.9], [0.9, 0.3, 0.5], [0.2, 0.4, 0.1], [0.8, 0.5, 0.3]])
    res = mean_auroc(y, s)
    assert res.per_class[0] == 1.0
    assert math.isnan(res.per_class[1])  # only positives
    assert res.per_class[2] == pytest.approx(roc_auc_score([1, 0, 1], [0.9, 0.1, 0.3]))
    assert res.mean == pytest.approx((1.0 + res.per_class[2]) / 2)
    assert res.as_dict()["per_class"]["1"] is None


def test_mean_auroc_rejects_bad_shapes_and_nan_scores():
    with pytest.raises(ValueError, match="must both be"):
        mean_auroc(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        mean_auroc(np.array([[0], [1]]), np.array([[0.1], [np.nan]]))


@pytest.mark.parametrize("seed", range(5))
def test_qwk_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5, 100)
    b = np.clip(a + rng.integers(-2, 3, 100), 0, 4)
    if seed == 4:  # gaps in the label set: sklearn weights by position in the label list
        a, b = a * 2, b * 2
    assert quadratic_weighted_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"), abs=1e-12)


def test_qwk_edge_cases():
    assert quadratic_weighted_kappa([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    assert math.isnan(quadratic_weighted_kappa([1, 1], [1, 1]))
    assert quadratic_weighted_kappa([0, 1, 2], [2, 1, 0]) < 0
    with pytest.raises(ValueError, match="not in labels"):
        quadratic_weighted_kappa([0, 5], [0, 1], labels=[0, 1, 2])


def test_metrics_registered():
    assert REGISTRY.get("metric", "mean_auroc") is mean_auroc
    assert REGISTRY.get("metric", "quadratic_weighted_kappa") is quadratic_weighted_kappa


def test_thresholds_youden_and_f1():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (400, 2)).astype(float)
    p = 1 / (1 + np.exp(-(rng.normal(size=(400, 2)) + 2 * y - 1)))
    ty = choose_thresholds(y, p, rule="youden")
    tf = choose_thresholds(y, p, rule="f1")
    for k in range(2):
        # brute force over all candidate thresholds
        cands = np.unique(p[:, k])
        youden = [((p[:, k] >= c) & (y[:, k] == 1)).sum() / y[:, k].sum()
                  - ((p[:, k] >= c) & (y[:, k] == 0)).sum() / (1 - y[:, k]).sum() for c in cands]
        f1s = [f1_score(y[:, k], p[:, k] >= c) for c in cands]
        j_at = ((p[:, k] >= ty[k]) & (y[:, k] == 1)).sum() / y[:, k].sum() - \
            ((p[:, k] >= ty[k]) & (y[:, k] == 0)).sum() / (1 - y[:, k]).sum()
        assert j_at == pytest.approx(max(youden))
        assert f1_score(y[:, k], p[:, k] >= tf[k]) == pytest.approx(max(f1s))
    assert choose_thresholds(np.ones((3, 1)), np.full((3, 1), 0.3)) == [0.5]


def test_accuracy_threshold_rule_maximises_agreement_and_does_not_over_call():
    """Rule "accuracy" = the best share of correct answers among the candidate thresholds (brute force), and on a
    rare finding it calls fewer positives than Youden (which over-calls at low prevalence)."""
    from medvit.eval.thresholds import THRESHOLD_RULES

    assert "accuracy" in THRESHOLD_RULES
    rng = np.random.default_rng(3)
    y = (rng.random((600, 2)) < 0.12).astype(float)
    p = 1 / (1 + np.exp(-(rng.normal(size=(600, 2)) + 2.2 * y - 2)))
    ta, ty = choose_thresholds(y, p, rule="accuracy"), choose_thresholds(y, p, rule="youden")
    for k in range(2):
        best = max(((p[:, k] >= c) == (y[:, k] == 1)).mean() for c in np.unique(p[:, k]))
        assert ((p[:, k] >= ta[k]) == (y[:, k] == 1)).mean() == pytest.approx(best)
        assert (p[:, k] >= ta[k]).sum() < (p[:, k] >= ty[k]).sum()
    # by hand: scores 0.2 (neg), 0.4 (pos), 0.6 (neg), 0.8 (pos): calling >= 0.8 gets 3/4 right, >= 0.4 gets 3/4,
    # >= 0.2 gets 2/4: the first best (the highest threshold) wins, the midpoint between 0.8 and 0.6
    assert choose_thresholds(np.array([[0.0], [1.0], [0.0], [1.0]]), np.array([[0.2], [0.4], [0.6], [0.8]]),
                             rule="accuracy") == [pytest.approx(0.7)]
    with pytest.raises(ValueError, match="accuracy"):
        choose_thresholds(y, p, rule="kappa")


def test_metrics_on_hand_computed_values():
    """Values worked out by hand, so the checks do not rest only on the library the metrics call."""
    from medvit.eval import binary_auroc

    # pairs (pos, neg): (0.35 > 0.1) (0.35 < 0.4) (0.8 > 0.1) (0.8 > 0.4) -> 3 of 4; a tie counts one half
    assert binary_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert binary_auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    # QWK, 3 classes, one off-by-one error: O = [[1,0,0],[0,1,0],[0,1,1]], weights (i-j)^2;
    # rows r = (1, 1, 2), columns c = (1, 2, 1), n = 4: observed weighted disagreement 1,
    # expected sum_ij (i-j)^2 r_i c_j / n = (6 + 2 + 12) / 4 = 5 -> kappa = 1 - 1/5
    assert quadratic_weighted_kappa([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx(0.8)
    # Youden on separable scores: the threshold sits between the lowest positive and the highest negative
    assert choose_thresholds(np.array([[0.0], [0.0], [1.0], [1.0]]), np.array([[0.1], [0.3], [0.6], [0.9]])) == \
        [pytest.approx(0.45)]
