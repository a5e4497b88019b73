"""DICOM outputs: TID 1500 SR per study and heatmap Secondary Captures validate with dciodvfy and read back."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from medvit.infer import InferConfig, run_inference
from medvit.io.sr import read_findings
from tests.infer.helpers import LABELS, make_model, make_studies

DCIODVFY = shutil.which("dciodvfy") or ("/usr/bin/dciodvfy" if Path("/usr/bin/dciodvfy").exists() else None)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr")
    model = make_model(root / "model")
    images = make_studies(root / "in", n_studies=2, per_study=3)
    out = root / "out"
    res = run_inference(InferConfig(str(model), str(root / "in"), str(out), batch_size=4, workers=0, sr=True,
                                    heatmaps=True, progress=False))
    assert res.exit_code == 0
    return out, images


def dciodvfy_errors(path: Path) -> list[str]:
    r = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Error")]


@pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools dciodvfy not installed (make sysdeps)")
def test_dciodvfy_no_errors(outputs):
    out, _ = outputs
    files = sorted((out / "sr").glob("*.dcm")) + sorted((out / "heatmaps").rglob("*.dcm"))
    assert len(files) == 2 + 6
    for f in files:
        assert dciodvfy_errors(f) == [], f


def test_sr_reads_back_with_findings_and_references(outputs):
    import highdicom as hd

    out, images = outputs
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    srcs = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p, stop_before_pixels=True) for p in images}
    for sr_file in sorted((out / "sr").glob("*.dcm")):
        ds = pydicom.dcmread(sr_file)
        sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
        study_rows = [r for r in rows if r["study_instance_uid"] == ds.StudyInstanceUID]
        assert len(study_rows) == 3
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
        assert ds.SeriesInstanceUID not in {r["series_instance_uid"] for r in study_rows}
        assert ds.SOPInstanceUID not in srcs
        assert ds.PatientID == srcs[study_rows[0]["sop_instance_uid"]].PatientID
        assert "research use only" in ds.SeriesDescription
        assert sr.content is not None
        evidence = {str(i.ReferencedSOPInstanceUID) for s in ds.CurrentRequestedProcedureEvidenceSequence
                    for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}
        assert evidence == {r["sop_instance_uid"] for r in study_rows}
        found = read_findings(sr_file)
        assert len(found) == 3 * len(LABELS)
        for r in study_rows:
            mine = {g["label"]: g for g in found if g["sop_instance_uid"] == r["sop_instance_uid"]}
            assert set(mine) == {"Cardiomegaly", "Pleural effusion", "phantom_nodule"}
            assert mine["Cardiomegaly"]["code"] == ("287272002", "SCT")
            assert mine["phantom_nodule"]["code"][1] == "99MEDVIT"
            positives = set(r["positive_findings"].split(";")) - {""}
            for k in LABELS:
                assert abs(mine[k]["probability"] - float(r[f"p_{k}"])) < 1e-5
                assert mine[k]["present"] == (k in positives)


def test_secondary_capture_references_source(outputs):
    out, images = outputs
    src = pydicom.dcmread(images[0])
    sc_file = next((out / "heatmaps").rglob(f"{src.SOPInstanceUID}.dcm"))
    sc = pydicom.dcmread(sc_file)
    assert sc.StudyInstanceUID == src.StudyInstanceUID and sc.SOPInstanceUID != src.SOPInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert list(sc.ImageType) == ["DERIVED", "SECONDARY"] and sc.BurnedInAnnotation == "YES"
    assert sc.pixel_array.shape == (src.Rows, src.Columns, 3)  # overlay at source resolution
    assert "research use only" in sc.ImageComments
    png = sc_file.with_suffix(".png")
    from PIL import Image

    im = Image.open(png)
    assert im.size == (src.Columns, src.Rows)
    assert "research use only" in im.text["Description"] and "sha256" in im.text["Software"]
