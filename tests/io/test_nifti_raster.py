"""NIfTI (nibabel's bundled images, canonical RAS) and PNG/JPEG 8/16-bit readers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from medvit.io import MedicalImage, NotDicomError, PixelBudgetError, read_image, render


def _nib_data() -> Path:
    import nibabel.tests

    return Path(os.path.dirname(nibabel.tests.__file__)) / "data"


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz"])
def test_nibabel_images_match_canonical(name):
    import nibabel as nib

    path = _nib_data() / name
    ref = nib.as_closest_canonical(nib.load(str(path)))
    img = read_image(path)
    assert isinstance(img, MedicalImage)
    assert img.pixels.shape == ref.shape
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    np.testing.assert_allclose(img.spacing, ref.header.get_zooms()[:3], rtol=1e-5)
    np.testing.assert_allclose(img.pixels, ref.get_fdata(dtype=np.float32), rtol=1e-6)
    assert img.axes == ("XYZ" if len(ref.shape) == 3 else "XYZT")
    assert render(img).ndim == 2  # middle axial slice renders


def test_nifti_written_in_las_comes_back_ras(tmp_path):
    import nibabel as nib

    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    aff = np.diag([-2.0, 3.0, 4.0, 1.0])  # x axis flipped (LAS)
    nib.save(nib.Nifti1Image(data, aff), tmp_path / "las.nii.gz")
    img = read_image(tmp_path / "las.nii.gz")
    np.testing.assert_array_equal(img.pixels, data[::-1])
    assert img.spacing == (2.0, 3.0, 4.0) and img.affine[0, 0] == 2.0
    assert read_image(tmp_path / "las.nii.gz", pixel_budget=24).pixels.size == 24
    with pytest.raises(PixelBudgetError):
        read_image(tmp_path / "las.nii.gz", pixel_budget=23)


@pytest.mark.parametrize("dtype,bits", [(np.uint8, 8), (np.uint16, 16)])
def test_png_gray(tmp_path, dtype, bits):
    from PIL import Image

    arr = (np.arange(12).reshape(3, 4) * (1 if bits == 8 else 3000)).astype(dtype)
    Image.fromarray(arr).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.axes == "HW" and img.bits_stored == bits
    np.testing.assert_array_equal(img.pixels, arr)
    out = render(img)
    if bits == 8:
        np.testing.assert_array_equal(out, arr)  # 8-bit displays unchanged
    else:
        assert out.min() == 0 and out.max() == 255  # 16-bit: min-max


def test_rgb_jpeg_and_not_an_image(tmp_path):
    from PIL import Image

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    img = read_image(tmp_path / "c.jpg")
    assert img.axes == "HWC" and abs(img.pixels[..., 0].mean() - 200) < 3
    (tmp_path / "x.png").write_bytes(b"definitely not a png")
    with pytest.raises(NotDicomError, match="x.png"):
        read_image(tmp_path / "x.png")
