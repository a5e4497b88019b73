"""VILA-M3 classification F1 from yes/no answers and closed-VQA exact match: parsing table, hand-computed values,
parity with scikit-learn's per-class binary F1 (the reference scripts' implementation)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from medvit.eval.vqa import exact_match, parse_yes_no, yes_no_f1
from medvit.registry import get


@pytest.mark.parametrize("text,expect", [("Yes.", True), ("no", False), ("NO, there is none", False),
                                         ("There is a nodule.", None), ("I think yes; no doubt", True),
                                         ("", None), ("Answer: no effusion", False)])
def test_parse_yes_no(text, expect):
    assert parse_yes_no(text) is expect


def test_yes_no_f1_hand_computed_and_sklearn_parity():
    truth = [1, 0, 1, 1, 0, 0, 1, 0]
    classes = ["a", "a", "a", "a", "b", "b", "b", "b"]
    answers = ["yes", "yes", "no", "Yes, clearly", "no", "no", "hmm", "no"]
    r = yes_no_f1(truth, answers, classes)
    # class a: TP 2, FP 1, FN 1 -> F1 2/3; class b: "hmm" on a positive counts as wrong (FN) -> TP 0 -> F1 0
    assert r["per_class"] == pytest.approx({"a": 2 / 3, "b": 0.0})
    assert r["mean_f1"] == pytest.approx(1 / 3) and r["unparseable"] == 1 and r["n"] == 8
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = rng.integers(0, 2, 300)
    c = np.repeat(["x", "y", "z"], 100)
    ours = yes_no_f1(y.tolist(), ["yes" if v else "no" for v in p], c.tolist())
    ref = np.mean([f1_score(y[c == k], p[c == k]) for k in ("x", "y", "z")])
    assert ours["mean_f1"] == pytest.approx(ref, abs=1e-12)
    assert get("metric", "yes_no_f1")(y.tolist(), ["yes" if v else "no" for v in p], c.tolist()) == ours["mean_f1"]
    with pytest.raises(ValueError, match="equal, non-zero length"):
        yes_no_f1([1], [], ["a"])


def test_exact_match():
    assert exact_match(["Yes", "left lung", "no"], ["yes.", " Left Lung ", "yes"]) == pytest.approx(2 / 3)
    assert get("metric", "vqa_exact_match")(["a"], ["A"]) == 1.0
