"""medvit.io throughput vs a plain pydicom loop: headers indexed/s and decoded images/s (uncompressed, JPEG 2000).

1. Generates a tree of ``--files`` small CT-like DICOM files (patients/studies/series folders) and indexes it with
   a plain pydicom loop (``dcmread(stop_before_pixels=True)`` + the same fields + grouping) and with
   ``medvit.io.index.index_tree`` (1 process, then ``--workers`` processes).
2. Generates ``--decode`` 512x512 16-bit CT files, uncompressed and JPEG 2000 lossless, and decodes them to
   displayed intensities with a plain loop (``dcmread`` + ``pixel_array`` + ``apply_modality_lut`` +
   ``apply_voi_lut``) and with ``medvit.io.read_image`` + ``display_array`` (same work plus typed errors, budget,
   geometry, metadata, MONOCHROME1 handling).

Methods are interleaved for ``--rounds`` rounds (best round reported) so machine load affects both alike.

    python benchmarks/io_benchmark.py [--files 2000] [--decode 60] [--workers 2] [--rounds 2]

Writes benchmarks/results/io_benchmark.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

FIELDS = ["PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "SeriesInstanceUID", "SeriesNumber",
          "Modality", "BodyPartExamined", "ViewPosition", "Rows", "Columns", "NumberOfFrames"]


def make_ct(path: Path, size: int, patient: int, study: int, series: int, inst: int, ts=None) -> None:
    """One CT slice with a realistic header (UIDs, geometry, rescale, two windows)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(inst + 1000 * series)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID, ds.PatientName = f"P{patient:04d}", f"Bench^{patient}"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1.{patient}.{study}"
    ds.SeriesInstanceUID = f"{ds.StudyInstanceUID}.{series}"
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20260101", series + 1, inst + 1
    ds.Modality, ds.BodyPartExamined, ds.SeriesDescription = "CT", "CHEST", "bench series"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 2.5
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-180.0, -180.0, 2.5 * inst]
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = [40, -600], [400, 1500]
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2
    px = np.where(body, 1064 + rng.normal(0, 30, (size, size)), 24).clip(0, 4095).astype(np.uint16)
    ds.PixelData = px.tobytes()
    if ts is not None:
        ds.compress(ts, encoding_plugin="pylibjpeg")
    ds.save_as(path, enforce_file_format=True)


def make_tree(root: Path, n: int, size: int = 64) -> list[Path]:
    per_series = 25
    paths = []
    for i in range(n):
        s = i // per_series
        patient, study, series = s // 4, (s // 2) % 2, s % 2
        d = root / f"P{patient:04d}" / f"ST{study}" / f"SE{series}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"IM{i % per_series:04d}"
        make_ct(p, size, patient, study, series, i % per_series)
        paths.append(p)
    return paths


def plain_index(root: Path) -> int:
    """Reference: walk + dcmread(stop_before_pixels) + collect FIELDS + group by series. Returns #series."""
    import pydicom

    groups: dict[tuple, list] = defaultdict(list)
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                ds = pydicom.dcmread(os.path.join(dirpath, f), stop_before_pixels=True)
            except Exception:
                continue
            row = {k: str(ds.get(k, "")) for k in FIELDS}
            groups[(row["PatientID"], row["StudyInstanceUID"], row["SeriesInstanceUID"])].append(row)
    return len(groups)


def plain_decode(paths: list[Path]) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    out = None
    for p in paths:
        ds = pydicom.dcmread(p)
        out = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    return out


