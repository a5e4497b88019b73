"""BenchX metrics: Dice/IoU (MONAI) vs hand-computed, retrieval Hits@K/Precision@K, leaderboard mean ± sd, the
classification scores vs scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from medvit.eval.dense_metrics import dice_iou, retrieval_scores
from medvit.eval.leaderboard import aggregate, to_csv, to_markdown


def test_dice_iou_hand_computed():
    pred = torch.zeros(2, 4, 4, dtype=torch.long)
    tgt = torch.zeros(2, 4, 4, dtype=torch.long)
    pred[0, :2, :2] = 1  # 4 px
    tgt[0, :2, :3] = 1  # 6 px, overlap 4 -> Dice 8/10, IoU 4/6
    # image 1: both empty -> 1 for both (ignore_empty=False)
    r = dice_iou(pred, tgt)
    assert r["dice"] == pytest.approx((0.8 + 1.0) / 2) and r["iou"] == pytest.approx((4 / 6 + 1.0) / 2)
    assert dice_iou(torch.zeros_like(tgt[:1]), tgt[:1])["dice"] == 0.0  # the empty-mask baseline
    with pytest.raises(ValueError, match="same"):
        dice_iou(pred[:, :2], tgt)


def test_retrieval_hand_computed():
    sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.1, 0.7, 0.6]])
    labels = ["a", "b", "b"]
    r = retrieval_scores(sim, labels, labels, ks=(1, 2))
    # top-1: q0 -> t0 (hit), q1 -> t2 (miss, same label), q2 -> t1 (miss, same label)
    assert r["hits@1"] == pytest.approx(1 / 3) and r["precision@1"] == pytest.approx(1.0)
    # top-2: q0 -> t0,t2 (hit; labels a,b), q1 -> t2,t1 (hit; b,b), q2 -> t1,t2 (hit; b,b)
    assert r["hits@2"] == 1.0 and r["precision@2"] == pytest.approx((0.5 + 1 + 1) / 3)
    with pytest.raises(ValueError, match="T >= Q"):
        retrieval_scores(sim[:, :2], labels, labels[:2])


def test_leaderboard_mean_sd_known_numbers():
    cells = [{"method": "mae", "dataset": "d", "task": "classification", "fraction": 0.1, "seed": s,
              "metrics": {"auroc": v, "f1": math.nan if s == 1 else 0.5}} for s, v in ((42, 0.7), (0, 0.8), (1, 0.9))]
    cells.append({"method": "random", "dataset": "d", "task": "classification", "fraction": 0.1, "seed": 42,
                  "metrics": {"auroc": 0.6}})
    rows = aggregate(cells)
    mae = next(r for r in rows if r["method"] == "mae")
    assert mae["auroc_mean"] == pytest.approx(0.8) and mae["auroc_sd"] == pytest.approx(0.1)
    assert mae["f1_mean"] == 0.5 and mae["f1_sd"] == 0.0 and mae["seeds"] == [0, 1, 42]
    md = to_markdown(rows, {"classification": "auroc"})
    assert "| mae | 0.8000 ± 0.1000 | 0, 1, 42 |" in md and "| random | 0.6000 ± 0.0000 | 42 |" in md
    assert to_csv(rows).splitlines()[0].startswith("method,dataset,task,fraction,n_seeds,seeds")
    with pytest.raises(KeyError, match="seed"):
        aggregate([{"method": "m", "dataset": "d", "task": "t", "fraction": 1.0, "metrics": {}}])


def test_classification_scores_match_sklearn():
    from medvit.tasks.benchx_protocols import _cls_scores

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    logits = torch.tensor(rng.normal(size=(60, 2)) + np.stack([1 - y, y], 1), dtype=torch.float32)
    s = _cls_scores(logits, torch.tensor(y), "binary", ["neg", "pos"])
    prob = torch.softmax(logits, -1).numpy()
    assert s["auroc"] == pytest.approx(roc_auc_score(y, prob[:, 1]))
    assert s["f1"] == pytest.approx(f1_score(y, prob.argmax(1), average="macro"))
    ym = rng.integers(0, 2, (60, 3)).astype(np.float32)
    lm = rng.normal(size=(60, 3)) + ym
    sm = _cls_scores(torch.tensor(lm), torch.tensor(ym), "multilabel", ["a", "b", "c"])
    assert sm["auroc"] == pytest.approx(np.mean([roc_auc_score(ym[:, k], lm[:, k]) for k in range(3)]))
