"""Data: dataset adapters (registered under kind ``dataset``), label vocabularies, synthetic phantoms.

``build_dataset(name, split, **kwargs)`` builds any registered dataset; importing this package
registers the phantom sets, the NIH ChestX-ray14 / CheXpert adapters, the BenchX adapters
(:mod:`medvit.data.benchx`) and the loading transforms (:mod:`medvit.data.io_transforms`).
"""

from __future__ import annotations

from medvit.data import (
    benchx,
    benchx_phantom,
    chexpert,
    io_transforms,
    long_tail,
    nih,
    own,
    phantom_datasets,
    phantom_multiwindow,
    phantom_volume,
)
from medvit.data.datasets import build_dataset, dataset_normalization
from medvit.data.labels import LabelVocabulary, canonical_label

__all__ = ["LabelVocabulary", "benchx", "benchx_phantom", "build_dataset", "canonical_label", "chexpert",
           "dataset_normalization", "io_transforms", "long_tail", "nih", "own", "phantom_datasets",
           "phantom_multiwindow", "phantom_volume"]
