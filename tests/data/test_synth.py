import csv
import hashlib
import json

import numpy as np
import pytest

from medvit.data import build_dataset
from medvit.data.phantom_datasets import PhantomDataset
from medvit.data.synth import decode_masks, encode_masks, write_synth


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind,fmt,kw", [("cxr", "dicom", {"jpeg2000": True}), ("cxr", "png", {}),
                                         ("retina", "dicom", {}), ("retina", "nifti", {})])
def test_same_seed_byte_identical(tmp_path, kind, fmt, kw):
    a = write_synth(kind, 6, tmp_path / "a", fmt=fmt, seed=5, image_size=64, **kw)
    write_synth(kind, 6, tmp_path / "b", fmt=fmt, seed=5, image_size=64, **kw)
    write_synth(kind, 6, tmp_path / "c", fmt=fmt, seed=6, image_size=64, **kw)
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert da == db and len(da) == 6 * 3 + 6  # images, masks, reports + csv, jsonl, manifest, 3 splits
    assert da["labels.csv"] != dc["labels.csv"]
    assert sum(a["splits"].values()) == 6


def test_folder_splits_patient_disjoint_and_match_memory(tmp_path):
    write_synth("cxr", 100, tmp_path, fmt="dicom", seed=3, image_size=48, masks=True)
    with open(tmp_path / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    by_split = {s: {r["patient_id"] for r in rows if r["split"] == s} for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])
    listed = {s: (tmp_path / "splits" / f"{s}.txt").read_text().split() for s in by_split}
    assert sum(len(v) for v in listed.values()) == 100 and all(listed.values())
    for split in ("train", "test"):
        folder = build_dataset("cxr_phantom", split, root=tmp_path)
        mem = PhantomDataset("cxr", split, n=100, seed=3, image_size=48)
        assert len(folder) == len(mem) == len(listed[split])
        a, b = folder[0], mem[0]
        assert a["id"] == b["id"] and a["patient_id"] == b["patient_id"]
        assert float((a["image"] - b["image"]).abs().max()) < 1e-3
        assert a["label"].tolist() == b["label"].tolist()
    row = rows[0]
    assert (tmp_path / row["report_file"]).read_text().startswith("FINDINGS:")
    from PIL import Image

    with Image.open(tmp_path / row["mask_file"]) as im:
        masks = decode_masks(np.asarray(im), row["mask_names"].split(";"))
    assert masks["lung_left"].any() and masks["heart"].any()


def test_retina_folder_png_resized(tmp_path):
    write_synth("retina", 10, tmp_path, fmt="png", seed=0, image_size=64)
    ds = build_dataset("retina_phantom", "all", root=tmp_path, image_size=32)
    item = ds[0]
    assert item["image"].shape == (1, 32, 32) and item["label"].ndim == 0
    assert ds.class_names[0] == "healthy"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["kind"] == "retina" and manifest["n"] == 10
    with pytest.raises(ValueError, match="holds 'retina'"):
        build_dataset("cxr_phantom", "all", root=tmp_path)


def test_mask_bitfield_roundtrip():
    rng = np.random.default_rng(0)
    masks = {f"m{k}": rng.random((5, 7)) < 0.3 for k in range(16)}
    bits, names = encode_masks(masks)
    back = decode_masks(bits, names)
    assert all(np.array_equal(back[n], masks[n]) for n in masks)
    with pytest.raises(ValueError, match="16"):
        encode_masks({f"m{k}": masks["m0"] for k in range(17)})


def test_cli_synth(tmp_path, capsys):
    from medvit.cli.main import main

    rc = main(["data", "synth", "--kind", "retina", "--n", "4", "--out", str(tmp_path), "--format", "dicom",
               "--seed", "2", "--size", "48", "--no-masks"])
    assert rc == 0 and "wrote 4 retina phantoms" in capsys.readouterr().out
    assert len(list((tmp_path / "images").glob("*.dcm"))) == 4 and not (tmp_path / "masks").exists()
    assert main(["data", "synth", "--kind", "retina", "--n", "2", "--out", str(tmp_path / "x"),
                 "--format", "png", "--monochrome1"]) == 2


def test_cli_synth_knobs_draw_what_the_demo_pipeline_draws(tmp_path, capsys):
    """`--demo-knobs` draws the demo pipeline's calibrated phantoms (the same pixels as its in-memory dataset);
    `--knob` adds to them; a bad knob is refused before anything is written."""
    from medvit.cli.demo_cmd import pipeline_knobs
    from medvit.cli.main import main

    out = tmp_path / "demo"
    assert main(["data", "synth", "--kind", "cxr", "--n", "5", "--out", str(out), "--format", "png", "--size", "48",
                 "--no-masks", "--demo-knobs", "--knob", "label_noise=0.2", "--knob", "label_noise_splits=train",
                 "--knob", "prevalence=0.4"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    knobs = pipeline_knobs()
    assert knobs and all(man["knobs"][k] == v for k, v in knobs.items())
    assert man["knobs"]["label_noise"] == 0.2 and man["label_noise_splits"] == ["train"]
    assert man["population"]["prevalence"] == 0.4
    folder = build_dataset("cxr_phantom", split="all", root=str(out), image_size=48)
    mem = PhantomDataset("cxr", "all", n=5, seed=0, image_size=48, prevalence=0.4, **knobs)
    for i in range(5):
        assert np.abs(folder[i]["image"].numpy() - mem[i]["image"].numpy()).max() <= 1 / 65535 + 1e-7
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main(["data", "synth", "--kind", "cxr", "--n", "2", "--out", str(bad), "--knob", "lesion_contrast=9"]) == 2
    assert main(["data", "synth", "--kind", "cxr", "--n", "2", "--out", str(bad), "--knob", "contrast=2"]) == 2
    err = capsys.readouterr().err
    assert "lesion_contrast=9.0 is outside" in err and "--knob: expected NAME=VALUE" in err and not bad.exists()
