"""Images read at a reduced resolution for a small model input (issue 24: decoding must keep up with the model).

Tolerance stated: the reduced image is the codestream's LL band, a 2**r-fold antialiased down-sampling, realigned
onto the pixel grid of an image of the same field; against the full decode box-averaged by 2**r it differs by
< 1 % of the 12-bit range on average (< 10 % at the sharpest phantom edges: the 5/3 wavelet low-pass is not a box
filter). What reaches the model is bounded in tests/infer/test_reduced_decode.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from medvit.io import read_image
from medvit.io.dicom_pixels import reduction_levels
from medvit.io.writers import write_dicom_dx


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from medvit.data.phantom_cxr import ChestPhantomGenerator

    d = tmp_path_factory.mktemp("j2k")
    ph = ChestPhantomGenerator(256, seed=5, with_masks=False).sample(0)
    q = np.round(ph.image * 4095).astype(np.uint16)
    meta = dict(ph.meta, PixelSpacing=[0.5, 0.25])
    out = {"j2k": write_dicom_dx(d / "j2k.dcm", q, meta, window=(2048.0, 4096.0), jpeg2000=True),
           "m1": write_dicom_dx(d / "m1.dcm", q, meta, window=(2048.0, 4096.0), jpeg2000=True, monochrome1=True),
           "raw": write_dicom_dx(d / "raw.dcm", q, meta, window=(2048.0, 4096.0))}
    return out, q


def test_reduction_levels():
    assert [reduction_levels(2048, 2048, 448), reduction_levels(1024, 1024, 448), reduction_levels(600, 900, 448),
            reduction_levels(2048, 1500, 224), reduction_levels(100, 100, 448)] == [2, 1, 0, 2, 0]


def test_j2k_decoded_at_reduced_resolution(files):
    f, q = files
    full = read_image(f["j2k"])
    red = read_image(f["j2k"], min_side=64)  # 256 -> 64: two levels discarded
    assert full.pixels.shape == (256, 256) and red.pixels.shape == (64, 64)
    assert red.meta["ReducedResolutionFactor"] == 4 and "ReducedResolutionFactor" not in full.meta
    assert red.meta["Rows"] == red.meta["Columns"] == 256  # the file's header, not the decoded size
    assert red.spacing == pytest.approx((2.0, 1.0)) and full.spacing == pytest.approx((0.5, 0.25))
    np.testing.assert_array_equal(full.pixels, q)  # lossless full decode
    box = q.astype(np.float64).reshape(64, 4, 64, 4).mean((1, 3))
    err = np.abs(red.pixels - box) / 4095
    assert err.mean() < 0.01 and err.max() < 0.1
    assert red.windows == full.windows and red.value_range == full.value_range and red.invert == full.invert


def test_reduced_monochrome1_and_bounds(files):
    f, _ = files
    full, red = read_image(f["m1"]), read_image(f["m1"], min_side=128)
    assert red.invert and red.pixels.shape == (128, 128) and red.meta["ReducedResolutionFactor"] == 2
    assert np.abs(red.pixels - full.pixels.reshape(128, 2, 128, 2).mean((1, 3))).mean() < 0.01 * 4095
    assert read_image(f["j2k"], min_side=129).pixels.shape == (256, 256)  # half would be < min_side: full decode


def test_uncompressed_images_are_block_averaged(files):
    f, q = files
    raw = read_image(f["raw"], min_side=32)  # 256 -> 32: 8 x 8 block means (exact for 12-bit sums)
    assert raw.pixels.shape == (32, 32) and raw.meta["ReducedResolutionFactor"] == 8
    assert raw.meta["ReducedResolutionMethod"] == "block mean" and raw.spacing == pytest.approx((4.0, 2.0))
    np.testing.assert_allclose(raw.pixels, q.astype(np.float64).reshape(32, 8, 32, 8).mean((1, 3)), atol=1e-3)
    from medvit.io.dicom_pixels import box_reduce

    odd = np.arange(5 * 7, dtype=np.uint16).reshape(1, 5, 7)  # last block filled by the edge row/column
    got = box_reduce(odd, 2)
    assert got.shape == (1, 3, 4) and got[0, 0, 0] == (0 + 1 + 7 + 8) / 4 and got[0, 2, 3] == 34


def test_padded_images_are_decoded_in_full(files, tmp_path):
    import pydicom

    f, _ = files
    for name in ("j2k", "raw"):
        ds = pydicom.dcmread(f[name])
        ds.add_new(0x00280120, "US", 0)  # Pixel Padding Value: padding would blur into its neighbours
        ds.save_as(tmp_path / f"pad_{name}.dcm")
        img = read_image(tmp_path / f"pad_{name}.dcm", min_side=32)
        assert img.pixels.shape == (256, 256) and "ReducedResolutionFactor" not in img.meta
