import numpy as np
import pytest
import torch

from medvit.data import build_dataset, dataset_normalization
from medvit.data.phantom_common import plan_patients
from medvit.data.phantom_cxr import CXR_LABELS, ChestPhantomGenerator


def test_item_format_and_registry_meta():
    ds = build_dataset("cxr_phantom", "train", n=30, seed=0, image_size=64)
    item = ds[0]
    assert item["image"].shape == (1, 64, 64) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["label"].shape == (7,) and item["label_mask"].dtype == torch.bool and item["label_mask"].all()
    assert ds.label_names == list(CXR_LABELS)
    assert isinstance(item["id"], str) and item["patient_id"].startswith("CXR")
    mean, std = dataset_normalization("cxr_phantom")
    assert len(mean) == len(std) == 1
    three = build_dataset("cxr_phantom", "train", n=30, seed=0, image_size=64, in_chans=3)[0]["image"]
    assert three.shape == (3, 64, 64) and torch.equal(three[0], three[2])


def test_registered_normalization_matches_data():
    ds = build_dataset("cxr_phantom", "all", n=120, seed=0, image_size=96)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    mean, std = dataset_normalization("cxr_phantom")
    assert abs(x.mean().item() - mean[0]) < 0.03 and abs(x.std().item() - std[0]) < 0.03


def test_deterministic_and_seed_dependent():
    a = ChestPhantomGenerator(96, seed=3).sample(5, 2)
    b = ChestPhantomGenerator(96, seed=3).sample(5, 2)
    c = ChestPhantomGenerator(96, seed=4).sample(5, 2)
    assert np.array_equal(a.image, b.image) and a.report == b.report and a.meta == b.meta
    assert not np.array_equal(a.image, c.image)


def test_splits_patient_disjoint_and_cover():
    n = 300
    parts = {s: build_dataset("cxr_phantom", s, n=n, seed=7, image_size=32) for s in ("train", "val", "test")}
    pats = {s: set(d.patient_ids()) for s, d in parts.items()}
    assert not (pats["train"] & pats["val"]) and not (pats["train"] & pats["test"]) and not (pats["val"] & pats["test"])
    assert sum(len(d) for d in parts.values()) == n
    assert len(parts["train"]) > 0.6 * n and len(parts["val"]) > 0 and len(parts["test"]) > 0
    plan = plan_patients(n, 7, "cxr")
    assert plan.patient_of.max() < n and np.all(np.diff(plan.patient_of) >= 0)
    assert np.bincount(plan.patient_of).max() > 1  # some patients have several studies


def test_labels_consistent_with_masks_and_report():
    gen = ChestPhantomGenerator(128, seed=0, prevalence=0.5)
    seen = set()
    for i in range(25):
        p = gen.sample(i, i)
        names = {CXR_LABELS[k] for k in np.flatnonzero(p.labels)}
        seen |= names
        assert {f["label"] for f in p.findings} == names
        for lesion in ("Nodule", "Mass", "Consolidation", "Pneumothorax"):
            assert (lesion in names) == any(k.startswith(lesion.lower()) for k in p.masks)
        assert p.masks["lung_right"].any() and p.masks["lung_left"].any() and p.masks["heart"].any()
        impression = p.report.split("IMPRESSION:")[1]
        assert ("pneumothorax" in impression.lower()) == ("Pneumothorax" in names)
        assert ("Cardiomegaly" in impression) == ("Cardiomegaly" in names)
        if not names:
            assert "No acute" in impression or "Normal" in impression
    assert seen == set(CXR_LABELS)


def test_findings_change_the_image_locally():
    gen = ChestPhantomGenerator(128, seed=0, prevalence=1.0, healthy_fraction=0.0)
    p = gen.sample(0, 0)
    m = p.masks["nodule"]
    assert m.any()
    inside = p.image[m].mean()
    ring = np.zeros_like(m)
    ys, xs = np.nonzero(m)
    ring[max(ys.min() - 6, 0):ys.max() + 7, max(xs.min() - 6, 0):xs.max() + 7] = True
    ring &= ~m
    assert inside > p.image[ring].mean()  # a nodule is denser than its surroundings


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        build_dataset("cxr_phantom", "training", n=10)
    with pytest.raises(ValueError, match="either root"):
        build_dataset("cxr_phantom", "train", root="/nonexistent", n=10)
    with pytest.raises(ValueError, match="image_size"):
        ChestPhantomGenerator(8)
    with pytest.raises(KeyError, match="did you mean"):
        build_dataset("cxr_phantm", "train")


