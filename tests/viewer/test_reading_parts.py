"""Reading parts without a browser: priors, SEG index, label blending and measurement graphics."""

from __future__ import annotations

import numpy as np
import pytest


def test_priors_are_earlier_same_patient_same_modality():
    from apps.viewer.priors_panel import priors_of
    from apps.viewer.sources import Catalog, Series, Study

    def study(key, date, pid, mod):
        s = Study(key, date, "", "", pid)
        s.series.append(Series(key + ".1", key, mod, "d", "1", [f"{key}.dcm"]))
        return s

    cur, old, older = study("c", "20240301", "P", "DX"), study("o", "20240101", "P", "DX"), \
        study("oo", "20230101", "P", "DX")
    other_mod, other_pat, later = study("m", "20240201", "P", "CT"), study("x", "20240102", "Q", "DX"), \
        study("l", "20240401", "P", "DX")
    cat = Catalog("/", [cur, old, older, other_mod, other_pat, later])
    assert [s.key for s, _ in priors_of(cat, cur.series[0])] == ["o", "oo"]
    assert priors_of(cat, older.series[0]) == []


def test_blend_labels_and_measurement_graphics():
    from medvit.visualize.annotate import blend_labels, draw_measurements

    grey = np.full((20, 30), 100, np.uint8)
    m = np.zeros((2, 20, 30), bool)
    m[0, 5:15, 5:15] = True
    m[1, 0:3, 0:3] = True
    out = blend_labels(grey, m, [(255, 0, 0), (0, 0, 255)], opacity=0.5, visible=[True, False], outline=False)
    assert tuple(out[10, 10]) == (178, 50, 50) and tuple(out[1, 1]) == (100, 100, 100)
    assert tuple(out[18, 25]) == (100, 100, 100)
    with pytest.raises(ValueError, match="do not fit"):
        blend_labels(grey, m[:, :10], [(1, 2, 3)] * 2)
    drawn = draw_measurements(grey, [("distance", [(2, 10), (28, 10)]), ("rectangle", [(5, 5), (15, 15)])])
    assert drawn.shape == (20, 30, 3) and tuple(drawn[10, 20]) == (255, 220, 0)


def test_segmentation_index_finds_seg_by_source_instance(tmp_path):
    import pydicom

    from medvit.io.seg import segmentation_index, write_segmentation
    from medvit.models.segmentation import phantom_segment_labels
    from tests.infer.helpers import write_dx

    src = write_dx(tmp_path / "in" / "a.dcm", "1.2.3", "1.2.3.4")
    hdr = pydicom.dcmread(src, stop_before_pixels=True)
    f = write_segmentation(tmp_path / "out" / "seg.dcm", hdr, np.ones((1, 40, 48), bool),
                           phantom_segment_labels(["heart"]), "BINARY", "m", "1", "cd" * 32)
    (tmp_path / "out" / "notes.txt").write_text("not DICOM")
    idx = segmentation_index(tmp_path / "out", tmp_path / "in", tmp_path / "missing")
    assert idx == {str(hdr.SOPInstanceUID): [str(f)]}


def test_window_is_kept_per_series(app_reading):
    """Series A in the 'full' window, series B opens in its file window, back to A: 'full' again."""
    at = app_reading
    at.selectbox(key="study_idx").set_value(1).run()  # the study with two series
    first = next(b for b in at.button if "CHEST LAT" in b.label or "CHEST PA" in b.label)
    opts = at.selectbox(key="disp_preset").options
    full = next(o for o in opts if o.startswith("full"))
    at.selectbox(key="disp_preset").set_value(full).run()
    assert not at.exception and at.selectbox(key="disp_preset").value == full
    other = next(b for b in at.button if ("CHEST PA" in b.label or "CHEST LAT" in b.label)
                 and b.label != first.label and b.key.startswith("open_series"))
    other.click().run()
    assert at.selectbox(key="disp_preset").value.startswith("File window")
    next(b for b in at.button if b.label == first.label and b.key.startswith("open_series")).click().run()
    assert not at.exception and at.selectbox(key="disp_preset").value == full


@pytest.fixture
def app_reading(studies, tiny_model, tmp_path, monkeypatch):
    from tests.viewer.test_app import app as app_fixture

    return app_fixture.__wrapped__(studies, tiny_model, tmp_path, monkeypatch)


