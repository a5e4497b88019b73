"""`medvit infer --source PACS --send-to PACS` against a real Orthanc: one valid SR per study, back in the study."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from medvit.cli.main import main
from tests.infer.helpers import make_studies
from tests.pacs.orthanc import refused_port

DCIODVFY = shutil.which("dciodvfy")


def _srs(orthanc) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(io.BytesIO(orthanc.instance_file(t["_id"])))
            for t in orthanc.instance_tags() if t.get("Modality") == "SR"]


def _evidence(sr: pydicom.Dataset) -> set[str]:
    return {str(i.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
            for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}


def test_infer_from_orthanc_back_to_orthanc(orthanc, tiny_model, tmp_path, capsys):
    images = make_studies(tmp_path / "src", n_studies=2, per_study=2)
    orthanc.upload(images)
    by_study: dict[str, set[str]] = {}
    for p in images:
        ds = pydicom.dcmread(p)
        by_study.setdefault(str(ds.StudyInstanceUID), set()).add(str(ds.SOPInstanceUID))
    out = tmp_path / "out"
    argv = ["infer", "-m", str(tiny_model), "--source", orthanc.dicomweb("Modality=DX"),
            "--send-to", orthanc.dicomweb(), "-o", str(out), "--workers", "0", "--quiet"]
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "4 instances retrieved" in summary and "2 new" in summary
    srs = _srs(orthanc)
    assert len(srs) == 2  # one per study
    for sr in srs:
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
        assert _evidence(sr) == by_study[str(sr.StudyInstanceUID)]  # the right instances, in the same study
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["sop_instance_uid"] for r in rows} == set().union(*by_study.values())
    run = json.loads((out / "run.json").read_text())
    assert run["pacs"]["retrieved"] == 4 and run["pacs"]["sent"] == 2 and run["exit_code"] == 0
    if DCIODVFY:  # the SR as stored in (and read back from) Orthanc validates
        for k, sr in enumerate(srs):
            f = tmp_path / f"sr{k}.dcm"
            sr.save_as(f)
            r = subprocess.run([DCIODVFY, str(f)], capture_output=True, text=True, timeout=60)
            errors = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Error")]
            assert errors == [], errors
    # a second run resumes: nothing retrieved, nothing sent again, still one SR per study
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "0 instances retrieved, 4 already in the spool" in summary and "0 new, 2 sent before" in summary
    assert len(_srs(orthanc)) == 2


@pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools dciodvfy not installed (make sysdeps)")
def test_dciodvfy_is_present_for_sr_validation():
    assert Path(DCIODVFY).exists()


def test_pacs_down_exit_code_and_message(tiny_model, tmp_path, capsys):
    with refused_port() as port:
        rc = main(["infer", "-m", str(tiny_model), "--source", f"dicomweb://127.0.0.1:{port}/dicom-web",
                   "-o", str(tmp_path / "out"), "--workers", "0", "--quiet"])
    assert rc == 5
    err = capsys.readouterr().err
    assert f"DICOMweb http://127.0.0.1:{port}/dicom-web: QIDO-RS search for studies failed: cannot connect" in err


def test_send_failure_is_reported_per_instance(orthanc, tiny_model, tmp_path, capsys):
    make_studies(tmp_path / "in", n_studies=1, per_study=1)
    with refused_port() as port:
        rc = main(["infer", "-m", str(tiny_model), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                   "--send-to", f"dicomweb://127.0.0.1:{port}/dicom-web", "--workers", "0", "--quiet"])
    assert rc == 3
    assert "1 FAILED (send_errors.csv)" in capsys.readouterr().out
    with open(tmp_path / "out" / "send_errors.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["step"] == "STOW-RS" and "cannot connect" in row["reason"] and row["sop_instance_uid"]
    # the PACS is back (same output, another address is fine): the SR goes out, the error file disappears
    rc = main(["infer", "-m", str(tiny_model), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
               "--send-to", orthanc.dicomweb(), "--workers", "0", "--quiet"])
    assert rc == 0 and not (tmp_path / "out" / "send_errors.csv").exists()
    assert len(_srs(orthanc)) == 1


def test_usage_errors(tiny_model, tmp_path, capsys):
    assert main(["infer", "-m", str(tiny_model), "-i", str(tmp_path), "--source", "dicomweb://h:1/x",
                 "-o", str(tmp_path / "o")]) == 2
    assert "either -i/--input or --source" in capsys.readouterr().err
    assert main(["infer", "-m", str(tiny_model), "--source", "dicomweb://h:1/x?Bogus=1", "-o",
                 str(tmp_path / "o")]) == 2
    assert "unknown query key 'Bogus'" in capsys.readouterr().err
    (tmp_path / "in").mkdir()
    assert main(["infer", "-m", str(tiny_model), "-i", str(tmp_path / "in"), "--send-to", "dicomweb://h:1/x",
                 "--deidentify", "-o", str(tmp_path / "o")]) == 2
    assert "--deidentify cannot be combined with --send-to" in capsys.readouterr().err


def test_infer_over_dimse(orthanc, tiny_model, tmp_path, capsys):
    images = make_studies(tmp_path / "src", n_studies=1, per_study=2)
    orthanc.upload(images)
    out = tmp_path / "out"
    assert main(["infer", "-m", str(tiny_model), "--source", orthanc.dimse("Modality=DX"),
                 "--send-to", orthanc.dimse(), "-o", str(out), "--workers", "0", "--quiet", "--heatmaps"]) == 0
    assert "2 instances retrieved" in capsys.readouterr().out
    (sr,) = _srs(orthanc)
    sops = {str(pydicom.dcmread(p).SOPInstanceUID) for p in images}
    assert _evidence(sr) == sops
    # the heatmap Secondary Captures went too, one per image, in the same study, referencing their source
    scs = [pydicom.dcmread(io.BytesIO(orthanc.instance_file(t["_id"])), stop_before_pixels=True)
           for t in orthanc.instance_tags() if t.get("SOPClassUID", "").startswith("1.2.840.10008.5.1.4.1.1.7")]
    assert len(scs) == 2 and {str(d.StudyInstanceUID) for d in scs} == {str(sr.StudyInstanceUID)}
    assert {str(d.SourceImageSequence[0].ReferencedSOPInstanceUID) for d in scs} == sops
