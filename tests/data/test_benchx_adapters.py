"""BenchX dataset adapters read tiny fixtures written in each dataset's native layout: labels, masks from boxes /
WBF / RLE / ellipses / polygons / XML exactly as hand-computed, splits drawn and saved or read, and errors that name
the file and row."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvit.data import build_dataset
from medvit.data.benchx import VINDR_LABELS
from medvit.registry import REGISTRY
from tests.infer.helpers import write_dx

H, W = 20, 24


def _png(path: Path, h: int = H, w: int = W, value: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    arr = np.full((h, w), value, np.uint8) if value is not None else rng.integers(0, 255, (h, w), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _dcm(path: Path, h: int = H, w: int = W) -> Path:
    return write_dx(path, "1.2.3", "1.2.3.4", rows=h, cols=w, seed=len(path.name))


def _box(x1, y1, x2, y2, shape=(H, W)):
    m = np.zeros(shape, bool)
    m[y1 : y2 + 1, x1 : x2 + 1] = True
    return m


def _all_splits(name, root, **kw):
    return {s: build_dataset(name, s, root=root, **kw) for s in ("train_1", "train_10", "train", "val", "test")}


def test_all_registered_with_benchx_meta():
    for name in ("vindr_cxr", "rsna_pneumonia", "siim_pneumothorax", "covidx_cxr4", "object_cxr", "tbx11k",
                 "iu_xray", "mimic_5x200", "chexpert_5x200"):
        meta = REGISTRY.entry("dataset", name).meta
        assert meta["benchx"] and meta["mean"] == (0.4978,) and meta["benchx_tasks"]


# ------------------------------------------------------------------------------------------------------ VinDr
def _vindr(root: Path) -> None:
    cols = ["image_id", "rad_id"] + [c for _, c in VINDR_LABELS]
    ann = root / "annotations"
    ann.mkdir(parents=True)

    def row(iid, rad, pos):
        return ",".join([iid, rad] + ["1" if c in pos else "0" for _, c in VINDR_LABELS])

    (ann / "image_labels_train.csv").write_text("\n".join([
        ",".join(cols), row("a", "R1", {"Cardiomegaly"}), row("a", "R2", {"Pleural effusion"}),
        row("b", "R1", set()), row("b", "R2", set()), row("c", "R1", {"Other lesion"}), row("d", "R3", set()),
    ]) + "\n")
    (ann / "image_labels_test.csv").write_text("\n".join([",".join(cols), row("t1", "R8", {"Pneumothorax"})]) + "\n")
    box_cols = "image_id,rad_id,class_name,x_min,y_min,x_max,y_max"
    (ann / "annotations_train.csv").write_text("\n".join([
        box_cols, "a,R1,Cardiomegaly,2,2,10,10", "a,R2,Cardiomegaly,4,2,12,10", "a,R2,Pleural effusion,18,14,21,17",
        "b,R1,No finding,,,,", "c,R1,Other lesion,0,0,1,1",
    ]) + "\n")
    (ann / "annotations_test.csv").write_text(box_cols + "\nt1,R8,Pneumothorax,5,5,6,6\n")
    for iid in "abcd":
        _dcm(root / "train" / f"{iid}.dicom")
    _dcm(root / "test" / "t1.dicom")


def test_vindr_labels_wbf_masks_and_official_test(tmp_path):
    _vindr(tmp_path)
    sp = _all_splits("vindr_cxr", tmp_path, with_mask=True)
    assert [r.id for r in sp["test"].records] == ["t1"]  # the official test stays test
    allds = build_dataset("vindr_cxr", "all", root=tmp_path, with_mask=True)
    items = {allds.records[i].id: allds[i] for i in range(len(allds))}
    names = [n for n, _ in VINDR_LABELS]
    a = items["a"]
    assert a["label"][names.index("Cardiomegaly")] == 1 and a["label"][names.index("Effusion")] == 1
    assert a["label"].sum() == 2 and items["b"]["label"].sum() == 0 and items["c"]["label"][names.index("Lesion")]
    # Cardiomegaly boxes of R1 (2..10) and R2 (4..12) fuse to their average 3..11; the effusion box is kept
    want = _box(3, 2, 11, 10) | _box(18, 14, 21, 17)
    np.testing.assert_array_equal(a["mask"][0].numpy().astype(bool), want)
    assert a["image"].shape == (1, H, W) and 0 <= float(a["image"].min()) and float(a["image"].max()) <= 1
    assert not items["b"]["mask"].any()
    assert (tmp_path / "benchx_splits" / "train.txt").is_file()


def test_vindr_errors_name_file_and_row(tmp_path):
    _vindr(tmp_path)
    f = tmp_path / "annotations" / "image_labels_train.csv"
    f.write_text(f.read_text() + "e,R1," + ",".join(["2"] * len(VINDR_LABELS)) + "\n")
    with pytest.raises(ValueError, match=r"image_labels_train\.csv:8: column 'Aortic enlargement' must be 0/1"):
        build_dataset("vindr_cxr", "all", root=tmp_path)
    (tmp_path / "annotations" / "image_labels_train.csv").unlink()
    with pytest.raises(FileNotFoundError, match="image_labels_train.csv not found"):
        build_dataset("vindr_cxr", "train", root=tmp_path)


# ------------------------------------------------------------------------------------------------------- RSNA
def test_rsna_boxes_and_binary_labels(tmp_path):
    (tmp_path / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\np1,2,3,4,5,1\np1,10,0,2,2,1\np2,,,,,0\np3,,,,,0\n")
    for p in ("p1", "p2", "p3"):
        _dcm(tmp_path / "stage_2_train_images" / f"{p}.dcm")
    ds = build_dataset("rsna_pneumonia", "all", root=tmp_path, with_mask=True)
    it = {ds.records[i].id: ds[i] for i in range(3)}
    assert int(it["p1"]["label"]) == 1 and int(it["p2"]["label"]) == 0
    np.testing.assert_array_equal(it["p1"]["mask"][0].numpy().astype(bool), _box(2, 3, 5, 7) | _box(10, 0, 11, 1))
    assert not it["p2"]["mask"].any()
    (tmp_path / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height,Target\np1,a,3,4,5,1\n")
    with pytest.raises(ValueError, match=r"stage_2_train_labels\.csv:2: column 'x' must be a number"):
        build_dataset("rsna_pneumonia", "all", root=tmp_path)
    # breaker F5b: a negative-width box failed every segmentation cell later without file:line
    for row, msg in (("p3,5,5,-50,1e30,1", r"csv:3: box width and height must be > 0, got -50 x 1e\+30"),
                     ("p3,5,5,inf,2,1", r"csv:3: column 'width' must be a finite number")):
        (tmp_path / "stage_2_train_labels.csv").write_text(f"patientId,x,y,width,height,Target\np1,2,3,4,5,1\n{row}\n")
        with pytest.raises(ValueError, match=r"stage_2_train_labels\." + msg):
            build_dataset("rsna_pneumonia", "all", root=tmp_path)


# ------------------------------------------------------------------------------------------------------- SIIM
def test_siim_rle_masks(tmp_path):
    (tmp_path / "train-rle.csv").write_text(
        "ImageId, EncodedPixels\n1.2.3,-1\n1.2.4, 21 3 17 2\n1.2.4, 100 1\n")
    _dcm(tmp_path / "dicom-images-train" / "s1" / "x" / "1.2.3.dcm")
    _dcm(tmp_path / "dicom-images-train" / "s2" / "y" / "1.2.4.dcm")
    ds = build_dataset("siim_pneumothorax", "all", root=tmp_path, with_mask=True)
    it = {ds.records[i].id: ds[i] for i in range(2)}
    assert int(it["1.2.3"]["label"]) == 0 and int(it["1.2.4"]["label"]) == 1
    want = np.zeros(W * H, bool)  # column-major over (W columns of H rows)
    want[21:24] = True
    want[24 + 17 : 24 + 17 + 2] = True
    want[100] = True
    np.testing.assert_array_equal(it["1.2.4"]["mask"][0].numpy().astype(bool), want.reshape(W, H).T)
    (tmp_path / "train-rle.csv").write_text("ImageId, EncodedPixels\n1.2.3,5 x\n")
    with pytest.raises(ValueError, match=r"train-rle\.csv:2: EncodedPixels must be"):
        build_dataset("siim_pneumothorax", "all", root=tmp_path)
    (tmp_path / "train-rle.csv").write_text("ImageId, EncodedPixels\n9.9.9,-1\n")
    with pytest.raises(FileNotFoundError, match=r"train-rle\.csv:2: no dicom-images-train/\*\*/9\.9\.9\.dcm"):
        build_dataset("siim_pneumothorax", "all", root=tmp_path)


# ----------------------------------------------------------------------------------------------------- COVIDx
def test_covidx_official_val_test_and_drawn_train_fractions(tmp_path):
    lines = {"train": [f"P{i} tr{i}.png {'positive' if i % 3 == 0 else 'negative'} bimcv" for i in range(40)],
             "val": ["V1 v1.png negative sirm", "V2 v2.png positive sirm"], "test": ["T1 t1.png positive ricord"]}
    for part, ls in lines.items():
        (tmp_path / f"{part}.txt").write_text("\n".join(ls) + "\n")
        for ln in ls:
            _png(tmp_path / part / ln.split()[1])
    sp = _all_splits("covidx_cxr4", tmp_path)
    assert [r.id for r in sp["val"].records] == ["v1.png", "v2.png"] and len(sp["test"]) == 1
    assert len(sp["train"]) == 40 and set(r.id for r in sp["train_1"].records) <= {r.id for r in sp["train"].records}
    assert int(sp["val"][1]["label"]) == 1 and sp["train"][0]["image"].shape == (1, H, W)
    (tmp_path / "val.txt").write_text("V1 v1.png maybe sirm\n")
    with pytest.raises(ValueError, match=r"val\.txt:1: expected '<patient id> <file> <positive\|negative>"):
        build_dataset("covidx_cxr4", "val", root=tmp_path, split_dir=tmp_path / "other")


# ------------------------------------------------------------------------------------------------- Object-CXR
def test_object_cxr_box_ellipse_polygon(tmp_path):
    (tmp_path / "train.csv").write_text(
        'image_name,annotation\n0.jpg,0 1 2 3 4;2 10 10 14 10 14 12 10 12\n1.jpg,\n2.jpg,1 2 2 12 8\n')
    (tmp_path / "dev.csv").write_text("image_name,annotation\n3.jpg,\n")
    for n in ("0.jpg", "1.jpg", "2.jpg"):
        _png(tmp_path / "train" / n)
    _png(tmp_path / "dev" / "3.jpg")
    ds = build_dataset("object_cxr", "all", root=tmp_path, with_mask=True)
    it = {ds.records[i].id: ds[i] for i in range(4)}
    np.testing.assert_array_equal(it["0.jpg"]["mask"][0].numpy().astype(bool), _box(1, 2, 3, 4) | _box(10, 10, 14, 12))
    e = it["2.jpg"]["mask"][0].numpy().astype(bool)
    assert e[5, 7] and not e[2, 2] and e.sum() < _box(2, 2, 12, 8).sum()  # ellipse inside its box
    assert [int(it[k]["label"]) for k in ("0.jpg", "1.jpg", "2.jpg", "3.jpg")] == [1, 0, 1, 0]
    (tmp_path / "train.csv").write_text("image_name,annotation\n0.jpg,2 1 1 2 2\n")
    with pytest.raises(ValueError, match=r"train\.csv:2: annotation '2 1 1 2 2'"):
        build_dataset("object_cxr", "all", root=tmp_path)


# ----------------------------------------------------------------------------------------------------- TBX11K
def test_tbx11k_xml_boxes(tmp_path):
    _png(tmp_path / "imgs" / "tb" / "tb0001.png")
    _png(tmp_path / "imgs" / "health" / "h0001.png")
    _png(tmp_path / "imgs" / "sick" / "s0001.png")
    xml = tmp_path / "annotations" / "xml" / "tb0001.xml"
    xml.parent.mkdir(parents=True)
    xml.write_text("<annotation><size><width>24</width><height>20</height></size>"
                   "<object><name>ActiveTuberculosis</name><bndbox><xmin>3</xmin><ymin>4</ymin><xmax>8</xmax>"
                   "<ymax>9</ymax></bndbox></object></annotation>")
    ds = build_dataset("tbx11k", "all", root=tmp_path, with_mask=True)
    it = {ds.records[i].id: ds[i] for i in range(3)}
    np.testing.assert_array_equal(it["tb/tb0001.png"]["mask"][0].numpy().astype(bool), _box(3, 4, 8, 9))
    assert int(it["tb/tb0001.png"]["label"]) == 1 and int(it["health/h0001.png"]["label"]) == 0
    xml.write_text("<annotation><object><bndbox><xmin>a</xmin></bndbox></object></annotation>")
    with pytest.raises(ValueError, match=r"tb0001\.xml: object 1 needs <bndbox>"):
        build_dataset("tbx11k", "all", root=tmp_path)
    xml.write_text("<annotation><object><bndbox><xmin>9</xmin><ymin>1</ymin><xmax>2</xmax><ymax>5</ymax></bndbox>"
                   "</object></annotation>")
    with pytest.raises(ValueError, match=r"tb0001\.xml: object 1: box .* xmax >= xmin"):
        build_dataset("tbx11k", "all", root=tmp_path)


# --------------------------------------------------------------------------------------------------- IU X-Ray
def test_iu_xray_r2gen_annotation(tmp_path):
    ann = {part: [{"id": f"CXR{part}{k}", "report": f"The heart is normal {k}.", "split": part,
                   "image_path": [f"CXR{part}{k}/0.png", f"CXR{part}{k}/1.png"]} for k in range(n)]
           for part, n in (("train", 6), ("val", 2), ("test", 2))}
    (tmp_path / "annotation.json").write_text(json.dumps(ann))
    for es in ann.values():
        for e in es:
            _png(tmp_path / "images" / e["image_path"][0], value=10)
            _png(tmp_path / "images" / e["image_path"][1], value=200)
    sp = _all_splits("iu_xray", tmp_path)
    assert [len(sp[k]) for k in ("train", "val", "test")] == [6, 2, 2] and len(sp["train_1"]) == 1
    it = sp["test"][0]
    assert it["report"] == "The heart is normal 0." and it["image"].mean() < it["image_lateral"].mean()
    ann["train"][0]["image_path"] = ["../../etc/passwd", "x.png"]
    (tmp_path / "annotation.json").write_text(json.dumps(ann))
    with pytest.raises(ValueError, match=r"annotation\.json: train\[0\]: image path '\.\./\.\./etc/passwd'"):
        build_dataset("iu_xray", "all", root=tmp_path)


# ------------------------------------------------------------------------------------------------------ 5x200
def test_5x200_csv(tmp_path):
    hdr = "Path,Atelectasis,Cardiomegaly,Consolidation,Edema,Pleural Effusion,Report\n"
    (tmp_path / "mimic_5x200.csv").write_text(hdr + "files/a.png,0,1,0,0,0,enlarged heart\n"
                                              "files/b.png,0,0,0,0,1,left effusion\n")
    _png(tmp_path / "files" / "a.png")
    _png(tmp_path / "files" / "b.png")
    ds = build_dataset("mimic_5x200", "test", root=tmp_path)
    assert [int(ds[i]["label"]) for i in range(2)] == [1, 4] and ds[1]["report"] == "left effusion"
    (tmp_path / "mimic_5x200.csv").write_text(hdr + "files/a.png,1,1,0,0,0,x\n")
    with pytest.raises(ValueError, match=r"mimic_5x200\.csv:2: exactly one of"):
        build_dataset("mimic_5x200", "test", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="chexpert_5x200.csv not found"):
        build_dataset("chexpert_5x200", "test", root=tmp_path)
    with pytest.raises(ValueError, match="only the 'test' split"):
        build_dataset("mimic_5x200", "train", root=tmp_path)


def test_image_names_that_lead_out_through_a_folder_link_are_refused(tmp_path):
    """breaker33 B3: benchx kept a lexical copy of ``own.inside``: a CSV name through a planted folder link
    (root/files/ext -> outside) read a file outside the dataset root. One rule now, with follow_links for mirrors
    that store images as links; a root reached through a link is fine."""
    outside, root = tmp_path / "outside", tmp_path / "ds"
    _png(outside / "secret.png")
    _png(root / "files" / "a.png")
    (root / "files" / "ext").symlink_to(outside, target_is_directory=True)
    hdr = "Path,Atelectasis,Cardiomegaly,Consolidation,Edema,Pleural Effusion\n"
    (root / "mimic_5x200.csv").write_text(hdr + "files/a.png,0,1,0,0,0\nfiles/ext/secret.png,1,0,0,0,0\n")
    with pytest.raises(ValueError, match=r"mimic_5x200\.csv:3: files/ext/secret\.png leads through a symbolic link "
                                         r"to .*secret\.png, outside .*follow_links=true"):
        build_dataset("mimic_5x200", "test", root=root)
    assert len(build_dataset("mimic_5x200", "test", root=root, follow_links=True)) == 2
    (tmp_path / "via").symlink_to(root, target_is_directory=True)
    (root / "mimic_5x200.csv").write_text(hdr + "files/a.png,0,1,0,0,0\n")
    assert len(build_dataset("mimic_5x200", "test", root=tmp_path / "via")) == 1
    # the BenchX base class (COVIDx here) follows the same rule
    _png(root / "train" / "t.png")
    (root / "train.txt").write_text("P1 t.png negative bimcv\n")
    (root / "val.txt").write_text("V1 ext/secret.png positive ricord\n")
    (root / "val").mkdir()
    (root / "val" / "ext").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match=r"val\.txt:1: ext/secret\.png leads through a symbolic link"):
        build_dataset("covidx_cxr4", "val", root=root, split_dir=tmp_path / "sp")
