"""Segmentation kind + contract, DICOM SEG written by `medvit infer` (dciodvfy, highdicom read-back), areas."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.infer.helpers import make_studies, write_dx
from tests.reading.helpers import SEG_LABELS, make_seg_model


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines dciodvfy (dicom3tools) reports for ``path`` (it exits 0 either way)."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (dicom3tools, scripts/install_sysdeps.sh) not installed")
    r = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Error")]


def test_contract_round_trip_and_errors():
    from medvit.models import WeightContract
    from medvit.models.segmentation import SegmentationContract, phantom_segment_labels

    seg = SegmentationContract(phantom_segment_labels(["heart", "pneumothorax"]), seg_type="FRACTIONAL")
    c = WeightContract(segmentation=seg.to_dict())
    assert c.label_names == ["heart", "pneumothorax"] and c.thresholds == [0.5, 0.5]
    back = WeightContract.from_dict(json.loads(json.dumps(c.to_dict()))).segmentation_contract()
    assert back == seg and back.labels[0].type == ("80891009", "SCT", "Heart")
    bad = seg.to_dict()
    bad["labels"][1]["color"] = [300, 0, 0]
    with pytest.raises(ValueError, match=r"config.json.*labels\[1\].*'pneumothorax'.*color"):
        WeightContract.from_dict({"segmentation": bad}, source="config.json")
    with pytest.raises(ValueError, match="label_names .* differ"):
        WeightContract(label_names=["a", "b"], segmentation=seg.to_dict())
    with pytest.raises(ValueError, match="seg_type"):
        SegmentationContract(seg.labels, seg_type="LABELMAP")
    with pytest.raises(KeyError, match="no coded concept"):
        phantom_segment_labels(["spleen_xyz"])


def test_registered_kind_builds_saves_and_loads(tmp_path):
    import torch

    from medvit.models import load_model
    from medvit.models.segmentation import is_segmentation_model
    from medvit.registry import list_names

    assert "vit_linear_seg" in list_names("segmentation")
    ck = make_seg_model(tmp_path / "m")
    m = load_model(ck)
    assert is_segmentation_model(m) and m.num_classes == 3
    x = torch.randn(2, 1, 32, 32)
    assert m(x).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        m(torch.randn(1, 1, 30, 32))


@pytest.mark.external  # dciodvfy (dicom3tools)
def test_seg_round_trip_binary_and_fractional(tmp_path):
    """build_segmentation -> file -> read_segmentation gives the same masks (fractional within 1/255)."""
    import pydicom

    from medvit.io.seg import read_segmentation, write_segmentation
    from medvit.models.segmentation import phantom_segment_labels

    src = write_dx(tmp_path / "src.dcm", "1.2.3.4", "1.2.3.4.5", rows=40, cols=48)
    hdr = pydicom.dcmread(src, stop_before_pixels=True)
    rng = np.random.default_rng(0)
    probs = rng.random((3, 40, 48)).astype(np.float32)
    labels = phantom_segment_labels(SEG_LABELS)
    for seg_type, masks in (("BINARY", probs > 0.6), ("FRACTIONAL", probs)):
        f = write_segmentation(tmp_path / f"{seg_type}.dcm", hdr, masks, labels, seg_type, "m", "1", "ab" * 32)
        assert dciodvfy_errors(f) == []
        r = read_segmentation(f)
        assert r.seg_type == seg_type and [s.label for s in r.segments] == SEG_LABELS
        assert r.segments[2].color == pytest.approx((230, 80, 80), abs=2)
        got = r.masks[str(hdr.SOPInstanceUID)]
        if seg_type == "BINARY":
            np.testing.assert_array_equal(got.astype(bool), masks)
        else:
            np.testing.assert_allclose(got, probs, atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize("seg_type", ["BINARY", "FRACTIONAL"])
@pytest.mark.external  # dciodvfy (dicom3tools)
def test_infer_writes_valid_seg_and_areas(tmp_path, seg_type):
    from medvit.infer import InferConfig, run_inference
    from medvit.io.seg import read_segmentation

    model = make_seg_model(tmp_path / "model", seg_type=seg_type)
    make_studies(tmp_path / "in", n_studies=2, per_study=2)
    res = run_inference(InferConfig(model=str(model), input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                                    workers=0, progress=False, batch_size=3))
    assert res.exit_code == 0 and res.counts["seg_written"] == 4 and res.counts["seg_failed"] == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert len(rows) == 4
    for row in rows:
        seg_file = tmp_path / "out" / row["seg_dcm"]
        assert dciodvfy_errors(seg_file) == []
        r = read_segmentation(seg_file)
        masks = r.masks[row["sop_instance_uid"]]
        thr = np.array([0.5, 0.45, 0.55], np.float32)[:, None, None]
        binary = masks.astype(bool) if seg_type == "BINARY" else masks >= thr - 0.5 / 255
        assert masks.shape[1:] == (40, 48 + (8 if row["file"].endswith("img1.dcm") else 0))
        for k, lab in enumerate(SEG_LABELS):
            n = int(row[f"pixels_{lab}"])
            assert abs(int(binary[k].sum()) - n) <= (0 if seg_type == "BINARY" else masks[k].size // 50)
            # write_dx has Imager Pixel Spacing 0.2 mm only: areas are at the detector, and say so
            assert float(row[f"area_mm2_{lab}"]) == pytest.approx(n * 0.04, abs=0.01)
        assert row["spacing_source"] == "ImagerPixelSpacing"
        p = {lab: float(row[f"p_{lab}"]) for lab in SEG_LABELS}
        assert all(0.0 <= v <= 1.0 for v in p.values())
        # presence = highest pixel probability: a label is positive iff its mask is not empty
        assert set(row["positive_findings"].split(";")) - {""} == {lab for lab in SEG_LABELS
                                                                  if int(row[f"pixels_{lab}"]) > 0}


def test_infer_segmentation_refuses_heatmaps(tmp_path):
    from medvit.infer import InferConfig, run_inference

    model = make_seg_model(tmp_path / "model")
    make_studies(tmp_path / "in", n_studies=1, per_study=1)
    with pytest.raises(ValueError, match="segmentation model"):
        run_inference(InferConfig(model=str(model), input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                                  workers=0, progress=False, heatmaps=True))


def test_pixel_spacing_sources_and_caveat():
    from medvit.io.spacing import pixel_spacing

    s = pixel_spacing({"ImagerPixelSpacing": [0.2, 0.25], "Modality": "DX"})
    assert (s.row_mm, s.col_mm, s.at) == (0.2, 0.25, "detector") and "C.8.11.7" in s.caveat
    s = pixel_spacing({"ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 1.25})
    assert s.row_mm == pytest.approx(0.16) and s.at == "patient"
    s = pixel_spacing({"PixelSpacing": [0.7, 0.7], "ImagerPixelSpacing": [0.8, 0.8],
                       "PixelSpacingCalibrationType": "GEOMETRY"})
    assert s.source == "PixelSpacing" and s.at == "calibrated plane"
    assert pixel_spacing({"PixelSpacing": [0.5, 0.5], "Modality": "CT"}).at == "patient"
    assert pixel_spacing({"PixelSpacing": [0, 0.5]}) is None
    assert pixel_spacing({}) is None


def test_finetune_segmentation_task_learns_and_saves(tmp_path):
    from medvit.models import load_model
    from medvit.tasks import run_task

    out = run_task(None, data={"task": "finetune_segmentation", "output_dir": str(tmp_path / "run"),
                               "dataset_args": {"n": 60, "seed": 0, "image_size": 32}, "image_size": 32,
                               "backbone_args": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
                               "epochs": 3, "batch_size": 16, "lr": 3e-3, "labels": ["lung_right", "heart"]})
    m = load_model(out["model"])
    assert m.contract.segmentation_contract().names == ["lung_right", "heart"]
    assert set(out["test_dice"]) == {"lung_right", "heart"}
    # both labels are present in every phantom: an empty prediction scores 0; training lowers the loss
    assert out["mean_val_dice"] > 0.1
    assert out["history"][-1]["loss"] < out["history"][0]["loss"]


def test_committed_model_segments_dicom_phantoms(tmp_path):
    """The committed demo segmentation model, served by `medvit infer` on phantoms written as DICOM (128 px, other
    seed than training), reproduces the generator's masks: Dice >= 0.85 per label (test split: ~0.96 at 64 px)."""
    import hashlib

    from PIL import Image

    from medvit.data.synth import decode_masks, write_synth
    from medvit.infer import InferConfig, run_inference
    from medvit.io.seg import read_segmentation

    root = Path(__file__).resolve().parents[2] / "pipelines" / "segmentation"
    stamp = (root / "model" / "PIPELINE_SHA256").read_text().strip()
    assert stamp == hashlib.sha256((root / "cxr_phantom_seg.yaml").read_bytes()).hexdigest(), \
        "pipelines/segmentation/model was trained from another version of cxr_phantom_seg.yaml: retrain it"
    write_synth("cxr", 4, tmp_path / "synth", fmt="dicom", seed=11, image_size=128)
    res = run_inference(InferConfig(model=str(root / "model"), input=str(tmp_path / "synth" / "images"),
                                    output=str(tmp_path / "out"), workers=0, progress=False))
    assert res.exit_code == 0 and res.counts["seg_written"] == 4
    labels = {r["file"]: r for r in csv.DictReader(open(tmp_path / "synth" / "labels.csv"))}
    for row in csv.DictReader(open(tmp_path / "out" / "predictions.csv")):
        truth_row = next(v for k, v in labels.items() if Path(k).stem == Path(row["file"]).stem)
        truth = decode_masks(np.asarray(Image.open(tmp_path / "synth" / truth_row["mask_file"])),
                             truth_row["mask_names"].split(";"))
        got = read_segmentation(tmp_path / "out" / row["seg_dcm"]).masks[row["sop_instance_uid"]] > 0.5
        for k, lab in enumerate(SEG_LABELS):
            t = truth[lab]
            dice = 2 * (got[k] & t).sum() / (got[k].sum() + t.sum())
            assert dice >= 0.85, (row["file"], lab, dice)


