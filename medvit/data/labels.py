"""Label vocabularies: map any dataset's label names onto a model's targets.

A model is trained on a fixed, ordered list of target names. Datasets name their labels differently
(CheXpert "Pleural Effusion" vs NIH "Effusion", NIH "Infiltrate" in the box file, ...) and usually
carry only some of the targets. :class:`LabelVocabulary` resolves names through one synonym table
(:func:`canonical_label`) and maps label vectors onto the targets; a target the dataset lacks gets
``label_mask = False`` (excluded from the loss), never a negative label.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: NIH ChestX-ray14 labels, in the column order of the thorax-MAE code (util/main_nih.py)
NIH14_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
#: CheXpert's 14 observation columns as spelled in train.csv / valid.csv
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)
#: the 5 CheXpert competition labels used by the thorax-MAE paper (train_cols order)
CHEXPERT5_LABELS: tuple[str, ...] = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")

#: lower-cased spelling → canonical name (canonical = NIH spelling where NIH has the label)
SYNONYMS: dict[str, str] = {
    "pleural effusion": "Effusion",
    "effusion": "Effusion",
    "infiltrate": "Infiltration",
    "infiltrates": "Infiltration",
    "pleural thickening": "Pleural_Thickening",
    "pleural_thickening": "Pleural_Thickening",
    "lesion": "Lung Lesion",
    "nodule/mass": "Lung Lesion",
    "enlarged cardiomediastinum": "Enlarged Cardiomediastinum",
    "no finding": "No Finding",
    "no_finding": "No Finding",
    "normal": "No Finding",
    "cardiomegaly": "Cardiomegaly",
    "atelectasis": "Atelectasis",
    "consolidation": "Consolidation",
    "pneumothorax": "Pneumothorax",
    "nodule": "Nodule",
    "mass": "Mass",
    "edema": "Edema",
    "oedema": "Edema",
    "pneumonia": "Pneumonia",
    "emphysema": "Emphysema",
    "fibrosis": "Fibrosis",
    "hernia": "Hernia",
    "lung opacity": "Lung Opacity",
}


def canonical_label(name: str) -> str:
    """Canonical spelling of a label name (``"Pleural Effusion"`` → ``"Effusion"``); unknown names pass through."""
    key = " ".join(str(name).strip().replace("-", " ").split()).lower()
    return SYNONYMS.get(key, str(name).strip())


@dataclass(frozen=True)
class LabelVocabulary:
    """An ordered list of a model's target labels.

    ``vocab.index_map(source_names)`` gives, for each target, the column of ``source_names`` holding it
    (or -1); ``vocab.map(labels, mask, source_names)`` turns (..., K_src) labels into (..., K_tgt).
    """

    targets: tuple[str, ...]

    def __post_init__(self) -> None:
        canon = [canonical_label(t) for t in self.targets]
        if len(set(canon)) != len(canon):
            dup = sorted({c for c in canon if canon.count(c) > 1})
            raise ValueError(f"LabelVocabulary targets name the same label twice after synonyms: {dup}")
        if not canon:
            raise ValueError("LabelVocabulary needs at least one target label")

    @classmethod
    def from_names(cls, names: Sequence[str]) -> LabelVocabulary:
        return cls(tuple(str(n) for n in names))

    def __len__(self) -> int:
        return len(self.targets)

    def index_map(self, source_names: Sequence[str]) -> np.ndarray:
        """(K_tgt,) int64: column of each target in ``source_names``, -1 where the source lacks it."""
        src = {canonical_label(n): i for i, n in enumerate(source_names)}
        return np.array([src.get(canonical_label(t), -1) for t in self.targets], dtype=np.int64)

    def missing(self, source_names: Sequence[str]) -> list[str]:
        """Targets that ``source_names`` does not provide (they will be masked)."""
        return [t for t, j in zip(self.targets, self.index_map(source_names)) if j < 0]

    def map(self, labels: Any, mask: Any | None, source_names: Sequence[str]) -> tuple[Any, Any]:
        """Map (..., K_src) labels (+ optional bool mask) onto the targets → ((..., K_tgt), (..., K_tgt) bool).

        Works on numpy arrays and torch tensors alike; missing targets get label 0 and mask False.
        """
        idx = self.index_map(source_names)
        if labels.shape[-1] != len(source_names):
            raise ValueError(f"labels have {labels.shape[-1]} columns but {len(source_names)} source names were "
                             "given; pass the dataset's label_names")
        have = idx >= 0
        safe = np.where(have, idx, 0)
        if isinstance(labels, torch.Tensor):
            t_idx = torch.as_tensor(safe, device=labels.device)
            t_have = torch.as_tensor(have, device=labels.device)
            out = labels.index_select(-1, t_idx) * t_have.to(labels.dtype)
            m = torch.ones_like(labels, dtype=torch.bool) if mask is None else mask.to(torch.bool)
            out_m = m.index_select(-1, t_idx) & t_have
            return out, out_m
        arr = np.asarray(labels)
        out = np.take(arr, safe, axis=-1) * have.astype(arr.dtype)
        m = np.ones(arr.shape, bool) if mask is None else np.asarray(mask, bool)
        return out, np.take(m, safe, axis=-1) & have

    def wrap(self, dataset: Any) -> RelabeledDataset:
        """A view of ``dataset`` (items with ``label``/``label_mask``, attribute ``label_names``) on these targets."""
        return RelabeledDataset(dataset, self)


class RelabeledDataset(torch.utils.data.Dataset):
    """Dataset view whose items' ``label``/``label_mask`` follow ``vocab.targets`` (missing → masked)."""

    def __init__(self, dataset: Any, vocab: LabelVocabulary):
        names = getattr(dataset, "label_names", None)
        if names is None:
            raise ValueError(f"{type(dataset).__name__} has no label_names; cannot relabel it")
        self.dataset, self.vocab = dataset, vocab
        self.source_names = list(names)
        self.label_names = list(vocab.targets)
        miss = vocab.missing(self.source_names)
        if miss:
            logger.info("relabel %s: targets %s absent from the dataset; masked out of the loss",
                        type(dataset).__name__, miss)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[i])
        item["label"], item["label_mask"] = self.vocab.map(item["label"], item.get("label_mask"), self.source_names)
        return item
