"""DICOMweb source and STOW-RS sink against a real Orthanc."""

from __future__ import annotations

import pydicom
import pytest

from medvit.pacs import PacsError, Spool, open_sink, open_source, parse_pacs_address
from tests.infer.helpers import make_studies, write_dx


def _phantoms(tmp_path):
    """Three studies: P0 and P1 (2 DX images each, 2024-01-02) and P2 (one CR image, 2023-05-06)."""
    from pydicom.uid import generate_uid

    paths = make_studies(tmp_path / "src", n_studies=2, per_study=2)
    cr = write_dx(tmp_path / "src" / "cr.dcm", generate_uid(), generate_uid(), modality="CR", patient="P2")
    ds = pydicom.dcmread(cr)
    ds.StudyDate = "20230506"
    ds.save_as(cr)
    return paths + [cr]


def test_query_filters(orthanc, tmp_path):
    orthanc.upload(_phantoms(tmp_path))
    assert len(open_source(orthanc.dicomweb()).query()) == 3
    dx = open_source(orthanc.dicomweb("Modality=DX")).query()
    assert sorted(r.patient_id for r in dx) == ["P0", "P1"]
    assert all(r.modalities == ("DX",) for r in dx)
    assert [r.patient_id for r in open_source(orthanc.dicomweb("StudyDate=20230101-20231231")).query()] == ["P2"]
    assert [r.patient_id for r in open_source(orthanc.dicomweb("AccessionNumber=ACCP1")).query()] == ["P1"]
    assert [r.accession_number for r in open_source(orthanc.dicomweb("PatientID=P0")).query()] == ["ACCP0"]
    assert open_source(orthanc.dicomweb("PatientID=nobody")).query() == []
    assert len(open_source(orthanc.dicomweb("limit=2")).query()) == 2


def test_retrieve_is_complete_and_resumable(orthanc, tmp_path):
    src = _phantoms(tmp_path)
    orthanc.upload(src)
    spool = Spool(tmp_path / "spool")
    source = open_source(orthanc.dicomweb())
    rep = source.retrieve(spool)
    assert (rep.retrieved, rep.present, rep.failures) == (5, 0, [])
    for p in src:  # byte-identical pixel data and the same UIDs
        a = pydicom.dcmread(p)
        b = pydicom.dcmread(spool.path(a.StudyInstanceUID, a.SeriesInstanceUID, a.SOPInstanceUID))
        assert b.PixelData == a.PixelData and b.PatientID == a.PatientID
    # resume: one instance lost, the rest present -> only that one is fetched again
    a = pydicom.dcmread(src[1])
    spool.path(a.StudyInstanceUID, a.SeriesInstanceUID, a.SOPInstanceUID).unlink()
    rep2 = source.retrieve(spool)
    assert (rep2.retrieved, rep2.present, rep2.failures) == (1, 4, [])
    assert sum(1 for _ in spool.root.rglob("*.dcm")) == 5
    assert not list(spool.root.rglob(".*"))  # no temporaries left


def test_modality_filter_retrieves_only_that_modality(orthanc, tmp_path):
    src = _phantoms(tmp_path)
    # an SR series in a DX study must not be retrieved by a Modality=DX source
    from medvit.io.sr import AlgorithmInfo, Finding, ImageFindings, write_findings_sr

    head = pydicom.dcmread(src[0], stop_before_pixels=True)
    sr = write_findings_sr(tmp_path / "sr.dcm", [ImageFindings(head, [Finding("Cardiomegaly", 0.7, 0.5, True)])],
                           AlgorithmInfo("m", "1", "0" * 64))
    orthanc.upload(src + [sr])
    spool = Spool(tmp_path / "spool")
    rep = open_source(orthanc.dicomweb("Modality=DX")).retrieve(spool)
    assert rep.retrieved == 4 and not rep.failures
    assert all(pydicom.dcmread(f).Modality == "DX" for f in spool.root.rglob("*.dcm"))


def test_stow_sink_stores_and_reports(orthanc, tmp_path):
    src = make_studies(tmp_path / "src", n_studies=1, per_study=2)
    rep = open_sink(orthanc.dicomweb()).send(src)
    assert not rep.failures and len(rep.sent) == 2
    stored = {t["SOPInstanceUID"] for t in orthanc.instance_tags()}
    assert stored == {str(pydicom.dcmread(p).SOPInstanceUID) for p in src}
    bad = tmp_path / "not-dicom.dcm"
    bad.write_bytes(b"hello")
    rep = open_sink(orthanc.dicomweb()).send([bad])
    assert rep.sent == [] and len(rep.failures) == 1 and "not-dicom.dcm" in rep.failures[0].reason


def test_down_server_names_server_and_step(tmp_path):
    from tests.pacs.orthanc import refused_port

    with refused_port() as port:  # nothing listens there, and nothing can start to
        with pytest.raises(PacsError) as e:
            open_source(f"dicomweb://127.0.0.1:{port}/dicom-web", retries=0).query()
        msg = str(e.value)
        assert f"DICOMweb http://127.0.0.1:{port}/dicom-web" in msg and "QIDO-RS search for studies" in msg
        assert "cannot connect" in msg
        rep = open_sink(f"dicomweb://127.0.0.1:{port}/dicom-web", retries=0).send(
            make_studies(tmp_path / "s", n_studies=1, per_study=1))
    assert len(rep.failures) == 1 and rep.failures[0].step == "STOW-RS" and "cannot connect" in rep.failures[0].reason


def test_refusing_server_names_status(orthanc):
    # a wrong path on a live server: Orthanc answers 404, the error carries it
    with pytest.raises(PacsError, match=r"QIDO-RS search for studies failed: HTTP 404"):
        open_source(f"dicomweb://127.0.0.1:{orthanc.http_port}/no-such-root", retries=0).query()


@pytest.mark.parametrize("bad, why", [
    ("ftp://h:1/x", "scheme"), ("dimse://h:104", "called AE title"), ("dimse://A@h", "needs a port"),
    ("dicomweb://h:1/x?Foo=1", "unknown query key 'Foo'"), ("dicomweb://h:1/x?StudyDate=2024", "StudyDate"),
    ("dicomweb://h:1/x?limit=0", "limit"), ("dimse://WAYTOOLONGAETITLE1@h:1", "called AE title"),
])
def test_bad_addresses(bad, why):
    with pytest.raises(ValueError, match=why):
        parse_pacs_address(bad)


def test_address_credentials_are_not_shown():
    a = parse_pacs_address("dicomweb://alice:s3cret@pacs.example:8042/dicom-web?PatientID=P1")
    assert a.base_url == "http://pacs.example:8042/dicom-web" and a.username == "alice"
    assert "s3cret" not in a.server and "s3cret" not in repr(a)
    with pytest.raises(ValueError) as e:
        parse_pacs_address("dicomweb://alice:s3cret@pacs.example:8042/x?Foo=1")
    assert "s3cret" not in str(e.value)
