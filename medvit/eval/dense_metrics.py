"""Segmentation and retrieval metrics of the BenchX protocols, registered under kind ``"metric"``.

- :func:`dice_iou`: per-image Dice and IoU of the foreground classes through MONAI (``monai.metrics.DiceMetric``,
  ``MeanIoU``; background excluded, images whose ground truth and prediction are both empty count as 1, so an
  all-negative set is not NaN), averaged over images and classes — BenchX selects on validation mDice.
- :func:`retrieval_scores`: image-to-text retrieval on a similarity matrix: ``Hits@K`` (the paired text is among the
  K most similar) and ``Precision@K`` (fraction of the K retrieved texts whose label equals the query's), as in
  BenchX ``test_zeroshot.py`` (mode ``retrieval``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medvit.registry import REGISTRY


def dice_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int = 2) -> dict[str, float]:
    """Mean Dice and IoU of classes 1..num_classes-1.

    Args:
        pred: (B, H, W) predicted class indices (e.g. ``logits.argmax(1)``).
        target: (B, H, W) or (B, 1, H, W) true class indices / 0-1 mask.
    Returns:
        ``{"dice": …, "iou": …}`` in [0, 1].
    Raises:
        ValueError: shapes differ.
    """
    from monai.metrics import DiceMetric, MeanIoU
    from monai.networks.utils import one_hot

    t = target[:, 0] if target.ndim == 4 else target
    if pred.shape != t.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(t.shape)} must have the same (B, H, W) shape")
    p1 = one_hot(pred[:, None].long().cpu(), num_classes)
    t1 = one_hot(t[:, None].long().cpu(), num_classes)
    dice = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
    iou = MeanIoU(include_background=False, reduction="mean", ignore_empty=False)
    return {"dice": float(dice(p1, t1).mean()), "iou": float(iou(p1, t1).mean())}


def retrieval_scores(similarity: Any, query_labels: Sequence[Any], text_labels: Sequence[Any],
                     ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Hits@K and Precision@K of image-to-text retrieval.

    Args:
        similarity: (Q, T) scores, row i = query image i; text i is the pair of image i (needs T >= Q).
        query_labels / text_labels: Q and T labels (anything comparable with ``==``; arrays compare whole).
        ks: cut-offs (each clipped to T).
    Returns:
        ``{"hits@K": …, "precision@K": …}`` for each K.
    """
    s = np.asarray(similarity.detach().cpu() if hasattr(similarity, "detach") else similarity, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < s.shape[0]:
        raise ValueError(f"similarity must be (Q, T) with T >= Q, got {s.shape}")
    if len(query_labels) != s.shape[0] or len(text_labels) != s.shape[1]:
        raise ValueError(f"{len(query_labels)} query labels and {len(text_labels)} text labels for {s.shape}")
    order = np.argsort(-s, axis=1, kind="stable")
    ql = [np.asarray(q) for q in query_labels]
    tl = [np.asarray(t) for t in text_labels]
    out = {}
    for k in ks:
        k = min(int(k), s.shape[1])
        top = order[:, :k]
        out[f"hits@{k}"] = float(np.mean([i in top[i] for i in range(s.shape[0])]))
        out[f"precision@{k}"] = float(np.mean([np.mean([np.array_equal(ql[i], tl[j]) for j in top[i]])
                                               for i in range(s.shape[0])]))
    return out


def _register() -> None:
    REGISTRY.add("metric", "dice", lambda pred, target, num_classes=2: dice_iou(pred, target, num_classes)["dice"],
                 description="mean foreground Dice (MONAI DiceMetric)", higher_is_better=True, input="mask")
    REGISTRY.add("metric", "iou", lambda pred, target, num_classes=2: dice_iou(pred, target, num_classes)["iou"],
                 description="mean foreground IoU (MONAI MeanIoU)", higher_is_better=True, input="mask")
    REGISTRY.add("metric", "retrieval", retrieval_scores, description="image-to-text Hits@K and Precision@K",
                 higher_is_better=True, input="similarity")


_register()