@pytest.mark.parametrize("manifest, labels_file, msg", [
    ({"label_names": ["A"]}, "images/x.png", r"manifest\.json: required key 'kind' missing"),
    ({"kind": "cxr", "label_names": 5}, "images/x.png", r"manifest\.json: 'label_names' must be a list of non-empty "
                                                        r"strings, got number"),
    ({"kind": "cxr", "label_names": "Effusion"}, "images/x.png", r"'label_names' must be a list .*, got string"),
    ({"kind": ["cxr"], "label_names": ["A"]}, "images/x.png", r"manifest\.json: 'kind' must be a phantom kind"),
    ({"kind": "cxr", "label_names": ["A"]}, "../../outside.png",
     r"labels\.csv line 2 column 'file': image path '\.\./\.\./outside\.png' must be a relative path inside"),
    ({"kind": "cxr", "label_names": ["A"]}, "/etc/hostname", r"labels\.csv line 2 column 'file': image path "
                                                             r"'/etc/hostname' must be a relative path inside"),
], ids=["no kind", "label_names number", "label_names string", "kind list", "file ..", "file absolute"])
def test_phantom_folder_refuses_wrong_manifest_types_and_paths_leaving_the_folder(tmp_path, manifest, labels_file,
                                                                                 msg):
    """breaker B16: a manifest without 'kind' gave KeyError, label_names 5 a TypeError, "Effusion" the label names
    E, f, f, u, ...; a labels.csv 'file' of ../.. or an absolute path read an image outside the folder."""
    import json

    from medvit.data.phantom_datasets import PhantomFolderDataset

    (tmp_path / "splits").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "labels.csv").write_text(f"image_id,patient_id,file,A\nx1,p1,{labels_file},1\n")
    (tmp_path / "splits" / "train.txt").write_text("x1\n")
    with pytest.raises(ValueError, match=msg):
        PhantomFolderDataset(tmp_path, "train")


@pytest.mark.parametrize("manifest, msg", [
    ({"kind": "cxr", "label_names": []}, r"manifest\.json: 'label_names' must name at least one label"),
    ({"kind": "cxr", "label_names": ["A", "A"]}, r"manifest\.json: 'label_names' must not repeat a name .*'A'"),
    ({"kind": "cxr", "label_names": ["A", " "]}, r"manifest\.json: 'label_names' must be a list of non-empty"),
    ({"kind": "retina", "label_names": ["A"], "class_names": ["g0", "g0"]}, r"'class_names' must not repeat a name"),
], ids=["empty", "repeated", "blank", "class_names repeated"])
def test_phantom_folder_refuses_empty_or_repeated_label_names(tmp_path, manifest, msg):
    """recheck N5: label_names [] and ["A", "A"] were accepted (no outputs / two outputs under one name)."""
    import json

    from medvit.data.phantom_datasets import PhantomFolderDataset

    (tmp_path / "splits").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "labels.csv").write_text("image_id,patient_id,file,A\nx1,p1,images/x.png,1\n")
    (tmp_path / "splits" / "train.txt").write_text("x1\n")
    with pytest.raises(ValueError, match=msg):
        PhantomFolderDataset(tmp_path, "train")


def test_contract_refuses_repeated_label_names():
    """recheck N5 (same gap in the checkpoint contract): two outputs under one name; an empty list stays valid."""
    from medvit.models.contract import WeightContract

    with pytest.raises(ValueError, match=r"contract key 'label_names' must not repeat a name .*'Mass'"):
        WeightContract(label_names=["Mass", "Nodule", "Mass"])
    assert WeightContract(label_names=[]).label_names == []


@pytest.mark.parametrize("manifest, labels, msg", [
    ({"kind": "cxr", "label_names": ["A", "Nope"]}, "image_id,patient_id,file,A\nx1,p1,images/x.png,1\n",
     r"manifest\.json: label_names \['Nope'\] are not columns of .*labels\.csv \(its columns: image_id, patient_id, "
     r"file, A\)"),
    ({"kind": "retina", "label_names": ["A"], "class_names": ["g0", "g1"]},
     "image_id,patient_id,file,stage,referral,A\nx1,p1,images/x.png,1,0,1\nx2,p1,images/x.png,4,2,0\n",
     r"labels\.csv line 3 column 'stage': must be a class index 0\.\.1 \(manifest\.json class_names \['g0', 'g1'\]\), "
     r"got '4'"),
    ({"kind": "retina", "label_names": ["A"], "class_names": ["g0"]},
     "image_id,patient_id,file,stage,referral,A\nx1,p1,images/x.png,-1,0,1\n", r"line 2 column 'stage': .* got '-1'"),
    ({"kind": "retina", "label_names": ["A"], "class_names": ["g0"]},
     "image_id,patient_id,file,stage,referral,A\nx1,p1,images/x.png,0,x,1\n", r"line 2 column 'referral': must be a "
                                                                             r"non-negative integer, got 'x'"),
    ({"kind": "retina", "label_names": ["A"], "class_names": ["g0"]},
     "image_id,patient_id,file,A\nx1,p1,images/x.png,1\n",
     r"labels\.csv: required columns \['stage', 'referral'\] missing"),
    ({"kind": "cxr", "label_names": ["A"]}, "image_id,patient_id,file,A\nx1,p1,images/x.png,yes\n",
     r"labels\.csv line 2 column 'A': a finding label must be 0 or 1, got 'yes'"),
    ({"kind": "cxr", "label_names": ["A", " "]}, "image_id,patient_id,file,A\nx1,p1,images/x.png,1\n",
     r"'label_names' must be a list of non-empty strings; item \[1\] \(\" \"\) is blank"),
    ({"kind": "cxr", "label_names": ["A", 1]}, "image_id,patient_id,file,A\nx1,p1,images/x.png,1\n",
     r"'label_names' must be a list of non-empty strings; item \[1\] \(1\) is a number, not a string"),
], ids=["label not a column", "stage beyond class_names", "stage negative", "referral", "no stage column",
        "label yes", "blank name", "number name"])
