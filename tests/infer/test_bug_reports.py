"""Fault kinds found with inputs modelled on public bug reports (issue 12): each test builds its inputs."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from medvit.infer import EXIT_OK, InferConfig, run_inference
from tests.infer.helpers import make_model, write_dx


def read_csv(p: Path) -> list[dict[str, str]]:
    with open(p, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "m")


def _uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


@pytest.mark.parametrize("raw", [b"caf\xe9.dcm", b"\xff\xfe-x.dcm", b"ok\x80\x81.dcm"])
def test_non_utf8_file_names_are_escaped_in_tables(model, tmp_path, raw):
    inp = tmp_path / "in"
    study = _uid()
    write_dx(inp / "a.dcm", study, _uid())
    bad = inp / os.fsdecode(raw)
    write_dx(bad, study, _uid(), seed=1)
    (inp / os.fsdecode(b"notes-\xe9.txt")).write_text("not an image")
    out = tmp_path / "out"
    for _ in range(2):  # the run finishes, and a resume of it too
        res = run_inference(InferConfig(str(model), str(inp), str(out), workers=0, progress=False, sr=True))
        assert res.exit_code == EXIT_OK
        assert json.loads((out / "run.json").read_text())["state"] == "finished"
    escaped = raw.decode("utf-8", "backslashreplace")
    files = {r["file"] for r in read_csv(out / "status.csv")}
    assert files == {"a.dcm", escaped, "notes-\\xe9.txt"}
    assert {r["file"] for r in read_csv(out / "predictions.csv")} == {"a.dcm", escaped}
    lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert {json.loads(x)["file"] for x in lines} == {"a.dcm", escaped}

    from medvit.io.index import index_tree

    res = index_tree(inp)
    written = res.write(tmp_path / "idx.csv") + res.write(tmp_path / "idx.json")
    for p in written:
        p.read_bytes().decode("utf-8")  # valid UTF-8, not cut short
    skipped = read_csv(tmp_path / "idx.skipped.csv")
    assert [Path(r["path"]).name for r in skipped] == ["notes-\\xe9.txt"]
    series = read_csv(tmp_path / "idx.csv")
    assert len(series) == 2 and {Path(r["first_file"]).name for r in series} == {"a.dcm", escaped}
    doc = json.loads((tmp_path / "idx.json").read_text(encoding="utf-8"))
    assert doc["summary"]["files"] == 2


#: one fault per study: a missing Type 2 attribute or an invalid value in the study's first source instance
SR_FAULTS = {
    "no_birth_date": ("PatientBirthDate", None), "no_sex": ("PatientSex", None), "no_time": ("StudyTime", None),
    "no_study_id": ("StudyID", None), "no_accession": ("AccessionNumber", None),
    "no_referrer": ("ReferringPhysicianName", None), "bad_date": ("StudyDate", "NX DE_XXXXXXXXXX"),
    "us_birth_date": ("PatientBirthDate", "04/03/1951"), "month_13": ("StudyDate", "20241399"),
    "bad_time": ("StudyTime", "25:99"), "bad_sex": ("PatientSex", "female"), "bad_age": ("PatientAge", "abcd"),
}
BAD_VALUES = [v for _, v in SR_FAULTS.values() if v]


def _set_raw(path: Path, keyword: str, value: str | None) -> None:
    """Remove ``keyword`` or store ``value`` without pydicom's validation (as a faulty modality would)."""
    import warnings

    import pydicom

    ds = pydicom.dcmread(path)
    if value is None:
        delattr(ds, keyword)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            setattr(ds, keyword, value)
    ds.save_as(path)


