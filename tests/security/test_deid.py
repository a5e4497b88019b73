"""De-identification: the complete PS3.15 Table E.1-1 basic profile on the finished SR and SC, keys outside
OUTPUT, dates only with the recorded option (SECURITY.md §3)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset

from medvit.infer import InferConfig, run_inference
from medvit.io.deidentify import Deidentifier, load_or_create_key, profile_table
from medvit.io.sr import read_findings
from tests.infer.helpers import make_model, make_studies, write_dx

SENT = "ZQX"  # every crafted string value starts with it
DATE, TIME = "19120304", "111213"
NAMED = ("MedicalAlerts", "Allergies", "LastMenstrualDate", "PatientState", "ClinicalTrialSubjectID",
         "PatientAddress", "OtherPatientNames", "PatientInstitutionResidence", "CurrentPatientLocation")
_KEEP_VALID = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}


def _value(tag: int, vr: str):
    if vr in ("AE", "CS", "SH", "LO", "ST", "LT", "UT", "UC", "UR"):
        return f"{SENT}{tag:08X}"
    if vr == "PN":
        return f"{SENT}{tag:08X}^SECRET"
    if vr == "DA":
        return DATE
    if vr == "TM":
        return TIME
    if vr == "DT":
        return DATE + TIME
    if vr == "UI":
        return f"1.2.999.{tag}"
    if vr == "AS":
        return "042Y"
    if vr in ("DS", "IS"):
        return "7"
    if vr in ("OB", "UN", "OW"):
        return (SENT + "BYTES!").encode()[:8]
    if vr in ("US", "UL", "SS", "SL", "FL", "FD"):
        return 7
    if vr == "SQ":
        item = Dataset()
        item.PatientName = f"{SENT}INNER^SECRET"
        item.ReferencedSOPInstanceUID = "1.2.999.1"
        item.PersonName = f"{SENT}PERSON"
        return [item]
    return None


def add_every_profile_attribute(ds: Dataset) -> list[str]:
    """Add each Table E.1-1 attribute pydicom knows (not already present) with a crafted value."""
    exact, _ = profile_table()
    added = []
    for tag in sorted(exact):
        if not dictionary_has_tag(tag) or tag in ds or (tag >> 16) in (0x0000, 0x0002):
            continue
        kw, vr = keyword_for_tag(tag), dictionary_VR(tag)
        if kw in _KEEP_VALID or " or " in vr or (v := _value(tag, vr)) is None:
            continue
        ds.add_new(tag, vr, v)
        added.append(kw)
    ds.add_new(0x00091010, "LO", f"{SENT}PRIVATE")
    ds.add_new(0x60004000, "LT", f"{SENT}OVERLAY")
    return added


def _leaks(ds: Dataset) -> list[str]:
    bad = []
    for e in ds.iterall():
        if e.tag == 0x7FE00010 or e.VR in ("OB", "OW") and e.tag != 0x00420011:
            continue
        s = str(e.value)
        if SENT in s or DATE in s or "1.2.999." in s or (e.VR in ("TM", "DT") and TIME in s):
            bad.append(f"{e.tag} {e.keyword}={s[:60]}")
    return bad


def test_every_profile_attribute_is_removed_from_sr_and_sc(tmp_path):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    make_studies(inp, n_studies=1, per_study=1)
    f = write_dx(inp / "crafted" / "all.dcm", "1.2.3.77", "1.2.3.78", patient="PX")
    ds = pydicom.dcmread(f)
    added = add_every_profile_attribute(ds)
    assert len(added) > 450 and all(k in added for k in NAMED)
    ds.save_as(f)
    out = tmp_path / "out"
    res = run_inference(InferConfig(str(model), str(inp), str(out), workers=0, sr=True, heatmaps=True,
                                    deidentify=True, progress=False))
    assert res.counts["predicted"] == 2 and res.counts["sr_written"] == 2 and res.counts["error"] == 0
    objs = [pydicom.dcmread(p) for p in sorted(out.rglob("*.dcm"))]
    assert len(objs) == 4  # 2 SR + 2 SC: nothing already done is lost
    for o in objs:
        assert _leaks(o) == [], o.SOPClassUID
        for kw in NAMED:
            assert kw not in o
        assert not any(e.tag.is_private for e in o.iterall())
        assert o.PatientIdentityRemoved == "YES" and o.LongitudinalTemporalInformationModified == "REMOVED"
        codes = [c.CodeValue for c in o.DeidentificationMethodCodeSequence]
        assert codes[0] == "113100" and "113106" not in codes
    srs = [o for o in objs if o.Modality == "SR"]
    assert all(len(read_findings_ds(s)) == 3 for s in srs)  # the findings survive the profile
    assert all("research use only" in str(o.ImageComments) for o in objs if o.Modality == "OT")
    for p in out.rglob("*"):  # tables, run.json: nothing crafted, no key
        if p.is_file() and p.suffix in (".csv", ".jsonl", ".json"):
            text = p.read_text()
            assert SENT not in text and DATE not in text, p
        assert "key" not in p.name


def read_findings_ds(ds: Dataset) -> list:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".dcm") as t:
        ds.save_as(t.name)
        return read_findings(t.name)


def test_keep_dates_option_is_recorded_and_patient_dates_still_go(tmp_path):
    ds = pydicom.dcmread(write_dx(tmp_path / "a.dcm", "1.2.3", "1.2.4"))
    add_every_profile_attribute(ds)
    kept = Deidentifier(b"k" * 32, keep_dates=True).dataset(ds)
    assert kept.StudyDate == "20240102" and kept.AcquisitionDate == DATE
    assert kept.PatientBirthDate == "" and "LastMenstrualDate" not in kept
    assert "113106" in [c.CodeValue for c in kept.DeidentificationMethodCodeSequence]
    assert kept.LongitudinalTemporalInformationModified == "UNMODIFIED"
    gone = Deidentifier(b"k" * 32).dataset(ds)
    assert gone.StudyDate == "" and "AcquisitionDate" not in gone and _leaks(gone) == []
    d = Deidentifier(b"k" * 32)  # applying twice (source header, then finished object) is a no-op
    once = d.dataset(ds)
    assert d.dataset(once).StudyInstanceUID == once.StudyInstanceUID and d.dataset(once).PatientID == once.PatientID


def test_keys_never_inside_output(tmp_path):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    make_studies(inp, n_studies=1, per_study=1)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="inside"):
        run_inference(InferConfig(str(model), str(inp), str(out), workers=0, deidentify=True,
                                  deid_key=str(out / "k.key"), progress=False))
    with pytest.raises(ValueError, match="inside"):
        load_or_create_key(inp / "k.key", forbidden=[inp])
    key = tmp_path / "site" / "my.key"
    run_inference(InferConfig(str(model), str(inp), str(out), workers=0, deidentify=True, deid_key=str(key),
                              progress=False))
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert not [p for p in out.rglob("*") if p.is_file() and key.read_text().strip() in p.read_text(errors="ignore")]
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["deidentification"]["dates"] == "removed" and "dicom-anonymizer" in \
        run_json["deidentification"]["table"]
    # resuming with another key would mix two pseudonym spaces: refused
    from medvit.infer.outputs import StateMismatchError

    with pytest.raises(StateMismatchError, match="deid_key_id"):
        run_inference(InferConfig(str(model), str(inp), str(out), workers=0, deidentify=True,
                                  deid_key=str(tmp_path / "other.key"), progress=False))
    # a key an older medvit left inside OUTPUT is refused, not used
    legacy = tmp_path / "legacy"
    (legacy / ".medvit-infer").mkdir(parents=True)
    (legacy / ".medvit-infer" / "deid.key").write_text("00" * 32)
    with pytest.raises(ValueError, match="inside OUTPUT"):
        run_inference(InferConfig(str(model), str(inp), str(legacy), workers=0, deidentify=True, progress=False))


def test_default_key_is_the_per_site_key(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVIT_DEID_KEY_DIR", str(tmp_path / "keys"))
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    make_studies(inp, n_studies=1, per_study=1)
    run_inference(InferConfig(str(model), str(inp), str(tmp_path / "out"), workers=0, deidentify=True,
                              progress=False))
    assert Path(tmp_path / "keys" / "site.key").is_file()


@pytest.mark.parametrize("under", ["k.key", "sub/k.key"])
def test_key_path_under_a_regular_file_is_refused_naming_the_key(tmp_path, under):
    """review34 F7: a key path below a regular file gave mkdir's bare FileExistsError / NotADirectoryError, naming
    neither the key nor the file in the way."""
    (tmp_path / "notes.txt").write_text("x")
    key = tmp_path / "notes.txt" / under
    with pytest.raises(ValueError, match=r"^de-identification key \(--deid-key\) .*notes\.txt/.*k\.key cannot be "
                                         r"created: .*notes\.txt is not a folder"):
        load_or_create_key(key, what="de-identification key (--deid-key)")
    assert (tmp_path / "notes.txt").read_text() == "x"
