"""Data: dataset adapters (registered under kind ``dataset``), label vocabularies, synthetic phantoms.

``build_dataset(name, split, **kwargs)`` builds any registered dataset; importing this package
registers the phantom sets and the NIH ChestX-ray14 / CheXpert adapters.
"""

from __future__ import annotations

from medvit.data import chexpert, nih, phantom_datasets
from medvit.data.datasets import build_dataset, dataset_normalization
from medvit.data.labels import LabelVocabulary, canonical_label

__all__ = ["LabelVocabulary", "build_dataset", "canonical_label", "chexpert", "dataset_normalization", "nih",
           "phantom_datasets"]
from medvit.data import io_transforms  # noqa: E402,F401  (registers the LoadMedicalImage(d) transforms)
