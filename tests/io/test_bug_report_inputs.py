"""medvit.io fault kinds found with inputs modelled on public bug reports (issue 12); inputs built here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.infer.helpers import write_dx


def _disc(tmp_path: Path, n: int = 3) -> Path:
    import pydicom
    from pydicom.fileset import FileSet
    from pydicom.uid import generate_uid

    fs = FileSet()
    study, series = generate_uid(), generate_uid()
    for i in range(n):
        ds = pydicom.dcmread(write_dx(tmp_path / "src" / f"{i}.dcm", study, series, seed=i))
        ds.InstanceNumber = i + 1
        fs.add(ds)
    disc = tmp_path / "disc"
    fs.write(disc)
    return disc


@pytest.mark.parametrize("case", [str.lower, str.title])
def test_dicomdir_with_case_changed_names(tmp_path, case):
    from medvit.io.index import index_tree

    disc = _disc(tmp_path)
    for dp, dn, fn in os.walk(disc, topdown=False):  # a disc copied by a tool that changes the case
        for n in fn + dn:
            os.rename(os.path.join(dp, n), os.path.join(dp, case(n)))
    dicomdir = disc / case("DICOMDIR")
    res = index_tree(dicomdir)
    assert res.summary()["files"] == 3 and res.summary()["series"] == 1 and res.skipped == []
    victim = sorted(p for p in disc.rglob("*") if p.is_file() and p != dicomdir)[1]
    victim.unlink()
    res = index_tree(dicomdir)
    assert res.summary()["files"] == 2
    assert len(res.skipped) == 1 and "referenced by DICOMDIR" in res.skipped[0]["reason"]
    assert Path(res.skipped[0]["path"]).name.lower() == victim.name.lower()


@pytest.mark.parametrize("fmt", ["nifti", "npy"])
@pytest.mark.parametrize("preset", [None, "minmax", "full"])
def test_nan_voxels_do_not_blank_the_display(tmp_path, fmt, preset):
    """Min-max and full windows are taken over finite values; NaN voxels display black, the rest as usual."""
    from medvit.io import read_image, render

    rng = np.random.default_rng(0)
    data = rng.uniform(-100.0, 300.0, size=(16, 12)).astype(np.float32)
    data[0, 0], data[3, 5], data[7, :] = np.nan, np.inf, np.nan
    data[1, 1], data[2, 2] = -100.0, 300.0
    if fmt == "nifti":
        import nibabel as nib

        p = tmp_path / "vol.nii.gz"
        nib.save(nib.Nifti1Image(data[:, :, None], np.eye(4)), p)
    else:
        p = tmp_path / "img.npy"
        np.save(p, data)
    img = read_image(p)
    out = render(img, preset=preset)
    assert out.dtype == np.uint8 and out.max() == 255 and out.min() == 0
    finite = np.isfinite(img.pixels)
    assert finite.sum() < img.pixels.size
    flat = out.reshape(-1)
    assert (flat > 0).mean() > 0.8  # not black: only the NaN voxels (and the minimum) are 0
    assert len(np.unique(out)) > 50
