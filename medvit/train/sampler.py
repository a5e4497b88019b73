"""Deterministic, resumable, rank-sharded data order with per-sample augmentation seeds.

Each epoch's order is a permutation drawn from ``(seed, epoch)`` (or, with a long-tail re-sampling rule
``train.sampler``, ``n`` draws with replacement from per-sample probabilities, see :class:`SamplerSpec`); rank
``r`` of ``w`` takes every ``w``-th index (as ``DistributedSampler``), the tail that does not fill a batch on every
rank is dropped. Every sample comes with its own augmentation seed derived from ``(seed, epoch, index)``, so
augmentations do not depend on worker count, and resuming at ``(epoch, batch)`` replays exactly what an
uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from medvit.config import option

logger = logging.getLogger(__name__)

Transform = Callable[[dict[str, Any], torch.Generator], dict[str, Any]]


def sample_seed(seed: int, epoch: int, index: int, repeat: int = 0) -> int:
    """63-bit augmentation seed of one sample in one epoch; ``repeat`` k >= 1 = its (k+1)-th draw in an epoch of a
    re-sampling rule (drawn with replacement), so a repeated image is augmented differently each time."""
    key = [seed, epoch, index] if repeat == 0 else [seed, epoch, index, repeat]
    return int(np.random.SeedSequence(key).generate_state(2, dtype=np.uint32).astype(np.uint64).dot([1 << 31, 1]))


# ---------------------------------------------------------------------------------------------- long-tail sampling
SAMPLERS = ("class_balanced", "square_root", "progressive", "power")


@dataclass
class SamplerSpec:
    """Long-tail re-sampling of the training loader (YAML ``train.sampler: {name: square_root}``; null = the usual
    shuffled epochs). The rules of Kang et al., "Decoupling Representation and Classifier for Long-Tailed
    Recognition", ICLR 2020, §3.1 (eq. 1-2): class j is drawn with probability ``p_j = n_j^q / Σ_i n_i^q`` and an
    image uniformly within it — ``class_balanced`` q = 0, ``square_root`` q = 1/2, ``power`` any ``q``, and
    ``progressive`` ``p(t) = (1 - t/T)·p^IB + (t/T)·p^CB`` moving from instance-balanced (the natural, uniform over
    images) to class-balanced over the T epochs of the run. The re-sampling baselines the DeiT-LT paper
    (Rangwani et al., CVPR 2024) compares with and combines with DRW re-weighting. Multi-label data (chest
    findings): class-aware sampling as in Wu et al., "Distribution-Balanced Loss for Multi-Label Classification in
    Long-Tailed Datasets", ECCV 2020, §3.2, eq. 2: image i is drawn with ``P(i) = Σ_{c ∈ pos(i)} p_c / n_c``;
    images without any positive finding form one more class ("no finding") when ``no_finding_class``.
    Epochs keep n draws (with replacement); each draw's augmentation seed is distinct (:func:`sample_seed` repeat).
    """

    name: str = option("class_balanced", f"re-sampling rule: one of {list(SAMPLERS)}")
    q: float = option(0.5, "exponent q of p_j ∝ n_j^q for name power (0 = class-balanced, 1 = instance-balanced)")
    no_finding_class: bool = option(True, "multi-label: images with no positive label form their own class (else "
                                          "they are never drawn)")

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            import difflib

            close = difflib.get_close_matches(str(self.name), SAMPLERS, n=1)
            raise ValueError(f"train.sampler.name: unknown sampler {self.name!r}"
                             f"{f' (did you mean {close[0]!r}?)' if close else ''}; known: {list(SAMPLERS)}")
        if not (0.0 <= self.q <= 1.0):
            raise ValueError(f"train.sampler.q must be in [0, 1], got {self.q}")

    @property
    def exponent(self) -> float:
        return {"class_balanced": 0.0, "square_root": 0.5, "progressive": 0.0}.get(self.name, self.q)

    def probabilities(self, labels: Any, epoch: int = 0, total_epochs: int = 1) -> np.ndarray:
        """Per-sample draw probabilities (N,) summing to 1 for epoch ``epoch`` of ``total_epochs`` (only
        ``progressive`` depends on them). labels: (N,) class indices or (N, K) multi-hot (> 0.5 = positive; NaN or
        negative = unknown, not positive)."""
        p = class_aware_probabilities(labels, self.exponent, self.no_finding_class)
        if self.name == "progressive":
            t = min(max(epoch / max(total_epochs, 1), 0.0), 1.0)
            p = (1.0 - t) * np.full(len(p), 1.0 / len(p)) + t * p
        return p


def class_membership(labels: Any, no_finding_class: bool = True) -> np.ndarray:
    """(N, C') bool: image i belongs to class c. (N,) integer labels -> one-hot over ``0..max``; (N, K) multi-hot
    -> positives (> 0.5), plus a last "no finding" column when ``no_finding_class`` and some row has none."""
    y = np.asarray(labels)
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
            raise ValueError("train.sampler: 1-D labels must be class indices")
        yi = y.astype(np.int64)
        if len(yi) and yi.min() < 0:
            raise ValueError(f"train.sampler: negative class index {int(yi.min())} in the training labels")
        return np.eye(int(yi.max()) + 1 if len(yi) else 0, dtype=bool)[yi]
    if y.ndim != 2:
        raise ValueError(f"train.sampler: labels must be (N,) or (N, K), got shape {list(y.shape)}")
    pos = np.nan_to_num(y.astype(np.float64), nan=0.0) > 0.5
    none = ~pos.any(1)
    if no_finding_class and none.any():
        pos = np.concatenate([pos, none[:, None]], 1)
    return pos


def class_aware_probabilities(labels: Any, q: float, no_finding_class: bool = True) -> np.ndarray:
    """``P(i) = Σ_{c ∈ pos(i)} n_c^{q-1} / Σ_c n_c^q`` (N,) (see :class:`SamplerSpec`; classes with no image are
    left out). ``ValueError`` when no image belongs to any class."""
    m = class_membership(labels, no_finding_class)
    n = m.sum(0).astype(np.float64)
    used = n > 0
    if not used.any():
        raise ValueError("train.sampler: no training image has a positive label (nothing to re-sample)")
    per_class = np.zeros_like(n)
    per_class[used] = n[used] ** (q - 1.0) / np.sum(n[used] ** q)
    p = m.astype(np.float64) @ per_class
    return p / p.sum()


def expected_class_frequency(labels: Any, probs: np.ndarray, no_finding_class: bool = True) -> np.ndarray:
    """Expected share of draws that are positive for each class, ``f_c = Σ_i P(i)·[c ∈ pos(i)]`` (C',): for
    single-label data ``n_c^q / Σ n^q`` (Kang et al. eq. 1)."""
    return class_membership(labels, no_finding_class).astype(np.float64).T @ probs


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields batches of ``(dataset index, augmentation seed)`` for one epoch of one rank.

    ``set_epoch(epoch, start_batch)`` selects the epoch and skips its first ``start_batch`` batches.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, probabilities: Callable[[int], np.ndarray] | None = None):
        if n < batch_size * world_size:
            raise ValueError(
                f"training set has {n} samples, fewer than one batch per rank (batch_size={batch_size} × "
                f"{world_size} ranks); lower batch_size or add data"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch, self.start_batch = 0, 0
        self.probabilities = probabilities  # epoch -> (n,) draw probabilities (long-tail re-sampling); None = shuffle

    @property
    def batches_per_epoch(self) -> int:
        return (self.n // self.world_size) // self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_indices(self) -> list[int]:
        """This rank's indices of the current epoch, full batches only."""
        if self.probabilities is not None:  # n draws with replacement, seeded by (seed, epoch) as the shuffle
            p = torch.as_tensor(np.asarray(self.probabilities(self.epoch), dtype=np.float64))
            if p.shape != (self.n,) or not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or not p.sum() > 0:
                raise ValueError(f"sampler probabilities must be {self.n} finite non-negative numbers, not all 0")
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.multinomial(p, self.n, replacement=True, generator=g).tolist()
        elif self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        mine = order[self.rank :: self.world_size][: self.batches_per_epoch * self.batch_size]
        return mine

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        idx = self.epoch_indices()
        seeds = self.epoch_seeds(idx)
        for b in range(self.start_batch, self.batches_per_epoch):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield list(zip(idx[sl], seeds[sl]))

    def epoch_seeds(self, idx: list[int]) -> list[int]:
        """Augmentation seeds of this rank's epoch indices: the k-th repeat of an image (re-sampling) gets
        :func:`sample_seed` with ``repeat=k`` (computed over the whole epoch, so resuming mid-epoch keeps them)."""
        seen: dict[int, int] = {}
        out = []
        for i in idx:
            k = seen.get(i, 0)
            seen[i] = k + 1
            out.append(sample_seed(self.seed, self.epoch, i, k))
        return out

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


class SeededTransformDataset(Dataset):
    """Wraps a dataset so ``ds[(index, seed)]`` returns ``transform(base[index], Generator(seed))``; with
    ``seed_key`` the item also carries the seed under that key (a loss that looks records up by it, TinyViT)."""

    def __init__(self, base: Dataset, transform: Transform | None = None, seed_key: str | None = None):
        self.base, self.transform, self.seed_key = base, transform, seed_key

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        idx, seed = key if isinstance(key, tuple) else (key, 0)
        item = self.base[idx]
        if self.transform is not None:
            item = self.transform(item, torch.Generator().manual_seed(seed))
        if self.seed_key:
            item = {**item, self.seed_key: seed}
        return item
