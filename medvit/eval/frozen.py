"""Frozen-embedding evaluation (TWLV-I, Lee et al. 2024, arXiv 2408.11318): weighted kNN and a linear probe.

The protocol of TWLV-I's evaluation framework (``knn/main.py``, ``linear_probing/main.py``), on embeddings of a
frozen backbone:

- **kNN** (:func:`knn_scores`): query and bank embeddings are L2-normalised; the k = 200 most cosine-similar bank
  items vote with weight ``exp(sim / τ)``, τ = 0.1, summed per class. For clip-level embeddings the class scores of
  all clips of one video are summed (``query_groups``).
- **Linear probe** (:func:`linear_probe`): a linear classifier on the frozen embeddings. medvit fits it with
  scikit-learn's ``LogisticRegression`` (L-BFGS, multinomial; one-vs-rest for multi-label), features standardised
  on the training set; TWLV-I trains ``nn.Linear`` with Adam for 150 epochs — the same model family, a different
  optimiser. Clip-level: the class probabilities of a video's clips are averaged.

Labels are either single-label class indices ``(N,)`` (accuracy, per-class recall/precision/F1) or multi-label
``(N, K)`` 0/1 (per-label AUROC; the kNN score of a label is the weighted fraction of positive neighbours).
:func:`embed_dataset` produces the embeddings of any registered backbone (uniform interface: pooled, normalised
``forward_head(..., pre_logits=True)``) over any dataset of ``{"image", "label"}`` items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

KNN_K = 200
KNN_TAU = 0.1


def _as_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be (N, D) embeddings, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds non-finite values")
    return t.float()


def _is_multilabel(y: np.ndarray) -> bool:
    return y.ndim == 2


def group_sum(scores: np.ndarray, groups: np.ndarray | None, reduce: str = "sum") -> tuple[np.ndarray, np.ndarray]:
    """Combine per-clip rows into per-video rows: scores (N, C), groups (N,) ids -> ((G, C), (G,) group ids in
    first-appearance order). ``reduce`` "sum" (kNN) or "mean" (probe probabilities). No groups: unchanged."""
    if groups is None:
        return scores, np.arange(len(scores))
    groups = np.asarray(groups)
    if len(groups) != len(scores):
        raise ValueError(f"query_groups has {len(groups)} entries for {len(scores)} queries")
    _, first, inv = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first)  # groups in first-appearance order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    idx = rank[inv]
    out = np.zeros((len(order), scores.shape[1]), dtype=np.float64)
    np.add.at(out, idx, scores)
    if reduce == "mean":
        out /= np.bincount(idx, minlength=len(order))[:, None]
    return out, groups[np.sort(first)]


def knn_scores(
    bank: np.ndarray | torch.Tensor,
    bank_labels: np.ndarray,
    query: np.ndarray | torch.Tensor,
    k: int = KNN_K,
    tau: float = KNN_TAU,
    num_classes: int | None = None,
    query_groups: np.ndarray | None = None,
    chunk: int = 1024,
) -> np.ndarray:
    """TWLV-I weighted kNN class scores.

    bank: (N, D) training embeddings; bank_labels: (N,) class ids or (N, K) 0/1 multi-label; query: (M, D).
    Each query's k nearest bank items by cosine similarity s vote with weight exp(s / tau): single-label scores
    are the per-class sums of weights (M, C); multi-label scores are the weighted fraction of positive
    neighbours per label (M, K), in [0, 1]. ``query_groups`` (M,) sums the scores of the clips of one video
    (rows then follow first appearance of each group). k larger than the bank uses the whole bank.
    Raises ``ValueError`` for mismatched shapes, k < 1 or tau <= 0.
    """
    b = torch.nn.functional.normalize(_as_tensor(bank, "bank"), dim=1)
    q = torch.nn.functional.normalize(_as_tensor(query, "query"), dim=1)
    y = np.asarray(bank_labels)
    if b.shape[1] != q.shape[1]:
        raise ValueError(f"bank dim {b.shape[1]} != query dim {q.shape[1]}")
    if len(y) != len(b):
        raise ValueError(f"{len(y)} bank labels for {len(b)} bank embeddings")
    if k < 1 or tau <= 0:
        raise ValueError(f"need k >= 1 and tau > 0, got k={k}, tau={tau}")
    k = min(k, len(b))
    multi = _is_multilabel(y)
    if multi:
        yt = torch.as_tensor(y, dtype=torch.float32)
    else:
        if y.min() < 0:
            raise ValueError("single-label bank_labels must be class ids >= 0")
        c = int(num_classes or (int(y.max()) + 1))
        yt = torch.nn.functional.one_hot(torch.as_tensor(y, dtype=torch.long), c).float()
    out = []
    for i in range(0, len(q), chunk):
        sim = q[i:i + chunk] @ b.T  # (m, N)
        s, idx = sim.topk(k, dim=1)
        w = torch.exp(s / tau)  # (m, k)
        votes = (w[..., None] * yt[idx]).sum(1)  # (m, C)
        out.append(votes / w.sum(1, keepdim=True) if multi else votes)
    scores = torch.cat(out).double().numpy()
    return group_sum(scores, query_groups, "mean" if multi else "sum")[0]


def linear_probe(
    train: np.ndarray | torch.Tensor,
    train_labels: np.ndarray,
    test: np.ndarray | torch.Tensor,
    c: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
    query_groups: np.ndarray | None = None,
) -> np.ndarray:
    """Linear classifier on frozen embeddings -> test class probabilities (M, C) (multi-label: (M, K) per-label
    probabilities). scikit-learn ``LogisticRegression`` (inverse L2 strength ``c``) on features standardised with
    the training set's mean/sd; ``query_groups`` averages the probabilities of a video's clips."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr = _as_tensor(train, "train").double().numpy()
    xte = _as_tensor(test, "test").double().numpy()
    y = np.asarray(train_labels)
    if len(y) != len(xtr):
        raise ValueError(f"{len(y)} train labels for {len(xtr)} train embeddings")
    lr = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    if _is_multilabel(y):
        clf = make_pipeline(StandardScaler(), OneVsRestClassifier(lr))
        clf.fit(xtr, y.astype(int))
        proba = clf.predict_proba(xte)
    else:
        if len(np.unique(y)) < 2:
            raise ValueError("linear probe needs at least two classes in the training labels")
        clf = make_pipeline(StandardScaler(), lr)
        clf.fit(xtr, y)
        proba = np.zeros((len(xte), int(y.max()) + 1))
        proba[:, clf.classes_] = clf.predict_proba(xte)
    return group_sum(proba, query_groups, "mean")[0]


