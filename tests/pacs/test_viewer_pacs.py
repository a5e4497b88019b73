"""The viewer's DICOMweb source against a real Orthanc: query, open a study lazily, medvit's SR as findings."""

from __future__ import annotations

import pydicom
import pytest

from apps.viewer import pacs_source, sources
from medvit.pacs import PacsError
from tests.infer.helpers import make_studies
from tests.pacs.orthanc import free_port


def test_query_fetch_and_findings(orthanc, tiny_model, tmp_path):
    from medvit.cli.main import main

    images = make_studies(tmp_path / "src", n_studies=2, per_study=2)
    orthanc.upload(images)
    # medvit's results go into the PACS first (the SR lands in the study)
    assert main(["infer", "-m", str(tiny_model), "--source", orthanc.dicomweb(), "--send-to", orthanc.dicomweb(),
                 "-o", str(tmp_path / "out"), "--workers", "0", "--quiet"]) == 0
    refs = pacs_source.query_studies(orthanc.dicomweb("PatientID=P1"))
    assert [r.patient_id for r in refs] == ["P1"]
    cache = tmp_path / "cache"
    assert not cache.exists()  # nothing downloaded for the list
    study_dir, problems = pacs_source.fetch_study(orthanc.dicomweb("PatientID=P1"), refs[0].study_instance_uid, cache)
    assert problems == []
    cat = sources.catalog(study_dir, ignore_results=False)
    assert len(cat.studies) == 1 and [len(s.files) for s in cat.studies[0].series] == [2]
    assert any("no image" in why for _, why in cat.skipped)  # the SR is listed, not shown as an image
    found = pacs_source.medvit_findings(study_dir)
    mine = {str(pydicom.dcmread(p).SOPInstanceUID) for p in images[2:]}
    assert set(found) == mine
    assert all({g["label"] for g in groups} == {"Cardiomegaly", "Pleural effusion", "phantom_nodule"}
               for groups in found.values())
    # opening it again fetches nothing new (the cache is the spool)
    assert pacs_source.fetch_study(orthanc.dicomweb(), refs[0].study_instance_uid, cache)[1] == []


def test_only_the_configured_server_can_be_queried():
    conf = "dicomweb://pacs.local:8042/dicom-web"
    assert pacs_source.allowed_address(conf + "?PatientID=P1", conf).endswith("P1")
    for other in ("dicomweb://169.254.169.254:80/latest", "dicomweb://pacs.local:8043/dicom-web",
                  "dicomwebs://pacs.local:8042/dicom-web", "dicomweb://pacs.local:8042/other"):
        with pytest.raises(PermissionError, match="only the server given with --dicomweb"):
            pacs_source.allowed_address(other, conf)
    with pytest.raises(PermissionError, match="start the viewer with --dicomweb"):
        pacs_source.allowed_address(conf, "")


def test_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="DICOMweb servers"):
        pacs_source.query_studies("dimse://PACS@localhost:104")
    port = free_port()
    with pytest.raises(PacsError, match="QIDO-RS search for studies failed: cannot connect"):
        pacs_source.query_studies(f"dicomweb://127.0.0.1:{port}/dicom-web")


def test_viewer_app_opens_a_pacs_study(orthanc, tiny_model, tmp_path, monkeypatch):
    """The Streamlit app: choose the DICOMweb source, a study opens with its thumbnails and medvit's SR findings."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from medvit.cli.main import main

    images = make_studies(tmp_path / "src", n_studies=1, per_study=2)
    orthanc.upload(images)
    assert main(["infer", "-m", str(tiny_model), "--source", orthanc.dicomweb(), "--send-to", orthanc.dicomweb(),
                 "-o", str(tmp_path / "out"), "--workers", "0", "--quiet"]) == 0
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("MEDVIT_VIEWER_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("MEDVIT_VIEWER_MODEL", str(tiny_model))
    monkeypatch.setenv("MEDVIT_VIEWER_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv(pacs_source.ENV_DICOMWEB, orthanc.dicomweb())
    monkeypatch.chdir(tmp_path)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "apps" / "viewer" / "app.py"),
                           default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    at.radio(key="source").set_value("DICOMweb (PACS)").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="pacs_idx").options  # the study list from QIDO-RS
    assert any("Stored in the PACS by medvit" in m.value for m in at.markdown)
    assert len(at.get("image")) >= 2  # a series thumbnail and the view
