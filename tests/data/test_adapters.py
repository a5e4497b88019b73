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


# --- resolution: the stored pixels reach the random resized crop (thorax-MAE crops the full-resolution image) ---

def _nih_big(tmp_path, size=(1024, 1024)):
    row = "00000001_000.png,Hernia,0,1,58,M,PA,1024,1024,0.14,0.14,\n"
    (tmp_path / "Data_Entry_2017.csv").write_text(NIH_HEADER + row)
    (tmp_path / "train_val_list.txt").write_text("")
    (tmp_path / "test_list.txt").write_text("00000001_000.png\n")
    # a horizontal ramp: column x has grey level x * 255 // (W - 1), so a crop's columns tell where it came from
    w, h = size
    ramp = np.tile((np.arange(w) * 255 // (w - 1)).astype(np.uint8), (h, 1))
    (tmp_path / "images").mkdir()
    Image.fromarray(ramp, mode="L").save(tmp_path / "images" / "00000001_000.png")
    return tmp_path


def test_nih_keeps_stored_resolution_and_crop_is_in_source_pixels(tmp_path):
    from medvit.data.augment import crop_params, random_resized_crop

    ds = build_dataset("nih_chestxray14", "test", root=_nih_big(tmp_path))
    img = ds[0]["image"]
    assert img.shape == (1, 1024, 1024)  # no pre-resize to 224
    # scale 0.08 of the source: a ~290 px region (sqrt(0.08) * 1024 = 289.6), not 0.08 of a 224 px square (63 px)
    g = torch.Generator().manual_seed(3)
    sides = []
    for _ in range(50):
        _, _, ch, cw = crop_params(1024, 1024, (0.08, 0.08), (1.0, 1.0), g)
        sides.append((ch, cw))
    assert all(abs(ch - 290) <= 1 and abs(cw - 290) <= 1 for ch, cw in sides)
    # end to end: the crop of the stored image spans ~290 source columns -> its grey levels span ~290/1023 of 255
    g = torch.Generator().manual_seed(4)
    out = random_resized_crop(img, (224, 224), g, scale=(0.08, 0.08), ratio=(1.0, 1.0))
    span = float(out[0, 112, -1] - out[0, 112, 0]) * 1023
    assert out.shape == (1, 224, 224) and 280 < span < 292
    # the old behaviour stays available, and differs: a 224 px square pre-resize
    assert build_dataset("nih_chestxray14", "test", root=tmp_path, image_size=224)[0]["image"].shape == (1, 224, 224)


def test_max_short_side_caps_with_aspect_kept(tmp_path, chexpert_root):
    ds = build_dataset("nih_chestxray14", "test", root=_nih_big(tmp_path), max_short_side=512)
    img = ds[0]["image"]
    assert img.shape == (1, 512, 512)
    assert abs(float(img[0, 256, 256]) - float(img[0, 256, :].mean())) < 0.01  # a ramp stays a ramp
    # CheXpert: not squashed to square; stored (H, W) = (24, 20) kept, cap keeps the 6:5 aspect
    chx = build_dataset("chexpert", "test", root=chexpert_root)
    assert chx[0]["image"].shape == (1, 24, 20)
    capped = build_dataset("chexpert", "test", root=chexpert_root, max_short_side=10)
    assert capped[0]["image"].shape == (1, 12, 10)
    assert build_dataset("chexpert", "test", root=chexpert_root, max_short_side=64)[0]["image"].shape == (1, 24, 20)
    with pytest.raises(ValueError, match="max_short_side"):
        build_dataset("chexpert", "test", root=chexpert_root, max_short_side=0)[0]


def test_native_resolution_chexpert_through_train_and_contract_eval(chexpert_root):
    """A non-square stored image goes through the train crop and the serving eval geometry to the model size."""
    from medvit.data.augment import build_contract_eval_transform, build_train_transform
    from medvit.models.contract import WeightContract

    item = build_dataset("chexpert", "test", root=chexpert_root)[0]
    tr = build_train_transform(16, (0.5,), (0.25,), (0.08, 1.0), randaug="rand-m6-mstd0.5-inc1")
    assert tr(item, torch.Generator().manual_seed(0))["image"].shape == (1, 16, 16)
    c = WeightContract(in_chans=1, input_size=(16, 16), mean=(0.5,), std=(0.25,), crop_mode="crop", crop_pct=0.875,
                       interpolation="bicubic")
    assert build_contract_eval_transform(c)(item)["image"].shape == (1, 16, 16)


def _released_line(name, labels):
    y = ["0"] * len(NIH14_LABELS)
    for lab in labels:
        y[NIH14_LABELS.index(lab)] = "1"
    return f"{name} {' '.join(y)}\n"


def test_nih_reads_thorax_mae_released_split_files(nih_root, tmp_path):
    """split_dir = thorax-MAE's data_splits/chestxray: the splits are exactly its lists, labels cross-checked."""
    sd = tmp_path / "splits"
    sd.mkdir()
    # patient 1's two images on different sides of train/val: a split no patient hash would produce
    (sd / "train_official.txt").write_text(_released_line("00000001_000.png", ["Cardiomegaly"])
                                           + _released_line("00000002_000.png", []))
    (sd / "val_official.txt").write_text(_released_line("00000001_001.png", ["Cardiomegaly", "Emphysema"])
                                         + _released_line("00000003_000.png", ["Effusion", "Infiltration", "Mass"]))
    (sd / "test_official.txt").write_text(_released_line("00000004_000.png", ["Hernia"]))
    ids = {s: [build_dataset("nih_chestxray14", s, root=nih_root, split_dir=sd)[i]["id"]
               for i in range(len(build_dataset("nih_chestxray14", s, root=nih_root, split_dir=sd)))]
           for s in ("train", "val", "test", "trainval")}
    assert ids["train"] == ["00000001_000.png", "00000002_000.png"]
    assert ids["val"] == ["00000001_001.png", "00000003_000.png"]
    assert ids["test"] == ["00000004_000.png"] and len(ids["trainval"]) == 4
    # a label disagreeing with Data_Entry_2017.csv, a malformed line, an unknown image, a missing file: named errors
    (sd / "test_official.txt").write_text(_released_line("00000004_000.png", ["Mass"]))
    with pytest.raises(ValueError, match="00000004_000.png.*disagree"):
        build_dataset("nih_chestxray14", "test", root=nih_root, split_dir=sd)
    (sd / "test_official.txt").write_text("00000004_000.png 0 1\n")
    with pytest.raises(ValueError, match="test_official.txt:1"):
        build_dataset("nih_chestxray14", "test", root=nih_root, split_dir=sd)
    (sd / "test_official.txt").write_text(_released_line("99999999_000.png", []))
    with pytest.raises(ValueError, match="99999999_000.png"):
        build_dataset("nih_chestxray14", "test", root=nih_root, split_dir=sd)
    (sd / "val_official.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val_official.txt"):
        build_dataset("nih_chestxray14", "val", root=nih_root, split_dir=sd)
