"""Fuzz: truncated files, flipped header bytes and hostile size claims give typed errors, fast, bounded memory."""

from __future__ import annotations

import resource
import struct
import zlib

import numpy as np
import pytest

import medvit.io as mio

from .conftest import corpus_root, write_dicom

SEEDS = ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "rtdose.dcm",
         "MR_small_jpeg_ls_lossless.dcm", "examples_palette.dcm", "dicomdirtests/77654033/CR1/6154",
         "image_dfl.dcm", "liver_1frame.dcm"]
BUDGET = 2**22  # small budget: a mutated size claim can never make a test allocate much


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _read_typed(path) -> str:
    """'ok' or the typed error's class name; any other exception fails the test."""
    try:
        img = mio.read_image(path, pixel_budget=BUDGET)
        mio.render(img)
        return "ok"
    except mio.MedicalIOError as e:
        assert e.reason and str(e.path) == str(path)
        return type(e).__name__


@pytest.mark.timeout(120)
def test_truncated_files(tmp_path):
    rss0 = _maxrss_mb()
    outcomes: dict[str, int] = {}
    for name in SEEDS:
        data = (corpus_root() / name).read_bytes()
        cuts = sorted({0, 1, 64, 128, 131, 132, 200, *np.linspace(0, len(data) - 1, 12).astype(int).tolist()})
        for cut in cuts:
            p = tmp_path / f"trunc_{cut}.dcm"
            p.write_bytes(data[:cut])
            got = _read_typed(p)
            outcomes[got] = outcomes.get(got, 0) + 1
            if cut < len(data) * 0.5 and cut > 400:  # pixel data cut in half: never silently "ok" ...
                assert got != "ok" or name.startswith("dicomdirtests"), f"{name} cut at {cut} read as ok"
    assert outcomes.get("CorruptFileError", 0) > 20 and outcomes.get("NotDicomError", 0) > 5
    assert _maxrss_mb() - rss0 < 400


@pytest.mark.timeout(120)
def test_flipped_header_bytes(tmp_path):
    rng = np.random.default_rng(0)
    rss0 = _maxrss_mb()
    kinds: set[str] = set()
    for name in SEEDS:
        data = bytearray((corpus_root() / name).read_bytes())
        header_end = max(200, data.find(b"\xe0\x7f\x10\x00"))  # up to the Pixel Data tag
        for _ in range(25):
            mutated = bytearray(data)
            for pos in rng.integers(128, header_end, size=int(rng.integers(1, 6))):
                mutated[pos] ^= 1 << int(rng.integers(0, 8))
            p = tmp_path / "flip.dcm"
            p.write_bytes(bytes(mutated))
            kinds.add(_read_typed(p))
    assert "ok" in kinds and len(kinds) >= 2
    assert _maxrss_mb() - rss0 < 400


def _huge_header(tmp_path, ts=None, name="huge.dcm"):
    from pydicom.uid import ExplicitVRLittleEndian

    return write_dicom(tmp_path / name, np.zeros((2, 2), np.uint16), transfer_syntax=ts or ExplicitVRLittleEndian,
                       Rows=65535, Columns=65535, NumberOfFrames=1000)


@pytest.mark.timeout(30)
def test_header_claiming_65535x65535x1000(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    rss0 = _maxrss_mb()
    p = _huge_header(tmp_path)
    with pytest.raises(mio.PixelBudgetError, match="65535x65535x1000"):
        mio.read_image(p)  # default budget
    with pytest.raises(mio.PixelBudgetError):
        mio.read_image(p, frame=0, pixel_budget=2**28)  # even a single frame is 4.3e9 samples
    # the budget raised: the native file is then refused as truncated, still before any decode
    with pytest.raises(mio.CorruptFileError, match="truncated"):
        mio.read_image(p, pixel_budget=10**13)
    # compressed variant: same refusal before the decoder sees the stream
    import pydicom

    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 60])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "huge_j2k.dcm", enforce_file_format=True)
    with pytest.raises(mio.PixelBudgetError):
        mio.read_image(tmp_path / "huge_j2k.dcm")
    with pytest.raises(mio.PixelBudgetError):
        mio.read_image(p, frame=999)  # one frame of 65535 x 65535 is still over the default budget
    assert _maxrss_mb() - rss0 < 200


def test_hostile_png_and_nifti_headers(tmp_path):
    # PNG whose IHDR claims 65535 x 65535 (Pillow only reads the header before our check)
    ihdr = struct.pack(">IIBBBBB", 65535, 65535, 16, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\0" * 64)
    png = b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(c) - 4) + c + struct.pack(">I", zlib.crc32(c))
                                         for c in (chunk, idat, b"IEND"))
    (tmp_path / "big.png").write_bytes(png)
    with pytest.raises(mio.PixelBudgetError):
        mio.read_image(tmp_path / "big.png")
    import nibabel as nib

    hdr = nib.Nifti2Header()  # int64 dims (NIfTI-1 stops at 32767)
    hdr.set_data_shape((65535, 65535, 1000))
    hdr.set_data_dtype(np.int16)
    (tmp_path / "big.nii").write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 64)
    with pytest.raises(mio.PixelBudgetError):
        mio.read_image(tmp_path / "big.nii")


def test_large_pixel_data_not_loaded_when_refused(tmp_path, monkeypatch):
    """Pixel Data above DEFER_SIZE stays on disk until the budget check passed."""
    import pydicom

    from medvit.io import dicom as dicom_mod

    monkeypatch.setattr(dicom_mod, "DEFER_SIZE", 1024)
    p = write_dicom(tmp_path / "big.dcm", np.zeros((256, 256), np.uint16))
    seen = {}
    real = pydicom.dcmread

    def spy(*a, **k):
        ds = real(*a, **k)
        seen["raw_len"] = len(ds.get_item("PixelData", keep_deferred=True).value or b"") if "PixelData" in ds else -1
        return ds

    monkeypatch.setattr(pydicom, "dcmread", spy)
    with pytest.raises(mio.PixelBudgetError):
        mio.read_image(p, pixel_budget=1000)
    assert seen["raw_len"] == 0  # deferred: the 128 KiB value was never read
    assert mio.read_image(p).pixels.shape == (256, 256)  # and is read on demand when allowed
