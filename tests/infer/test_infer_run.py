"""End-to-end `medvit infer` on small generated studies: output schema, status rows, exit codes, options."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medvit.infer import EXIT_NOTHING_PREDICTED, EXIT_OK, EXIT_SOME_FAILED, InferConfig, run_inference
from medvit.infer.outputs import ERROR_COLUMNS, ID_COLUMNS, STATUS_COLUMNS, TAIL_COLUMNS, StateMismatchError
from tests.infer.helpers import LABELS, make_model, make_studies, write_dx


def read_csv(p: Path) -> list[dict[str, str]]:
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    model = make_model(root / "model")
    inp = root / "in"
    images = make_studies(inp, n_studies=2, per_study=2)
    (inp / "notes.txt").write_text("not an image")
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    shutil.copy(get_testdata_file("CT_small.dcm"), inp / "ct.dcm")  # not selected by the CR/DX contract
    bad = write_dx(inp / "broken" / "trunc.dcm", generate_uid(), generate_uid(), seed=9)
    bad.write_bytes(bad.read_bytes()[:-500])  # pixel data cut short
    return {"root": root, "model": model, "input": inp, "images": images}


@pytest.fixture(scope="module")
def run_out(material):
    out = material["root"] / "out"
    res = run_inference(InferConfig(str(material["model"]), str(material["input"]), str(out), batch_size=3,
                                    workers=0, progress=False))
    return res, out


def test_exit_code_and_counts(run_out):
    res, _ = run_out
    assert res.exit_code == EXIT_SOME_FAILED
    c = res.counts
    assert (c["predicted"], c["skipped"], c["error"], c["studies"]) == (4, 2, 1, 2)
    t = c["timing"]  # where the time went (issue 24): model, waiting for input, first batch
    assert t["predict_s"] > 0 and t["input_wait_s"] >= 0 and t["first_batch_s"] > 0
    assert t["images_per_s_after_first_batch"] is not None  # 4 images in batches of 3: a second batch exists


def test_every_file_has_one_status_row(run_out, material):
    _, out = run_out
    rows = read_csv(out / "status.csv")
    assert list(rows[0]) == STATUS_COLUMNS
    files = sorted(p.relative_to(material["input"]).as_posix() for p in material["input"].rglob("*") if p.is_file())
    assert [r["file"] for r in rows] == files
    by = {r["file"]: r for r in rows}
    assert by["notes.txt"]["status"] == "skipped" and by["notes.txt"]["reason"] == "not a DICOM file"
    assert by["ct.dcm"]["stage"] == "select" and "Modality=CT" in by["ct.dcm"]["reason"]
    assert by["broken/trunc.dcm"]["status"] == "error" and by["broken/trunc.dcm"]["stage"] == "decode"
    errs = read_csv(out / "errors.csv")
    assert list(errs[0]) == ERROR_COLUMNS and [e["file"] for e in errs] == ["broken/trunc.dcm"]


def test_predictions_csv_schema(run_out, material):
    _, out = run_out
    rows = read_csv(out / "predictions.csv")
    run = json.loads((out / "run.json").read_text())
    assert list(rows[0]) == ID_COLUMNS + [f"p_{k}" for k in LABELS] + TAIL_COLUMNS
    assert len(rows) == 4
    thresholds = json.loads((material["model"] / "config.json").read_text())["contract"]["thresholds"]
    for r in rows:
        probs = [float(r[f"p_{k}"]) for k in LABELS]
        assert all(0.0 <= p <= 1.0 for p in probs)
        expect = [k for k, p, t in zip(LABELS, probs, thresholds, strict=True) if p >= t]
        got = r["positive_findings"].split(";") if r["positive_findings"] else []
        assert got == expect
        assert int(r["n_positive"]) == len(expect)
        assert r["model_version"] == "test-1" and len(r["model_sha256"]) == 64
        assert r["model_precision"] == run["execution"]["precision"] != ""  # what ran, in every row (issue 24)
        assert r["intended_use"] == "research use only - not for diagnosis"
        assert "intensity=file VOI" in r["preprocessing"] and "resize=" in r["preprocessing"]
        assert r["modality"] == "DX" and r["view_position"] == "PA" and r["patient_id"] in ("P0", "P1")
    text = (out / "predictions.csv").read_text()
    assert "Doe^" not in text and "19700101" not in text  # no patient name / birth date by default


def test_predictions_jsonl_schema(run_out):
    _, out = run_out
    recs = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(recs) == 4
    for r in recs:
        assert set(r["probabilities"]) == set(LABELS)
        assert set(r["thresholds"]) == set(LABELS)
        assert set(r["model"]) >= {"name", "version", "sha256", "architecture", "precision"}
        assert {"source_size", "resize", "pad", "intensity", "inverted"} <= set(r["preprocessing"])
        for k in ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid"):
            assert r[k].count(".") > 3
    assert sum(r["preprocessing"]["inverted"] for r in recs) == 2  # the MONOCHROME1 images


def test_run_json(run_out):
    _, out = run_out
    doc = json.loads((out / "run.json").read_text())
    assert doc["state"] == "finished" and doc["exit_code"] == EXIT_SOME_FAILED
    assert doc["config"]["batch_size"] == 3 and doc["labels"] == LABELS
    assert {"torch", "pydicom", "highdicom", "numpy", "python"} <= set(doc["versions"])
    assert doc["started"] <= doc["ended"] and doc["counts"]["predicted"] == 4
    assert doc["rules"]["source"] == "model contract"
    assert doc["intended_use"].startswith("research use only")


def test_rerun_is_a_noop_and_state_mismatch_refused(run_out, material):
    res, out = run_out
    before = (out / "predictions.csv").read_text()
    again = run_inference(InferConfig(str(material["model"]), str(material["input"]), str(out), workers=0,
                                      progress=False))
    assert again.new_this_run == 0 and (out / "predictions.csv").read_text() == before
    with pytest.raises(StateMismatchError, match="precision"):
        run_inference(InferConfig(str(material["model"]), str(material["input"]), str(out), workers=0,
                                  precision="int8", batch_size=8, progress=False))  # auto resolved to fp32 or bf16


def test_workers_and_precisions_agree(material, tmp_path):
    # int8 is static (activation ranges calibrated on the first batch), which needs >= 8 images: its input is the
    # 4 images plus 4 more studies' images, compared on the 4
    int8_input = tmp_path / "in8"
    shutil.copytree(material["input"], int8_input)
    make_studies(int8_input / "more", n_studies=2, per_study=2, seed=50)
    base = None
    for i, (workers, precision, tol) in enumerate([(0, "fp32", 0), (2, "fp32", 1e-5), (0, "bf16", 0.05),
                                                   (0, "int8", 0.05)]):
        out = tmp_path / f"o{i}"
        res = run_inference(InferConfig(str(material["model"]),
                                        str(int8_input if precision == "int8" else material["input"]), str(out),
                                        batch_size=8 if precision == "int8" else 2,
                                        workers=workers, precision=precision, progress=False))
        assert res.counts["predicted"] == (8 if precision == "int8" else 4)
        assert json.loads((out / "run.json").read_text())["execution"]["precision"] == precision
        rows = {r["sop_instance_uid"]: r for r in read_csv(out / "predictions.csv")}
        if base is None:
            base = {uid: [float(r[f"p_{k}"]) for k in LABELS] for uid, r in rows.items()}
        else:
            probs = np.array([[float(rows[uid][f"p_{k}"]) for k in LABELS] for uid in base])
            np.testing.assert_allclose(probs, np.array(list(base.values())), atol=tol + 1e-6)


def test_rules_file_and_nothing_predicted(material, tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"selections": [{"name": "ct_only", "conditions": {"Modality": "CT"}}]}))
    good = tmp_path / "good"
    for p in material["images"][:2]:
        shutil.copy(p, good / p.name) if good.exists() else (good.mkdir(), shutil.copy(p, good / p.name))
    res = run_inference(InferConfig(str(material["model"]), str(good), str(tmp_path / "o"), rules=str(rules),
                                    workers=0, progress=False))
    assert res.exit_code == EXIT_NOTHING_PREDICTED
    rows = read_csv(tmp_path / "o" / "status.csv")
    assert all(r["status"] == "skipped" and "ct_only" in r["reason"] for r in rows)
    res = run_inference(InferConfig(str(material["model"]), str(good), str(tmp_path / "o2"), workers=0,
                                    progress=False))
    assert res.exit_code == EXIT_OK and res.counts["predicted"] == 2


def test_deidentify(material, tmp_path):
    out = tmp_path / "o"
    res = run_inference(InferConfig(str(material["model"]), str(material["input"]), str(out), workers=0,
                                    sr=True, heatmaps=True, deidentify=True, progress=False))
    assert res.counts["predicted"] == 4 and res.counts["sr_written"] == 2
    rows = read_csv(out / "predictions.csv")
    src = {str(__import__("pydicom").dcmread(p).SOPInstanceUID) for p in material["images"]}
    assert not src & {r["sop_instance_uid"] for r in rows}
    assert all(r["patient_id"].startswith("ANON-") and r["study_date"] == "" and r["accession_number"] == ""
               for r in rows)
    import pydicom

    sr_uids = set()
    for f in sorted((out / "sr").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert str(ds.PatientName) == "" and ds.PatientID.startswith("ANON-")
        assert "InstitutionName" not in ds or not ds.InstitutionName
        sr_uids.add(ds.StudyInstanceUID)
        assert f.stem == ds.StudyInstanceUID
    assert sr_uids == {r["study_instance_uid"] for r in rows}  # consistent UID mapping CSV <-> SR
    for f in (out / "heatmaps").rglob("*.dcm"):
        ds = pydicom.dcmread(f)
        assert ds.PatientIdentityRemoved == "YES" and "Doe" not in str(ds.PatientName)
    for f in out.rglob("*"):
        if f.is_file() and f.suffix in (".csv", ".jsonl", ".json", ".dcm"):
            data = f.read_bytes()
            assert b"Doe^" not in data and b"General Hospital" not in data and b"19700101" not in data, f


def test_dicomdir_as_input_walks_its_folder(material, tmp_path):
    from pydicom.data import get_testdata_file

    folder = tmp_path / "media"
    shutil.copytree(material["input"] / "patient0", folder / "patient0")
    shutil.copy(get_testdata_file("DICOMDIR"), folder / "DICOMDIR")
    res = run_inference(InferConfig(str(material["model"]), str(folder / "DICOMDIR"), str(tmp_path / "o"),
                                    workers=0, progress=False))
    assert res.counts["predicted"] == 2 and res.counts["skipped"] == 1
    rows = read_csv(tmp_path / "o" / "status.csv")
    assert [r["reason"] for r in rows if r["file"] == "DICOMDIR"][0].startswith("DICOMDIR")


def test_single_file_empty_folder_and_non_finite_outputs(material, tmp_path, monkeypatch):
    one = material["images"][0]
    res = run_inference(InferConfig(str(material["model"]), str(one), str(tmp_path / "one"), workers=0, sr=True,
                                    heatmaps=True, progress=False))
    assert res.exit_code == EXIT_OK and res.counts["predicted"] == 1 and res.counts["sr_written"] == 1
    assert read_csv(tmp_path / "one" / "predictions.csv")[0]["file"] == one.name
    (tmp_path / "empty").mkdir()
    res = run_inference(InferConfig(str(material["model"]), str(tmp_path / "empty"), str(tmp_path / "e"),
                                    workers=0, progress=False))
    assert res.exit_code == EXIT_NOTHING_PREDICTED and read_csv(tmp_path / "e" / "status.csv") == []

    from medvit.infer.predictor import Predictor

    real = Predictor.predict_with_ood

    def half_nan(self, x):
        p, s = real(self, x)
        p[::2] = np.nan
        return p, s

    monkeypatch.setattr(Predictor, "predict_with_ood", half_nan)
    res = run_inference(InferConfig(str(material["model"]), str(material["input"]), str(tmp_path / "nan"),
                                    batch_size=4, workers=0, progress=False))
    assert res.exit_code == EXIT_SOME_FAILED and res.counts["predicted"] == 2
    errs = read_csv(tmp_path / "nan" / "errors.csv")
    assert sum(e["stage"] == "predict" for e in errs) == 2
