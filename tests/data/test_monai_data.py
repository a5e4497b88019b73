"""MONAI-native data: Dataset / CacheDataset / PersistentDataset behind medvit datasets (disk cache reused across
epochs and runs, invalidated by a changed file, loading argument or preprocessing), evaluation preprocessing
identical to the contract transform, and the training transforms as a seeded MONAI Compose (2D and 3D)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from medvit.data import build_dataset
from medvit.data.monai_data import cache_entries, monai_dataset


def _pngs(root: Path, n: int = 8) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "patient", "A", "B"])
        for i in range(n):
            Image.fromarray((rng.random((40, 48)) * 255).astype(np.uint8)).save(root / f"i{i}.png")
            w.writerow([f"i{i}.png", f"p{i}", i % 2, "" if i % 3 == 0 else 1 - i % 2])
    return root


def _contract(**kw):
    from medvit.data.preprocess import TRAINING_DEFAULT_INTENSITY
    from medvit.models import WeightContract

    return WeightContract(**{"in_chans": 1, "input_size": (32, 32), "mean": (0.5,), "std": (0.25,),
                             "intensity": dict(TRAINING_DEFAULT_INTENSITY), "crop_mode": "crop", "crop_pct": 0.875,
                             "interpolation": "bicubic", **kw})


@pytest.fixture
def loads(monkeypatch):
    """Counts image decodes (medvit.data.imageload.load_unit)."""
    import medvit.data.imageload as il

    calls: list[str] = []
    orig = il.load_unit

    def counting(path, *a, **k):
        calls.append(str(path))
        return orig(path, *a, **k)

    monkeypatch.setattr(il, "load_unit", counting)
    return calls


def _all(ds) -> list[dict]:
    return [ds[i] for i in range(len(ds))]


def test_persistent_cache_reused_across_epochs_and_runs(tmp_path, loads):
    root = _pngs(tmp_path / "data")
    ds = build_dataset("csv", "all", root=root)
    cfg = {"dataset": "csv", "args": {"root": str(root)}}
    first = monai_dataset(ds, "disk", tmp_path / "cache", cfg, contract=_contract())
    a = _all(first)
    assert len(loads) == 8 and cache_entries(first) == 8
    b = _all(first)  # second epoch: from the cache
    assert len(loads) == 8
    again = monai_dataset(build_dataset("csv", "all", root=root), "disk", tmp_path / "cache", cfg,
                          contract=_contract())  # a second run
    c = _all(again)
    assert len(loads) == 8 and again.cache_dir == first.cache_dir
    for x, y, z in zip(a, b, c):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["image"], z["image"])
        assert torch.equal(x["label_mask"], z["label_mask"]) and x["id"] == z["id"]


def test_persistent_cache_invalidated_by_transform_config_args_and_file(tmp_path, loads):
    from PIL import Image

    root = _pngs(tmp_path / "data")
    cfg = {"dataset": "csv", "args": {"root": str(root)}}
    base = monai_dataset(build_dataset("csv", "all", root=root), "disk", tmp_path / "cache", cfg, contract=_contract())
    _all(base)
    assert len(loads) == 8
    other = monai_dataset(build_dataset("csv", "all", root=root), "disk", tmp_path / "cache", cfg,
                          contract=_contract(crop_pct=1.0))  # another preprocessing config
    assert other.cache_dir != base.cache_dir
    _all(other)
    assert len(loads) == 16
    resized = monai_dataset(build_dataset("csv", "all", root=root, image_size=24), "disk", tmp_path / "cache",
                            {"dataset": "csv", "args": {"root": str(root), "image_size": 24}}, contract=_contract())
    _all(resized)  # another loading argument
    assert len(loads) == 24
    Image.fromarray(np.full((40, 48), 7, np.uint8)).save(root / "i3.png")  # one file changed
    again = monai_dataset(build_dataset("csv", "all", root=root), "disk", tmp_path / "cache", cfg, contract=_contract())
    items = _all(again)
    assert loads[24:] == [str(root / "i3.png")]  # only the changed file is decoded again
    assert float(items[3]["image"].std()) < 1e-5  # the new, uniform image


@pytest.mark.parametrize("mode", ["none", "memory", "disk"])
def test_eval_preprocessing_identical_to_the_contract_transform(tmp_path, mode):
    from medvit.data.augment import build_contract_eval_transform

    root = _pngs(tmp_path / "data", n=5)
    for contract in (_contract(), _contract(crop_mode="pad", crop_pct=1.0, interpolation="bilinear")):
        ds = build_dataset("csv", "all", root=root)
        cached = monai_dataset(ds, mode, tmp_path / "cache", {"args": {}}, contract=contract)
        tf = build_contract_eval_transform(contract)
        for i in range(len(ds)):
            want = tf(build_dataset("csv", "all", root=root)[i])["image"]
            got = cached[i]["image"]
            assert type(got) is torch.Tensor and torch.equal(got, want)  # bit-identical, plain tensor
    assert cached.label_names == ["A", "B"] and len(cached.patient_ids()) == 5


def test_phantoms_and_subsets_are_keyed_by_dataset_index(tmp_path):
    from medvit.data.fraction import fraction_subset

    ds = build_dataset("cxr_phantom", "train", n=40, seed=0, image_size=32)
    sub = fraction_subset(ds, 0.5, seed=1)
    c = monai_dataset(sub, "disk", tmp_path / "cache", {"dataset": "cxr_phantom", "args": {"n": 40}})
    for i in range(len(sub)):
        assert torch.equal(c[i]["image"], ds[sub.indices[i]]["image"])
    full = monai_dataset(ds, "disk", tmp_path / "cache", {"dataset": "cxr_phantom", "args": {"n": 40}})
    assert cache_entries(full) == len(sub)  # same n in the config: the subset's entries are the full set's
    with pytest.raises(ValueError, match="cache mode must be one of"):
        monai_dataset(ds, "ram")


def test_train_transform_is_a_seeded_monai_compose_2d_and_3d():
    from monai.transforms import Compose, NormalizeIntensityd, RandFlipd

    from medvit.data.augment import RandAugmentd, RandResizedCropd, build_train_transform

    tf = build_train_transform(32, (0.5,), (0.25,), scale=(0.5, 1.0), randaug="rand-m6-mstd0.5-inc1",
                               extra=[{"name": "RandGaussianNoised", "prob": 0.5, "std": 0.05}])
    kinds = [type(t) for t in tf.compose.transforms]
    assert isinstance(tf.compose, Compose) and RandResizedCropd in kinds and RandFlipd in kinds
    assert RandAugmentd in kinds and NormalizeIntensityd in kinds
    item = {"image": torch.rand(1, 40, 40), "label": torch.ones(2)}
    g = torch.Generator
    a, b, c = tf(item, g().manual_seed(1)), tf(item, g().manual_seed(1)), tf(item, g().manual_seed(2))
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])
    assert type(a["image"]) is torch.Tensor and a["image"].shape == (1, 32, 32)
    # the flip is MONAI's; with a full-image crop the output is exactly the normalised mirror image
    flip = build_train_transform(40, (0.5,), (0.25,), scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_prob=1.0)
    assert torch.allclose(flip(item, g().manual_seed(0))["image"], (item["image"].flip(-1) - 0.5) / 0.25, atol=1e-6)
    vol = build_train_transform(16, (0.5,), (0.25,), scale=(0.5, 1.0), in_chans=2)  # 3D through the same code
    assert vol({"image": torch.rand(1, 20, 24, 24)}, g().manual_seed(0))["image"].shape == (2, 16, 16, 16)
    with pytest.raises(ValueError, match="must be a MONAI dictionary transform"):
        build_train_transform(32, (0.5,), (0.25,), extra=[{"name": "NotATransform"}])


def test_finetune_with_a_disk_cache_decodes_once(tmp_path, loads):
    from medvit.tasks import run_task

    root = _pngs(tmp_path / "data", n=24)
    cfg = dict(task="finetune_multilabel", dataset="csv", dataset_args={"root": str(root), "val_fraction": 0.25,
                                                                        "test_fraction": 0.25},
               backbone="vit_tiny_patch16_224", backbone_args=dict(embed_dim=32, depth=1, num_heads=2),
               image_size=32, ood_fpr=0.0, randaug="", cache_dir=str(tmp_path / "cache"),
               augment=[{"name": "RandAffined", "prob": 0.5, "rotate_range": 0.1}],
               train=dict(epochs=2, batch_size=4, lr=1e-3, progress=False))
    run_task(None, [], data={**cfg, "output_dir": str(tmp_path / "r1")})
    n = len(loads)
    assert n >= 20 and len(set(loads)) == n  # each image decoded at most once over two epochs and three splits
    run_task(None, [], data={**cfg, "output_dir": str(tmp_path / "r2")})
    assert len(loads) == n  # the second run reads the cache only
    assert (tmp_path / "r2" / "model" / "model.safetensors").is_file()
