"""Batch prediction over a dataset of items, and in-memory caching of (transformed) items."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medvit.nn.precision import autocast


class ListDataset(Dataset):
    """Items held in a list (a cached dataset); attributes such as ``label_names`` are copied from the source."""

    def __init__(self, items: list[dict[str, Any]], label_names: list[str] | None = None):
        self.items = items
        self.label_names = list(label_names or [])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return dict(self.items[i])


def cache_dataset(ds: Dataset, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                  keys: tuple[str, ...] = ("image", "label", "label_mask", "id", "patient_id")) -> ListDataset:
    """Materialise ``ds`` (optionally through a deterministic ``transform``) keeping only ``keys``."""
    items = []
    for i in range(len(ds)):  # type: ignore[arg-type]
        it = ds[i]
        if transform is not None:
            it = transform(it)
        items.append({k: it[k] for k in keys if k in it})
    return ListDataset(items, getattr(ds, "label_names", None))


@torch.no_grad()
def predict(
    model: nn.Module, ds: Dataset, batch_size: int = 128, device: torch.device | str = "cpu",
    precision: str = "fp32", num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(logits (N, K), labels as stored ((N, K) multi-label or (N,) grades), label_mask (N, K) bool or None when
    the items carry none) of ``model`` over ``ds``; the model runs in eval mode and gets its mode back."""
    dev = torch.device(device)
    was = model.training
    model.eval()
    logits, labels, masks = [], [], []
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        with autocast(dev, precision):
            out = model(batch["image"].to(dev))
        logits.append(out.float().cpu())
        labels.append(batch["label"])
        if "label_mask" in batch:
            masks.append(batch["label_mask"].bool())
    model.train(was)
    return torch.cat(logits), torch.cat(labels), (torch.cat(masks) if masks else None)


def predict_multilabel(
    model: nn.Module, ds: Dataset, batch_size: int = 128, device: torch.device | str = "cpu",
    precision: str = "fp32", num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits (N, K), labels (N, K) float, label_mask (N, K) bool, all True where the items carry no mask)."""
    logits, labels, mask = predict(model, ds, batch_size, device, precision, num_workers)
    labels = labels.float()
    return logits, labels, (mask if mask is not None else torch.ones_like(labels, dtype=torch.bool))
