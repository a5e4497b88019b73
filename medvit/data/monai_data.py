"""Datasets through MONAI: ``Dataset`` (stream), ``CacheDataset`` (memory) and ``PersistentDataset`` (disk).

:func:`monai_dataset` puts any medvit dataset (items as in :mod:`medvit.data.datasets`) behind MONAI's dataset
classes. MONAI's data list is ``[{"index": i}, ...]``; the deterministic MONAI transforms
:class:`LoadItemd` (read item ``i``: decode the file, intensity step, resize as the dataset is configured) and, for
evaluation splits, :class:`ContractPreprocessd` (the serving preprocessing of the weight contract, bit-identical to
:func:`medvit.data.augment.build_contract_eval_transform`) run once and are cached; random augmentation is applied
afterwards by the training loop (:mod:`medvit.data.augment`, seeded per sample).

The disk cache (``PersistentDataset``) keys each item by the SHA-256 of its source file (datasets that expose
``source_file(i)``; memoised per path, size and modification time) or, for in-memory phantoms, by the dataset and
index; plus the SHA-256 of ``config`` (dataset name and arguments, the cached transforms' parameters, the kept keys
and :data:`CACHE_VERSION`). Changing the file, the loading arguments or the preprocessing therefore writes new
cache entries instead of reusing stale ones; the folder is ``cache_dir/<config hash>/`` so old configurations can
be deleted as a whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose, MapTransform, Transform

from medvit.io.hashing import cached_sha256_file

logger = logging.getLogger(__name__)

#: bump when the cached item format changes (invalidates every disk cache)
CACHE_VERSION = 1
CACHE_MODES = ("none", "memory", "disk")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, memoised per (path, size, mtime_ns) in this process."""
    return cached_sha256_file(path)


def source_file(ds: Any, i: int) -> Path | None:
    """The file item ``i`` of ``ds`` is read from (through ``torch.utils.data.Subset``), or None when the dataset
    does not say (in-memory phantoms)."""
    while isinstance(ds, torch.utils.data.Subset):
        ds, i = ds.dataset, ds.indices[i]
    fn = getattr(ds, "source_file", None)
    return Path(fn(i)) if fn is not None else None


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of a JSON-able config (sorted keys; other values by ``repr``)."""
    return hashlib.sha256(json.dumps({**config, "cache_version": CACHE_VERSION}, sort_keys=True,
                                     default=repr).encode()).hexdigest()


class LoadItemd(Transform):
    """MONAI transform ``{"index": i} -> ds[i]`` restricted to ``keys`` (deterministic, so MONAI caches it)."""

    def __init__(self, ds: Any, keys: tuple[str, ...]):
        self.ds, self.keys = ds, tuple(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[str, Any]:
        item = self.ds[int(data["index"])]
        return {k: item[k] for k in self.keys if k in item}


class ContractPreprocessd(MapTransform):
    """The serving preprocessing as a MONAI dictionary transform: ``item["image"]`` (1|3, H, W) in [0, 1] → the
    model input of :meth:`medvit.data.preprocess.Preprocessor.from_unit` (identical numbers to
    :func:`medvit.data.augment.build_contract_eval_transform`, which it calls)."""

    def __init__(self, contract: Any, keys: str = "image"):
        super().__init__(keys)
        from medvit.data.augment import build_contract_eval_transform

        self.contract = contract
        self._tf = build_contract_eval_transform(contract)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self._tf(dict(data))


class _Keyed:
    """Picklable ``hash_func`` for PersistentDataset: file hash (or dataset + index) + config hash."""

    def __init__(self, ds: Any, cfg_hash: str):
        self.ds, self.cfg_hash = ds, cfg_hash

    def __call__(self, data: Mapping[str, Any]) -> bytes:
        i = int(data["index"])
        f = source_file(self.ds, i)
        base, j = self.ds, i
        while isinstance(base, torch.utils.data.Subset):
            base, j = base.dataset, base.indices[j]
        src = f"file:{file_sha256(f)}" if f is not None else f"item:{type(base).__name__}:{j}"
        return hashlib.sha256(f"{src}|{self.cfg_hash}".encode()).hexdigest().encode()


class MonaiItems(torch.utils.data.Dataset):
    """A MONAI dataset of items, with the source's ``label_names`` / ``class_names`` and ``patient_ids()``."""

    def __init__(self, monai_ds: torch.utils.data.Dataset, source: Any, mode: str, cache_dir: Path | None):
        self.monai, self.source, self.mode, self.cache_dir = monai_ds, source, mode, cache_dir
        for attr in ("label_names", "class_names"):
            if hasattr(source, attr):
                setattr(self, attr, list(getattr(source, attr)))

    def __len__(self) -> int:
        return len(self.monai)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return dict(self.monai[i])

    def patient_ids(self) -> list[str]:
        fn = getattr(self.source, "patient_ids", None)
        return list(fn()) if fn is not None else []


