"""Series -> volume: sorting along the normal, checks for mixed series, gaps, duplicates, orientation."""

from __future__ import annotations

import numpy as np
import pytest

from medvit.io import InconsistentSeriesError, read_image
from medvit.io.series import read_series

from .conftest import corpus_root, write_dicom

OBLIQUE = [0.8660254, 0.5, 0.0, 0.0, 0.0, -1.0]  # rows rotated 30 degrees in the axial plane, columns = -z


def _series(tmp_path, zs, iop=OBLIQUE, series="1.2.3", inums=None, sub="s", positions=True, **kw):
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    n = np.cross(r, c)
    d = tmp_path / sub
    d.mkdir(exist_ok=True)
    for i, z in enumerate(zs):
        px = np.full((4, 5), int(10 * z) + 1000, np.uint16)
        attrs = dict(SeriesInstanceUID=series, StudyInstanceUID="1.2", InstanceNumber=(inums or range(1, 99))[i],
                     PixelSpacing=[0.5, 0.6], RescaleIntercept=-1000, RescaleSlope=1, Modality="CT", **kw)
        if positions:
            attrs.update(ImagePositionPatient=list(np.array([5.0, -3.0, 7.0]) + z * n),
                         ImageOrientationPatient=iop)
        write_dicom(d / f"f{i:02d}.dcm", px, **attrs)
    return d


def test_sorted_along_the_normal_not_by_name(tmp_path):
    d = _series(tmp_path, [4.0, 0.0, 2.0, 6.0, 8.0], inums=[9, 7, 3, 1, 5])  # names and numbers shuffled
    (d / "notes.txt").write_text("not dicom")
    vol = read_image(d)
    assert vol.axes == "FHW" and vol.pixels.shape == (5, 4, 5)
    np.testing.assert_array_equal(vol.pixels[:, 0, 0], [0, 20, 40, 60, 80])
    np.testing.assert_allclose(vol.spacing, (2.0, 0.5, 0.6))
    # affine: voxel (k, 0, 0) lies at origin + 2k * normal (LPS), RAS = flip x, y
    n = np.cross(OBLIQUE[:3], OBLIQUE[3:])
    lps = np.array([5.0, -3.0, 7.0]) + 4.0 * n
    np.testing.assert_allclose((vol.affine @ [2, 0, 0, 1])[:3], lps * [-1, -1, 1], atol=1e-5)
    assert vol.meta["sorted_by"] == "position" and "SOPInstanceUID" not in vol.uids


def test_gap_is_reported_not_stacked_silently(tmp_path):
    d = _series(tmp_path, [0.0, 2.0, 4.0, 8.0, 10.0])
    with pytest.raises(InconsistentSeriesError, match="irregular slice spacing"):
        read_series(d)
    vol = read_series(d, allow_gaps=True)
    assert len(vol.meta["gaps"]) == 1 and vol.meta["gaps"][0]["step"] == pytest.approx(4.0)


def test_mixed_series_and_selection(tmp_path):
    _series(tmp_path, [0.0, 1.0], series="1.1", sub="m")
    _series(tmp_path, [0.0, 1.0, 2.0], series="1.2", sub="m2")
    for f in (tmp_path / "m2").iterdir():
        f.rename(tmp_path / "m" / ("b" + f.name))
    with pytest.raises(InconsistentSeriesError, match="mixed series"):
        read_series(tmp_path / "m")
    assert read_series(tmp_path / "m", series_uid="1.2").pixels.shape[0] == 3


def test_duplicate_positions_and_orientation_mismatch(tmp_path):
    d = _series(tmp_path, [0.0, 1.0, 1.0])
    with pytest.raises(InconsistentSeriesError, match="duplicate slice position"):
        read_series(d)
    d2 = _series(tmp_path, [0.0, 1.0], sub="o")
    write_dicom(d2 / "x.dcm", np.zeros((4, 5), np.uint16), SeriesInstanceUID="1.2.3", PixelSpacing=[0.5, 0.6],
                ImagePositionPatient=[0, 0, 9], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    with pytest.raises(InconsistentSeriesError, match="orientation differs"):
        read_series(d2)


def test_instance_number_fallback(tmp_path):
    d = _series(tmp_path, [2.0, 0.0, 1.0], inums=[3, 1, 2], positions=False)
    vol = read_series(d)
    assert vol.meta["sorted_by"] == "instance_number"
    np.testing.assert_array_equal(vol.pixels[:, 0, 0], [0, 10, 20])


def test_corpus_series_folders():
    root = corpus_root() / "dicomdirtests"
    vol = read_series(root / "98892001/CT5N")
    assert vol.pixels.shape == (5, 16, 16) and vol.modality == "CT" and vol.spacing[0] == pytest.approx(2.5)
    pos = vol.meta["slice_positions"]
    assert all(b > a for a, b in zip(pos, pos[1:]))
    with pytest.raises(InconsistentSeriesError, match="irregular slice spacing"):  # 1.25 mm steps then 202.5
        read_series(root / "77654033/CT2")
    assert read_series(root / "77654033/CT2", allow_gaps=True).pixels.shape == (4, 16, 16)
    with pytest.raises(InconsistentSeriesError, match="orientation differs"):
        read_series(root / "98892003/MR700")
    with pytest.raises(InconsistentSeriesError, match="mixed series"):
        read_series(root / "98892003/MR2")