def test_sr_written_despite_missing_type2_and_invalid_values(model, tmp_path, caplog, capfd):
    import logging

    import pydicom

    from medvit.io.sr import read_findings

    inp = tmp_path / "in"
    studies = {}
    for k, (kw, value) in enumerate(SR_FAULTS.items()):
        study = studies[kw] = _uid()
        first = write_dx(inp / kw / "a.dcm", study, _uid(), seed=k)
        write_dx(inp / kw / "b.dcm", study, _uid(), seed=100 + k)
        _set_raw(first, *value)
    out = tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        res = run_inference(InferConfig(str(model), str(inp), str(out), workers=0, progress=False, sr=True))
    assert res.exit_code == EXIT_OK and res.counts["sr_failed"] == 0
    assert res.counts["sr_written"] == len(SR_FAULTS)
    for kw, (attr, value) in SR_FAULTS.items():
        sr_path = out / "sr" / f"{studies[kw]}.dcm"
        sr = pydicom.dcmread(sr_path)
        assert len(read_findings(sr_path)) == 2 * 3
        if attr in ("PatientBirthDate", "PatientSex", "StudyTime", "StudyID", "AccessionNumber", "StudyDate"):
            assert attr in sr and sr[attr].value in ("", None), (kw, sr.get(attr))  # Type 2: present, empty
        if value:
            assert value not in sr_path.read_bytes().decode("latin-1")
    seen = caplog.text + "".join(capfd.readouterr())
    for f in out.rglob("*"):  # error tables and logs (the prediction tables carry header values as data)
        if f.is_file() and (f.name.endswith("errors.csv") or f.suffix == ".log"):
            seen += f.read_text(encoding="utf-8")
    for v in BAD_VALUES:
        assert v not in seen, v


def test_sr_failure_reasons_carry_no_header_value():
    from medvit.io.errors import redact_values

    msg = redact_values("Unable to convert '04/03/1951' to 'DA' object; \"NX DE_X\" for 'StudyDate'")
    assert "04/03/1951" not in msg and "NX DE_X" not in msg
    assert "'DA'" in msg and "'StudyDate'" in msg


def test_vr_un_values_are_text_in_the_index(tmp_path, monkeypatch):
    """Values stored with VR UN (PS3.5 6.2.2) and left undecoded by pydicom appear as text, not b'...'."""
    import struct

    from pydicom import config

    from medvit.io.index import header_row

    p = write_dx(tmp_path / "a.dcm", _uid(), _uid())
    import pydicom

    ds = pydicom.dcmread(p)
    ds.SpecificCharacterSet, ds.StudyDescription, ds.PatientName = "ISO_IR 100", "CHEST PA", "Doe^J\xf6hn"
    ds.save_as(p)
    b = p.read_bytes()
    for group, elem, vr in [(0x0008, 0x1030, b"LO"), (0x0010, 0x0010, b"PN"), (0x0008, 0x0020, b"DA")]:
        head = struct.pack("<HH", group, elem) + vr
        i = b.index(head)
        n = struct.unpack("<H", b[i + 6:i + 8])[0]
        b = b[:i] + struct.pack("<HH", group, elem) + b"UN\0\0" + struct.pack("<I", n) + b[i + 8:]
    p.write_bytes(b)
    monkeypatch.setattr(config, "replace_un_with_known_vr", False)
    row = header_row(p)
    assert (row["study_description"], row["patient_name"], row["study_date"]) == ("CHEST PA", "Doe^J\xf6hn",
                                                                                  "20240102")
    assert not any(str(v).startswith("b'") for v in row.values())


