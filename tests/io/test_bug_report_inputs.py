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


def _garble_frames(path: Path, value: bytes = b"1A", frames: int | None = None) -> Path:
    """Store Number of Frames as ``value`` (an invalid IS, as in pydicom's badVR.dcm), bypassing validation."""
    import pydicom

    ds = pydicom.dcmread(path)
    if frames:
        ds.PixelData = ds.PixelData * frames
    ds.NumberOfFrames = 1
    ds.save_as(path)
    raw = path.read_bytes()
    head = b"\x28\x00\x08\x00IS\x02\x00"
    assert raw.count(head + b"1 ") == 1
    path.write_bytes(raw.replace(head + b"1 ", b"\x28\x00\x08\x00IS" + len(value).to_bytes(2, "little") + value))
    return path


@pytest.mark.parametrize(("value", "frames"), [(b"1A", 1), (b"1A", 3), (b"0 ", 1), (b"-1", 1), (b"0 ", 3)])
def test_garbled_number_of_frames_taken_from_pixel_data_length(tmp_path, caplog, value, frames):
    """"1A", "0" and "-1" (PS3.3 C.7.6.6 requires >= 1) follow one rule: an unambiguous Pixel Data length gives the
    frame count, with a warning that does not quote the value."""
    from pydicom.uid import generate_uid

    from medvit.io import read_image

    p = write_dx(tmp_path / "a.dcm", generate_uid(), generate_uid(), rows=8, cols=6)
    import pydicom

    px = pydicom.dcmread(p).pixel_array
    _garble_frames(p, value=value, frames=frames)
    with caplog.at_level("WARNING"):
        img = read_image(p)
    want = px if frames == 1 else np.stack([px] * frames)
    assert img.pixels.shape == want.shape and np.array_equal(img.pixels, want.astype(np.float32))
    assert "NumberOfFrames is not a valid integer" in caplog.text and "1A" not in caplog.text


@pytest.mark.parametrize("value", [b"1A", b"0 ", b"-1"])
def test_garbled_number_of_frames_refused_when_ambiguous(tmp_path, value):
    import pydicom
    from pydicom.uid import generate_uid

    from medvit.io import CorruptFileError, read_image

    p = write_dx(tmp_path / "a.dcm", generate_uid(), generate_uid(), rows=8, cols=6)
    ds = pydicom.dcmread(p)
    ds.PixelData = ds.PixelData + b"\0" * 10  # not a whole number of frames
    ds.save_as(p)
    _garble_frames(p, value=value)
    with pytest.raises(CorruptFileError, match="NumberOfFrames"):
        read_image(p)


def test_12bit_jpeg_extended_decoded_like_dcmtk(tmp_path):
    """JPEG Extended 12-bit (Process 4) made by dcmtk's encoder reads exactly as dcmtk's decoder outputs it."""
    import shutil
    import subprocess

    import pydicom
    from pydicom.uid import generate_uid

    from medvit.io import read_image, render

    if not (shutil.which("dcmcjpeg") and shutil.which("dcmdjpeg")):
        pytest.skip("dcmtk not installed; `make test` installs it (scripts/install_sysdeps.sh)")
    src = write_dx(tmp_path / "src.dcm", generate_uid(), generate_uid(), rows=64, cols=48)
    enc, dec = tmp_path / "j12.dcm", tmp_path / "ref.dcm"
    subprocess.run(["dcmcjpeg", "+ee", str(src), str(enc)], check=True, capture_output=True)
    assert str(pydicom.dcmread(enc).file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.51"
    subprocess.run(["dcmdjpeg", str(enc), str(dec)], check=True, capture_output=True)
    ref = pydicom.dcmread(dec).pixel_array.astype(np.float32)
    img = read_image(enc)
    assert img.pixels.shape == ref.shape and np.array_equal(img.pixels, ref)
    assert render(img).std() > 0


def test_ct_presets_only_where_values_are_hounsfield_units(tmp_path, capsys):
    """A CT window (lung: C -600 / W 1500 HU) on a DX would render all white: refused with a reason, not
    offered; full / minmax suit every image; the CLI and the viewer share the names."""
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    from medvit.cli.main import main
    from medvit.io import read_image, render
    from medvit.io.display import PRESETS, presets_for

    dx = read_image(write_dx(tmp_path / "dx.dcm", generate_uid(), generate_uid()))
    ct = read_image(get_testdata_file("CT_small.dcm"))
    assert presets_for(dx) == ["full", "minmax"]
    assert set(PRESETS) <= set(presets_for(ct))
    with pytest.raises(ValueError, match="CT window in Hounsfield units"):
        render(dx, preset="lung")
    assert render(ct, preset="lung").std() > 0 and render(dx, preset="full").std() > 0
    rc = main(["dicom", "render", str(tmp_path / "dx.dcm"), "--out", str(tmp_path / "o.png"), "--preset", "lung"])
    assert rc == 2 and "Hounsfield" in capsys.readouterr().err and not (tmp_path / "o.png").exists()
    from apps.viewer.display_panel import preset_options

    for img in (dx, ct):
        named = [p for p in preset_options(img).values() if p not in (None, "manual") and ":" not in str(p)]
        assert named == presets_for(img)  # the viewer offers exactly these, under these names
