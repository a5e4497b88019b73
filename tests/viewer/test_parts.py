"""Unit tests of the viewer's Streamlit-free parts: view composition, feedback store, redaction, uploads, CLI."""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from apps.viewer import feedback, redact, sources, view
from tests.viewer.conftest import PATIENT_NAME, write_dx


# ----------------------------------------------------------------------------- view
def test_zoom_box_stays_inside_and_magnifies():
    assert view.zoom_box(100, 200) == (0, 0, 100, 200)
    assert view.zoom_box(100, 200, 2.0) == (25, 50, 75, 150)
    assert view.zoom_box(100, 200, 4.0, cx=1.0, cy=0.0) == (0, 150, 25, 200)  # clamped at the edges
    with pytest.raises(ValueError, match="zoom"):
        view.zoom_box(10, 10, 0.5)


def test_compose_downsamples_keeps_aspect_and_blends_heat():
    disp = np.tile(np.arange(256, dtype=np.uint8), (128, 8))  # (128, 2048) horizontal ramp
    grey = view.compose(disp, max_side=512)
    assert grey.shape == (32, 512) and grey.dtype == np.uint8  # grey stays single-channel
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    heat = np.zeros((16, 256), np.float32)
    heat[:, 128:] = 1.0  # hot right half, at a lower resolution than the image
    hot = view.compose(disp, max_side=512, heat=heat, opacity=1.0)
    assert np.array_equal(hot[:, :200], rgb[:, :200])  # cold area shows the image unchanged
    assert np.abs(hot[:, 300:].astype(int) - rgb[:, 300:]).mean() > 20  # hot area is coloured
    assert np.array_equal(view.compose(disp, max_side=512, heat=heat, opacity=0.0), grey)
    zoomed = view.compose(disp, box=view.zoom_box(128, 2048, 8.0, cx=0.0), max_side=512)
    assert zoomed.shape == (32, 512)  # the 16x256 box (one ramp period) magnified 2x
    assert np.all(np.diff(zoomed[0].astype(int)) >= 0) and zoomed[0, 0] < 5 and zoomed[0, -1] > 250


def test_draw_corners_writes_text_in_each_corner():
    rgb = np.zeros((200, 300, 3), np.uint8)
    out = view.draw_corners(rgb, {c: ["TEXT"] for c in view.CORNERS}, size=14)
    for sl in ((slice(0, 40), slice(0, 80)), (slice(0, 40), slice(220, 300)), (slice(160, 200), slice(0, 80)),
               (slice(160, 200), slice(220, 300))):
        assert out[sl].max() > 200
    assert out[80:120, 120:180].max() == 0  # the middle stays clean
    with pytest.raises(KeyError, match="middle"):
        view.draw_corners(rgb, {"middle": ["x"]})
    grey = view.draw_corners(np.zeros((200, 300), np.uint8), {"top_left": ["TEXT"]}, size=14)
    assert grey.shape == (200, 300) and grey[:40, :80].max() > 200
    from PIL import Image

    png = view.to_png(grey)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), grey)  # lossless


# ----------------------------------------------------------------------------- feedback
def _entry(verdict="agree", reader="AB", sha="s1"):
    return {"reader": reader, "series": "1.2.1", "instance": "1.2.1.1", "frame": None,
            "model": {"name": "m", "version": "1", "sha256": sha},
            "findings": [{"finding": "Effusion", "probability": 0.7, "threshold": 0.5, "positive": True,
                          "verdict": verdict, "comment": ""}]}


def test_feedback_saves_replaces_per_reader_and_model(tmp_path):
    p = feedback.save(tmp_path, "1.2.3/../4", _entry())
    assert p == tmp_path / "feedback" / "1.2.3_.._4.json" and p.parent == tmp_path / "feedback"
    feedback.save(tmp_path, "1.2.3/../4", _entry("disagree"))  # same reader, image, model: replaced
    feedback.save(tmp_path, "1.2.3/../4", _entry(reader="CD"))  # another reader: added
    feedback.save(tmp_path, "1.2.3/../4", _entry(sha="s2"))  # another model: added
    doc = feedback.load(p)
    assert doc["study"] == "1.2.3/../4" and len(doc["entries"]) == 3
    ab = [e for e in doc["entries"] if e["reader"] == "AB" and e["model"]["sha256"] == "s1"]
    assert len(ab) == 1 and ab[0]["findings"][0]["verdict"] == "disagree" and ab[0]["saved_at"].endswith("+00:00")
    assert [x.name for x in p.parent.iterdir()] == [p.name]  # no temporary files left


def test_feedback_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="verdict"):
        feedback.save(tmp_path, "s", _entry("maybe"))
    with pytest.raises(KeyError, match="findings"):
        feedback.save(tmp_path, "s", {"instance": "i", "frame": 0, "model": {}})
    bad = feedback.study_file(tmp_path, "s")
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="move it aside"):
        feedback.save(tmp_path, "s", _entry())


