"""3D / 2D+t phantoms: shapes, value range, determinism, disjoint splits, labels visible in the data."""

from __future__ import annotations

import pytest
import torch

from medvit.data import build_dataset


@pytest.mark.parametrize("name", ["ct_volume_phantom", "cine_phantom"])
def test_shapes_range_determinism_and_splits(name):
    ds = build_dataset(name, "train", n=40, image_size=16, depth=8)
    it = ds[0]
    assert it["image"].shape == (1, 8, 16, 16) and it["image"].dtype == torch.float32
    assert 0.0 <= it["image"].min() and it["image"].max() <= 1.0
    assert torch.equal(it["image"], build_dataset(name, "train", n=40, image_size=16, depth=8)[0]["image"])
    ids = {s: {build_dataset(name, s, n=40)[i]["id"] for i in range(len(build_dataset(name, s, n=40)))}
           for s in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(len(v) for v in ids.values()) == 40
    with pytest.raises(ValueError, match="split"):
        build_dataset(name, "holdout")


def test_labels_are_in_the_pixels():
    ct = build_dataset("ct_volume_phantom", "all", n=60, image_size=16)
    # nodules are soft tissue inside the (dark) lungs: positives are brighter on average
    pos = torch.stack([ct[i]["image"].mean() for i in range(60) if ct[i]["label"] == 1])
    neg = torch.stack([ct[i]["image"].mean() for i in range(60) if ct[i]["label"] == 0])
    assert pos.mean() > neg.mean()
    cine = build_dataset("cine_phantom", "all", n=60, image_size=16, depth=16)
    # reduced contraction = less change of the blood pool over time
    motion = {int(cine[i]["label"]): [] for i in range(2)}
    for i in range(60):
        x = cine[i]["image"][0]
        motion.setdefault(int(cine[i]["label"]), []).append(float((x > 0.7).float().sum((1, 2)).std()))
    assert sum(motion[1]) / len(motion[1]) < sum(motion[0]) / len(motion[0])
    assert cine[0]["frame_times"].shape == (16,)
