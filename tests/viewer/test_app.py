"""The viewer's logic driven through Streamlit's AppTest: open, window, findings, heatmap, feedback, bad input."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.viewer.conftest import LABELS, PATIENT_ID, PATIENT_NAME, write_dx

APP = str(Path(__file__).resolve().parents[2] / "apps" / "viewer" / "app.py")


@pytest.fixture
def app(studies, tiny_model, tmp_path, monkeypatch):
    """An AppTest of the viewer on the ``studies`` folder and the tiny model; results go to tmp_path/results."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MEDVIT_VIEWER_DATA", str(studies))
    monkeypatch.setenv("MEDVIT_VIEWER_MODEL", str(tiny_model))
    monkeypatch.setenv("MEDVIT_VIEWER_RESULTS", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)  # no demo_out here
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # upload folders land in the test's tmp_path
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(at, kind: str) -> list[str]:
    return [e.value for e in at.get(kind)]


def _table(at, column: str):
    """The first dataframe with ``column`` (dataframes are not widgets, so they have no key), or None."""
    return next((d.value for d in at.dataframe if column in d.value.columns), None)


def _caption(at) -> str:
    """The caption under the image (window, zoom, heatmap, size)."""
    return next(c for c in _texts(at, "caption") if "zoom" in c)


def _open_series(at, label_part: str):
    btn = next(b for b in at.button if label_part in b.label)
    btn.click().run()
    assert not at.exception, at.exception
    return at


def test_open_study_banner_and_redaction(app):
    at = app
    assert any("RESEARCH USE ONLY" in e for e in _texts(at, "error")), "research-only banner missing"
    assert any("test-1" in e for e in _texts(at, "error")), "model version missing from the banner"
    assert len(at.get("image")) >= 2  # thumbnail(s) + the view
    study_labels = at.selectbox(key="study_idx").options
    assert len(study_labels) == 2 and all(PATIENT_NAME not in s for s in study_labels)
    # the first study (1.2.3.2, multi-frame) opens on frame 1 of 3
    assert at.slider(key="nav_frame").value == 1 and at.slider(key="nav_frame").max == 3
    at.slider(key="nav_frame").set_value(3).run()
    assert not at.exception
    tags = _table(at, "Keyword")
    by_kw = dict(zip(tags["Keyword"], tags["Value"], strict=True))
    assert by_kw["PatientName"] == "‹hidden›" and by_kw["PatientID"] == "‹hidden›"
    assert by_kw["InstitutionName"] == "‹hidden›" and by_kw["PatientBirthDate"] == "‹hidden›"
    assert by_kw["StudyDate"] == "20240131" and by_kw["Modality"] == "DX"
    at.toggle(key="reveal").set_value(True).run()
    tags = _table(at, "Keyword")
    by_kw = dict(zip(tags["Keyword"], tags["Value"], strict=True))
    assert by_kw["PatientName"] == PATIENT_NAME and by_kw["PatientID"] == PATIENT_ID
    assert any(PATIENT_NAME in s for s in at.selectbox(key="study_idx").options)


def test_series_browser_and_window_presets(app):
    at = app
    at.selectbox(key="study_idx").set_value(1).run()  # the study with two series
    labels = [b.label for b in at.button if b.label.startswith("#")]
    assert len(labels) == 2 and any("CHEST LAT" in x for x in labels) and all("1 image" in x for x in labels)
    _open_series(at, "CHEST LAT")
    assert "W 4096 L 2048" in _caption(at)  # the file's VOI window by default
    options = at.selectbox(key="disp_preset").options
    assert not any(o.startswith(("lung", "bone", "brain")) for o in options)  # CT presets (HU) not on a DX
    assert "minmax (image min–max)" in options
    at.selectbox(key="disp_preset").set_value("full (stored bit range)").run()
    assert "W 4096 L 2048 (FULL)" in _caption(at)
    at.selectbox(key="disp_preset").set_value("Manual centre / width").run()
    at.number_input(key="disp_center").set_value(1500.0)
    at.number_input(key="disp_width").set_value(800.0).run()
    assert "W 800 L 1500 (user)" in _caption(at)
    at.checkbox(key="disp_invert").check()
    at.select_slider(key="disp_zoom").set_value(2.0).run()
    assert not at.exception
    assert "inverted" in _caption(at) and "zoom 2×" in _caption(at)
    assert at.slider(key="disp_pan_x").value == 0.5
    # opening another series resets the display to the file window
    _open_series(at, "CHEST PA")
    assert "W 4096 L 2048" in _caption(at) and "zoom 1×" in _caption(at)


