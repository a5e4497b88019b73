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
