"""Multi-window chest phantoms (multi-channel / missing-channel studies)."""

from __future__ import annotations

import pytest
import torch

from medvit.data import build_dataset
from medvit.data.phantom_datasets import PhantomDataset
from medvit.data.phantom_multiwindow import CXR_WINDOWS, apply_window


def test_channels_are_the_windows_of_the_chest_phantom():
    d = build_dataset("cxr_multiwindow_phantom", "train", n=20, image_size=64)
    base = PhantomDataset("cxr", "train", n=20, image_size=64)
    item, ref = d[0], base[0]
    assert item["image"].shape == (3, 64, 64) and item["channels"].tolist() == [0, 1, 2]
    for c, (centre, width) in enumerate(CXR_WINDOWS.values()):
        torch.testing.assert_close(item["image"][c], apply_window(ref["image"][0], centre, width))
    torch.testing.assert_close(item["label"], ref["label"])
    assert item["patient_id"] == ref["patient_id"]
    # windows saturate different parts: each channel clips some pixels the others resolve
    img = item["image"]
    assert ((img[0] == 1) & (img[2] < 1)).any() and ((img[2] == 0) & (img[0] > 0)).any()


def test_window_subset_and_errors():
    d = build_dataset("cxr_multiwindow_phantom", "train", n=20, image_size=32, windows=("bone", "lung"))
    assert d[0]["image"].shape == (2, 32, 32) and d[0]["channels"].tolist() == [2, 0]
    with pytest.raises(ValueError, match="unknown windows"):
        build_dataset("cxr_multiwindow_phantom", "val", n=20, windows=("brain",))
    with pytest.raises(ValueError, match="width"):
        apply_window(torch.zeros(2), 0.5, 0.0)
