"""Label-efficiency subsets: the same ``fraction`` of a training set for a given seed, in every task and benchmark."""

from __future__ import annotations

from typing import Any

import torch


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