@pytest.mark.external  # dciodvfy (dicom3tools)
def test_series_volumes_for_a_ct_series(tmp_path):
    """A 6-slice CT series (0.7 mm pixels, 2 mm slices) and a DX image: segment_volumes.csv has one row, for the
    CT series, whose volumes are the sum of its slices' pixel counts x 0.7 x 0.7 x 2 mm³; projection images none."""
    from medvit.infer import InferConfig, run_inference
    from medvit.io.writers import write_ct_series

    model = make_seg_model(tmp_path / "model")
    write_ct_series(tmp_path / "in" / "ct", 6, {"PatientID": "P", "StudyDate": "20240105"}, size=32,
                    spacing_mm=0.7, slice_mm=2.0)
    write_dx(tmp_path / "in" / "dx.dcm", "1.2.3", "1.2.3.1")
    res = run_inference(InferConfig(model=str(model), input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                                    workers=0, progress=False, any_modality=True))
    assert res.exit_code == 0 and res.counts["seg_written"] == 7
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    vols = list(csv.DictReader(open(tmp_path / "out" / "segment_volumes.csv")))
    assert len(vols) == 1 and vols[0]["modality"] == "CT" and vols[0]["images"] == "6"
    ct_seg = next(r["seg_dcm"] for r in rows if r["modality"] == "CT")
    assert dciodvfy_errors(tmp_path / "out" / ct_seg) == []  # CT SEG: plane geometry from the source
    assert float(vols[0]["slice_mm"]) == 2.0
    for lab in SEG_LABELS:
        px = sum(int(r[f"pixels_{lab}"]) for r in rows if r["modality"] == "CT")
        assert float(vols[0][f"volume_mm3_{lab}"]) == pytest.approx(px * 0.7 * 0.7 * 2.0, abs=0.5)


