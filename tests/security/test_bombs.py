"""Memory and disk bounded in bytes: decompression bombs refused before decoding, display images shrunk in the
worker, heatmaps capped and compressed, a worker's memory capped (SECURITY.md §4)."""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medvit.infer import InferConfig, run_inference
from tests.infer.helpers import make_model, make_studies, write_dx


def _j2k_bomb(path: Path, side: int = 14000) -> Path:
    """A ~1.7 kB JPEG 2000 DICOM whose header claims side x side pixels."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    write_dx(path, "1.2.3.9", "1.2.3.10", rows=8, cols=8)
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = side
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(1700)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(path, enforce_file_format=True)
    return path


def _rows(p: Path) -> dict[str, dict[str, str]]:
    with open(p, newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def test_jpeg2000_bombs_refused_before_decoding_and_outputs_capped(tmp_path):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    good = make_studies(inp, n_studies=1, per_study=1)
    big = write_dx(inp / "big" / "big.dcm", "1.2.3.20", "1.2.3.21", rows=2400, cols=1800)  # genuine, large
    bombs = [_j2k_bomb(inp / "bombs" / f"b{i}.dcm") for i in range(4)]
    assert all(b.stat().st_size < 4000 for b in bombs)
    out = tmp_path / "out"
    res = run_inference(InferConfig(str(model), str(inp), str(out), workers=2, batch_size=2, heatmaps=True,
                                    sr=True, progress=False))
    rows = _rows(out / "status.csv")
    for b in bombs:
        r = rows[b.relative_to(inp).as_posix()]
        assert r["status"] == "error" and r["stage"] == "decode" and "budget" in r["reason"], r
    for g in [*good, big]:
        assert rows[g.relative_to(inp).as_posix()]["status"] == "predicted"  # nothing already done is lost
    assert res.counts["predicted"] == 2
    from PIL import Image

    pngs = list((out / "heatmaps").rglob("*.png"))
    assert len(pngs) == 2 and all(max(Image.open(p).size) <= 1024 for p in pngs)
    scs = [pydicom.dcmread(p) for p in (out / "heatmaps").rglob("*.dcm")]
    assert all(max(s.Rows, s.Columns) <= 1024 and s.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
               for s in scs)
    big_sc = max(scs, key=lambda s: s.Rows * s.Columns)
    assert (big_sc.Rows, big_sc.Columns) == (1024, 768)
    assert big_sc.pixel_array.shape == (1024, 768, 3)  # decodes
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert written < 8 * 2**20, written


def test_max_image_bytes_is_configurable(tmp_path):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    write_dx(inp / "a.dcm", "1.2.3.4", "1.2.3.5", rows=600, cols=600)
    out = tmp_path / "out"
    run_inference(InferConfig(str(model), str(inp), str(out), workers=0, max_image_mb=1, progress=False))
    (r,) = _rows(out / "status.csv").values()
    assert r["status"] == "error" and "budget" in r["reason"]  # 600*600*4 bytes > 1 MiB


def test_worker_memory_is_capped(tmp_path):
    """A worker whose decoder wants more than its cap fails that file only; the next file is decoded."""
    from medvit.infer.decode import DecodeSpec
    from medvit.infer.preprocess import Preprocessor
    from medvit.infer.runner import _Decoder
    from medvit.io.rules import SelectionRules
    from medvit.models import load_model

    contract = load_model(make_model(tmp_path / "model")).contract
    inp = tmp_path / "in"
    big = write_dx(inp / "a_big.dcm", "1.2.3.4", "1.2.3.5", rows=4000, cols=4000)  # 64 MB as float32
    small = write_dx(inp / "b_small.dcm", "1.2.3.4", "1.2.3.5")
    spec = DecodeSpec(str(inp), Preprocessor.from_contract(contract), SelectionRules.from_contract(contract),
                      worker_memory_bytes=24 * 2**20)
    got = {d.rel: d for d in _Decoder(spec, workers=1, max_inflight=2).run(iter([big, small]))}
    assert got["a_big.dcm"].status == "error", got["a_big.dcm"]
    assert got["b_small.dcm"].status == "ok"


def _png_header_only(path: Path, w: int, h: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("kind", ["png", "nifti"])
def test_png_and_nifti_bombs_refused_by_render_and_viewer_reader(tmp_path, kind):
    from medvit.cli.main import main as cli
    from medvit.io import PixelBudgetError, read_image

    if kind == "png":
        p = _png_header_only(tmp_path / "bomb.png", 60000, 60000)
    else:
        import nibabel as nib

        img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
        img.header.set_data_shape((4000, 4000, 4000))
        p = tmp_path / "bomb.nii"
        nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), p)
        raw = bytearray(p.read_bytes())
        raw[40:56] = struct.pack("<8h", 3, 4000, 4000, 4000, 1, 1, 1, 1)  # dim[] of the NIfTI-1 header
        p.write_bytes(bytes(raw))
    assert p.stat().st_size < 1000
    with pytest.raises(PixelBudgetError):
        read_image(p)  # the reader the viewer uses (apps/viewer/cache.py)
    try:
        rc = cli(["dicom", "render", str(p), str(tmp_path / "out.png")])
    except SystemExit as e:
        rc = e.code
    assert rc not in (0, None) and not (tmp_path / "out.png").exists()


def _deflated(path: Path, src: Path, zeros_mib: int = 0) -> Path:
    """``src`` rewritten as Deflated Explicit VR LE; with ``zeros_mib`` a private OB element of that many MiB of
    zeros is appended inside the deflated stream (a ~1 kB-per-MiB decompression bomb; header stays small)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [co.compress(body.getvalue())]
    if zeros_mib:
        n = zeros_mib * 2**20
        parts.append(co.compress(struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 4) + b"EVIL"))
        parts.append(co.compress(struct.pack("<HH2s2xI", 0x0009, 0x1001, b"OB", n)))
        zeros = bytes(2**20)
        parts += [co.compress(zeros) for _ in range(zeros_mib)]
    parts.append(co.flush())
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(128) + b"DICM" + meta.getvalue() + b"".join(parts))
    return path


