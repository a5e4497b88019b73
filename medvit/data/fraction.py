"""Label-efficiency subsets: the same ``fraction`` of a training set for a given seed, in every task and benchmark."""

from __future__ import annotations

import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)


def subset_indices(n: int, fraction: float, seed: int) -> list[int]:
    """The ``fraction`` of ``range(n)`` kept for seed ``seed`` (sorted; all of it when fraction >= 1; at least one)."""
    if fraction >= 1.0:
        return list(range(n))
    k = max(1, int(round(fraction * n)))
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(10_007 + seed))[:k].tolist())


def fraction_subset(ds: Any, fraction: float, seed: int) -> Any:
    """``ds`` itself when ``fraction >= 1``, else a ``torch.utils.data.Subset`` of :func:`subset_indices` that keeps
    the dataset's ``label_names``."""
    if fraction >= 1.0:
        return ds
    from torch.utils.data import Subset

    sub = Subset(ds, subset_indices(len(ds), fraction, seed))
    if hasattr(ds, "label_names"):
        sub.label_names = list(ds.label_names)  # type: ignore[attr-defined]
    return sub


def label_table(ds: Any) -> Any:
    """Labels of every item of ``ds`` as a numpy array: (N, K) multi-hot or (N,) class indices.

    Uses the dataset's ``labels`` table when it has one (no image is read) — also through ``torch.utils.data.Subset``
    and wrappers with ``base``/``dataset`` + ``indices`` (phantoms, NIH, own data, the long-tail split) — else reads
    each item's ``label`` (logged). Unknown multi-label entries (``label_mask`` false) count as negative.
    One table for few-shot / fraction subsetting and the training re-sampler (``train.sampler``).
    """
    import numpy as np
    from torch.utils.data import Subset

    if isinstance(ds, Subset):
        return label_table(ds.dataset)[np.asarray(ds.indices)]
    lab = getattr(ds, "labels", None)
    if lab is not None and not callable(lab) and len(lab) == len(ds):
        return np.asarray(lab)
    base = getattr(ds, "base", None) or getattr(ds, "dataset", None)
    idx = getattr(ds, "indices", None)
    if base is not None and idx is not None and getattr(base, "labels", None) is not None:
        return label_table(base)[np.asarray(idx)]
    logger.info("reading %d items for their labels (the dataset has no label table)", len(ds))
    rows = []
    for i in range(len(ds)):
        it = ds[i]
        y = it["label"]
        if "label_mask" in it:
            y = y * it["label_mask"]
        rows.append(np.asarray(y))
    return np.stack(rows) if rows else np.zeros((0,))


def few_shot_indices(labels: Any, shots: int, seed: int, names: list[str] | None = None) -> list[int]:
    """N-way ``shots``-shot training subset, drawn per seed (sorted indices).

    - class indices (N,): ``shots`` images of every class present;
    - multi-hot (N, K) findings: for every finding, ``shots`` images positive for it, plus ``shots`` images with no
      finding (the "no finding" class). An image positive for several findings counts for each of them, so the subset
      holds at most ``shots · (K + 1)`` images. Findings are visited in a seeded random order.

    A class (finding, "no finding") with fewer than ``shots`` images cannot give a ``shots``-shot subset: ``ValueError``
    naming ``shots_per_class``, the short classes (``names`` when given) and their image counts, so a run is never
    reported as k-shot while it trained on fewer (or on all) images. Also ``ValueError`` for ``shots < 1`` or labels
    of another rank.
    """
    import numpy as np

    if shots < 1:
        raise ValueError(f"shots_per_class must be >= 1, got {shots}")
    y = np.asarray(labels)
    g = np.random.default_rng(20_011 + seed)
    if y.ndim == 1:
        classes = [int(c) for c in np.unique(y)]
        groups = [np.flatnonzero(y == c) for c in classes]
        labels_of = [str(names[c]) if names and 0 <= c < len(names) else f"class {c}" for c in classes]
    elif y.ndim == 2:
        pos = y > 0.5
        order = [int(j) for j in g.permutation(y.shape[1])]
        groups = [np.flatnonzero(pos[:, j]) for j in order] + [np.flatnonzero(~pos.any(axis=1))]
        labels_of = [str(names[j]) if names and j < len(names) else f"finding {j}" for j in order] + ["no finding"]
    else:
        raise ValueError(f"labels must be (N,) classes or (N, K) multi-hot, got shape {y.shape}")
    short = sorted((len(m), lab) for m, lab in zip(groups, labels_of) if len(m) < shots)
    if short:
        raise ValueError(f"shots_per_class={shots}: the training split has fewer images than that for "
                         f"{len(short)} class(es): " + ", ".join(f"{lab} {n}" for n, lab in short)
                         + f"; the largest k-shot subset it can give is shots_per_class={short[0][0]}")
    chosen: set[int] = set()
    for members in groups:
        have = sum(1 for i in members if int(i) in chosen) if y.ndim == 2 else 0
        for i in g.permutation(members):
            if have >= shots:
                break
            if int(i) not in chosen:
                chosen.add(int(i))
                have += 1
    return sorted(chosen)


def few_shot_subset(ds: Any, shots: int, seed: int) -> Any:
    """A ``torch.utils.data.Subset`` of :func:`few_shot_indices` over ``ds`` (keeps ``label_names``/``class_names``)."""
    from torch.utils.data import Subset

    sub = Subset(ds, few_shot_indices(label_table(ds), shots, seed,
                                      names=getattr(ds, "label_names", None) or getattr(ds, "class_names", None)))
    for attr in ("label_names", "class_names"):
        if hasattr(ds, attr):
            setattr(sub, attr, list(getattr(ds, attr)))
    return sub
