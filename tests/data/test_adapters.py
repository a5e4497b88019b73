"""NIH ChestX-ray14 and CheXpert adapters on tiny fixtures in each dataset's true on-disk layout."""

import numpy as np
import pytest
import torch
from PIL import Image

from medvit.data import LabelVocabulary, build_dataset, dataset_normalization
from medvit.data.chexpert import apply_uncertainty, resolve_policies
from medvit.data.labels import NIH14_LABELS

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n")


def _png(path, value, size=(20, 20), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8), mode="L").convert(mode).save(path)


@pytest.fixture()
def nih_root(tmp_path):
    rows = [("00000001_000.png", "Cardiomegaly", 1, "PA"), ("00000001_001.png", "Cardiomegaly|Emphysema", 1, "PA"),
            ("00000002_000.png", "No Finding", 2, "AP"), ("00000003_000.png", "Effusion|Infiltration|Mass", 3, "PA"),
            ("00000004_000.png", "Hernia", 4, "PA"), ("00000005_000.png", "Pleural_Thickening|Nodule", 5, "AP")]
    lines = [NIH_HEADER] + [f"{n},{lab},0,{pid},58,M,{view},2682,2749,0.143,0.143,\n" for n, lab, pid, view in rows]
    (tmp_path / "Data_Entry_2017.csv").write_text("".join(lines))
    (tmp_path / "train_val_list.txt").write_text("\n".join(r[0] for r in rows[:4]) + "\n")
    (tmp_path / "test_list.txt").write_text("\n".join(r[0] for r in rows[4:]) + "\n")
    for k, (name, *_) in enumerate(rows):  # images split over two unpacked archives, one RGBA like real NIH files
        sub = "images_001" if k < 3 else "images_002"
        _png(tmp_path / sub / "images" / name, 40 * k, mode="RGBA" if k == 2 else "L")
    return tmp_path


def test_nih_layout_labels_and_splits(nih_root):
    test = build_dataset("nih_chestxray14", "test", root=nih_root, image_size=16)
    assert len(test) == 2 and test.label_names == list(NIH14_LABELS)
    item = test[0]
    assert item["image"].shape == (1, 16, 16) and item["label_mask"].all()
    assert item["label"][NIH14_LABELS.index("Hernia")] == 1 and item["label"].sum() == 1
    assert abs(float(item["image"].mean()) - 160 / 255) < 1e-3
    tv = build_dataset("nih_chestxray14", "trainval", root=nih_root)
    assert len(tv) == 4
    y = {i: tv[i]["label"] for i in range(4)}
    assert y[2].sum() == 0  # No Finding
    assert y[3][NIH14_LABELS.index("Infiltration")] == 1 and y[3][NIH14_LABELS.index("Mass")] == 1
    train = build_dataset("nih_chestxray14", "train", root=nih_root, val_fraction=0.5)
    val = build_dataset("nih_chestxray14", "val", root=nih_root, val_fraction=0.5)
    assert len(train) + len(val) == 4 and not set(train.patient_ids()) & set(val.patient_ids())
    pa = build_dataset("nih_chestxray14", "trainval", root=nih_root, views=("PA",))
    assert len(pa) == 3
    assert dataset_normalization("nih_chestxray14") == ((0.5056,), (0.252,))
    assert dataset_normalization("nih_chestxray14", in_chans=3) == ((0.5056,) * 3, (0.252,) * 3)


def test_nih_errors(nih_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="Data_Entry_2017.csv"):
        build_dataset("nih_chestxray14", "train", root=tmp_path / "nope")
    (nih_root / "images_002" / "images" / "00000004_000.png").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        build_dataset("nih_chestxray14", "test", root=nih_root)
    with pytest.raises(ValueError, match="root"):
        build_dataset("nih_chestxray14", "train")


CHX_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
              "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
              "Fracture,Support Devices\n")