# ----------------------------------------------------------------------------- redaction
@pytest.mark.parametrize("kw, hidden", [
    ("PatientName", True), ("PatientID", True), ("PatientBirthDate", True), ("InstitutionName", True),
    ("AccessionNumber", True), ("ReferringPhysicianName", True), ("OperatorsName", True),
    ("StudyDate", False), ("StudyTime", False), ("SeriesDescription", False), ("StudyInstanceUID", False),
    ("Modality", False), ("WindowCenter", False), ("Manufacturer", False),
])
def test_redaction_follows_the_basic_profile(kw, hidden):
    assert redact.is_identifying(kw) is hidden
    assert redact.shown(kw, "x", reveal=False) == (redact.HIDDEN if hidden else "x")
    assert redact.shown(kw, "x", reveal=True) == "x"


def test_tag_rows_hide_private_and_nested_identifiers(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(write_dx(tmp_path / "a.dcm"))
    ds.add_new(0x00091001, "LO", "private secret")
    item = Dataset()
    item.PatientName = "Nested^Name"
    item.CodeMeaning = "kept"
    ds.ReferencedImageSequence = [item]
    rows = redact.tag_rows(ds, reveal=False)
    text = json.dumps(rows)
    assert PATIENT_NAME not in text and "private secret" not in text and "Nested^Name" not in text
    assert "kept" in text and "20240131" in text and any(r["Value"].startswith("<") for r in rows)
    assert "(0002,0010)" in [r["Tag"] for r in rows]  # file meta listed
    revealed = json.dumps(redact.tag_rows(ds, reveal=True))
    assert PATIENT_NAME in revealed and "private secret" in revealed and "Nested^Name" in revealed


# ----------------------------------------------------------------------------- sources
def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_extraction_refuses_unsafe_paths(tmp_path):
    sources.extract_zip(_zip({"a/b.dcm": b"x"}), tmp_path / "ok")
    assert (tmp_path / "ok" / "a" / "b.dcm").read_bytes() == b"x"
    for bad in ("../evil.dcm", "/abs.dcm", "a/../../evil.dcm"):
        with pytest.raises(ValueError, match="unsafe path"):
            sources.extract_zip(_zip({bad: b"x"}), tmp_path / "bad")
    assert not (tmp_path / "evil.dcm").exists()
    problems = sources.save_uploads([("../../up.dcm", b"y"), ("x.zip", b"garbage")], tmp_path / "up")
    assert (tmp_path / "up" / "up.dcm").read_bytes() == b"y"
    assert problems and problems[0][0] == "x.zip" and "ZIP" in problems[0][1]


def test_catalog_groups_series_and_reports_non_images(tmp_path, studies):
    (studies / "junk.bin").write_bytes(b"\x00" * 300)
    np.save(studies / "vol.npy", np.zeros((4, 8, 8), np.float32))
    cat = sources.catalog(studies)
    assert [len(s.series) for s in cat.studies if s.key.startswith("1.2.3")] in ([1, 2], [2, 1])
    multi = next(s for st in cat.studies for s in st.series if s.description == "CINE")
    assert multi.frames == 3 and "3 frames" in multi.label
    assert any(s.series[0].files[0].endswith("vol.npy") for s in cat.studies)
    assert [r for r, _ in cat.skipped] == ["junk.bin"]  # README.md beside the studies is ignored
    assert all(PATIENT_NAME not in s.label(reveal=False) for s in cat.studies)
    assert any(PATIENT_NAME in s.label(reveal=True) for s in cat.studies)


# ----------------------------------------------------------------------------- CLI
def _args(**kw):
    base = dict(data=None, model=None, results=None, port=8501, host="127.0.0.1")
    return argparse.Namespace(**{**base, **kw})


def test_cli_builds_a_localhost_streamlit_command(tmp_path, studies, monkeypatch):
    from medvit.cli.main import build_parser
    from medvit.cli.viewer_cmd import ENV_DATA, ENV_MODEL, ENV_RESULTS, app_path, build_command

    monkeypatch.setenv(ENV_MODEL, "stale")
    args = build_parser().parse_args(["viewer", "--data", str(studies), "--port", "8765"])
    argv, env = build_command(args)
    assert argv[1:4] == ["-m", "streamlit", "run"] and Path(argv[4]) == app_path() and app_path().is_file()
    opts = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert opts["--server.address"] == "127.0.0.1" and opts["--server.port"] == "8765"
    assert opts["--server.headless"] == "true" and opts["--browser.gatherUsageStats"] == "false"
    assert env[ENV_DATA] == str(studies.resolve()) and ENV_MODEL not in env and ENV_RESULTS not in env
    argv, env = build_command(_args(host="0.0.0.0", model="vit_small_patch16_224.cxr_mae", results="r"))
    assert dict(zip(argv[5::2], argv[6::2], strict=True))["--server.address"] == "0.0.0.0"
    assert env[ENV_MODEL] == "vit_small_patch16_224.cxr_mae" and Path(env[ENV_RESULTS]).is_absolute()
    with pytest.raises(FileNotFoundError, match="--data"):
        build_command(_args(data=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="--port"):
        build_command(_args(port=70000))


def test_config_defaults_to_the_demo_outputs(tmp_path, monkeypatch):
    import hashlib

    from apps.viewer import config
    from apps.viewer.config import FALLBACK_RESULTS, from_env

    monkeypatch.setattr(config, "DEMO_OUT", Path("no-demo-here"))  # the checkout may hold a real demo_out
    demo = tmp_path / "pipelines" / "demo"
    demo.mkdir(parents=True)
    (demo / "cxr_phantom_demo.yaml").write_text("task: x\n")
    key = hashlib.sha256(b"task: x\n").hexdigest()
    env = {"MEDVIT_DEMO_CACHE": str(tmp_path / "cache"), "MEDVIT_PIPELINES": str(tmp_path / "pipelines")}
    cfg = from_env(env, cwd=tmp_path)
    assert cfg.data_dir is None and cfg.model is None and cfg.results_dir == FALLBACK_RESULTS
    monkeypatch.setattr(config, "DEMO_OUT", Path("demo_out"))
    for d in ("inbox", "results"):
        (tmp_path / "demo_out" / d).mkdir(parents=True)
    for m in (tmp_path / "cache" / "model", demo / "model"):
        m.mkdir(parents=True)
        (m / "config.json").write_text("{}")
    (tmp_path / "cache" / "PIPELINE_SHA256").write_text(key + "\n")  # `medvit demo` trained the cache: it wins
    cfg = from_env(env, cwd=tmp_path)
    assert cfg.data_source == "demo" and cfg.data_dir == tmp_path / "demo_out" / "inbox"
    assert cfg.model == str(tmp_path / "cache" / "model") and cfg.results_dir == tmp_path / "demo_out" / "results"
    (demo / "model" / "PIPELINE_SHA256").write_text(key + "\n")  # the committed model of the current YAML
    assert from_env(env, cwd=tmp_path).model == str(demo / "model")
    cfg = from_env({"MEDVIT_VIEWER_DATA": "/d", "MEDVIT_VIEWER_MODEL": "m", "MEDVIT_VIEWER_RESULTS": "/r"}, tmp_path)
    assert (cfg.data_dir, cfg.model, cfg.results_dir, cfg.data_source) == (Path("/d"), "m", Path("/r"), "--data")
    # --data without --results: feedback and SR links beside the data (DIR/../results), not in the home folder
    cfg = from_env({**env, "MEDVIT_VIEWER_DATA": str(tmp_path / "site" / "inbox")}, tmp_path)
    assert cfg.results_dir == tmp_path / "site" / "results"


def test_fit_respects_both_limits():
    assert view.fit(2048, 2048, 1024) == (1024, 1024)
    assert view.fit(2048, 2048, 1024, max_h=760) == (760, 760)
    assert view.fit(96, 80, 1024, max_h=760) == (760, 633)
    assert view.fit(100, 400, 1024, max_h=760) == (256, 1024)


def test_catalog_skips_dicom_without_pixels_and_flags_duplicate_instances(tmp_path):
    import shutil

    import pydicom
    from pydicom.data import get_testdata_file

    root = tmp_path / "in"
    root.mkdir()
    write_dx(root / "a.dcm", study="5.1", series="5.1.1")
    shutil.copy(root / "a.dcm", root / "a_copy.dcm")  # same SOP Instance UID twice
    shutil.copy(get_testdata_file("rtplan.dcm"), root / "plan.dcm")
    assert "PixelData" not in pydicom.dcmread(root / "plan.dcm")
    cat = sources.catalog(root)
    assert [s.key for s in cat.studies] == ["5.1"] and cat.studies[0].series[0].duplicates == 1
    assert [r for r, _ in cat.skipped] == ["plan.dcm"] and "no image" in cat.skipped[0][1]


def test_overlay_font_is_bundled_and_has_every_glyph_medvit_writes():
    """Overlay text and exported PNGs use DejaVu Sans from matplotlib's own files: "×", "·", "…", "–" exist."""
    from fontTools.ttLib import TTFont

    path = view.overlay_font_path()
    assert path.is_file()
    cmap = TTFont(str(path)).getBestCmap()
    corners = {"top_left": ["Doe^Jörg", "ID ···"], "bottom_left": ["W 1500 L -600 (lung)", "Zoom 2×  ·  heatmap"],
               "bottom_right": ["Image 1/3", "512×512"], "top_right": ["CR · CHEST – PA", "Ünïcödé …"]}
    used = {ch for lines in corners.values() for line in lines for ch in line if not ch.isspace()}
    assert not [ch for ch in used if ord(ch) not in cmap]
    out = view.draw_corners(np.zeros((120, 200, 3), np.uint8), corners)
    assert out.shape == (120, 200, 3) and out.max() > 200
