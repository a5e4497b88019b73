"""Round trip with medvit.io.writers: what the phantom writers store, the readers display identically."""

from __future__ import annotations

import numpy as np
import pytest

import medvit.io as mio


@pytest.mark.parametrize("jpeg2000", [False, True])
def test_dx_monochrome1_displays_like_monochrome2(tmp_path, jpeg2000):
    from medvit.io.writers import write_dicom_dx

    px = (np.add.outer(np.arange(32), np.arange(48)) * 40).astype(np.uint16)  # 0..3160 < 4096
    meta = {"PatientID": "RT1", "ViewPosition": "PA", "PixelSpacing": [0.2, 0.3]}
    m2 = mio.read_image(write_dicom_dx(tmp_path / "m2.dcm", px, meta, window=(1500, 3000), jpeg2000=jpeg2000))
    m1 = mio.read_image(write_dicom_dx(tmp_path / "m1.dcm", px, meta, window=(1500, 3000), monochrome1=True,
                                       jpeg2000=jpeg2000))
    np.testing.assert_array_equal(m2.pixels, px)
    assert m1.invert and not m2.invert and m1.photometric == "MONOCHROME1"
    assert abs(mio.render(m1).astype(int) - mio.render(m2).astype(int)).max() <= 1
    assert m2.spacing == (0.2, 0.3) and m2.modality == "DX" and m2.meta["ViewPosition"] == "PA"


def test_nifti_mask_roundtrip(tmp_path):
    from medvit.io.writers import write_nifti

    mask = np.zeros((6, 5, 4), np.uint8)
    mask[1:3, 2:4, 1] = 1
    aff = np.diag([0.5, 0.5, 2.0, 1.0])
    img = mio.read_image(write_nifti(tmp_path / "mask.nii.gz", mask, aff))
    np.testing.assert_array_equal(img.pixels, mask)
    np.testing.assert_allclose(img.affine, aff)
