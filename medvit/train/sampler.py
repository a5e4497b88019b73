"""Deterministic, resumable, rank-sharded data order with per-sample augmentation seeds.

Each epoch's order is a permutation drawn from ``(seed, epoch)``; rank ``r`` of ``w`` takes every ``w``-th index
(as ``DistributedSampler``), the tail that does not fill a batch on every rank is dropped. Every sample comes
with its own augmentation seed derived from ``(seed, epoch, index)``, so augmentations do not depend on worker
count, and resuming at ``(epoch, batch)`` replays exactly what an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

Transform = Callable[[dict[str, Any], torch.Generator], dict[str, Any]]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """63-bit augmentation seed of one sample in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32).astype(np.uint64)
               .dot([1 << 31, 1]))


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields batches of ``(dataset index, augmentation seed)`` for one epoch of one rank.

    ``set_epoch(epoch, start_batch)`` selects the epoch and skips its first ``start_batch`` batches.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        if n < batch_size * world_size:
            raise ValueError(
                f"training set has {n} samples, fewer than one batch per rank (batch_size={batch_size} × "
                f"{world_size} ranks); lower batch_size or add data"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return (self.n // self.world_size) // self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_indices(self) -> list[int]:
        """This rank's indices of the current epoch, full batches only."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        mine = order[self.rank :: self.world_size][: self.batches_per_epoch * self.batch_size]
        return mine

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        idx = self.epoch_indices()
        for b in range(self.start_batch, self.batches_per_epoch):
            chunk = idx[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(i, sample_seed(self.seed, self.epoch, i)) for i in chunk]

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
