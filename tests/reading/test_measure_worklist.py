"""Measurements (distance, angle, ROI statistics, TID 1500 SR) and the worklist built from infer's tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.reading.test_segmentation import dciodvfy_errors


def test_distance_angle_with_spacing_and_caveat():
    from medvit.io.measure import angle_deg, distance_mm, distance_px
    from medvit.io.spacing import pixel_spacing

    sp = pixel_spacing({"ImagerPixelSpacing": [0.2, 0.1], "Modality": "DX"})
    assert distance_mm((0, 0), (30, 40), sp) == pytest.approx(math.hypot(30 * 0.1, 40 * 0.2))
    assert distance_px((0, 0), (30, 40)) == 50
    assert distance_mm((0, 0), (1, 1), None) is None
    assert angle_deg((10, 0), (0, 0), (0, 10)) == pytest.approx(90)
    # anisotropic pixels: 45 degrees in pixels is atan(0.2/0.1) in millimetres
    assert angle_deg((10, 0), (0, 0), (10, 10), sp) == pytest.approx(math.degrees(math.atan2(2.0, 1.0)))
    with pytest.raises(ValueError, match="zero length"):
        angle_deg((0, 0), (0, 0), (1, 1))


def test_roi_stats_rectangle_and_ellipse_in_hu():
    from medvit.io.measure import roi_stats
    from medvit.io.spacing import Spacing

    px = np.full((50, 60), -1000.0, np.float32)
    px[10:30, 20:40] = np.arange(400, dtype=np.float32).reshape(20, 20)
    sp = Spacing(0.5, 0.5, "PixelSpacing", "patient")
    r = roi_stats(px, "rectangle", (20, 10, 40, 30), sp, "CT")
    inside = px[10:30, 20:40]
    assert r.n == 400 and r.unit == "HU" and r.area_mm2 == pytest.approx(100.0)
    assert (r.mean, r.sd, r.min, r.max) == pytest.approx((inside.mean(), inside.std(), 0, 399))
    e = roi_stats(px, "ellipse", (20, 10, 40, 30), sp, "CT")
    assert e.n == pytest.approx(math.pi * 10 * 10, rel=0.05) and e.min > 0
    pad = np.zeros_like(px, bool)
    pad[10:30, 20:30] = True
    assert roi_stats(px, "rectangle", (20, 10, 40, 30), sp, padding_mask=pad).n == 200
    with pytest.raises(ValueError, match="no area"):
        roi_stats(px, "rectangle", (5, 5, 5, 9), sp)


@pytest.mark.external  # dciodvfy (dicom3tools)
def test_measurement_sr_is_valid_tid1500(tmp_path):
    import highdicom as hd
    import pydicom

    from medvit.io.measurement_sr import ReaderMeasurement, write_measurement_sr
    from tests.infer.helpers import write_dx

    hdr = pydicom.dcmread(write_dx(tmp_path / "src.dcm", "1.2.3.4", "1.2.3.4.5"), stop_before_pixels=True)
    ms = [ReaderMeasurement("distance", [(1, 2), (10, 20)], {"length_mm": 4.02}),
          ReaderMeasurement("angle", [(1, 2), (10, 20), (30, 5)], {"angle_deg": 63.0}),
          ReaderMeasurement("rectangle", [(1, 2), (10, 20)], {"mean": 100.0, "sd": 3.0, "min": 90, "max": 110,
                                                               "area_mm2": 7.2}),
          ReaderMeasurement("ellipse", [(1, 2), (10, 20)], {"mean": -50.0, "sd": 3.0, "min": -60, "max": -40},
                            unit="HU")]
    f = write_measurement_sr(tmp_path / "m.dcm", hdr, ms, reader="Smith^J")
    assert dciodvfy_errors(f) == []
    sr = hd.sr.srread(f)
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 4
    length = groups[0].get_measurements()[0]
    assert length.name.meaning == "Length" and length.value == pytest.approx(4.02) and length.unit.value == "mm"
    assert groups[0].reference_type.meaning == "Image Region"
    assert groups[3].roi.graphic_type.value == "ELLIPSE"
    with pytest.raises(ValueError, match="needs 3 points"):
        ReaderMeasurement("angle", [(1, 2), (3, 4)], {})


def _records(path: Path, rows: list[tuple[str, str, str, float, bool | str]]) -> None:
    thr = {"Pneumothorax": 0.5, "Effusion": 0.3}
    with open(path, "w") as f:
        for i, (study, date, mod, p, ood) in enumerate(rows):
            f.write(json.dumps({"file": f"img{i}.dcm", "study_instance_uid": study, "study_date": date,
                                "modality": mod, "patient_id": "P", "accession_number": f"A{i}",
                                "probabilities": {"Pneumothorax": p, "Effusion": 0.35}, "thresholds": thr,
                                "ood_flag": ood, "model": {"name": "m", "version": "1"}}) + "\n")


def test_worklist_folds_studies_orders_and_filters(tmp_path):
    from medvit.infer.worklist import load_worklist, mark_read, reading_status, select, with_status

    _records(tmp_path / "predictions.jsonl", [
        ("1.1", "20240101", "DX", 0.2, False), ("1.1", "20240101", "DX", 0.7, False),  # study max 0.7
        ("1.2", "20240301", "CR", 0.9, True), ("1.3", "20240201", "DX", 0.4, False),
        ("1.4", "20231201", "DX", 0.55, "")])
    rows = load_worklist(tmp_path)
    assert [r.study_uid for r in rows] == ["1.1", "1.2", "1.3", "1.4"] and rows[0].n_images == 2
    assert rows[0].probabilities["Pneumothorax"] == 0.7 and rows[0].positive == ["Pneumothorax", "Effusion"]
    assert rows[2].positive == ["Effusion"] and rows[3].ood is None and rows[1].ood is True
    order = [r.study_uid for r in select(rows, "Pneumothorax")]
    assert order == ["1.2", "1.1", "1.4", "1.3"]
    assert [r.study_uid for r in select(rows, "Pneumothorax", threshold=0.6)] == ["1.2", "1.1", "1.4", "1.3"]
    assert [r.study_uid for r in select(rows, "Pneumothorax", modality="DX")] == ["1.1", "1.4", "1.3"]
    assert [r.study_uid for r in select(rows, sort="date", date_from="20240101")] == ["1.2", "1.3", "1.1"]
    mark_read(tmp_path, "1.3")
    (tmp_path / "feedback").mkdir()
    (tmp_path / "feedback" / "1.1.json").write_text(json.dumps({"study": "1.1", "entries": [{"x": 1}]}))
    with_status(rows, reading_status(tmp_path))
    assert [r.status for r in rows] == ["feedback", "unread", "read", "unread"]
    assert [r.study_uid for r in select(rows, "Pneumothorax", status="unread")] == ["1.2", "1.4"]
    assert rows[1].to_row()["top findings"] == "Pneumothorax 0.90, Effusion 0.35"
    with pytest.raises(ValueError, match="not in the results"):
        select(rows, "Pneumothrax")
    (tmp_path / "predictions.jsonl").write_text('{"file": "a"}\n')
    with pytest.raises(ValueError, match="line 1: not a medvit prediction"):
        load_worklist(tmp_path)
    with pytest.raises(FileNotFoundError, match="medvit infer"):
        load_worklist(tmp_path / "nowhere")


@pytest.mark.parametrize("content", ['{"read": 5}', "[]", '"x"', '{"read": ["a"]}', "{not json"])
def test_hostile_read_marks_are_ignored_and_replaced(tmp_path, content):
    """breaker minor: read.json of the wrong shape raised TypeError/AttributeError (the viewer worklist crashed)."""
    from medvit.infer.worklist import READ_MARKS, mark_read, reading_status

    (tmp_path / READ_MARKS).parent.mkdir(parents=True)
    (tmp_path / READ_MARKS).write_text(content)
    assert reading_status(tmp_path) == {}
    mark_read(tmp_path, "1.3", reader="r")
    assert reading_status(tmp_path) == {"1.3": "read"}


@pytest.mark.parametrize("content", ['{"read": 5}', "[]", "{not json", '{"read": {"1.1": {"reader": "a"}'])
def test_unusable_read_marks_warn_naming_the_file_and_are_kept_not_overwritten(tmp_path, caplog, content):
    """F-READJSON: mark_read silently replaced an unusable read.json (its content lost); now it is moved aside
    (read.json.unreadable, then -1, ...) with a warning naming the files, and valid marks are kept as they are."""
    import logging

    from medvit.infer.worklist import READ_MARKS, mark_read, reading_status

    p = tmp_path / READ_MARKS
    p.parent.mkdir(parents=True)
    p.write_text(content)
    with caplog.at_level(logging.WARNING, logger="medvit"):
        assert reading_status(tmp_path) == {}
        mark_read(tmp_path, "1.3", reader="r")
    assert str(p) in caplog.text and "read.json.unreadable" in caplog.text
    assert (p.parent / "read.json.unreadable").read_text() == content
    assert reading_status(tmp_path) == {"1.3": "read"}
    p.write_text(content)                      # a second unusable file does not overwrite the first backup
    mark_read(tmp_path, "1.4")
    assert (p.parent / "read.json.unreadable-1").read_text() == content
    mark_read(tmp_path, "1.5")                 # a usable file keeps its marks
    assert reading_status(tmp_path) == {"1.4": "read", "1.5": "read"}
