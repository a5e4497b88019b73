"""Small procedural 3D and 2D+t phantoms for volumetric / temporal self-supervision (no files, deterministic).

- ``ct_volume_phantom``: chest-CT-like volumes (1, D, H, W) in [0, 1] (soft-tissue-window grey levels): a water
  ellipsoid body in air, a bone ring, two lungs whose cross-section changes along z, vessels, and in the positives
  1–3 spherical nodules in a lung. Binary label ``nodule`` (prevalence 0.5) for linear probes.
- ``cine_phantom``: 2D+t series (1, T, H, W) in [0, 1] (cine-MRI-like short-axis view): a ring-shaped ventricle
  wall whose radius follows r(t) = r0·(1 − a·sin²(π·(t/T·c + φ))) with per-series heart rate c, phase φ and
  contraction a, plus static background texture and noise. Label ``reduced_contraction`` (a < 0.15; prevalence
  ~0.5); items also carry ``frame_times`` (T,) so temporal tasks know the frame order.

Splits: images are assigned train/val/test 70/15/15 by index; every image has its own RNG stream
(``seed``, kind, index), so a split's items do not depend on ``n`` of the others.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medvit.data.datasets import ItemDataset, check_split
from medvit.registry import register

_SPLITS = ("train", "val", "test", "all")
#: RNG stream codes of the two kinds (distinct from the 2D phantoms' codes in medvit.data.phantom_common)
_KIND_CODES = {"ct_volume": 37, "cine": 41}


def _split_indices(n: int, split: str) -> np.ndarray:
    idx = np.arange(n)
    if split == "all":
        return idx
    part = np.where(idx % 20 < 14, "train", np.where(idx % 20 < 17, "val", "test"))
    return idx[part == split]


def ct_volume(rng: np.random.Generator, size: int, depth: int, nodule: bool) -> np.ndarray:
    """One (depth, size, size) float32 volume in [0, 1]; see module docstring."""
    z, y, x = np.meshgrid(np.linspace(0, 1, depth), np.linspace(-0.5, 0.5, size), np.linspace(-0.5, 0.5, size),
                          indexing="ij")
    ax, ay = rng.uniform(0.38, 0.47), rng.uniform(0.28, 0.36)
    body = (x / ax) ** 2 + (y / ay) ** 2 <= 1
    ring = body & ((x / (ax - 0.04)) ** 2 + (y / (ay - 0.04)) ** 2 > 1)
    hu = np.where(body, rng.uniform(20, 60), -1000.0)
    r = rng.uniform(0.06, 0.09) + rng.uniform(0.06, 0.11) * np.sin(np.pi * (z * rng.uniform(0.7, 1.0) + 0.1))
    sep = rng.uniform(0.15, 0.21)
    lungs = np.zeros_like(body)
    for cx in (-sep, sep):
        lungs |= ((x - cx) / r) ** 2 + (y / (1.4 * r)) ** 2 <= 1
    hu = np.where(lungs, -850.0, hu)
    for _ in range(int(rng.integers(2, 5))):  # vessels: thin tubes along z inside the lungs
        cx, cy = rng.choice([-sep, sep]) + rng.uniform(-0.05, 0.05), rng.uniform(-0.08, 0.08)
        tube = ((x - cx) ** 2 + (y - cy) ** 2 <= rng.uniform(0.012, 0.02) ** 2) & lungs
        hu = np.where(tube, 40.0, hu)
    if nodule:
        for _ in range(int(rng.integers(1, 4))):
            cx = rng.choice([-sep, sep]) + rng.uniform(-0.05, 0.05)
            cy, cz = rng.uniform(-0.08, 0.08), rng.uniform(0.25, 0.75)
            rad = rng.uniform(0.06, 0.1)
            ball = (x - cx) ** 2 + (y - cy) ** 2 + ((z - cz) * 0.8) ** 2 <= rad**2
            hu = np.where(ball, rng.uniform(0, 60), hu)
    hu = np.where(ring, 700.0, hu)
    hu = hu + rng.normal(0, 25, hu.shape)
    lo, hi = -1000.0, 400.0  # wide window so lungs, tissue and bone are all distinct
    return np.clip((hu - lo) / (hi - lo), 0, 1).astype(np.float32)


def cine_series(rng: np.random.Generator, size: int, frames: int, reduced: bool) -> tuple[np.ndarray, np.ndarray]:
    """One (frames, size, size) float32 series in [0, 1] and its frame times in cardiac cycles; see docstring."""
    y, x = np.meshgrid(np.linspace(-0.5, 0.5, size), np.linspace(-0.5, 0.5, size), indexing="ij")
    cx, cy = rng.uniform(-0.08, 0.08, 2)
    r0, wall = rng.uniform(0.2, 0.28), rng.uniform(0.05, 0.08)
    a = rng.uniform(0.03, 0.13) if reduced else rng.uniform(0.18, 0.35)
    cycles, phase = rng.uniform(0.8, 1.6), rng.uniform(0, 1)
    bg = 0.25 + 0.08 * np.sin(2 * np.pi * (x * rng.uniform(1, 3) + y * rng.uniform(1, 3)))
    t = np.arange(frames) / frames * cycles + phase
    out = np.empty((frames, size, size), np.float32)
    rho = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    for i, ti in enumerate(t):
        r = r0 * (1 - a * np.sin(np.pi * ti) ** 2)
        img = bg.copy()
        img[rho <= r] = 0.85  # blood pool (bright)
        img[(rho > r) & (rho <= r + wall * (1 + a))] = 0.45  # myocardium thickens as it contracts
        out[i] = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
    return out, t.astype(np.float32)


class VolumePhantomDataset(ItemDataset):
    """In-memory 3D / 2D+t phantoms: items ``{"image": (1, D|T, H, W), "label": (), "id", "patient_id"}``."""

    def __init__(self, kind: str, split: str = "train", n: int = 64, seed: int = 0, image_size: int = 16,
                 depth: int | None = None, transform: Any = None):
        if kind not in ("ct_volume", "cine"):
            raise ValueError(f"unknown volume phantom kind {kind!r}; use 'ct_volume' or 'cine'")
        check_split(split, _SPLITS, f"{kind}_phantom")
        if n < 1 or image_size < 4 or (depth is not None and depth < 2):
            raise ValueError(f"{kind}_phantom: need n >= 1, image_size >= 4 and depth >= 2; got n={n}, "
                             f"image_size={image_size}, depth={depth}")
        self.kind, self.split, self.seed = kind, split, int(seed)
        self.size, self.depth = int(image_size), int(depth or image_size)
        self.indices = _split_indices(int(n), split)
        self.transform = transform
        self.class_names = ["no_nodule", "nodule"] if kind == "ct_volume" else ["normal", "reduced_contraction"]
        self.label_names = [self.class_names[1]]

    def __len__(self) -> int:
        return len(self.indices)

    def _item(self, i: int) -> dict[str, Any]:
        j = int(self.indices[i])
        rng = np.random.default_rng([self.seed, _KIND_CODES[self.kind], int(j)])
        label = bool(rng.random() < 0.5)
        item: dict[str, Any] = {"id": f"{self.kind}{j:06d}", "patient_id": f"P{self.kind}{j:06d}",
                                "label": torch.tensor(int(label), dtype=torch.long)}
        if self.kind == "ct_volume":
            vol = ct_volume(rng, self.size, self.depth, label)
        else:
            vol, times = cine_series(rng, self.size, self.depth, label)
            item["frame_times"] = torch.from_numpy(times)
        item["image"] = torch.from_numpy(vol)[None]
        return item


@register("dataset", "ct_volume_phantom", mean=(0.23,), std=(0.36,), class_names=["no_nodule", "nodule"],
          task="multiclass", spatial_dims=3,
          description="procedural chest-CT volumes (1, D, H, W), label nodule (3D MAE / dual masking)")
def ct_volume_phantom(split: str = "train", n: int = 64, seed: int = 0, image_size: int = 16,
                      depth: int | None = None) -> VolumePhantomDataset:
    """``n`` procedural CT volumes of ``depth`` × ``image_size``² voxels (``depth`` None = cube)."""
    return VolumePhantomDataset("ct_volume", split, n, seed, image_size, depth)


@register("dataset", "cine_phantom", mean=(0.35,), std=(0.22,), class_names=["normal", "reduced_contraction"],
          task="multiclass", spatial_dims=3,
          description="procedural cine series (1, T, H, W) of a contracting ventricle (2D+t; VideoMAE, TOV-VICReg)")
def cine_phantom(split: str = "train", n: int = 64, seed: int = 0, image_size: int = 16,
                 depth: int | None = None) -> VolumePhantomDataset:
    """``n`` procedural 2D+t series of ``depth`` frames (None = ``image_size``) × ``image_size``² pixels."""
    return VolumePhantomDataset("cine", split, n, seed, image_size, depth)