def score_report(scores: np.ndarray, labels: np.ndarray, class_names: list[str] | None = None) -> dict[str, Any]:
    """Overall and per-class results of class scores (M, C) against labels.

    Single-label (M,): top-1 accuracy, balanced accuracy, and per class precision / recall / F1 / support
    (scikit-learn). Multi-label (M, K): per-label AUROC (None where a label has one class only) and their mean.
    """
    from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support, roc_auc_score

    y = np.asarray(labels)
    names = class_names or [str(i) for i in range(scores.shape[1])]
    if _is_multilabel(y):
        per = {}
        for j, n in enumerate(names):
            col = y[:, j]
            per[n] = {"auroc": float(roc_auc_score(col, scores[:, j])) if 0 < col.sum() < len(col) else None,
                      "support": int(col.sum())}
        vals = [v["auroc"] for v in per.values() if v["auroc"] is not None]
        return {"mean_auroc": float(np.mean(vals)) if vals else None, "per_class": per}
    pred = scores.argmax(1)
    labs = list(range(scores.shape[1]))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labs, zero_division=0)
    per = {names[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
           for i in labs}
    return {"accuracy": float((pred == y).mean()), "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "per_class": per}


def frozen_eval(
    train: np.ndarray | torch.Tensor, train_labels: np.ndarray, test: np.ndarray | torch.Tensor,
    test_labels: np.ndarray, class_names: list[str] | None = None, k: int = KNN_K, tau: float = KNN_TAU,
    probe_c: float = 1.0, seed: int = 0,
) -> dict[str, Any]:
    """kNN (k, τ) and linear probe on one train/test split -> {"knn": report, "linear_probe": report}
    (:func:`score_report`)."""
    yt = np.asarray(train_labels)
    nc = None if _is_multilabel(yt) else int(max(yt.max(), np.asarray(test_labels).max())) + 1
    knn = knn_scores(train, yt, test, k=k, tau=tau, num_classes=nc)
    lp = linear_probe(train, yt, test, c=probe_c, seed=seed)
    if nc is not None and lp.shape[1] < nc:
        lp = np.pad(lp, ((0, 0), (0, nc - lp.shape[1])))
    return {"knn": {"k": k, "tau": tau, **score_report(knn, test_labels, class_names)},
            "linear_probe": {"C": probe_c, **score_report(lp, test_labels, class_names)}}


@torch.no_grad()
def embed_dataset(model: nn.Module, ds: Dataset, batch_size: int = 64, device: str = "cpu",
                  num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pooled embeddings of a frozen backbone over ``ds`` items {"image": (C, *S), "label": ...}:
    -> ((N, D) float32, labels as stored). Uses ``forward_head(forward_features(x), pre_logits=True)`` (the
    head's input), or the model's output when it has no ``forward_head``. The model is put in eval mode."""
    model.eval().to(device)
    feats, labels = [], []
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        x = batch["image"].to(device)
        f = model.forward_head(model.forward_features(x), pre_logits=True) if hasattr(model, "forward_head") \
            else model(x)
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(batch["label"]))
    if not feats:
        raise ValueError("embed_dataset: the dataset is empty")
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()