def _expected_probs(model_dir: Path, dcm: Path) -> np.ndarray:
    from medvit.infer.fastpath import DEFAULT_PRECISION
    from medvit.infer.predictor import Predictor, load_for_inference
    from medvit.infer.preprocess import Preprocessor
    from medvit.io import read_image

    model, contract, _ = load_for_inference(model_dir)
    x, _, _ = Preprocessor.from_contract(contract)(read_image(dcm))
    return Predictor(model, DEFAULT_PRECISION).predict(x[None])[0]  # as `medvit infer` runs it by default


def test_findings_heatmap_and_feedback(app, studies, tiny_model, tmp_path):
    at = app
    at.selectbox(key="study_idx").set_value(1).run()
    _open_series(at, "CHEST PA")
    assert _table(at, "Finding") is None  # nothing until the model is run
    at.button(key="run_model").click().run()
    assert not at.exception, at.exception
    df = _table(at, "Finding")
    assert list(df.columns) == ["Finding", "Probability", "Threshold", "Result"]
    assert sorted(df["Finding"]) == sorted(LABELS)
    assert list(df["Probability"]) == sorted(df["Probability"], reverse=True)
    expected = dict(zip(LABELS, _expected_probs(tiny_model, studies / "a" / "img1.dcm"), strict=True))
    for r in df.itertuples():
        assert r.Probability == pytest.approx(float(expected[r.Finding]), abs=1e-5)
        assert r.Threshold == {"Cardiomegaly": 0.5, "Effusion": 0.4, "Nodule": 0.6}[r.Finding]
        assert r.Result == ("POSITIVE" if r.Probability >= r.Threshold else "negative")
    # heatmap on / opacity / off
    at.selectbox(key="heat_target").set_value("Effusion").run()
    assert not at.exception and "heatmap: Effusion (Grad-CAM)" in _caption(at)  # says which finding is shown
    at.radio(key="heat_method").set_value("rollout")
    at.slider(key="heat_opacity").set_value(0.8).run()
    assert not at.exception and "heatmap: Effusion (Attention rollout)" in _caption(at)
    at.selectbox(key="heat_target").set_value("Off").run()
    assert "heatmap" not in _caption(at)
    # feedback: agree on one, disagree with a comment on another
    at.text_input(key="fb_reader").input("AB")
    at.radio(key="fb_verdict_Effusion").set_value("Agree")
    at.radio(key="fb_verdict_Nodule").set_value("Disagree")
    at.text_input(key="fb_comment_Nodule").input("no nodule visible")
    next(b for b in at.button if b.label == "Save feedback").click().run()
    assert not at.exception, at.exception
    assert any("Feedback saved" in s for s in _texts(at, "success"))
    saved = tmp_path / "results" / "feedback" / "1.2.3.1.json"
    doc = json.loads(saved.read_text())
    entry = doc["entries"][-1]
    by_finding = {f["finding"]: f for f in entry["findings"]}
    assert by_finding["Effusion"]["verdict"] == "agree" and by_finding["Cardiomegaly"]["verdict"] is None
    assert by_finding["Nodule"] == {**by_finding["Nodule"], "verdict": "disagree", "comment": "no nodule visible"}
    assert entry["reader"] == "AB" and entry["series"] == "1.2.3.1.1" and entry["model"]["version"] == "test-1"
    assert PATIENT_NAME not in saved.read_text() and PATIENT_ID not in saved.read_text()
    # rerun is served from the cache; export offers the findings JSON
    at.run()
    assert _table(at, "Finding").equals(df)
    assert not at.get("download_button")[1].proto.disabled


def _upload(at, files):
    at.radio(key="source").set_value("Upload files").run()
    at.file_uploader(key="uploads").set_value(files).run()
    assert not at.exception, at.exception
    return at


def test_bad_uploads_show_messages_and_app_keeps_working(app, tmp_path):
    good = write_dx(tmp_path / "good.dcm", study="9.9.1", series="9.9.1.1", description="GOOD")
    raw = write_dx(tmp_path / "corrupt.dcm", study="9.9.2", series="9.9.2.1", description="CORRUPT").read_bytes()
    unsup = _unsupported_syntax(tmp_path / "mpeg.dcm")
    files = [("notes.txt", b"this is not an image", "text/plain"),
             ("corrupt.dcm", raw[:-3000], "application/dicom"),
             ("mpeg.dcm", unsup.read_bytes(), "application/dicom"),
             ("good.dcm", good.read_bytes(), "application/dicom"),
             ("broken.zip", b"PK\x03\x04 not really a zip", "application/zip")]
    at = _upload(app, files)
    skipped = " ".join(_texts(at, "markdown"))
    assert "notes.txt" in skipped and "not a DICOM file" in skipped
    assert "broken.zip" in skipped and "ZIP" in skipped
    studies = at.selectbox(key="study_idx")
    assert len(studies.options) == 3
    for i in range(3):
        studies.set_value(i).run()
        assert not at.exception, at.exception
        label = next(b.label for b in at.button if b.label.startswith("#"))
        errors = [e for e in _texts(at, "error") if "Cannot show" in e]
        if "CORRUPT" in label:
            assert errors and "truncated" in errors[0]
        elif "MPEG" in label:
            assert errors and "transfer syntax" in errors[0] and "no decoder" in errors[0]
        else:
            assert not errors and "W 4096 L 2048" in _caption(at)
            at.button(key="run_model").click().run()
            assert len(_table(at, "Finding")) == len(LABELS)


