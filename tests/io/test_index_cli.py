"""Tree index (headers only, DICOMDIR, skipped files with reasons) and the ``medvit dicom`` CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medvit.cli.main import main
from medvit.io.index import index_tree

from .conftest import corpus_root, write_dicom


def _tree(tmp_path):
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(3):
        write_dicom(root / "a" / f"{i}.dcm", np.zeros((8, 6), np.uint16), SeriesInstanceUID="9.1",
                    StudyInstanceUID="9", Modality="DX", ViewPosition="PA", BodyPartExamined="CHEST")
    write_dicom(root / "b" / "lat.dcm", np.zeros((4, 4), np.uint16), SeriesInstanceUID="9.2",
                StudyInstanceUID="9", Modality="DX", ViewPosition="LL")
    (root / "b" / "notes.txt").write_text("hello")
    (root / "b" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7f")
    return root


def test_index_groups_series_and_lists_skipped(tmp_path):
    res = index_tree(_tree(tmp_path))
    s = res.summary()
    assert (s["files"], s["patients"], s["studies"], s["series"]) == (4, 1, 1, 2)
    series = {r["series_uid"]: r for r in res.series}
    assert series["9.1"]["n_instances"] == 3 and series["9.1"]["view_positions"] == "PA"
    assert series["9.1"]["sizes"] == "8x6" and series["9.1"]["body_part"] == "CHEST"
    skipped = {r["path"].split("/")[-1]: r["reason"] for r in res.skipped}
    assert set(skipped) == {"notes.txt", "broken.dcm"}
    assert "NotDicomError" in skipped["notes.txt"] and "Error" in skipped["broken.dcm"]
    tree = res.patients()
    assert tree[0]["patient_id"] == "P1" and len(tree[0]["studies"][0]["series"]) == 2


def test_index_parallel_equals_serial(tmp_path):
    root = _tree(tmp_path)
    a = index_tree(root, workers=1)
    b = index_tree(root, workers=2, min_parallel=1)
    assert a.series == b.series and a.skipped == b.skipped


def test_dicomdir_is_followed():
    res = index_tree(corpus_root() / "dicomdirtests" / "DICOMDIR")
    assert res.dicomdirs and res.summary()["files"] == 31 and not res.skipped
    assert {r["modality"] for r in res.series} == {"CT", "CR", "MR"}


def test_cli_index_csv_and_json(tmp_path, capsys):
    root = _tree(tmp_path)
    assert main(["dicom", "index", str(root), "--out", str(tmp_path / "i.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "i.csv").open()))
    assert len(rows) == 2 and {r["series_uid"] for r in rows} == {"9.1", "9.2"}
    assert len(list(csv.DictReader((tmp_path / "i.skipped.csv").open()))) == 2
    assert main(["dicom", "index", str(root), "--out", str(tmp_path / "i.json")]) == 0
    doc = json.loads((tmp_path / "i.json").read_text())
    assert doc["summary"]["series"] == 2 and len(doc["skipped"]) == 2
    assert "2 series" in capsys.readouterr().out


def test_cli_render_window_preset_frame(tmp_path):
    from PIL import Image

    p = write_dicom(tmp_path / "ct.dcm", np.array([[0, 1024], [1064, 3000]], np.uint16), Modality="CT",
                    RescaleIntercept=-1024, RescaleSlope=1, WindowCenter=40, WindowWidth=400)
    out = tmp_path / "o.png"
    assert main(["dicom", "render", str(p), "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), [[0, 102], [127, 255]])  # -1024, 0, 40, 1976 HU
    assert main(["dicom", "render", str(p), "--out", str(out), "--window=-600,1500"]) == 0
    assert np.asarray(Image.open(out))[0, 1] > 0
    assert main(["dicom", "render", str(p), "--out", str(out), "--preset", "bone"]) == 0
    mf = write_dicom(tmp_path / "mf.dcm", np.stack([np.full((2, 2), k * 100, np.uint16) for k in range(4)]),
                     WindowCenter=100, WindowWidth=200)
    assert main(["dicom", "render", str(mf), "--out", str(out), "--frame", "3"]) == 0
    assert (np.asarray(Image.open(out)) == 255).all()


@pytest.mark.parametrize("argv,msg", [
    (["--window", "12"], "center,width"),
    (["--preset", "nope"], "unknown window preset"),
    (["--frame", "7"], "frame"),
])
def test_cli_render_errors(tmp_path, capsys, argv, msg):
    p = write_dicom(tmp_path / "x.dcm", np.zeros((2, 2), np.uint16))
    rc = main(["dicom", "render", str(p), "--out", str(tmp_path / "o.png"), *argv])
    assert rc == 2 and msg in capsys.readouterr().err


def test_cli_render_unsupported_names_plugin(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gdcm", None)  # as on a machine without python-gdcm
    rc = main(["dicom", "render", str(corpus_root() / "JPGExtended.dcm"), "--out", str(tmp_path / "o.png")])
    assert rc == 2 and "pylibjpeg-libjpeg" in capsys.readouterr().err


def test_index_whole_corpus_accounts_for_every_file():
    root = corpus_root()
    res = index_tree(root)
    files = {str(p) for p in root.rglob("*") if p.is_file()}
    seen = {r["path"] for r in res.files} | {r["path"] for r in res.skipped} | set(res.dicomdirs)
    assert seen >= files  # every corpus file is indexed, skipped with a reason, or a DICOMDIR
    assert all(r["reason"] for r in res.skipped)
    reasons = {r["path"].split("/")[-1]: r["reason"] for r in res.skipped}
    assert reasons["README.txt"].startswith("NotDicomError") and "DICOMDIR-nopatient" in reasons
    assert len(res.dicomdirs) >= 6


def test_cli_index_states_its_summary_once(tmp_path):
    """The terminal shows the summary line once: no INFO log line repeating it (a real process, so the CLI's own
    logging set-up is what is checked)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = _tree(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    r = subprocess.run([sys.executable, "-m", "medvit", "dicom", "index", str(root), "--out", str(tmp_path / "i.csv")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    terminal = r.stdout + r.stderr
    assert terminal.count("indexed") == 1, terminal
    assert "INFO" not in terminal, terminal