def medvit_decode(paths: list[Path]) -> np.ndarray:
    from medvit.io import display_array, read_image

    out = None
    for p in paths:
        out = display_array(read_image(p))
    return out


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    r = fn(*args)
    return time.perf_counter() - t0, r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000, help="files in the generated tree (>= 2000 for the report)")
    ap.add_argument("--decode", type=int, default=60, help="512x512 files per decode set")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="where to generate files (default: a temp dir, removed)")
    ap.add_argument("--out", default="benchmarks/results/io_benchmark")
    args = ap.parse_args(argv)

    import pydicom
    from pydicom.uid import JPEG2000Lossless

    from medvit.io.index import index_tree

    load_before = os.getloadavg()[0]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="medvit_iobench_"))
    try:
        t0 = time.perf_counter()
        make_tree(work / "tree", args.files)
        unc, j2k = work / "unc", work / "j2k"
        unc.mkdir(exist_ok=True)
        j2k.mkdir(exist_ok=True)
        for i in range(args.decode):
            make_ct(unc / f"{i}.dcm", 512, 0, 0, 0, i)
            make_ct(j2k / f"{i}.dcm", 512, 0, 0, 0, i, ts=JPEG2000Lossless)
        gen_s = time.perf_counter() - t0
        print(f"generated {args.files} + 2x{args.decode} files in {gen_s:.1f}s under {work}")

        res: dict[str, list[float]] = defaultdict(list)
        n_series = {}
        for r in range(args.rounds):
            dt, n_series["plain"] = timed(plain_index, work / "tree")
            res["index_plain"].append(args.files / dt)
            dt, ir = timed(index_tree, work / "tree", 1)
            res["index_medvit_1proc"].append(args.files / dt)
            n_series["medvit"] = ir.summary()["series"]
            dt, _ = timed(index_tree, work / "tree", args.workers, 1)
            res[f"index_medvit_{args.workers}proc"].append(args.files / dt)
            for name, folder in (("uncompressed", unc), ("jpeg2000", j2k)):
                paths = sorted(folder.iterdir())
                dt, ref = timed(plain_decode, paths)
                res[f"decode_{name}_plain"].append(len(paths) / dt)
                dt, ours = timed(medvit_decode, paths)
                res[f"decode_{name}_medvit"].append(len(paths) / dt)
            print(f"round {r + 1}: " + ", ".join(f"{k}={v[-1]:.1f}" for k, v in res.items()))
        assert n_series["plain"] == n_series["medvit"], n_series
        # sanity: the same displayed image up to the output scale (pydicom keeps the stored range)
        ref = np.asarray(ref, np.float64)
        corr = float(np.corrcoef(ref.ravel(), np.asarray(ours, np.float64).ravel())[0, 1])
        best = {k: max(v) for k, v in res.items()}
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    w = args.workers
    rows = [
        ("headers indexed / s", f"{args.files} files, 64x64 CT, {n_series['medvit']} series", best["index_plain"],
         best["index_medvit_1proc"], best[f"index_medvit_{w}proc"]),
        ("uncompressed images decoded / s", f"{args.decode} x 512x512 16-bit", best["decode_uncompressed_plain"],
         best["decode_uncompressed_medvit"], None),
        ("JPEG 2000 lossless images decoded / s", f"{args.decode} x 512x512 16-bit", best["decode_jpeg2000_plain"],
         best["decode_jpeg2000_medvit"], None),
    ]
    cmd = "python benchmarks/io_benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    md = [
        "# medvit.io throughput vs a plain pydicom loop",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"pydicom {pydicom.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs shared with other "
        f"jobs (1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after: absolute rates are "
        f"noisy; both sides interleaved, best of {args.rounds} rounds), {stamp}.",
        "",
        "Plain loop = `dcmread` (+ `stop_before_pixels` for headers) + `pixel_array` + `apply_modality_lut` + "
        "`apply_voi_lut`. medvit = `index_tree` / `read_image` + `display_array` (typed errors, pixel budget, "
        "geometry, metadata, window presets, MONOCHROME1).",
        "",
        f"| task | data | plain pydicom /s | medvit 1 process /s | medvit {w} processes /s | medvit 1 proc / plain "
        f"| medvit {w} proc / plain |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, data, plain, ours1, oursw in rows:
        w_rate = "" if oursw is None else f"{oursw:.1f}"
        w_ratio = "" if oursw is None else f"{oursw / plain:.2f}"
        md.append(f"| {task} | {data} | {plain:.1f} | {ours1:.1f} | {w_rate} | {ours1 / plain:.2f} | {w_ratio} |")
    md += ["", f"Series found: plain {n_series['plain']}, medvit {n_series['medvit']}. Display output correlation "
               f"(last J2K image, medvit [0,1] vs pydicom VOI range): {corr:.6f}.", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(md))
    doc = {"command": cmd.strip(), "when": stamp, "rounds": dict(res), "best": best, "series": n_series, "corr": corr,
           "loadavg_before_after": [load_before, os.getloadavg()[0]]}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