def monai_dataset(ds: Any, mode: str = "none", cache_dir: str | Path | None = None,
                  config: Mapping[str, Any] | None = None, contract: Any = None,
                  keys: tuple[str, ...] = ("image", "label", "label_mask", "id", "patient_id"),
                  num_workers: int = 0) -> MonaiItems:
    """``ds`` behind MONAI: ``mode`` ``none`` (``monai.data.Dataset``, read every time), ``memory``
    (``CacheDataset``, all items decoded once) or ``disk`` (``PersistentDataset`` under ``cache_dir``).

    ``contract``: also apply the contract's serving preprocessing (:class:`ContractPreprocessd`; evaluation splits),
    so the cache holds model inputs. ``config``: what the items depend on besides the file bytes (dataset name and
    arguments); the contract preprocessing and ``keys`` are added to it. ValueError for an unknown mode or a disk
    cache without ``cache_dir``.
    """
    if mode not in CACHE_MODES:
        raise ValueError(f"cache mode must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
    ds_tf = getattr(ds, "transform", None)
    if ds_tf is not None:
        raise ValueError("monai_dataset: give the evaluation preprocessing as contract=, not as ds.transform")
    steps: list[Callable] = [LoadItemd(ds, keys)]
    cfg = {"source": dict(config or {}), "keys": list(keys)}
    if contract is not None:
        steps.append(ContractPreprocessd(contract))
        from medvit.data.preprocess import Preprocessor

        cfg["preprocess"] = vars(Preprocessor.from_contract(contract))
    data = [{"index": i} for i in range(len(ds))]
    tf = Compose(steps)
    if mode == "none":
        return MonaiItems(Dataset(data, tf), ds, mode, None)
    if mode == "memory":
        return MonaiItems(CacheDataset(data, tf, cache_rate=1.0, num_workers=num_workers or 0, progress=False,
                                       copy_cache=False), ds, mode, None)
    if not cache_dir:
        raise ValueError("cache mode 'disk' needs cache_dir (where the PersistentDataset files go)")
    h = config_hash(cfg)
    d = Path(cache_dir) / h[:16]
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True, default=repr))
    return MonaiItems(PersistentDataset(data, tf, cache_dir=d, hash_func=_Keyed(ds, h)),
                      ds, mode, d)


def task_datasets(dataset: str, dataset_args: Mapping[str, Any], splits: list[tuple[str, Any, bool]], contract: Any,
                  cache_data: bool, cache_dir: str,
                  keys: tuple[str, ...] = ("image", "label", "label_mask", "id", "patient_id")) -> list[Any]:
    """The datasets of a training task behind MONAI (:func:`monai_dataset`), one per ``(split name, dataset,
    is_training)`` (a None dataset stays None); evaluation splits get the contract's serving preprocessing. The
    cache mode follows :func:`cache_mode`; the cache key config is the dataset name, its arguments (``root``
    included: the file hashes cover the bytes, the root the layout) and the split."""
    mode = cache_mode(cache_data, cache_dir)
    out: list[Any] = []
    for split, ds, training in splits:
        cfg = {"dataset": dataset, "args": dict(dataset_args), "split": split}
        out.append(None if ds is None else monai_dataset(ds, mode, cache_dir or None, cfg,
                                                         None if training else contract, keys))
    return out


def cache_mode(cache_data: bool, cache_dir: str) -> str:
    """A task's cache choice: ``disk`` when ``cache_dir`` is set, else ``memory`` / ``none`` by ``cache_data``."""
    return "disk" if cache_dir else ("memory" if cache_data else "none")


def cache_entries(cache: MonaiItems) -> int:
    """Number of cached item files of a disk cache (0 for other modes)."""
    if cache.cache_dir is None:
        return 0
    return sum(1 for n in os.listdir(cache.cache_dir) if n.endswith(".pt"))
