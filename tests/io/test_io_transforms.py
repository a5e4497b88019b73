"""MONAI dictionary transforms: MetaTensor with RAS affine and meta, usable in monai.transforms.Compose."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from medvit.data.io_transforms import LoadMedicalImage, LoadMedicalImaged

from .conftest import corpus_root, write_dicom

pytestmark = pytest.mark.slow  # imports monai (several seconds on a busy machine)


def test_dicom_to_metatensor_not_transposed(tmp_path):
    from monai.data import MetaTensor

    px = np.arange(12, dtype=np.uint16).reshape(3, 4)
    p = write_dicom(tmp_path / "a.dcm", px, ImagerPixelSpacing=[0.2, 0.3], Modality="DX")
    d = LoadMedicalImaged(keys="image")({"image": str(p), "label": 1})
    t = d["image"]
    assert isinstance(t, MetaTensor) and tuple(t.shape) == (1, 3, 4) and d["label"] == 1
    np.testing.assert_array_equal(t[0].numpy(), px)  # rows stay rows (MONAI's PydicomReader transposes)
    np.testing.assert_allclose(t.pixdim[:2].numpy(), [0.2, 0.3])
    assert t.meta["filename_or_obj"] == str(p) and t.meta["space"] == "RAS"


def test_display_intensity_inverts_monochrome1(tmp_path):
    px = np.array([[0, 255]], np.uint16)
    p = write_dicom(tmp_path / "m1.dcm", px, PhotometricInterpretation="MONOCHROME1", WindowCenter=128,
                    WindowWidth=256)
    t = LoadMedicalImage(intensity="display")(p)
    assert float(t[0, 0, 0]) == pytest.approx(1.0) and float(t[0, 0, 1]) == pytest.approx(0.0)


def test_nifti_4d_and_compose_with_monai():
    import nibabel as nib
    import nibabel.tests
    from monai.transforms import Compose, Orientationd, Spacingd

    path = Path(os.path.dirname(nibabel.tests.__file__)) / "data" / "example4d.nii.gz"
    ref = nib.as_closest_canonical(nib.load(str(path)))
    ras = Orientationd(keys="img", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))
    out = Compose([LoadMedicalImaged(keys="img"), ras])({"img": path})
    t = out["img"]
    assert tuple(t.shape) == (ref.shape[3], *ref.shape[:3])
    np.testing.assert_allclose(t.affine.numpy(), ref.affine, atol=1e-5)
    anat = _nib("anatomical.nii")
    r = Compose([LoadMedicalImaged(keys="x"), Spacingd(keys="x", pixdim=(4.0, 4.0, 4.0))])({"x": anat})["x"]
    np.testing.assert_allclose(r.pixdim.numpy(), [4.0, 4.0, 4.0], atol=1e-5)


def _nib(name: str) -> Path:
    import nibabel.tests

    return Path(os.path.dirname(nibabel.tests.__file__)) / "data" / name


def test_colour_multiframe_and_missing_keys():
    t = LoadMedicalImage()(corpus_root() / "SC_rgb_rle_2frame.dcm")
    assert tuple(t.shape) == (3, 2, 100, 100)
    with pytest.raises(KeyError, match="allow_missing_keys"):
        LoadMedicalImaged(keys=["a"])({"b": 1})
    assert LoadMedicalImaged(keys=["a"], allow_missing_keys=True)({"b": 1}) == {"b": 1}
    with pytest.raises(ValueError, match="intensity"):
        LoadMedicalImage(intensity="raw")


def test_registered_as_transforms():
    import medvit.data.io_transforms  # noqa: F401
    from medvit.registry import REGISTRY

    assert REGISTRY.get("transform", "LoadMedicalImaged") is LoadMedicalImaged