def _unsupported_syntax(path: Path) -> Path:
    """A DX whose pixel data claims MPEG2, which no installed plugin decodes."""
    import pydicom
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(write_dx(path, study="9.9.3", series="9.9.3.1", description="MPEG"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    return path


def test_zip_and_png_upload(app, tmp_path):
    from PIL import Image

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(write_dx(tmp_path / "z.dcm", study="8.8.1", series="8.8.1.1", description="ZIPPED"), "x/z.dcm")
    png = io.BytesIO()
    Image.fromarray((np.arange(64 * 48, dtype=np.uint32).reshape(64, 48) % 256).astype(np.uint8)).save(png, "PNG")
    rgb = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), (200, 40, 40), np.uint8)).save(rgb, "PNG")
    at = _upload(app, [("study.zip", buf.getvalue(), "application/zip"), ("photo.png", png.getvalue(), "image/png"),
                       ("colour.png", rgb.getvalue(), "image/png"),
                       ("vol.nii.gz", _nifti(tmp_path), "application/gzip")])
    assert len(at.selectbox(key="study_idx").options) == 4
    sizes = set()
    for i in range(4):
        at.selectbox(key="study_idx").set_value(i).run()
        assert not at.exception and not [e for e in _texts(at, "error") if "Cannot show" in e]
        sizes.add(_caption(at).rsplit(" · ", 1)[-1])
        if "colour" in _caption(at):
            at.button(key="run_model").click().run()  # a 1-channel model on an RGB image: luma
            assert len(_table(at, "Finding")) == len(LABELS)
        if any(s.key == "nav_frame" for s in at.slider):  # the NIfTI volume: axial slices, middle one first
            assert at.slider(key="nav_frame").label == "Slice" and at.slider(key="nav_frame").value == 4
            at.slider(key="nav_frame").set_value(1).run()
            assert not at.exception
    assert sizes == {"48×64", "80×96", "30×20", "10×12"}  # width × height; the axial slice is x by y


def _nifti(tmp_path: Path) -> bytes:
    """A 10 x 12 x 7 float volume (x, y, z) as .nii.gz bytes."""
    import nibabel as nib

    vol = np.arange(10 * 12 * 7, dtype=np.float32).reshape(10, 12, 7)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.0, 1.0])), path)
    return path.read_bytes()


