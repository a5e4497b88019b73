"""Viewer: Host header and token checked, identifiers hidden by the de-identification rule, uploads removed,
the folder box restricted to configured roots (SECURITY.md §6)."""

from __future__ import annotations

import gc
import json
import os
import tempfile
from pathlib import Path

import pytest

from apps.viewer import access, redact
from tests.infer.helpers import write_dx

APP = str(Path(__file__).resolve().parents[2] / "apps" / "viewer" / "app.py")
ENV = {access.ENV_TOKEN: "s3cret-token", access.ENV_HOSTS: "localhost,127.0.0.1,[::1]"}


@pytest.mark.parametrize("host, ok", [
    ("localhost:8501", True), ("127.0.0.1:8501", True), ("[::1]:8501", True), ("LOCALHOST", True),
    ("attacker.example:8501", False), ("localhost.attacker.example", False), ("127.0.0.1.nip.io:8501", False),
])
def test_host_header_is_checked(host, ok):
    why = access.refusal({"Host": host}, "s3cret-token", ENV)
    assert (why is None) is ok, why


def test_token_is_required_when_configured():
    assert access.refusal({"Host": "localhost:8501"}, None, ENV) is not None
    assert access.refusal({"Host": "localhost:8501"}, "wrong", ENV) is not None
    assert access.refusal({"Host": "localhost:8501"}, "s3cret-token", ENV) is None


def _app(monkeypatch, tmp_path, studies, host: str | None, token: str | None):
    import streamlit
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MEDVIT_VIEWER_DATA", str(studies))
    monkeypatch.setenv("MEDVIT_VIEWER_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("MEDVIT_VIEWER_MODEL", raising=False)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    class _Ctx:  # the request the browser would make (AppTest has no HTTP request)
        headers = {"Host": host} if host else {}

    monkeypatch.setattr(streamlit, "context", _Ctx())
    at = AppTest.from_file(APP, default_timeout=60)
    if token:
        at.query_params["token"] = token
    return at.run()


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


@pytest.mark.parametrize("host, token, served", [
    ("attacker.example:8501", "s3cret-token", False),  # DNS rebinding: right token, foreign Host
    ("localhost:8501", None, False),
    ("localhost:8501", "s3cret-token", True),
])
def test_app_serves_only_allowed_host_with_token(monkeypatch, tmp_path, host, token, served):
    studies = tmp_path / "studies"
    write_dx(studies / "a.dcm", "1.2.3", "1.2.4", patient="SHOULD_NOT_SHOW")
    at = _app(monkeypatch, tmp_path, studies, host, token)
    assert not at.exception
    listed = [s for s in at.selectbox if s.key == "study_idx"]
    if served:
        assert listed and len(listed[0].options) == 1
    else:
        assert not listed and any("host name" in e or "token" in e for e in _errors(at))
        shown = [str(getattr(e, "value", "")) for e in at.main] + [str(getattr(e, "value", "")) for e in at.sidebar]
        assert "SHOULD_NOT_SHOW" not in json.dumps(shown)


def test_folder_box_restricted_to_roots(monkeypatch, tmp_path):
    studies = tmp_path / "studies"
    write_dx(studies / "a.dcm", "1.2.3", "1.2.4")
    outside = tmp_path / "private"
    write_dx(outside / "b.dcm", "1.2.5", "1.2.6", patient="PRIVATE")
    at = _app(monkeypatch, tmp_path, studies, "localhost:8501", "s3cret-token")
    at.text_input(key="folder").input(str(outside)).run()
    assert not at.exception
    assert any("outside the folders this viewer may open" in e for e in _errors(at))
    assert not [s for s in at.selectbox if s.key == "study_idx"]
    with pytest.raises(PermissionError):
        access.check_folder("/etc", access.allowed_roots([studies], {}))
    assert access.check_folder(studies / "sub" / "..", [studies.resolve()]) == studies.resolve()


def test_identifiers_hidden_by_the_deidentification_rule(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(write_dx(tmp_path / "a.dcm", "1.2.3", "1.2.4"))
    secrets = {"MedicalAlerts": "ALERT-X", "Allergies": "PENICILLIN-X", "PatientState": "STATE-X",
               "CurrentPatientLocation": "WARD-X", "PatientAddress": "STREET-X",
               "PatientInstitutionResidence": "HOME-X", "OtherPatientNames": "Other^Name-X",
               "PerformingPhysicianName": "Doc^X", "ClinicalTrialSubjectID": "SUBJ-X", "LastMenstrualDate": "20240101"}
    for k, v in secrets.items():
        setattr(ds, k, v)
    item = Dataset()
    item.PersonName = "Nested^Person-X"
    ds.ContentSequence = [item]
    text = json.dumps(redact.tag_rows(ds, reveal=False))
    for v in [*secrets.values(), "Nested^Person-X"]:
        assert v not in text, v
    assert "20240102" in text  # study date shown (Retain Longitudinal Temporal Information option)
    revealed = json.dumps(redact.tag_rows(ds, reveal=True))
    assert all(v in revealed for v in secrets.values())


def test_upload_folders_removed_when_session_ends_and_stale_ones_at_start(tmp_path):
    root = tmp_path / "uploads"
    root.mkdir()
    up = access.UploadDir(root)
    (up.path / "a.dcm").write_bytes(b"x")
    assert up.path.is_dir() and oct(up.path.stat().st_mode & 0o777) == oct(0o700)
    path = up.path
    del up
    gc.collect()
    assert not path.exists()  # session state dropped -> folder gone
    stale = root / "999999999-0123456789abcdef"
    live = root / f"{os.getpid()}-0123456789abcdef"
    stale.mkdir()
    live.mkdir()
    (stale / "b.dcm").write_bytes(b"x")
    assert access.remove_stale_uploads(root) == [stale]
    assert live.is_dir() and not stale.exists()