def test_duplicates_one_result_per_sop_instance_and_per_file(model, tmp_path):
    import shutil

    import pydicom

    from medvit.infer import EXIT_SOME_FAILED
    from medvit.io.sr import read_findings

    inp = tmp_path / "in"
    study = _uid()
    a = write_dx(inp / "a.dcm", study, _uid(), seed=1)
    shutil.copy(a, inp / "b_copy.dcm")  # same instance, same image
    ds = pydicom.dcmread(a)
    ds.PixelData = bytes(reversed(ds.PixelData))  # same SOP Instance UID, other pixels
    ds.save_as(inp / "c_conflict.dcm")
    (inp / "d_link.dcm").symlink_to(a)  # the same file reached twice
    os.link(a, inp / "e_hardlink.dcm")
    sub = inp / "z"
    write_dx(sub / "other.dcm", study, _uid(), seed=2)
    (inp / "y_link.dcm").symlink_to(sub / "other.dcm")  # a link that comes first in walk order
    out = tmp_path / "out"
    res = run_inference(InferConfig(str(model), str(inp), str(out), workers=0, progress=False, sr=True,
                                    heatmaps=True))
    rows = {r["file"]: r for r in read_csv(out / "status.csv")}
    assert rows["a.dcm"]["status"] == "predicted"
    assert rows["b_copy.dcm"]["status"] == "skipped" and "a.dcm" in rows["b_copy.dcm"]["reason"]
    assert rows["c_conflict.dcm"]["status"] == "error" and rows["c_conflict.dcm"]["stage"] == "duplicate"
    for link in ("d_link.dcm", "e_hardlink.dcm"):
        assert rows[link]["status"] == "skipped" and "same file as a.dcm" in rows[link]["reason"]
    assert rows["y_link.dcm"]["status"] == "predicted" and rows["z/other.dcm"]["status"] == "skipped"
    pred = read_csv(out / "predictions.csv")
    assert len(pred) == 2 and len({r["sop_instance_uid"] for r in pred}) == 2
    assert res.exit_code == EXIT_SOME_FAILED and res.counts["error_stages"] == {"duplicate": 1}
    groups = read_findings(out / "sr" / f"{study}.dcm")
    assert len(groups) == 2 * 3 and len({g["sop_instance_uid"] for g in groups}) == 2
    assert len(list((out / "heatmaps").rglob("*.png"))) == 2
    # resuming after more copies arrive: the copy of an instance predicted earlier is still one result
    shutil.copy(a, inp / "f_late_copy.dcm")
    run_inference(InferConfig(str(model), str(inp), str(out), workers=2, progress=False, sr=True,
                              heatmaps=True))
    rows = {r["file"]: r for r in read_csv(out / "status.csv")}
    assert rows["f_late_copy.dcm"]["status"] == "skipped" and "a.dcm" in rows["f_late_copy.dcm"]["reason"]
    assert len(read_csv(out / "predictions.csv")) == 2


def test_resume_compares_content_not_spellings(model, tmp_path, monkeypatch):
    from medvit.infer.outputs import StateMismatchError

    inp = tmp_path / "in"
    write_dx(inp / "a.dcm", _uid(), _uid())
    rules = {"selections": [{"name": "xr", "conditions": {"Modality": "(?i)^(CR|DX)$"}}]}
    (tmp_path / "rules.json").write_text(json.dumps(rules))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    run_inference(InferConfig(str(model), "in", str(out), workers=0, progress=False, rules="rules.json"))
    (tmp_path / "copy.json").write_text(json.dumps(rules, indent=4))  # same rules, other file and layout
    for spelling in (str(tmp_path / "rules.json"), "./rules.json", "copy.json"):
        res = run_inference(InferConfig(str(model), str(inp), str(out), workers=0, progress=False, rules=spelling))
        assert res.counts["resumed_from_previous_run"] == 1
    rules["selections"][0]["conditions"]["Modality"] = "CT"
    (tmp_path / "other.json").write_text(json.dumps(rules))
    with pytest.raises(StateMismatchError) as e:
        run_inference(InferConfig(str(model), "in", str(out), workers=0, progress=False, rules="other.json"))
    msg = str(e.value)
    assert "rules: content differs" in msg and "\n" not in msg and "{" not in msg and len(msg) < 400


def test_batch_heatmaps_map_positive_findings_and_say_which(model, tmp_path):
    import numpy as np
    from PIL import Image

    from medvit.infer.runner import heatmap_targets

    probs = np.array([[0.9, 0.5, 0.7], [0.3, 0.45, 0.1], [0.2, 0.1, 0.3]])
    thr = np.array([0.95, 0.4, 0.6])
    # row 0: top is 0 (negative), positive ones are 1 and 2 -> 2; row 1: only 1 positive; row 2: none -> top (2)
    assert heatmap_targets(probs, thr).tolist() == [2, 1, 2]
    inp = tmp_path / "in"
    for i in range(3):
        write_dx(inp / f"{i}.dcm", _uid(), _uid(), seed=i, rows=64, cols=64)
    out = tmp_path / "out"
    run_inference(InferConfig(str(model), str(inp), str(out), workers=0, progress=False, heatmaps=True))
    for rec in read_csv(out / "predictions.csv"):
        pos = [k for k in rec["positive_findings"].split(";") if k]
        if pos:
            assert rec["heatmap_target"] in pos
        png = Image.open(out / rec["heatmap_png"])
        desc = png.info["Description"]
        assert rec["heatmap_target"] in desc and ("POSITIVE" in desc) == bool(pos)
