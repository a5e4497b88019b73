"""Calibration knobs of the phantoms (medvit.data.phantom_common.Difficulty): deterministic, local, documented."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from medvit.data.phantom_cxr import CXR_LABELS, ChestPhantomGenerator
from medvit.data.phantom_retina import RetinaPhantomGenerator

NODULE = CXR_LABELS.index("Nodule")
#: checksum of default retina phantoms (computed on medvit 48feead, before the retina lesion_size knob existed)
RETINA_DEFAULT_SHA256 = "2b63b07bf80d08412725cead467631cee6db3acf0a1cb80a51ac723c9d684616"


def _first_with_only(gen: ChestPhantomGenerator, label: int, start: int = 0):
    for i in range(start, start + 400):
        p = gen.sample(i, i)
        if p.labels.sum() == 1 and p.labels[label] == 1:
            return i
    raise AssertionError("no phantom with that single finding")


def test_knobs_are_deterministic_and_default_to_the_original_phantoms():
    a = ChestPhantomGenerator(64, seed=3, lesion_contrast=2.0, lesion_size=1.5, anatomy=0.5, noise=2.0,
                              label_noise=0.1)
    b = ChestPhantomGenerator(64, seed=3, lesion_contrast=2.0, lesion_size=1.5, anatomy=0.5, noise=2.0,
                              label_noise=0.1)
    d1, d2 = ChestPhantomGenerator(64, seed=3), ChestPhantomGenerator(64, seed=3, lesion_contrast=1.0, noise=1.0)
    for i in range(6):
        pa, pb = a.sample(i, i // 2), b.sample(i, i // 2)
        assert np.array_equal(pa.image, pb.image) and np.array_equal(pa.labels, pb.labels)
        q1, q2 = d1.sample(i, i // 2), d2.sample(i, i // 2)
        assert np.array_equal(q1.image, q2.image) and np.array_equal(q1.masks["heart"], q2.masks["heart"])
    assert d1.difficulty.as_dict() == {"lesion_contrast": 1.0, "lesion_size": 1.0, "anatomy": 1.0, "noise": 1.0,
                                       "label_noise": 0.0}


def test_lesion_contrast_changes_only_the_lesion():
    base, strong = ChestPhantomGenerator(96, seed=0), ChestPhantomGenerator(96, seed=0, lesion_contrast=2.0)
    i = _first_with_only(base, NODULE)
    p0, p1 = base.sample(i, i), strong.sample(i, i)
    assert np.array_equal(p0.labels, p1.labels)
    m = p0.masks["nodule"]
    assert m.sum() > 0 and np.array_equal(m, p1.masks["nodule"])  # same place, same size
    diff = p1.image - p0.image
    ys, xs = np.nonzero(m)
    far = np.ones_like(m)
    far[max(0, ys.min() - 4):ys.max() + 5, max(0, xs.min() - 4):xs.max() + 5] = False
    assert np.abs(diff[far]).max() == 0.0  # nothing changes away from the nodule
    assert diff[m].mean() > 0.02  # the nodule is brighter (denser) than with contrast 1


def test_lesion_size_scales_the_nodule_area():
    base, big = ChestPhantomGenerator(128, seed=0), ChestPhantomGenerator(128, seed=0, lesion_size=2.0)
    i = _first_with_only(base, NODULE)
    a0, a1 = base.sample(i, i).masks["nodule"].sum(), big.sample(i, i).masks["nodule"].sum()
    assert 3.0 < a1 / a0 < 5.0  # diameter x2 -> area x~4
    assert big.sample(i, i).findings[0]["size_mm"] == pytest.approx(2 * base.sample(i, i).findings[0]["size_mm"],
                                                                     abs=1)


def test_lesion_size_scales_the_atelectasis_volume_loss():
    """Atelectasis is mostly an anatomical sign (a lifted hemidiaphragm, a mediastinal shift): lesion_size scales
    the lift (capped at 0.25 of the half-field) as well as the band, so the lung of that side loses area."""
    base, big = ChestPhantomGenerator(96, seed=0), ChestPhantomGenerator(96, seed=0, lesion_size=2.0)
    i = _first_with_only(base, CXR_LABELS.index("Atelectasis"))
    p0, p1 = base.sample(i, i), big.sample(i, i)
    f0, f1 = p0.findings[0], p1.findings[0]
    assert f0["side"] == f1["side"] and f1["lift_mm"] == pytest.approx(min(2 * f0["lift_mm"], 50), abs=1)
    lung = f"lung_{f0['side']}"
    assert p1.masks[lung].sum() < 0.97 * p0.masks[lung].sum()
    other = "lung_left" if f0["side"] == "right" else "lung_right"
    assert p1.masks[other].sum() == pytest.approx(p0.masks[other].sum(), rel=0.1)


def test_noise_scales_the_quantum_noise():
    g = {k: ChestPhantomGenerator(64, seed=1, noise=k) for k in (0.0, 1.0, 2.0)}
    p = {k: g[k].sample(5, 5).image.astype(np.float64) for k in g}
    inside = (p[0.0] > 0.05) & (p[0.0] < 0.95) & (p[2.0] > 0) & (p[2.0] < 1)  # away from clipping
    n1, n2 = (p[1.0] - p[0.0])[inside], (p[2.0] - p[0.0])[inside]
    assert n1.std() > 0 and n2.std() / n1.std() == pytest.approx(2.0, rel=0.05)


def test_anatomy_narrows_patient_variation():
    def spread(anatomy: float) -> float:
        gen = ChestPhantomGenerator(64, seed=0, anatomy=anatomy, healthy_fraction=1.0)
        return float(np.std([gen.sample(i, i).masks["lung_right"].sum() for i in range(24)]))

    assert spread(0.2) < 0.6 * spread(1.0)


def test_label_noise_flips_labels_not_images():
    clean, noisy = ChestPhantomGenerator(48, seed=2), ChestPhantomGenerator(48, seed=2, label_noise=0.2)
    flips = 0
    for i in range(150):
        a, b = clean.sample(i, i), noisy.sample(i, i)
        assert np.array_equal(a.image, b.image)
        flips += int((a.labels != b.labels).sum())
    n = 150 * len(CXR_LABELS)
    assert abs(flips - 0.2 * n) < 4 * np.sqrt(n * 0.2 * 0.8)  # binomial(1050, 0.2): 210 ± 4 sd


def test_retina_knobs():
    clean, noisy = RetinaPhantomGenerator(64, seed=0), RetinaPhantomGenerator(64, seed=0, label_noise=0.5)
    moved = 0
    for i in range(40):
        a, b = clean.sample(i, i), noisy.sample(i, i)
        assert np.array_equal(a.image, b.image)
        if a.target != b.target:
            moved += 1
            assert abs(a.target - b.target) == 1 and b.meta["true_stage"] == a.target
    assert 8 <= moved <= 32
    c0, c2 = RetinaPhantomGenerator(64, seed=0), RetinaPhantomGenerator(64, seed=0, lesion_contrast=3.0)
    i = next(i for i in range(60) if c0.sample(i, i).masks["srf"].any())
    m = c0.sample(i, i).masks["srf"]
    assert c2.sample(i, i).image[m].mean() < c0.sample(i, i).image[m].mean()  # darker fluid
    with pytest.raises(ValueError, match="lesion_size"):
        RetinaPhantomGenerator(64, lesion_size=5.0)


def _retina_first(gen: RetinaPhantomGenerator, stage: int, pigment: bool | None = None) -> int:
    for i in range(200):
        p = gen.sample(i, i)
        if p.target == stage and (pigment is None or p.findings[0]["pigment"] == pigment):
            return i
    raise AssertionError(f"no retina phantom of stage {stage}")


def test_retina_lesion_size_lifts_drusen_but_keeps_their_width_and_the_stage():
    """Retina lesion_size multiplies the drusen elevation (height), never the basal width that defines the stage:
    the drusen cover the same A-scans, the truth (stage, biomarkers, report) is unchanged, A-scans away from the
    drusen are untouched, and the drusen occupy more depth."""
    base, big = RetinaPhantomGenerator(96, seed=0), RetinaPhantomGenerator(96, seed=0, lesion_size=2.0)
    i = _retina_first(base, 1, pigment=False)  # early AMD: medium drusen only
    p0, p1 = base.sample(i, i), big.sample(i, i)
    assert p0.target == p1.target and np.array_equal(p0.labels, p1.labels) and p0.report == p1.report
    cols0, cols1 = p0.masks["drusen"].any(0), p1.masks["drusen"].any(0)
    assert cols0.any() and np.array_equal(cols0, cols1)  # same basal extent (A-scans)
    assert p1.masks["drusen"].sum() > 1.5 * p0.masks["drusen"].sum()  # taller
    assert np.array_equal(p0.image[:, ~cols1], p1.image[:, ~cols1])  # nothing else moves
    assert p0.masks["drusen"].sum(0).max() < p1.masks["drusen"].sum(0).max() <= 200 / (800 / 96) + 2  # capped


def test_retina_lesion_size_scales_the_hyperreflective_foci():
    base, big = RetinaPhantomGenerator(96, seed=0), RetinaPhantomGenerator(96, seed=0, lesion_size=2.0)
    i = _retina_first(base, 2, pigment=True)
    p0, p1 = base.sample(i, i), big.sample(i, i)
    away = ~(p0.masks["drusen"].any(0) | p1.masks["drusen"].any(0))  # A-scans where only the foci can change
    d = p1.image[:, away] - p0.image[:, away]
    assert (d > 0.2).sum() >= 4  # foci grew into darker outer-retina pixels
    j = next(j for j in range(200) if base.sample(j, j).findings[0] == {"drusen_count": 0, "pigment": False,
                                                                        "atrophy_um": 0, "srf": False, "irf": False,
                                                                        "ped": False})
    assert np.array_equal(base.sample(j, j).image, big.sample(j, j).image)  # no lesion: nothing to scale


def test_retina_defaults_are_the_original_phantoms():
    """Checksum of default retina phantoms (and of every knob but lesion_size) as drawn before the knob existed
    (images quantised to 16 bits as the synth writers store them, so 1-ulp float differences between CPUs cannot
    change it)."""
    import hashlib

    h = hashlib.sha256()
    for kw in ({}, {"lesion_contrast": 3.0, "anatomy": 0.5, "noise": 0.5, "label_noise": 0.1}):
        g = RetinaPhantomGenerator(48, seed=7, **kw)
        for i in range(6):
            p = g.sample(i, i // 2)
            h.update(np.round(p.image * 65535).astype(np.uint16).tobytes())
            h.update(p.labels.tobytes())
            h.update(p.report.encode())
            for k in sorted(p.masks):
                h.update(p.masks[k].tobytes())
    assert h.hexdigest() == RETINA_DEFAULT_SHA256


@pytest.mark.parametrize("kw, name", [({"lesion_contrast": 0.0}, "lesion_contrast"), ({"noise": -1}, "noise"),
                                      ({"label_noise": 0.7}, "label_noise"), ({"anatomy": 3}, "anatomy"),
                                      ({"lesion_size": "big"}, "lesion_size")])
def test_bad_knob_named(kw, name):
    with pytest.raises(ValueError, match=name):
        ChestPhantomGenerator(64, **kw)


def test_synth_records_knobs_and_stays_dciodvfy_clean(tmp_path):
    from medvit.data.synth import write_synth

    write_synth("cxr", 3, tmp_path, seed=0, image_size=64, masks=False, lesion_contrast=2.0, lesion_size=1.5)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["knobs"]["lesion_contrast"] == 2.0 and man["knobs"]["lesion_size"] == 1.5
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) not installed")
    for f in sorted((tmp_path / "images").glob("*.dcm")):
        r = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True, timeout=60)
        out = r.stdout + r.stderr
        assert [ln for ln in out.splitlines() if ln.startswith("Error")] == [], f


@pytest.mark.parametrize("kind", ["cxr", "retina"])
def test_label_noise_splits_keeps_the_reference_standard_clean(kind):
    """label_noise_splits=[train]: training labels noisy, val/test labels the truth; images never change."""
    from medvit.data.phantom_datasets import PhantomDataset

    kw = dict(n=240, seed=4, image_size=32, label_noise=0.3)
    for split in ("train", "val", "test"):
        clean = PhantomDataset(kind, split, n=240, seed=4, image_size=32)
        only_train = PhantomDataset(kind, split, label_noise_splits=["train"], **kw)
        every = PhantomDataset(kind, split, **kw)  # the default: every split's reported labels are noisy
        a = [clean[i] for i in range(len(clean))]
        b = [only_train[i] for i in range(len(clean))]
        c = [every[i] for i in range(len(clean))]
        assert all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, b))
        differ_b = sum(not np.array_equal(x["label"], y["label"]) for x, y in zip(a, b))
        differ_c = sum(not np.array_equal(x["label"], y["label"]) for x, y in zip(a, c))
        if split == "train":
            assert differ_b == differ_c > 0.1 * len(a)  # the same flips as the all-splits default
        else:
            assert differ_b == 0 and differ_c > 0


def test_label_noise_splits_in_synth_folder_and_checked(tmp_path):
    import csv

    from medvit.data.phantom_datasets import check_phantom_args
    from medvit.data.synth import write_synth

    write_synth("cxr", 120, tmp_path / "n", fmt="png", seed=1, image_size=32, masks=False, label_noise=0.4,
                label_noise_splits=["train"])
    write_synth("cxr", 120, tmp_path / "c", fmt="png", seed=1, image_size=32, masks=False)
    man = json.loads((tmp_path / "n" / "manifest.json").read_text())
    assert man["label_noise_splits"] == ["train"] and man["knobs"]["label_noise"] == 0.4
    assert man["population"] == {"prevalence": 0.22, "healthy_fraction": 0.3}
    rows = {}
    for name in ("n", "c"):
        with open(tmp_path / name / "labels.csv", newline="") as f:
            rows[name] = {r["image_id"]: r for r in csv.DictReader(f)}
    changed = {rows["c"][i]["split"] for i in rows["c"]
               if any(rows["c"][i][k] != rows["n"][i][k] for k in CXR_LABELS)}
    assert changed == {"train"}
    with pytest.raises(ValueError, match="label_noise_splits"):
        ChestPhantomGenerator(64, label_noise=0.1, label_noise_splits=["training"])
    with pytest.raises(ValueError, match="label_noise_splits"):
        ChestPhantomGenerator(64, label_noise=0.1, label_noise_splits="train")
    with pytest.raises(ValueError, match="label_noise_splits is empty while label_noise=0.1"):
        ChestPhantomGenerator(64, label_noise=0.1, label_noise_splits=[])  # would silently turn the noise off
    with pytest.raises(ValueError, match="dataset_args: phantom knob label_noise_splits"):
        check_phantom_args("cxr", {"label_noise": 0.1, "label_noise_splits": ["tets"]})
    check_phantom_args("retina", {"label_noise": 0.1, "label_noise_splits": ["train", "val"]})
    from medvit.data.phantom_common import parse_knob_assignments

    assert parse_knob_assignments(["label_noise_splits=train, val", "noise=2"]) == {
        "label_noise_splits": ("train", "val"), "noise": 2.0}