def test_measure_keep_save_and_export_sr(app_reading, tmp_path):
    """A distance typed on the CHEST PA image (Imager Pixel Spacing 0.2 mm): 10.00 mm, kept, saved with the
    feedback (RESULTS/feedback/<study>.json) and exported as a TID 1500 SR that reads back with highdicom."""
    import json

    import highdicom as hd

    at = app_reading
    at.selectbox(key="study_idx").set_value(1).run()
    next(b for b in at.button if "CHEST PA" in b.label).click().run()
    for key, v in (("ms_distance_start_x", 10.0), ("ms_distance_start_y", 20.0), ("ms_distance_end_x", 40.0),
                   ("ms_distance_end_y", 60.0)):
        at.number_input(key=key).set_value(v)
    at.run()
    assert any("Distance: 10.00 mm" in m.value for m in at.markdown)
    at.button(key="ms_keep").click().run()
    at.button(key="ms_save").click().run()
    at.button(key="ms_sr").click().run()
    assert not at.exception, at.exception
    fb = json.loads(next((tmp_path / "results" / "feedback").glob("*.json")).read_text())
    m = fb["entries"][-1]["measurements"][0]
    assert m["kind"] == "distance" and m["values"]["length_mm"] == pytest.approx(10.0)
    sr = hd.sr.srread(next((tmp_path / "results" / "measurements").rglob("*.dcm")))
    length = sr.content.get_planar_roi_measurement_groups()[0].get_measurements()[0]
    assert length.value == pytest.approx(10.0) and length.unit.value == "mm"


def test_prior_shown_beside_the_current_view(studies, tiny_model, tmp_path, monkeypatch):
    import pydicom

    from tests.viewer.conftest import write_dx

    p = write_dx(studies / "a" / "prior.dcm", study="1.2.3.9", series="1.2.3.9.1", seed=5)
    ds = pydicom.dcmread(p)
    ds.StudyDate = "20230101"
    ds.save_as(p)
    at = app_reading.__wrapped__(studies, tiny_model, tmp_path, monkeypatch)
    at.selectbox(key="study_idx").set_value(1).run()
    next(b for b in at.button if "CHEST PA" in b.label).click().run()
    prior = at.selectbox(key="prior_idx")
    assert prior.options[1].startswith("Prior 2023-01-01")
    n_images = len(at.get("image"))
    full = next(o for o in at.selectbox(key="disp_preset").options if o.startswith("full"))
    at.selectbox(key="disp_preset").set_value(full)
    prior.set_value(1).run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == n_images + 1  # the prior beside the current view
    assert not [e for e in at.get("error") if "Cannot show the prior" in e.value]


def test_worklist_panel_filters_orders_and_marks_read(app_reading, tmp_path):
    import datetime
    import json

    at = app_reading
    res = tmp_path / "results"
    res.mkdir(exist_ok=True)
    recs = [("1.2.3.1", "20240131", "DX", 0.2), ("1.2.3.2", "20240131", "DX", 0.9), ("9.9", "20230101", "CR", 0.7)]
    with open(res / "predictions.jsonl", "w") as f:
        for i, (study, date, mod, p) in enumerate(recs):
            f.write(json.dumps({"file": f"f{i}.dcm", "study_instance_uid": study, "study_date": date,
                                "modality": mod, "probabilities": {"Effusion": p}, "thresholds": {"Effusion": 0.4},
                                "ood_flag": "", "model": {"name": "m", "version": "1"}}) + "\n")
    at.run()
    table = at.table[0].value
    assert list(table["study"]) == ["1.2.3.2", "9.9", "1.2.3.1"] and list(table["Effusion"]) == ["0.900", "0.700",
                                                                                               "0.200"]
    # the sidebar's study list follows the worklist: first the study with p = 0.9
    assert "1.2.3.2" in at.session_state["series_key"]
    at.selectbox(key="wl_modality").set_value("DX").run()
    assert list(at.table[0].value["study"]) == ["1.2.3.2", "1.2.3.1"]
    at.date_input(key="wl_since").set_value(datetime.date(2024, 1, 1)).run()
    at.selectbox(key="wl_modality").set_value("All").run()
    assert list(at.table[0].value["study"]) == ["1.2.3.2", "1.2.3.1"]
    at.button(key="wl_mark_read").click().run()
    assert not at.exception, at.exception
    assert list(at.table[0].value["status"]) == ["read", "unread"]


def test_segmentation_model_run_on_open_draws_its_masks(studies, tmp_path, monkeypatch):
    """A segmentation checkpoint picked as the viewer's model: *Run model* gives presence probabilities per label
    (no heatmap controls) and its masks are drawn on the view (named in the caption)."""
    from tests.reading.helpers import SEG_LABELS, make_seg_model

    model = make_seg_model(tmp_path / "segmodel")
    at = app_reading.__wrapped__(studies, model, tmp_path, monkeypatch)
    at.selectbox(key="study_idx").set_value(1).run()
    next(b for b in at.button if "CHEST PA" in b.label).click().run()
    at.button(key="run_model").click().run()
    assert not at.exception, at.exception
    df = next(d.value for d in at.dataframe if "Finding" in d.value.columns)
    assert sorted(df["Finding"]) == sorted(SEG_LABELS)
    assert not [s for s in at.selectbox if s.key == "heat_target"]
    caption = next(c.value for c in at.caption if "zoom" in c.value)
    assert "segmentation: " + ", ".join(SEG_LABELS) in caption