@pytest.fixture()
def chexpert_root(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    # columns after AP/PA: NoF, EnlCM, Cardiomegaly, LungOp, Lesion, Edema, Consol, Pneumonia, Atel, PTX, PE, PO, Fx, SD
    train = [
        ("train/patient00001/study1/view1_frontal.jpg", "Frontal", "AP", ",,-1.0,1.0,,-1.0,0.0,,-1.0,,1.0,,,1.0"),
        ("train/patient00001/study1/view2_lateral.jpg", "Lateral", "", ",,1.0,,,,,,,,,,,"),
        ("train/patient00002/study1/view1_frontal.jpg", "Frontal", "PA", "1.0,,,,,,,,,0.0,,,,"),
        ("train/patient00003/study2/view1_frontal.jpg", "Frontal", "AP", ",,1.0,,,1.0,-1.0,,0.0,,-1.0,,,"),
    ]
    valid = [("valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP",
              "0.0,1.0,1.0,1.0,0.0,0.0,0.0,0.0,1.0,0.0,1.0,0.0,0.0,1.0")]
    for name, rows in (("train.csv", train), ("valid.csv", valid)):
        lines = [CHX_HEADER] + [f"CheXpert-v1.0-small/{p},Female,68,{fl},{ap},{vals}\n" for p, fl, ap, vals in rows]
        root.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("".join(lines))
        for k, (p, *_) in enumerate(rows):
            (root / p).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((24, 20), 30 + 50 * k, np.uint8)).save(root / p, quality=95)
    return root


def test_chexpert_frontal_and_mae_uncertainty(chexpert_root):
    ds = build_dataset("chexpert", "train", root=chexpert_root, val_fraction=0.0, image_size=16)
    assert len(ds) == 3  # lateral view dropped
    assert ds.label_names == ["Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion"]
    first = ds[0]
    # raw: Cardiomegaly -1 (U-Zeros → 0), Edema -1 (U-Ones → 1), Consolidation 0, Atelectasis -1 (U-Ones → 1), PE 1
    assert first["label"].tolist() == [0, 1, 0, 1, 1] and first["label_mask"].all()
    assert first["patient_id"] == "patient00001" and first["image"].shape == (1, 16, 16)
    third = ds[2]  # Cardiomegaly 1, Edema 1, Consolidation -1 → 0, Atelectasis 0, PE -1 → 0
    assert third["label"].tolist() == [1, 1, 0, 0, 0]
    test = build_dataset("chexpert", "test", root=chexpert_root)
    assert len(test) == 1 and test[0]["label"].tolist() == [1, 0, 0, 1, 1]
    both = build_dataset("chexpert", "train", root=chexpert_root, frontal_only=False, val_fraction=0.0)
    assert len(both) == 4


def test_chexpert_ignore_policy_masks(chexpert_root):
    ds = build_dataset("chexpert", "train", root=chexpert_root, val_fraction=0.0, uncertainty="ignore",
                       blank="ignore", labels=["Cardiomegaly", "Edema", "Pneumothorax"])
    item = ds[0]  # Cardiomegaly -1, Edema -1, Pneumothorax blank
    assert item["label_mask"].tolist() == [False, False, False]
    item = ds[1]  # patient00002: Pneumothorax 0.0 known, others blank
    assert item["label_mask"].tolist() == [False, False, True] and item["label"][2] == 0


def test_chexpert_to_nih_vocabulary(chexpert_root):
    ds = build_dataset("chexpert", "test", root=chexpert_root)
    vocab = LabelVocabulary(tuple(NIH14_LABELS))
    item = vocab.wrap(ds)[0]
    assert item["label"].shape == (14,)
    have = {NIH14_LABELS[k] for k in torch.nonzero(item["label_mask"]).flatten().tolist()}
    assert have == {"Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Effusion"}
    assert item["label"][NIH14_LABELS.index("Effusion")] == 1  # "Pleural Effusion" → "Effusion"


def test_uncertainty_helpers():
    raw = np.array([[1, 0, -1, np.nan]], float)
    y, m = apply_uncertainty(raw, ["ones", "zeros", "ignore", "ones"])
    assert y.tolist() == [[1, 0, 0, 0]] and m.tolist() == [[True, True, False, True]]
    assert resolve_policies(["Edema", "Fracture"], "mae") == ["ones", "ignore"]
    assert resolve_policies(["Edema"], {"Edema": "zeros"}) == ["zeros"]
    with pytest.raises(ValueError, match="policy"):
        resolve_policies(["Edema"], "maybe")
    with pytest.raises(ValueError, match="not in"):
        resolve_policies(["Edema"], {"Hernia": "ones"})
