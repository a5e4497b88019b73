"""``cxr_phantom_lt``: a long-tailed training split of the chest phantoms (the medical use of DeiT-LT, Rangwani et
al., CVPR 2024), findings' positive counts decaying exponentially from head to tail.

The training split keeps images of the in-memory ``cxr_phantom`` training split (patients of the ordinary
split, never val/test) so that finding c (in ``order``, head first) has about ``head · imbalance^(-c/(K-1))``
positives: the counts of CIFAR-LT / ImageNet-LT (Cao et al. 2019; Liu et al. 2019), the head-to-tail ratio
``imbalance`` (≥ 100 for the issue's "1:100 or steeper"). Multi-label images count for each of their findings:
candidates are visited in a seeded random order (fewer findings first) and an image is kept only when every
finding it shows is still below its target; images without findings are kept up to ``normal_fraction`` of the
kept positives. ``val`` and ``test`` are the ordinary splits unchanged (natural prevalence), so tail findings keep
enough positives to measure per-finding AUROC — the balanced-evaluation convention of long-tail benchmarks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from medvit.data.phantom_common import check_probability, finite_number, whole_number
from medvit.data.phantom_cxr import CXR_LABELS
from medvit.data.phantom_datasets import (
    PhantomDataset,
    call_name,
    check_wrapper_args,
    refuse_unknown_wrapper_args,
)
from medvit.registry import register

logger = logging.getLogger(__name__)


def long_tail_targets(head: int, k: int, imbalance: float) -> list[int]:
    """Positive counts per class, head first: ``round(head · imbalance^(-c/(k-1)))``, at least 1."""
    if k < 2 or head < 1 or imbalance < 1:
        raise ValueError(f"need k >= 2 classes, head >= 1, imbalance >= 1; got k={k}, head={head}, "
                         f"imbalance={imbalance}")
    return [max(1, int(round(head * imbalance ** (-c / (k - 1))))) for c in range(k)]


def select_long_tail(labels: np.ndarray, targets: list[int], order: list[int], normal_fraction: float,
                     seed: int) -> list[int]:
    """Indices of ``labels`` (N, K) 0/1 kept so that class ``order[c]`` has at most ``targets[c]`` positives.

    Greedy over a seeded permutation, images with fewer positives first: an image is kept when every positive class
    of it is below its target; images with no positive are kept up to ``normal_fraction`` × the number of kept
    positive images. Returned sorted.
    """
    cap = np.zeros(labels.shape[1], np.int64)
    for c, t in zip(order, targets):
        cap[c] = t
    have = np.zeros_like(cap)
    keep_pos, normals = [], []
    perm = np.random.default_rng([seed, 20, 12]).permutation(len(labels))
    # images with fewer findings first (stable within a count): co-occurring findings would otherwise fill the
    # tail's quota through images kept for the head
    perm = perm[np.argsort(labels[perm].sum(1), kind="stable")]
    for i in perm:
        pos = labels[i] > 0
        if not pos.any():
            normals.append(int(i))
        elif np.all(have[pos] < cap[pos]):
            have[pos] += 1
            keep_pos.append(int(i))
    n_norm = int(round(normal_fraction * len(keep_pos)))
    return sorted(keep_pos + normals[:n_norm])


class LongTailSubset(torch.utils.data.Dataset):
    """Items ``indices`` of ``base``; ``label_names`` kept; :meth:`label_counts` from the cached label table."""

    def __init__(self, base: Any, indices: list[int], labels: np.ndarray):
        self.base, self.indices, self.labels = base, list(indices), labels
        self.label_names = list(base.label_names)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.base[self.indices[i]]

    def label_counts(self) -> list[int]:
        """Positives per finding (``label_names`` order)."""
        return [int(c) for c in self.labels.sum(0)]

    def patient_ids(self) -> list[str]:
        ids = self.base.patient_ids()
        return [ids[j] for j in self.indices]


def check_long_tail_args(args: dict[str, Any], name: Callable[[str], str] = str) -> None:
    """``cxr_phantom_lt``'s own arguments present in ``args`` (its builder's and ``medvit run --dry-run``'s check):
    ``imbalance`` a number >= 1, ``head`` a whole number >= 1 (or None), ``order`` every finding of
    :data:`CXR_LABELS` once (or None / empty: label order), ``normal_fraction`` in [0, 1]; ``ValueError`` naming
    ``name(key)`` otherwise."""
    if "imbalance" in args and not (finite_number(args["imbalance"]) or 0) >= 1:
        raise ValueError(f"{name('imbalance')} (head/tail ratio) must be a number >= 1, got {args['imbalance']!r}")
    if args.get("head") is not None and not (whole_number(args["head"]) or 0) >= 1:
        raise ValueError(f"{name('head')} (positives of the head finding) must be a whole number >= 1 or null, got "
                         f"{args['head']!r}")
    order = args.get("order")
    if order and (isinstance(order, str) or not isinstance(order, list | tuple)
                  or not all(isinstance(o, str) for o in order) or sorted(order) != sorted(CXR_LABELS)):
        raise ValueError(f"{name('order')} must list every finding once ({list(CXR_LABELS)}); got {order!r}")
    if "normal_fraction" in args:
        check_probability(args["normal_fraction"], "normal_fraction", name)


@register("dataset", "cxr_phantom_lt", mean=(0.524,), std=(0.290,), label_names=list(CXR_LABELS), task="multilabel",
          in_chans=1, check_args=lambda args: check_wrapper_args("cxr_phantom_lt", args, cxr_phantom_lt,
                                                                 values=check_long_tail_args),
          description="Chest phantoms with a long-tailed training split (findings 1:imbalance, head to "
          "tail); val/test unchanged")
def cxr_phantom_lt(split: str = "train", n: int = 5000, seed: int = 0, image_size: int = 224, imbalance: float = 100.0,
                   head: int | None = None, order: list[str] | None = None, normal_fraction: float = 0.5,
                   **kw: Any) -> Any:
    """Long-tailed chest phantoms (in memory): ``n`` images over all splits as ``cxr_phantom``; the training split
    is subsampled to head-to-tail ratio ``imbalance`` with ``head`` positives of the first finding of ``order``
    (None: as many as the pool allows, i.e. the head finding's count in the pool; ``order`` None: the label order).
    ValueError naming the argument for one :func:`check_long_tail_args` refuses (on every split, as the dry run) or
    one the chest phantoms do not take (:func:`~medvit.data.phantom_datasets.refuse_unknown_wrapper_args`)."""
    refuse_unknown_wrapper_args("cxr_phantom_lt", kw, cxr_phantom_lt)
    check_long_tail_args({"imbalance": imbalance, "head": head, "order": order, "normal_fraction": normal_fraction},
                         call_name("cxr_phantom_lt"))
    base = PhantomDataset("cxr", split, n=n, seed=seed, image_size=image_size, **kw)
    if split != "train":
        return base
    names = list(base.label_names)
    order = list(order) if order else names
    labels = np.stack([base.phantom(i).labels for i in range(len(base))]).astype(np.int64)
    idx_order = [names.index(o) for o in order]
    pool_head = int(labels[:, idx_order[0]].sum())
    targets = long_tail_targets(min(head or pool_head, pool_head), len(names), imbalance)
    keep = select_long_tail(labels, targets, idx_order, normal_fraction, seed)
    for _ in range(10):  # co-occurring findings can leave the head short of its target: refit to what it got
        got = int(labels[keep][:, idx_order[0]].sum())
        refit = long_tail_targets(max(got, 1), len(names), imbalance)
        if refit == targets:
            break
        targets = refit
        keep = select_long_tail(labels, targets, idx_order, normal_fraction, seed)
    got_counts = labels[keep][:, idx_order].sum(0)
    if got_counts[0] < imbalance * max(got_counts[-1], 1):
        logger.warning("cxr_phantom_lt: head/tail ratio %.1f below imbalance %.0f (pool of %d too small; raise n)",
                       got_counts[0] / max(got_counts[-1], 1), imbalance, len(base))
    sub = LongTailSubset(base, keep, labels[keep])
    logger.info("cxr_phantom_lt: %d of %d training images; positives %s (targets %s, order %s)", len(sub), len(base),
                dict(zip(names, sub.label_counts())), targets, order)
    return sub