def test_phantom_folder_checks_labels_csv_against_the_manifest_at_construction(tmp_path, manifest, labels, msg):
    """breaker33 B17: label_names naming an absent column gave a raw KeyError on the first item read; class_names
    shorter than the stages in labels.csv was accepted; a blank name was reported as "got array"."""
    import json

    from medvit.data.phantom_datasets import PhantomFolderDataset

    (tmp_path / "splits").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "labels.csv").write_text(labels)
    (tmp_path / "splits" / "train.txt").write_text("x1\n")
    with pytest.raises(ValueError, match=msg):
        PhantomFolderDataset(tmp_path, "train")


def test_phantom_folder_with_images_linked_into_an_outside_cache_needs_follow_links(tmp_path):
    """review-fix R1: a synth folder tracked by DVC / git-annex (each image a link into a cache outside the folder)
    was refused with no way to allow it and no remedy named; follow_links (as the own csv/folder and BenchX datasets
    have) reads it, and is refused in memory, where no file is read (--dry-run as the run)."""
    import os
    import shutil

    from medvit.data.phantom_datasets import check_phantom_args
    from medvit.data.synth import write_synth

    folder, cache = tmp_path / "proj" / "data" / "cxr", tmp_path / "proj" / ".dvc" / "cache"
    write_synth("cxr", 4, folder, fmt="png", image_size=32)
    cache.mkdir(parents=True)
    for f in sorted((folder / "images").iterdir()):
        shutil.move(f, cache / f.name)
        os.symlink(cache / f.name, f)
    with pytest.raises(ValueError, match=r"labels\.csv line 2 column 'file': .* leads through a symbolic link to "
                                         r".*\.dvc/cache/.*outside .*set dataset_args\.follow_links=true"):
        build_dataset("cxr_phantom", "all", root=folder)
    ds = build_dataset("cxr_phantom", "all", root=folder, follow_links=True)
    assert len(ds) == 4 and ds[3]["image"].shape == (1, 32, 32)
    args = {"root": str(folder), "follow_links": True, "n": None, "seed": None}
    assert check_phantom_args("cxr", args)["follow_links"] is True
    for bad in ({"n": 10, "follow_links": True}, {"n": 10, "intensity": {"png": "minmax"}}):
        key = next(k for k in bad if k != "n")
        with pytest.raises(ValueError, match=rf"dataset_args\.{key}: only a synth folder \(root=DIR\) takes"):
            check_phantom_args("cxr", bad)
        with pytest.raises(ValueError, match=rf"{key}: only a synth folder"):
            build_dataset("cxr_phantom", "all", **bad)
    assert check_phantom_args("cxr", {"n": 10, "follow_links": None}) == {"n": 10, "follow_links": None}
    assert len(build_dataset("cxr_phantom", "all", n=10, follow_links=None)) == 10


@pytest.mark.parametrize("value, msg", [
    ("Effusion", r"must be a list of non-empty strings, got string \(e\.g\. \["),
    (["A", " "], r"must be a list of non-empty strings; item \[1\] \(\" \"\) is blank \(e\.g\. \["),
    (["A", "A "], r"must not repeat a name .*'A' more than once \(e\.g\. \["),
], ids=["string", "blank item", "repeated"])
def test_contract_label_names_one_check_names_the_bad_item(value, msg):
    """review-fix S3: label_names' type was checked twice (the scope-key loop, then name_list_problem); the loop's
    message ("got list ['A', ' ']") did not name the bad item. One check serves, with the example kept."""
    from medvit.models.contract import WeightContract

    with pytest.raises(ValueError, match=r"contract key 'label_names' " + msg):
        WeightContract(label_names=value)
