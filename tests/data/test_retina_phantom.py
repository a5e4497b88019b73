import numpy as np
import pytest
import torch

from medvit.data import build_dataset, dataset_normalization
from medvit.data.phantom_retina import AMD_STAGES, RETINA_BIOMARKERS, RetinaPhantomGenerator


def test_item_format():
    ds = build_dataset("retina_phantom", "train", n=30, seed=0, image_size=64)
    item = ds[0]
    assert item["image"].shape == (1, 64, 64) and 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["label"].dtype == torch.long and item["label"].ndim == 0 and 0 <= int(item["label"]) < 5
    assert item["biomarkers"].shape == (len(RETINA_BIOMARKERS),)
    assert ds.class_names == list(AMD_STAGES) and item["patient_id"].startswith("RET")
    mean, std = dataset_normalization("retina_phantom")
    x = torch.stack([build_dataset("retina_phantom", "all", n=80, seed=0, image_size=96)[i]["image"]
                     for i in range(80)])
    assert abs(x.mean().item() - mean[0]) < 0.04 and abs(x.std().item() - std[0]) < 0.04


def test_stage_follows_biomarkers_and_referral():
    gen = RetinaPhantomGenerator(96, seed=1)
    idx = {n: i for i, n in enumerate(RETINA_BIOMARKERS)}
    seen = set()
    for i in range(60):
        p = gen.sample(i, i)
        b, st = p.labels, p.target
        seen.add(st)
        fluid = b[idx["srf"]] or b[idx["irf"]]
        expected = (4 if fluid else 3 if b[idx["atrophy"]] else 2 if (b[idx["large_drusen"]] or b[idx["pigment"]])
                    else 1 if p.findings[0].get("drusen_max_size") == "medium" else 0)
        assert st == expected, (i, b, st)
        assert p.meta["referral"] == (2 if st == 4 else 1 if st == 3 else 0)
        imp = p.report.split("IMPRESSION:")[1].lower()
        assert ("urgent" in imp) == (st == 4)
        assert AMD_STAGES[st] in imp or (st == 0 and "healthy" in imp)
        if b[idx["srf"]]:
            assert p.masks["srf"].any()
        if b[idx["atrophy"]]:
            assert p.masks["atrophy"].any()
        assert p.masks["retina"].any()
    assert seen == set(range(5))


def test_deterministic_and_mirrored_eyes():
    a = RetinaPhantomGenerator(64, seed=2).sample(3, 1)
    b = RetinaPhantomGenerator(64, seed=2).sample(3, 1)
    assert np.array_equal(a.image, b.image) and a.report == b.report
    eyes = {RetinaPhantomGenerator(64, seed=2).sample(i, i).meta["Eye"] for i in range(12)}
    assert eyes == {"OD", "OS"}


def test_bad_stage_probs():
    with pytest.raises(ValueError, match="stage_probs"):
        RetinaPhantomGenerator(64, stage_probs=(0.5, 0.5))
    only_wet = RetinaPhantomGenerator(64, stage_probs=(0, 0, 0, 0, 1.0))
    assert {only_wet.sample(i).target for i in range(5)} == {4}


def test_tabular_fields_for_curriculum_part1():
    """va_logmar / quality_index: in range, deterministic, worse acuity for late stages, image unchanged by them."""
    gen = RetinaPhantomGenerator(image_size=48, seed=3)
    ps = [gen.sample(i) for i in range(60)]
    va = np.array([p.meta["va_logmar"] for p in ps])
    q = np.array([p.meta["quality_index"] for p in ps])
    assert ((va >= -0.1) & (va <= 1.3)).all() and ((q >= 20) & (q <= 100)).all()
    stage = np.array([p.target for p in ps])
    assert va[stage >= 3].mean() > va[stage <= 1].mean() + 0.2
    again = gen.sample(7)
    assert again.meta["va_logmar"] == ps[7].meta["va_logmar"] and again.meta["quality_index"] == ps[7].meta[
        "quality_index"]
    np.testing.assert_array_equal(again.image, ps[7].image)
