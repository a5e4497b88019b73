"""BenchX masks (boxes, ellipses, polygons, SIIM RLE, WBF) and splits (read, draw, save) on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from medvit.data import benchx_masks as bm
from medvit.data import benchx_splits as bs


def test_box_and_polygon_masks_hand_computed():
    m = bm.boxes_to_mask([(1, 2, 3, 4)], (6, 5))  # columns 1..3, rows 2..4 inclusive
    want = np.zeros((6, 5), bool)
    want[2:5, 1:4] = True
    np.testing.assert_array_equal(m, want)
    p = bm.polygons_to_mask([[(1, 1), (3, 1), (3, 2), (1, 2)]], (4, 5))
    want = np.zeros((4, 5), bool)
    want[1:3, 1:4] = True
    np.testing.assert_array_equal(p, want)
    with pytest.raises(ValueError, match="at least 3 vertices"):
        bm.polygons_to_mask([[(0, 0), (1, 1)]], (3, 3))
    with pytest.raises(ValueError, match="x2 < x1"):
        bm.boxes_to_mask([(3, 0, 1, 2)], (4, 4))


def test_ellipse_inscribed_in_its_box():
    e = bm.ellipses_to_mask([(2, 2, 12, 8)], (12, 16))
    box = bm.boxes_to_mask([(2, 2, 12, 8)], (12, 16))
    assert e[5, 7] and not e[2, 2] and not e[8, 12]  # centre in, box corners out
    assert not (e & ~box).any() and 0.6 < e.sum() / box.sum() < 0.9  # inside its box, about pi/4 of it


def test_siim_rle_relative_column_major():
    # width 4, height 3; runs: start 1 len 2 -> flat 1,2; next start 3 after the end (3) -> flat 6, len 1
    m = bm.siim_rle_decode("1 2 3 1", width=4, height=3)
    want = np.zeros((3, 4), bool)
    want[1, 0] = want[2, 0] = True  # flat 1, 2 = column 0, rows 1, 2
    want[0, 2] = True  # flat 6 = column 2, row 0
    np.testing.assert_array_equal(m, want)
    assert not bm.siim_rle_decode("-1", 4, 3).any()
    with pytest.raises(ValueError, match="odd number"):
        bm.siim_rle_decode("1 2 3", 4, 3)
    with pytest.raises(ValueError, match="past the 4x3 image"):
        bm.siim_rle_decode("10 5", 4, 3)


def test_wbf_fuses_overlapping_reader_boxes_only():
    a = [((10.0, 10.0, 30.0, 30.0), 0)]
    b = [((12.0, 10.0, 32.0, 30.0), 0), ((60.0, 60.0, 70.0, 70.0), 0)]
    fused = bm.fuse_reader_boxes([a, b], (100, 100))
    assert len(fused) == 2
    big = max(fused, key=lambda t: t[0][2] - t[0][0])[0]
    assert big == pytest.approx((11.0, 10.0, 31.0, 30.0), abs=1e-4)  # equal scores: the average box
    assert bm.fuse_reader_boxes([[], []], (10, 10)) == []


def test_draw_splits_patient_disjoint_nested_and_paper_sized():
    ids = [f"img{i}" for i in range(100)]
    patients = [f"p{i // 2}" for i in range(100)]  # two images per patient
    s = bs.draw_splits(ids, patients, (80, 10, 10), seed=0)
    pid = dict(zip(ids, patients))
    assert len(s["test"]) == 10 and len(s["val"]) == 10 and len(s["train"]) == 80
    groups = [{pid[i] for i in s[k]} for k in ("train", "val", "test")]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert set(s["train_1"]) <= set(s["train_10"]) <= set(s["train"])
    assert len(s["train_10"]) == 8 and len(s["train_1"]) == 2  # whole patients: 1 % of 80 -> one patient (2)
    assert bs.draw_splits(ids, patients, (80, 10, 10), seed=0) == s  # deterministic
    assert bs.draw_splits(ids, patients, (80, 10, 10), seed=1)["test"] != s["test"]
    # scaled to another folder size, official groups kept
    s2 = bs.draw_splits(ids, patients, (8000, 1000, 1000), seed=0, fixed={"test": ["img0", "img1"]})
    assert s2["test"] == ["img0", "img1"] and len(s2["val"]) == 10


def test_resolve_writes_then_reads_split_files(tmp_path):
    ids = [f"a{i}.png" for i in range(30)]
    s = bs.resolve_splits("object_cxr", ids, ids, tmp_path / "sp")
    assert sorted(p.name for p in (tmp_path / "sp").iterdir()) == sorted(f"{n}.txt" for n in bs.SPLIT_NAMES)
    assert (tmp_path / "sp" / "test.txt").read_text().split() == s["test"]
    assert bs.resolve_splits("object_cxr", ids, ids, tmp_path / "sp", seed=5) == s  # read back, not redrawn
    # BenchX files with paths and extra columns are matched by name / stem
    d = tmp_path / "bx"
    d.mkdir()
    for n in bs.SPLIT_NAMES:
        (d / f"{n}.txt").write_text("imgs/a1.png,1\na2 0\n" if n != "test" else "a3\n")
    got = bs.read_split_files(d, ids)
    assert got["train"] == ["a1.png", "a2.png"] and got["test"] == ["a3.png"]
    (d / "val.txt").write_text("a1\nzz9.png\n")
    with pytest.raises(ValueError, match=r"val\.txt:2: image 'zz9\.png' is not in the dataset"):
        bs.read_split_files(d, ids)
    (d / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds only .*complete it"):
        bs.resolve_splits("object_cxr", ids, ids, d)
    with pytest.raises(ValueError, match="unknown split 'train_5'"):
        bs.split_name("train_5")
