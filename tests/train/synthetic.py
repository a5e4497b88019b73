"""A tiny multi-label dataset in the INTERFACES.md item format, for tests that must not depend on medvit.data."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class SyntheticCXR(Dataset):
    """``n`` images (C, S, S) in [0, 1]; label k is 1 when a bright square sits in quadrant k (K = 3)."""

    label_names = ["upper_left", "upper_right", "lower_half"]

    def __init__(self, n: int = 32, size: int = 32, in_chans: int = 1, seed: int = 0, unknown_frac: float = 0.1):
        g = torch.Generator().manual_seed(seed)
        self.labels = (torch.rand(n, 3, generator=g) > 0.5).float()
        self.masks = torch.rand(n, 3, generator=g) > unknown_frac
        self.images = 0.2 * torch.rand(n, in_chans, size, size, generator=g)
        q = size // 2
        s = max(size // 6, 1)
        for i in range(n):
            if self.labels[i, 0]:
                self.images[i, :, s : q - s, s : q - s] += 0.6
            if self.labels[i, 1]:
                self.images[i, :, s : q - s, q + s : size - s] += 0.6
            if self.labels[i, 2]:
                self.images[i, :, q + s : size - s, s : size - s] += 0.6
        self.images.clamp_(0, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i].clone(), "label": self.labels[i].clone(), "label_mask": self.masks[i].clone(),
                "id": f"img{i}", "patient_id": f"p{i // 2}"}
