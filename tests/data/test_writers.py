import shutil
import subprocess

import numpy as np
import pytest

from medvit.data.phantom_cxr import ChestPhantomGenerator
from medvit.data.phantom_retina import RetinaPhantomGenerator
from medvit.io.writers import write_dicom_dx, write_dicom_ophthalmic, write_nifti, write_png16

DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def cxr():
    p = ChestPhantomGenerator(128, seed=0).sample(1, 1)
    return p, np.round(p.image * 4095).astype(np.uint16)


@pytest.fixture(scope="module")
def retina():
    p = RetinaPhantomGenerator(64, seed=0).sample(2, 2)
    return p, np.round(p.image * 255).astype(np.uint8)


def _dciodvfy_errors(path) -> list[str]:
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]


@pytest.mark.external
@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) not installed")
@pytest.mark.parametrize("kw", [{}, {"monochrome1": True}, {"jpeg2000": True}, {"monochrome1": True, "jpeg2000": True}])
def test_dx_passes_dciodvfy(tmp_path, cxr, kw):
    p, q = cxr
    f = write_dicom_dx(tmp_path / "x.dcm", q, p.meta, window=(2048, 4096), **kw)
    assert _dciodvfy_errors(f) == []


@pytest.mark.external
@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) not installed")
@pytest.mark.parametrize("j2k", [False, True])
def test_ophthalmic_passes_dciodvfy(tmp_path, retina, j2k):
    p, q = retina
    f = write_dicom_ophthalmic(tmp_path / "o.dcm", q, p.meta, jpeg2000=j2k)
    assert _dciodvfy_errors(f) == []


def test_dx_reads_back_pixels_window_and_uids(tmp_path, cxr):
    from medvit.io import display_array, read_image

    p, q = cxr
    plain = read_image(write_dicom_dx(tmp_path / "a.dcm", q, p.meta, window=(1800, 3000)))
    assert plain.modality == "DX" and plain.photometric == "MONOCHROME2"
    np.testing.assert_array_equal(plain.pixels, q.astype(np.float32))
    assert (plain.windows[0].center, plain.windows[0].width) == (1800, 3000)
    assert plain.meta["PatientID"] == p.meta["PatientID"]
    assert plain.uids["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.1.1"
    mono1 = read_image(write_dicom_dx(tmp_path / "b.dcm", q, p.meta, window=(1800, 3000), monochrome1=True))
    assert mono1.photometric == "MONOCHROME1"
    np.testing.assert_array_equal(mono1.pixels, (4095 - q).astype(np.float32))
    np.testing.assert_allclose(display_array(mono1), display_array(plain), atol=1e-6)
    j2k = read_image(write_dicom_dx(tmp_path / "c.dcm", q, p.meta, jpeg2000=True))
    np.testing.assert_array_equal(j2k.pixels, q.astype(np.float32))
    assert plain.uids["SOPInstanceUID"] == mono1.uids["SOPInstanceUID"]  # derived from the metadata


def test_ophthalmic_reads_back(tmp_path, retina):
    from medvit.io import read_image

    p, q = retina
    for j2k in (False, True):
        im = read_image(write_dicom_ophthalmic(tmp_path / f"o{j2k}.dcm", q, p.meta, jpeg2000=j2k))
        assert im.modality == "OP"
        np.testing.assert_array_equal(np.squeeze(im.pixels), q.astype(np.float32))


def test_png16_and_nifti_roundtrip(tmp_path):
    import nibabel as nib
    from PIL import Image

    a = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1365)
    with Image.open(write_png16(tmp_path / "a.png", a)) as im:
        np.testing.assert_array_equal(np.asarray(im), a)
    f = write_nifti(tmp_path / "a.nii.gz", a.T, np.diag([0.5, 0.7, 1.0, 1.0]), scale=(1 / 65535, 0))
    back = nib.load(str(f))
    np.testing.assert_allclose(back.get_fdata(), a.T / 65535, atol=1e-7)
    assert back.header.get_zooms()[:2] == (0.5, 0.7)


def test_writer_errors(tmp_path):
    with pytest.raises(ValueError, match="2-D"):
        write_dicom_dx(tmp_path / "x.dcm", np.zeros((2, 3, 4), np.uint16), {})
    with pytest.raises(ValueError, match="below 2\\*\\*12"):
        write_dicom_dx(tmp_path / "x.dcm", np.full((4, 4), 5000, np.uint16), {})
    with pytest.raises(ValueError, match="uint16"):
        write_png16(tmp_path / "x.png", np.zeros((4, 4), np.float32))
