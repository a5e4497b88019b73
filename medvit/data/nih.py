"""NIH ChestX-ray14 adapter (``nih_chestxray14``), reading the dataset in its published layout.

Expected under ``root``::

    Data_Entry_2017.csv     Image Index, Finding Labels ("A|B" or "No Finding"), Follow-up #, Patient ID,
                            Patient Age, Patient Gender, View Position, ...
    train_val_list.txt      official train+val image names (one per line)
    test_list.txt           official test image names
    images/<name>.png       or the unpacked archives images_001/images/<name>.png ... images_012/...

Splits: ``test`` = ``test_list.txt``; ``train`` / ``val`` split ``train_val_list.txt`` by patient
(``val_fraction`` of patients, deterministic hash of the Patient ID); ``trainval`` = all of it.
With ``split_dir=DIR`` holding the thorax-MAE reference's released split files (``data_splits/chestxray/``:
``train_official.txt`` 75,312 / ``val_official.txt`` 11,212 / ``test_official.txt`` 25,596 lines of
``<png> l1 … l14``), ``train`` / ``val`` / ``test`` are exactly those lists (``trainval`` = train + val) and each
line's 14 labels must agree with Data_Entry_2017.csv (ValueError naming the file and image otherwise).
Labels: the 14 findings in the thorax-MAE column order (:data:`~medvit.data.labels.NIH14_LABELS`);
"No Finding" is all zeros; every label is known (mask all True).

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
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvit.data.datasets import ItemDataset, check_split, to_chw
from medvit.data.labels import NIH14_LABELS, canonical_label
from medvit.registry import register

_SPLITS = ("train", "val", "test", "trainval")


def patient_hash_fraction(patient_id: str, salt: str = "") -> float:
    """Deterministic number in [0, 1) for a patient (stable across machines and Python runs)."""
    h = hashlib.sha256(f"{salt}{patient_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def find_images(root: Path, subdirs: tuple[str, ...] = ("images",)) -> dict[str, Path]:
    """name → path of every image under ``root/images`` and ``root/images_*/images``."""
    out: dict[str, Path] = {}
    for pattern in [*subdirs, "images_*/images"]:
        for d in sorted(root.glob(pattern)):
            if d.is_dir():
                for p in d.iterdir():
                    out.setdefault(p.name, p)
    return out


RELEASED_SPLIT_FILES = {"train": ("train_official.txt",), "val": ("val_official.txt",),
                        "test": ("test_official.txt",), "trainval": ("train_official.txt", "val_official.txt")}


def read_released_split(split_dir: Path, split: str) -> dict[str, np.ndarray]:
    """image name → (14,) float32 labels from thorax-MAE's released split file(s) for ``split``.

    Lines are ``<png> l1 … l14`` (0/1, NIH14_LABELS order). Raises FileNotFoundError for a missing file and
    ValueError naming the file and line for a malformed one.
    """
    out: dict[str, np.ndarray] = {}
    for fname in RELEASED_SPLIT_FILES[split]:
        f = split_dir / fname
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: split_dir must hold thorax-MAE's data_splits/chestxray files "
                                    f"({', '.join(sorted({n for v in RELEASED_SPLIT_FILES.values() for n in v}))})")
        for k, line in enumerate(f.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 1 + len(NIH14_LABELS) or any(v not in ("0", "1") for v in parts[1:]):
                raise ValueError(f"{f}:{k}: expected '<image> ' + {len(NIH14_LABELS)} labels 0/1, got {line[:80]!r}")
            out[parts[0]] = np.array([float(v) for v in parts[1:]], np.float32)
    return out


class NIHChestXray14(ItemDataset):
    """NIH ChestX-ray14 multi-label dataset (items as in :mod:`medvit.data.datasets`)."""

    def __init__(self, root: str | Path, split: str = "train", image_size: int | None = None, in_chans: int = 1,
                 views: tuple[str, ...] | None = None, val_fraction: float = 0.1, transform: Any = None,
                 intensity: dict[str, str] | None = None, max_short_side: int | None = None,
                 split_dir: str | Path | None = None):
        check_split(split, _SPLITS, "nih_chestxray14")
        self.root = Path(root)
        released = read_released_split(Path(split_dir), split) if split_dir is not None else None
        entry = self.root / "Data_Entry_2017.csv"
        if not entry.is_file():
            raise FileNotFoundError(f"{entry} not found: root must be the ChestX-ray14 folder holding "
                                    "Data_Entry_2017.csv, train_val_list.txt, test_list.txt and images*/")
        list_name = "test_list.txt" if split == "test" else "train_val_list.txt"
        list_file = self.root / list_name
        if released is None and not list_file.is_file():
            raise FileNotFoundError(f"{list_file} not found (official split list of ChestX-ray14)")
        wanted = set(released) if released is not None else set(list_file.read_text().split())
        self.label_names = list(NIH14_LABELS)
        col = {canonical_label(n): k for k, n in enumerate(NIH14_LABELS)}
        rows, seen = [], set()
        with open(entry, newline="") as f:
            for r in csv.DictReader(f):
                name = r["Image Index"].strip()
                if name not in wanted:
                    continue
                seen.add(name)
                if views is not None and r.get("View Position", "").strip() not in views:
                    continue
                pid = str(r["Patient ID"]).strip()
                if split in ("train", "val") and released is None:
                    is_val = patient_hash_fraction(pid, "nih-val") < val_fraction
                    if is_val != (split == "val"):
                        continue
                y = np.zeros(len(NIH14_LABELS), np.float32)
                for lab in r["Finding Labels"].split("|"):
                    lab = canonical_label(lab)
                    if lab == "No Finding" or not lab:
                        continue
                    if lab not in col:
                        raise ValueError(f"{entry}: unknown finding {lab!r} for {name}; expected one of "
                                         f"{', '.join(NIH14_LABELS)} or 'No Finding'")
                    y[col[lab]] = 1
                if released is not None and not np.array_equal(released[name], y):
                    raise ValueError(f"{split_dir}: labels of {name} in the {split} split file "
                                     f"{released[name].astype(int).tolist()} disagree with {entry} "
                                     f"{y.astype(int).tolist()} (columns {', '.join(NIH14_LABELS)})")
                rows.append((name, pid, y, r.get("View Position", "").strip()))
        if released is not None and set(released) - seen:
            unknown = sorted(set(released) - seen)
            raise ValueError(f"{split_dir}: {len(unknown)} images of the {split} split file(s) are not in {entry} "
                             f"(e.g. {unknown[:3]})")
        if not rows:
            raise ValueError(f"nih_chestxray14 split {split!r} under {self.root} is empty (check {list_name} "
                             "against Data_Entry_2017.csv and the views filter)")
        self.rows = rows
        self.paths = find_images(self.root)
        missing = [n for n, *_ in rows if n not in self.paths]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images listed for split {split!r} are missing under "
                                    f"{self.root}/images*/ (e.g. {missing[:3]}); unpack all image archives")
        self.image_size, self.in_chans, self.transform = image_size, int(in_chans), transform
        self.max_short_side = max_short_side
        self.intensity = intensity  # per-file-kind rules (None: medvit.data.preprocess.TRAINING_DEFAULT_INTENSITY)

    def __len__(self) -> int:
        return len(self.rows)

    def patient_ids(self) -> list[str]:
        return [r[1] for r in self.rows]

    def source_file(self, i: int) -> Path:
        """The file item ``i`` is read from (disk-cache key: :mod:`medvit.data.monai_data`)."""
        return self.paths[self.rows[i][0]]

    @property
    def labels(self) -> np.ndarray:
        """(N, 14) label matrix."""
        return np.stack([r[2] for r in self.rows])

    def _item(self, i: int) -> dict[str, Any]:
        from medvit.data.imageload import load_gray01

        name, pid, y, view = self.rows[i]
        img = load_gray01(self.paths[name], self.intensity)
        return {"image": to_chw(img, self.in_chans, self.image_size, self.max_short_side),
                "label": torch.from_numpy(y.copy()),
                "label_mask": torch.ones(len(y), dtype=torch.bool), "id": name, "patient_id": pid, "view": view}


@register("dataset", "nih_chestxray14", mean=(0.5056,), std=(0.252,), label_names=list(NIH14_LABELS),
          task="multilabel", in_chans=1,
          description="NIH ChestX-ray14 (Data_Entry_2017.csv + official split lists; 14 labels)")
def nih_chestxray14(split: str = "train", root: str | Path | None = None, **kw: Any) -> NIHChestXray14:
    """NIH ChestX-ray14 from ``root`` (normalisation 0.5056/0.252 as in the thorax-MAE recipe)."""
    if root is None:
        raise ValueError("nih_chestxray14 needs root=DIR (the folder holding Data_Entry_2017.csv)")
    return NIHChestXray14(root, split, **kw)