@pytest.mark.external  # dciodvfy (dicom3tools)
def test_deidentified_run_writes_deidentified_seg(tmp_path, monkeypatch):
    import pydicom

    from medvit.infer import InferConfig, run_inference

    monkeypatch.setenv("MEDVIT_DEID_KEY", "test-key-for-seg")
    model = make_seg_model(tmp_path / "model")
    make_studies(tmp_path / "in", n_studies=1, per_study=1)
    src = next((tmp_path / "in").rglob("*.dcm"))
    res = run_inference(InferConfig(model=str(model), input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                                    workers=0, progress=False, deidentify=True))
    assert res.exit_code == 0 and res.counts["seg_written"] == 1
    seg_file = next((tmp_path / "out" / "seg").rglob("*.dcm"))
    seg, original = pydicom.dcmread(seg_file), pydicom.dcmread(src)
    assert seg.PatientIdentityRemoved == "YES" and str(seg.PatientName) != str(original.PatientName)
    assert seg.StudyInstanceUID != original.StudyInstanceUID  # keyed UID replacement, as in the tables
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    row = next(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert ref == row["sop_instance_uid"] != original.SOPInstanceUID
    assert dciodvfy_errors(seg_file) == []


def test_seg_of_a_source_with_an_invalid_study_uid_is_refused_clearly_and_counted(tmp_path):
    """breaker minor: a Study UID '../../..' leaked highdicom/sqlite internals (IntegrityError) as the SEG's reason
    and the summary's exit-code line left the failed SEG out."""
    from pydicom.uid import generate_uid

    from medvit.cli.infer_cmd import format_summary
    from medvit.infer import InferConfig, run_inference

    model = make_seg_model(tmp_path / "model")
    write_dx(tmp_path / "in" / "a.dcm", generate_uid(), generate_uid())
    write_dx(tmp_path / "in" / "b.dcm", "../../..", generate_uid(), seed=1)
    res = run_inference(InferConfig(model=str(model), input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                                    workers=0, progress=False))
    assert res.exit_code == 3 and res.counts["seg_written"] == 1 and res.counts["seg_failed"] == 1
    recs = [json.loads(x) for x in open(tmp_path / "out" / "predictions.jsonl")]
    err = next(r["seg_error"] for r in recs if r.get("seg_error"))
    assert "invalid StudyInstanceUID (not a UID per PS3.5 9.1)" in err and "IntegrityError" not in err
    assert "1 SEG(s)" in format_summary(res)


def test_failed_seg_is_listed_in_seg_errors_csv_like_a_failed_sr(tmp_path):
    """F-SEGUID: a failed SEG was only a seg_error field in predictions.jsonl; failed SRs are rows of
    sr_errors.csv. Now each SEG not written is a row of seg_errors.csv (file, stage, reason) named in the summary,
    and a rerun where every SEG is written empties it."""
    from pydicom.uid import generate_uid

    from medvit.cli.infer_cmd import format_summary
    from medvit.infer import InferConfig, run_inference

    model = make_seg_model(tmp_path / "model")
    write_dx(tmp_path / "in" / "a.dcm", generate_uid(), generate_uid())
    write_dx(tmp_path / "in" / "b.dcm", "../../..", generate_uid(), seed=1)
    cfg = dict(model=str(model), input=str(tmp_path / "in"), output=str(tmp_path / "out"), workers=0,
               progress=False)
    res = run_inference(InferConfig(**cfg))
    assert res.exit_code == 3 and res.counts["seg_failed"] == 1
    rows = list(csv.DictReader(open(tmp_path / "out" / "seg_errors.csv")))
    assert [(r["file"], r["stage"]) for r in rows] == [("b.dcm", "seg")]
    assert "invalid StudyInstanceUID" in rows[0]["reason"] and "IntegrityError" not in rows[0]["reason"]
    assert "1 failed (seg_errors.csv)" in format_summary(res)
    (tmp_path / "in" / "b.dcm").unlink()
    res = run_inference(InferConfig(**{**cfg, "output": str(tmp_path / "out2")}))
    assert res.exit_code == 0 and not (tmp_path / "out2" / "seg_errors.csv").exists()
