"""CheXpert adapter (``chexpert``), reading ``train.csv`` / ``valid.csv`` and the JPEGs they point to.

``root`` is the dataset folder (e.g. ``CheXpert-v1.0-small/``) holding ``train.csv``, ``valid.csv``,
``train/patientXXXXX/studyN/viewM_frontal.jpg`` and ``valid/...``. CSV paths start with the dataset's
folder name (``CheXpert-v1.0-small/train/...``); that first component is stripped (as thorax-MAE does).

Splits: ``train`` / ``val`` split ``train.csv`` by patient (``val_fraction`` of patients, deterministic);
``test`` = ``valid.csv`` (the official validation set, where the thorax-MAE paper reports CheXpert).
Model selection therefore never touches the reported split.

Labels: ``labels`` (default the 5 competition labels) with per-label uncertainty policies:
``"ones"`` (-1 → 1), ``"zeros"`` (-1 → 0), ``"ignore"`` (-1 → masked out of the loss). The default
``uncertainty="mae"`` is the thorax-MAE recipe: U-Ones for Edema and Atelectasis, U-Zeros for
Cardiomegaly, Consolidation and Pleural Effusion (others: ignore). Blank (not mentioned) → 0 by default,
or masked with ``blank="ignore"``. ``frontal_only`` keeps Frontal/Lateral == "Frontal".

Resolution: images keep their stored resolution (NIH 1024×1024, CheXpert-small ~320×390, aspect kept), so the
training random resized crop takes its area fraction of the source pixels as the thorax-MAE reference does (scale
0.08 of a 1024² image = a ~290 px square) and evaluation applies the contract geometry to the stored image, exactly as
``medvit infer`` does. ``max_short_side=N`` shrinks larger images so the short side is N (aspect kept, antialiased
bilinear). ``image_size=S`` restores the old square pre-resize (S×S, aspect not kept). Memory when the task caches
the split (``cache_data``): 4·H·W bytes per image per channel (float32): NIH at 1024² is 4 MiB per image (86,524
train+val images ≈ 340 GiB), at ``max_short_side=512`` 1 MiB (≈ 85 GiB); so the paper presets stream from disk
(``cache_data: false``), and a cached run should set ``max_short_side`` (256: 256 KiB per image).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvit.data.datasets import ItemDataset, check_split, to_chw
from medvit.data.labels import CHEXPERT5_LABELS, CHEXPERT_LABELS
from medvit.data.nih import patient_hash_fraction
from medvit.registry import register

_SPLITS = ("train", "val", "test")
POLICIES = ("ones", "zeros", "ignore")
#: thorax-MAE (util/dataloader_med.py CheXpert): U-Ones / U-Zeros per competition label
MAE_UNCERTAINTY: dict[str, str] = {"Edema": "ones", "Atelectasis": "ones", "Cardiomegaly": "zeros",
                                   "Consolidation": "zeros", "Pleural Effusion": "zeros"}


def resolve_policies(labels: list[str], uncertainty: str | dict[str, str]) -> list[str]:
    """Per-label policy list from ``"mae"``, one policy for all, or a ``{label: policy}`` dict."""
    if isinstance(uncertainty, str):
        if uncertainty == "mae":
            return [MAE_UNCERTAINTY.get(lab, "ignore") for lab in labels]
        pol = {lab: uncertainty for lab in labels}
    else:
        unknown = set(uncertainty) - set(labels)
        if unknown:
            raise ValueError(f"uncertainty policies given for labels not in `labels`: {sorted(unknown)}")
        pol = {lab: uncertainty.get(lab, "ignore") for lab in labels}
    bad = {k: v for k, v in pol.items() if v not in POLICIES}
    if bad:
        raise ValueError(f"unknown uncertainty policy {bad}; use one of {', '.join(POLICIES)} or 'mae'")
    return [pol[lab] for lab in labels]


def apply_uncertainty(raw: np.ndarray, policies: list[str], blank: str = "zero") -> tuple[np.ndarray, np.ndarray]:
    """(N, K) raw CheXpert values (1, 0, -1, NaN) → labels (N, K) float32 and mask (N, K) bool."""
    y = np.nan_to_num(raw, nan=0.0).astype(np.float32)
    mask = np.ones(raw.shape, bool)
    if blank == "ignore":
        mask &= ~np.isnan(raw)
    elif blank != "zero":
        raise ValueError(f"blank must be 'zero' or 'ignore', got {blank!r}")
    for k, pol in enumerate(policies):
        unc = raw[:, k] == -1
        if pol == "ones":
            y[unc, k] = 1
        elif pol == "zeros":
            y[unc, k] = 0
        else:
            y[unc, k] = 0
            mask[unc, k] = False
    return y, mask


def _value(s: str) -> float:
    s = s.strip()
    return float("nan") if s == "" else float(s)


class CheXpert(ItemDataset):
    """CheXpert multi-label dataset (items as in :mod:`medvit.data.datasets`)."""

    def __init__(self, root: str | Path, split: str = "train", labels: tuple[str, ...] | list[str] = CHEXPERT5_LABELS,
                 uncertainty: str | dict[str, str] = "mae", blank: str = "zero", frontal_only: bool = True,
                 image_size: int | None = None, in_chans: int = 1, val_fraction: float = 0.05, transform: Any = None,
                 intensity: dict[str, str] | None = None, max_short_side: int | None = None):
        check_split(split, _SPLITS, "chexpert")
        self.root = Path(root)
        csv_path = self.root / ("valid.csv" if split == "test" else "train.csv")
        if not csv_path.is_file():
            raise FileNotFoundError(f"{csv_path} not found: root must be the CheXpert folder holding train.csv, "
                                    "valid.csv, train/ and valid/")
        unknown = [lab for lab in labels if lab not in CHEXPERT_LABELS]
        if unknown:
            raise ValueError(f"chexpert: unknown labels {unknown}; CheXpert columns are {', '.join(CHEXPERT_LABELS)}")
        self.label_names = list(labels)
        self.policies = resolve_policies(self.label_names, uncertainty)
        paths, pids, raws, views = [], [], [], []
        with open(csv_path, newline="") as f:
            for r in csv.DictReader(f):
                if frontal_only and r.get("Frontal/Lateral", "Frontal") != "Frontal":
                    continue
                m = re.search(r"(patient\d+)", r["Path"])
                pid = m.group(1) if m else r["Path"]
                if split in ("train", "val"):
                    is_val = patient_hash_fraction(pid, "chexpert-val") < val_fraction
                    if is_val != (split == "val"):
                        continue
                paths.append(r["Path"])
                pids.append(pid)
                views.append(r.get("AP/PA", "") or r.get("Frontal/Lateral", ""))
                raws.append([_value(r.get(lab, "")) for lab in self.label_names])
        if not paths:
            raise ValueError(f"chexpert split {split!r} from {csv_path} is empty (frontal_only={frontal_only})")
        raw = np.array(raws, dtype=np.float64).reshape(len(paths), len(self.label_names))
        self.y, self.mask = apply_uncertainty(raw, self.policies, blank)
        self.paths, self.pids, self.views = paths, pids, views
        self.image_size, self.in_chans, self.transform = image_size, int(in_chans), transform
        self.max_short_side = max_short_side
        self.intensity = intensity  # per-file-kind rules (None: medvit.data.preprocess.TRAINING_DEFAULT_INTENSITY)

    def resolve(self, csv_path: str) -> Path:
        """CSV ``Path`` → file: tried relative to ``root``, then with its first component stripped."""
        p = self.root / csv_path
        if p.is_file():
            return p
        parts = Path(csv_path).parts
        q = self.root.joinpath(*parts[1:]) if len(parts) > 1 else p
        if q.is_file():
            return q
        raise FileNotFoundError(f"CheXpert image {csv_path!r} not found as {p} or {q}")

    def __len__(self) -> int:
        return len(self.paths)

    def patient_ids(self) -> list[str]:
        return list(self.pids)

    def source_file(self, i: int) -> Path:
        """The file item ``i`` is read from (disk-cache key: :mod:`medvit.data.monai_data`)."""
        return self.resolve(self.paths[i])

    def _item(self, i: int) -> dict[str, Any]:
        from medvit.data.imageload import load_gray01

        img = load_gray01(self.resolve(self.paths[i]), self.intensity)
        return {"image": to_chw(img, self.in_chans, self.image_size, self.max_short_side),
                "label": torch.from_numpy(self.y[i].copy()),
                "label_mask": torch.from_numpy(self.mask[i].copy()), "id": self.paths[i], "patient_id": self.pids[i],
                "view": self.views[i]}


# mean/std: thorax-MAE pretraining normalises CheXpert with ImageNet statistics (grey = channel average);
# its fine-tuning recipe uses the NIH values (0.5056, 0.252) for every dataset — set them in the task config.
@register("dataset", "chexpert", mean=(0.449,), std=(0.226,), mean_rgb=(0.485, 0.456, 0.406),
          std_rgb=(0.229, 0.224, 0.225), label_names=list(CHEXPERT5_LABELS), task="multilabel", in_chans=1,
          description="CheXpert (train.csv/valid.csv; frontal; U-Ones/U-Zeros/U-Ignore per label)")
def chexpert(split: str = "train", root: str | Path | None = None, **kw: Any) -> CheXpert:
    """CheXpert from ``root`` (the folder holding train.csv / valid.csv)."""
    if root is None:
        raise ValueError("chexpert needs root=DIR (the folder holding train.csv and valid.csv)")
    return CheXpert(root, split, **kw)
