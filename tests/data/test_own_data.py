"""Own-data datasets `csv` and `folder`: labels 1/0/empty (masked), patient-disjoint splits, errors naming the
file and row, and a one-epoch `medvit finetune --dataset csv --data DIR` whose contract carries the label names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medvit.data import build_dataset

LABELS = ["Atelectasis", "Cardiomegaly", "Effusion"]


def _own_csv(tmp_path: Path, n: int = 40, fmt: str = "png") -> Path:
    """Synthetic phantoms re-listed as a user's CSV (path, patient, 3 labels; some labels unknown)."""
    from medvit.data.synth import write_synth

    root = tmp_path / "own"
    write_synth("cxr", n, root, fmt=fmt, seed=0, image_size=32, masks=False)
    with open(root / "labels.csv") as f:
        src = list(csv.DictReader(f))
    with open(root / "my_labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "patient", *LABELS])
        for i, r in enumerate(src):
            w.writerow([r["file"], r["patient_id"], *("" if (i + k) % 5 == 0 else r[c] for k, c in enumerate(LABELS))])
    return root


def test_csv_labels_masks_and_patient_splits(tmp_path):
    root = _own_csv(tmp_path)
    parts = {s: build_dataset("csv", s, root=root, csv_file="my_labels.csv", val_fraction=0.2, test_fraction=0.2)
             for s in ("train", "val", "test", "all")}
    assert parts["train"].label_names == LABELS
    assert sum(len(parts[s]) for s in ("train", "val", "test")) == len(parts["all"]) == 40
    pats = {s: set(parts[s].patient_ids()) for s in ("train", "val", "test")}
    assert not (pats["train"] & pats["val"]) and not (pats["train"] & pats["test"]) and not (pats["val"] & pats["test"])
    assert all(len(parts[s]) > 0 for s in ("train", "val", "test"))
    with open(root / "my_labels.csv") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    ds = parts["all"]
    for i in range(len(ds)):
        it = ds[i]
        r = rows[it["id"]]
        assert it["image"].shape == (1, 32, 32) and 0.0 <= float(it["image"].min()) <= float(it["image"].max()) <= 1
        for k, c in enumerate(LABELS):
            assert bool(it["label_mask"][k]) == (r[c] != "")  # empty = unknown = masked
            if r[c]:
                assert float(it["label"][k]) == float(r[c])
    # the same split on a second build (deterministic hash of the patient)
    again = build_dataset("csv", "val", root=root, csv_file="my_labels.csv", val_fraction=0.2, test_fraction=0.2)
    assert again.patient_ids() == parts["val"].patient_ids()


def test_csv_errors_name_file_row_and_column(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    np.save(root / "a.npy", np.zeros((8, 8), np.float32))
    cases = {
        "path,patient,Mass\na.npy,p1,2\n": "labels.csv:2: column 'Mass' must be 1, 0 or empty",
        "path,patient,Mass\n../etc/passwd,p1,1\n": "labels.csv:2: image path '../etc/passwd' must be a relative path",
        "file,patient,Mass\na.npy,p1,1\n": "no image-path column 'path'",
        "path,patient,Mass\na.npy,p1,1\nb.npy,p2,0\n": "1 listed images of split 'all' are missing",
        "path,patient,split,Mass\na.npy,p1,training,1\n": "labels.csv:2: column 'split' must be train, val or test",
        # recheck N5: a repeated label column (DictReader keeps the last) trained two outputs on one column
        "path,patient,Mass,Mass\na.npy,p1,1,0\n": "labels.csv: the header's label columns must not repeat a name",
    }
    for text, msg in cases.items():
        (root / "labels.csv").write_text(text)
        with pytest.raises((ValueError, FileNotFoundError), match=msg.replace("(", r"\(").replace(".", r"\.")):
            build_dataset("csv", "all", root=root)
    with pytest.raises(ValueError, match="needs root=DIR"):
        build_dataset("csv", "train")


def test_class_folder(tmp_path):
    root = tmp_path / "classes"
    for c, v in (("normal", 0.2), ("pneumonia", 0.8)):
        for p in range(6):
            d = root / c / f"pat{c}{p}"
            d.mkdir(parents=True)
            for j in range(2):
                np.save(d / f"img{j}.npy", np.full((16, 16), v, np.float32))
    (root / "normal" / "notes.txt").write_text("not an image")
    ds = build_dataset("folder", "all", root=root)
    assert ds.label_names == ["normal", "pneumonia"] and len(ds) == 24
    it = ds[0]
    assert it["label"].tolist() == [1.0, 0.0] and bool(it["label_mask"].all()) and it["patient_id"] == "patnormal0"
    parts = [build_dataset("folder", s, root=root, val_fraction=0.25, test_fraction=0.25) for s in ("train", "val",
                                                                                                   "test")]
    assert sum(map(len, parts)) == 24
    for a in range(3):  # both images of a patient fall in the same split
        for b in range(a + 1, 3):
            assert not set(parts[a].patient_ids()) & set(parts[b].patient_ids())
    (root / "normal").rename(tmp_path / "moved")
    with pytest.raises(ValueError, match="at least 2 class folders"):
        build_dataset("folder", "all", root=root)


def test_finetune_on_own_csv_writes_labels_into_the_contract(tmp_path):
    from medvit.cli.main import main

    root = _own_csv(tmp_path, n=60, fmt="dicom")
    out = tmp_path / "run"
    assert main(["finetune", "--dataset", "csv", "--data", str(root), "--epochs", "1", "--output", str(out),
                 "--batch-size", "8", "dataset_args.csv_file=my_labels.csv", "dataset_args.val_fraction=0.25",
                 "dataset_args.test_fraction=0.25", "image_size=32",
                 "backbone_args={patch_size: 16, embed_dim: 32, depth: 1, num_heads: 2}", "train.progress=false",
                 "ood_fpr=0", "modalities=[DX]", "body_parts=[CHEST]", "backbone=vit_tiny_patch16_224"]) == 0
    contract = json.loads((out / "model" / "config.json").read_text())["contract"]
    assert contract["label_names"] == LABELS and len(contract["thresholds"]) == 3
    assert contract["modalities"] == ["DX"] and contract["body_parts"] == ["CHEST"]


def _tiny_png(p: Path) -> None:
    from PIL import Image

    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(p)


@pytest.mark.parametrize("bad", ["text", "empty"])
def test_csv_unreadable_image_is_an_error_naming_the_csv_line_before_training(tmp_path, capsys, bad):
    """breaker F2: a non-image / empty file listed in labels.csv gave a 29-frame traceback mid-training."""
    from medvit.cli.main import main

    root = tmp_path / "own"
    for i in range(6):
        _tiny_png(root / "img" / f"{i}.png")
    (root / "img" / "bad.png").write_bytes(b"hello" if bad == "text" else b"")
    lines = ["path,patient,split,Mass"] + [f"img/{i}.png,p{i},{('train', 'val', 'test')[i % 3]},{i % 2}"
                                           for i in range(6)]
    lines.insert(3, "img/bad.png,p9,train,1")  # CSV line 4
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"labels\.csv:4: cannot read img/bad\.png as an image"):
        build_dataset("csv", "train", root=root)
    assert len(build_dataset("csv", "val", root=root)) == 2  # other splits do not list it
    assert main(["finetune", "--dataset", "csv", "--data", str(root), "--epochs", "1", "--output",
                 str(tmp_path / "run"), "--batch-size", "4", "image_size=32", "backbone=vit_tiny_patch16_224",
                 "backbone_args={patch_size: 16, embed_dim: 32, depth: 1, num_heads: 2}", "train.progress=false",
                 "ood_fpr=0"]) == 2
    err = capsys.readouterr().err
    assert "labels.csv:4: cannot read img/bad.png" in err and "Traceback" not in err


def test_symlinks_leaving_the_root_are_refused_unless_follow_links(tmp_path):
    """breaker F3: img/link.png -> a file outside the root was followed (csv and folder layouts)."""
    outside = tmp_path / "secret.png"
    _tiny_png(outside)
    root = tmp_path / "own"
    _tiny_png(root / "img" / "ok.png")
    (root / "img" / "link.png").symlink_to(outside)
    (root / "img" / "inner.png").symlink_to(root / "img" / "ok.png")  # a link staying inside is fine
    (root / "labels.csv").write_text("path,patient,Mass\nimg/ok.png,p1,1\nimg/inner.png,p2,0\nimg/link.png,p3,1\n")
    with pytest.raises(ValueError, match=r"labels\.csv:4: img/link\.png leads through a symbolic link to "
                                         r".*secret\.png, outside .*follow_links=true"):
        build_dataset("csv", "all", root=root)
    assert len(build_dataset("csv", "all", root=root, follow_links=True)) == 3
    (root / "labels.csv").write_text("path,patient,Mass\nimg/ok.png,p1,1\nimg/inner.png,p2,0\n")
    assert len(build_dataset("csv", "all", root=root)) == 2

    classes = tmp_path / "classes"
    _tiny_png(classes / "a" / "x.png")
    _tiny_png(classes / "b" / "y.png")
    (classes / "b" / "z.png").symlink_to(outside)
    with pytest.raises(ValueError, match=r"b/z\.png leads through a symbolic link to"):
        build_dataset("folder", "all", root=classes)
    assert len(build_dataset("folder", "all", root=classes, follow_links=True)) == 3


@pytest.mark.parametrize("planted", ["folder link", "file link", "link loop"])
def test_phantom_folder_refuses_file_paths_that_leave_it_through_a_symlink(tmp_path, planted):
    """recheck N4: inside() was lexical, so a labels.csv 'file' through a symlink inside the phantom folder (a folder
    link ``imgs -> /elsewhere`` with ``file = imgs/outside.png``, or ``x.png -> /elsewhere/outside.png``) read an
    image outside the folder. A folder reached through a symlinked root, and links staying inside, still load."""
    import shutil

    from medvit.data.phantom_datasets import PhantomFolderDataset
    from medvit.data.synth import write_synth

    real = tmp_path / "real"
    write_synth("cxr", 4, real, fmt="png", seed=0, image_size=32, masks=False)
    (tmp_path / "via").symlink_to(real, target_is_directory=True)  # the whole folder reached through a link
    with open(real / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ds = PhantomFolderDataset(tmp_path / "via", "all")
    assert len(ds) == 4 and ds[0]["image"].shape[-2:] == (32, 32)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(real / rows[0]["file"], elsewhere / "outside.png")
    (real / "inner.png").symlink_to(real / rows[1]["file"])  # a link staying inside the folder is fine
    rows[1]["file"] = "inner.png"
    if planted == "folder link":
        (real / "imgs").symlink_to(elsewhere, target_is_directory=True)
        rows[0]["file"] = "imgs/outside.png"
    elif planted == "file link":
        (real / "x.png").symlink_to(elsewhere / "outside.png")
        rows[0]["file"] = "x.png"
    else:
        (real / "loop.png").symlink_to(real / "loop.png")
        rows[0]["file"] = "loop.png"
    with open(real / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    msg = (r"cannot resolve image path 'loop\.png'" if planted == "link loop" else
           rf"{rows[0]['file']} leads through a symbolic link to .*elsewhere.outside\.png, outside")
    for root in (real, tmp_path / "via"):
        with pytest.raises(ValueError, match=r"labels\.csv line 2 column 'file': " + msg):
            PhantomFolderDataset(root, "all")
    rows.pop(0)
    with open(real / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ds = PhantomFolderDataset(tmp_path / "via", "all")
    assert len(ds) == 3 and ds[0]["image"].shape[-2:] == (32, 32)


def test_split_column_with_one_patient_in_several_splits_is_refused_unless_allowed(tmp_path, caplog):
    """breaker F4: an explicit split column putting a patient in train, val and test was accepted silently."""
    root = tmp_path / "own"
    for i in range(5):
        _tiny_png(root / f"{i}.png")
    (root / "labels.csv").write_text("path,patient,split,Mass\n0.png,SAME,train,1\n1.png,p1,train,0\n"
                                     "2.png,SAME,val,1\n3.png,p3,val,0\n4.png,SAME,test,1\n")
    with pytest.raises(ValueError, match=r"labels\.csv: column 'split' puts 1 patient\(s\) in more than one split: "
                                         r"'SAME' in train \(line 2\), val \(line 4\), test \(line 6\)"):
        build_dataset("csv", "val", root=root)
    with caplog.at_level("WARNING", logger="medvit.data.own"):
        ds = build_dataset("csv", "val", root=root, allow_patient_overlap=True)
    assert len(ds) == 2 and "'SAME' in train (line 2)" in caplog.text
    (root / "labels.csv").write_text("path,patient,split,Mass\n0.png,SAME,train,1\n1.png,SAME,train,0\n"
                                     "2.png,p2,val,1\n")
    assert len(build_dataset("csv", "train", root=root)) == 2  # one patient, several images, one split: fine


def test_broken_pixel_data_behind_a_good_header_is_one_error_line_naming_the_csv_line(tmp_path, capsys):
    """F2, the part the header check cannot see: a DICOM whose Pixel Data is truncated fails when its item is read
    (mid-training); the CLI reports that item's error (labels.csv:LINE and file) as one line, exit 2."""
    from medvit.cli.main import main

    root = _own_csv(tmp_path, n=24, fmt="dicom")
    args = dict(root=root, csv_file="my_labels.csv", val_fraction=0.25, test_fraction=0.25)
    first = build_dataset("csv", "train", **args).rows[0][0]
    data = (root / first).read_bytes()
    (root / first).write_bytes(data[:-500])
    assert len(build_dataset("csv", "all", **args)) == 24  # the header check passes
    assert main(["finetune", "--dataset", "csv", "--data", str(root), "--epochs", "1", "--output",
                 str(tmp_path / "run"), "--batch-size", "4", "dataset_args.csv_file=my_labels.csv",
                 "dataset_args.val_fraction=0.25", "dataset_args.test_fraction=0.25", "image_size=32",
                 "backbone=vit_tiny_patch16_224", "train.progress=false", "ood_fpr=0",
                 "backbone_args={patch_size: 16, embed_dim: 32, depth: 1, num_heads: 2}"]) == 2
    err = capsys.readouterr().err
    assert "my_labels.csv:" in err and f"{first}: cannot read as an image" in err and "truncated" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
