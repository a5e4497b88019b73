"""Augmentations: shapes, reproducibility per generator, crop-scale rule, RandAugment ops on 1/3 channels."""

from __future__ import annotations

import pytest
import torch

from medvit.data.augment import (
    RAND_OPS,
    RAND_OPS_INCREASING,
    RandAugment,
    _apply_op,
    build_eval_transform,
    build_train_transform,
    center_crop_resize,
    crop_params,
    equalize,
    random_resized_crop,
)


def _g(s=0):
    return torch.Generator().manual_seed(s)


def test_crop_params_respect_scale_and_ratio():
    for s in range(200):
        top, left, h, w = crop_params(100, 120, (0.5, 1.0), (3 / 4, 4 / 3), _g(s))
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 120
        assert 0.45 <= h * w / (100 * 120) <= 1.0


def test_random_resized_crop_shapes_and_range():
    img = torch.rand(1, 40, 48)
    out = random_resized_crop(img, (32, 32), _g(), scale=(0.5, 1.0))
    assert out.shape == (1, 32, 32) and out.min() >= 0 and out.max() <= 1
    vol = torch.rand(1, 20, 24, 24)
    assert random_resized_crop(vol, (16, 16, 16), _g()).shape == (1, 16, 16, 16)


def test_train_transform_reproducible_and_seed_dependent():
    tf = build_train_transform(32, mean=(0.5,), std=(0.25,), scale=(0.5, 1.0), randaug="rand-m6-mstd0.5-inc1")
    item = {"image": torch.rand(1, 40, 40), "label": torch.ones(2)}
    a, b, c = tf(dict(item), _g(1)), tf(dict(item), _g(1)), tf(dict(item), _g(2))
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])
    assert a["image"].shape == (1, 32, 32) and torch.equal(a["label"], item["label"])
    tf3 = build_train_transform(32, mean=(0.5,), std=(0.25,), in_chans=3)
    assert tf3(dict(item), _g())["image"].shape == (3, 32, 32)


def test_eval_transform_is_resize_256_centre_224():
    img = torch.rand(1, 300, 400)
    out = center_crop_resize(img, (224, 224), 0.875)
    assert out.shape == (1, 224, 224)
    tf = build_eval_transform(16, (0.0,), (1.0,))
    x = torch.rand(1, 16, 16)
    assert torch.allclose(tf({"image": x})["image"], x)


@pytest.mark.parametrize("chans", [1, 3])
@pytest.mark.parametrize("op", sorted(set(RAND_OPS + RAND_OPS_INCREASING)))
def test_every_randaugment_op_runs(op, chans):
    img = torch.rand(chans, 24, 24)
    out = _apply_op(op, img, 6.0, _g(), 0.5)
    assert out.shape == img.shape and torch.isfinite(out).all()
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6


def test_increasing_ops_get_stronger_with_magnitude():
    img = torch.rand(1, 32, 32)
    for op in ("PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd", "Rotate"):
        d = [(_apply_op(op, img, m, _g(0), 0.5) - img).abs().mean().item() for m in (1.0, 5.0, 10.0)]
        assert d[0] <= d[1] <= d[2] and d[2] > d[0], op


def test_geometric_op_zero_magnitude_is_identity():
    img = torch.rand(1, 16, 16)
    assert torch.allclose(_apply_op("Rotate", img, 0.0, _g(), 0.5), img, atol=1e-5)
    assert torch.allclose(_apply_op("TranslateXRel", img, 0.0, _g(), 0.5), img, atol=1e-5)


def test_equalize_flattens_histogram():
    img = (torch.rand(1, 64, 64) ** 4)  # skewed to dark
    eq = equalize(img)
    assert abs(eq.mean().item() - 0.5) < abs(img.mean().item() - 0.5)


def test_randaugment_spec_parsing_and_errors():
    ra = RandAugment.from_string("rand-m6-mstd0.5-inc1")
    assert (ra.magnitude, ra.magnitude_std, ra.increasing, ra.num_ops) == (6.0, 0.5, True, 2)
    assert RandAugment.from_string("rand-m9-n3-p1.0").num_ops == 3
    with pytest.raises(ValueError, match="unknown RandAugment option"):
        RandAugment.from_string("rand-m6-zz1")
    with pytest.raises(ValueError, match="start with"):
        RandAugment.from_string("augmix-m5")