def test_without_data_or_demo_the_viewer_generates_phantoms(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from apps.viewer import config

    for var in ("MEDVIT_VIEWER_DATA", "MEDVIT_VIEWER_MODEL", "MEDVIT_VIEWER_RESULTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(config, "PHANTOMS", tmp_path / "phantoms")
    monkeypatch.setattr(config, "DEMO_OUT", Path("no-demo-here"))  # the checkout may hold `make demo` outputs
    monkeypatch.setenv("MEDVIT_DEMO_CACHE", str(tmp_path / "no-demo-cache"))
    monkeypatch.setattr("medvit.demo.current_demo_model", lambda environ=None: None)  # no committed model either
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    assert any("RESEARCH USE ONLY" in e for e in _texts(at, "error"))  # the banner, model or not
    assert len(at.selectbox(key="study_idx").options) == 6
    assert at.text_input(key="folder").value == str(tmp_path / "phantoms" / "images")
    assert "512×512" in _caption(at) and any("No model loaded" in i for i in _texts(at, "info"))


def test_sr_link_model_errors_and_multi_image_series(app, studies, tmp_path):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    at = app
    # a second instance in the first study's PA series -> an Image slider
    write_dx(studies / "a" / "img1b.dcm", study="1.2.3.1", series="1.2.3.1.1", instance=2, seed=5)
    # an SR from the batch job for that study
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID = generate_uid()
    sr.StudyInstanceUID, sr.SeriesInstanceUID, sr.Modality = "1.2.3.1", generate_uid(), "SR"
    (tmp_path / "results" / "sr").mkdir(parents=True)
    pydicom.dcmwrite(tmp_path / "results" / "sr" / "study.dcm", sr, enforce_file_format=True)
    at.button(key="rescan").click().run()
    at.selectbox(key="study_idx").set_value(1).run()
    _open_series(at, "CHEST PA")
    assert "2 images" in next(b.label for b in at.button if "CHEST PA" in b.label)
    assert at.slider(key="nav_file").max == 2
    at.slider(key="nav_file").set_value(2).run()
    assert not at.exception and "W 4096 L 2048" in _caption(at)
    assert any("DICOM SR from the batch run" in m and "study.dcm" in m for m in _texts(at, "markdown"))
    assert any(b.label == "Download DICOM SR" for b in at.get("download_button"))
    # a model that cannot be loaded gives a readable message; the image stays on screen
    at.selectbox(key="model_choice").set_value("Other (checkpoint folder or weight tag)…").run()
    at.text_input(key="model_other").input(str(tmp_path / "no-such-model")).run()
    assert not at.exception
    assert any("could not be loaded" in e and "no-such-model" in e for e in _texts(at, "error"))
    assert "W 4096 L 2048" in _caption(at) and _table(at, "Finding") is None


def test_keyboard_shortcut_buttons(app, studies):
    at = app
    assert at.slider(key="nav_frame").value == 1  # multi-frame study first
    at.button(key="sc_Down").click().run()
    at.button(key="sc_Down").click().run()
    assert at.slider(key="nav_frame").value == 3
    at.button(key="sc_Down").click().run()  # stays on the last frame
    assert at.slider(key="nav_frame").value == 3
    at.button(key="sc_Home").click().run()
    assert at.slider(key="nav_frame").value == 1
    at.button(key="sc_End").click().run()
    assert at.slider(key="nav_frame").value == 3
    at.button(key="sc_2").click().run()
    assert "(FULL)" in _caption(at)  # a DX: key 2 is lung on CT, full range here
    at.button(key="sc_I").click().run()
    assert "inverted" in _caption(at) and at.checkbox(key="disp_invert").value
    at.button(key="sc_Space").click().run()
    assert "inverted" not in _caption(at) and "(FULL)" not in _caption(at)
    at.selectbox(key="study_idx").set_value(1).run()
    first = next(b.label for b in at.button if b.label.startswith("#") and b.proto.type == "primary")
    at.button(key="sc_PageDown").click().run()
    second = next(b.label for b in at.button if b.label.startswith("#") and b.proto.type == "primary")
    assert first != second
    at.button(key="sc_PageUp").click().run()
    assert next(b.label for b in at.button if b.label.startswith("#") and b.proto.type == "primary") == first
    assert not at.exception and not at.warning


def test_cached_heatmap_is_medvit_explain_mapped_to_the_image(tiny_model, studies):
    import torch

    from apps.viewer import cache
    from medvit.infer.predictor import load_for_inference
    from medvit.infer.preprocess import Preprocessor, unmap_heatmap
    from medvit.io import read_image
    from medvit.visualize.attribution import explain

    path = str(studies / "a" / "img1.dcm")
    lm = cache.load_model(str(tiny_model))
    model, contract, _ = load_for_inference(tiny_model)
    pre = Preprocessor.from_contract(contract)
    x, notes, _ = pre(read_image(path))
    for method in ("gradcam", "rollout"):
        got = cache.heatmap(str(tiny_model), lm.info.sha256, path, cache.mtime(path), None, 1, method)
        raw = explain(model, torch.from_numpy(x[None]), method=method, target=1)[0].numpy()
        want = np.clip(unmap_heatmap(raw, notes, pre.geometry), 0, 1)
        assert got.shape == (96, 80) and np.allclose(got, want, atol=1e-5) and got.max() > got.min()


def test_series_whose_first_file_is_broken_opens_on_the_first_readable(app, studies):
    at = app
    first = write_dx(studies / "a" / "img0.dcm", study="1.2.3.1", series="1.2.3.1.1", instance=1, seed=7)
    write_dx(studies / "a" / "img1c.dcm", study="1.2.3.1", series="1.2.3.1.1", instance=3, seed=8)
    first.write_bytes(first.read_bytes()[:-700])  # pixel data cut short: listed, not showable
    at.button(key="rescan").click().run()
    at.selectbox(key="study_idx").set_value(1).run()
    _open_series(at, "CHEST PA")
    assert not at.exception
    assert "W 4096 L 2048" in _caption(at)  # an image is on screen, with its controls
    assert at.selectbox(key="disp_preset") is not None and at.slider(key="nav_file").value >= 2
    warned = " ".join(_texts(at, "warning"))
    assert "Cannot be shown" in warned and "img0.dcm" in warned and "image 1" in warned