def test_deflate_bomb_refused_before_inflating_and_genuine_deflated_read(tmp_path):
    """A 512x512 header whose deflated data set inflates past the byte budget (2 bytes x pixel budget + 64 MiB) is
    refused with PixelBudgetError naming the file, while memory stays O(chunk); a genuine deflated file reads as
    pydicom reads it; infer with --workers 0 reports the bomb as an error row and predicts the genuine file."""
    import tracemalloc

    from medvit.cli.main import main as cli
    from medvit.io import PixelBudgetError, read_dicom, read_dicom_header, read_image

    src = write_dx(tmp_path / "src.dcm", "1.2.3.30", "1.2.3.31", rows=512, cols=512)
    bomb = _deflated(tmp_path / "in" / "bomb.dcm", src, zeros_mib=80)
    good = _deflated(tmp_path / "in" / "good.dcm", src)
    assert bomb.stat().st_size < good.stat().st_size + 200_000  # 80 MiB of zeros deflate to ~80 kB
    tracemalloc.start()
    try:
        with pytest.raises(PixelBudgetError, match="bomb.dcm.*inflates to more than"):
            read_dicom(bomb, pixel_budget=2**20)  # limit 2 MiB + 64 MiB < 80 MiB
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, peak  # never held the inflated data set
    with pytest.raises(PixelBudgetError):
        read_dicom_header(bomb, pixel_budget=2**20)
    img = read_image(good)
    assert np.array_equal(img.pixels, pydicom.dcmread(src).pixel_array.astype(np.float32))
    assert img.uids["StudyInstanceUID"] == "1.2.3.30"
    hdr = read_dicom_header(good, specific_tags=["Rows", "Columns"])
    assert (hdr.Rows, hdr.Columns) == (512, 512) and "PatientName" not in hdr
    try:
        rc = cli(["dicom", "render", str(bomb), str(tmp_path / "r.png")])
    except SystemExit as e:
        rc = e.code
    assert rc not in (0, None) and not (tmp_path / "r.png").exists()

    model = make_model(tmp_path / "model")
    out = tmp_path / "out"
    run_inference(InferConfig(str(model), str(tmp_path / "in"), str(out), workers=0, max_image_mb=4, progress=False))
    rows = _rows(out / "status.csv")
    assert rows["bomb.dcm"]["status"] == "error" and "budget" in rows["bomb.dcm"]["reason"], rows["bomb.dcm"]
    assert rows["good.dcm"]["status"] == "predicted", rows["good.dcm"]


def test_png_refusal_states_medvits_budget(tmp_path):
    from medvit.io import PixelBudgetError, read_image

    p = _png_header_only(tmp_path / "bomb.png", 30000, 30000)  # 9e8 pixels: past Pillow's own 2x guard too
    with pytest.raises(PixelBudgetError, match=r"30000x30000x1 = 900,000,000 samples > pixel budget 268,435,456"):
        read_image(p)
    with pytest.raises(PixelBudgetError, match="pixel budget 1,000"):
        read_image(_png_header_only(tmp_path / "small.png", 40, 40), pixel_budget=1000)
