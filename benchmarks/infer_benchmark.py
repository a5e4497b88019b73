"""End-to-end throughput and memory of `medvit infer` on phantom DICOM studies.

One run measures, on the same files and machine state:

* **medvit infer** end to end (a subprocess: walk, header + rules, decode in worker processes, contract
  preprocessing, batched prediction, journal, tables) at ``--precision`` — images/s from the run's own
  clock (run.json) and from the wall clock including interpreter start-up and model loading;
* **(a) model alone**: the same model on pre-decoded, preprocessed tensors, same precision, batch and threads;
* **(b) naive loop**: pydicom read, numpy/PIL preprocessing, fp32, batch 1 (what a quick script does);
* **memory**: peak RSS of `medvit infer` including its worker processes, for N and 4N images.

    nice -n 10 python benchmarks/infer_benchmark.py [--n 500] [--size 256] [--batch 32] [--threads 2]
        [--workers 1] [--precision bf16] [--arch vit_small_patch16_224]

Writes benchmarks/results/infer_benchmark.{md,json}. Random weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def make_phantoms(out: Path, n: int, size: int) -> list[Path]:
    """``n`` chest phantoms as DX DICOM (12-bit, file VOI window), 4 images per study."""
    from medvit.data.phantom_cxr import ChestPhantomGenerator

    try:
        from medvit.io.writers import write_dicom_dx
    except ImportError:  # writers not installed: fall back to the test helper's writer
        write_dicom_dx = None
    gen = ChestPhantomGenerator(image_size=size, seed=7, with_masks=False)
    paths = []
    for i in range(n):
        ph = gen.sample(i, patient=i // 4, visit=0)
        px = np.round(ph.image * 4095).astype(np.uint16)
        p = out / f"patient{i // 4:05d}" / f"img{i:05d}.dcm"
        p.parent.mkdir(parents=True, exist_ok=True)
        if write_dicom_dx is not None:
            write_dicom_dx(p, px, dict(ph.meta), window=(2048.0, 4096.0), monochrome1=(i % 5 == 0))
        else:
            sys.path.insert(0, str(ROOT))
            from tests.infer.helpers import write_dx

            write_dx(p, f"1.2.3.{i // 4}", f"1.2.3.{i // 4}.1", rows=size, cols=size, seed=i)
        paths.append(p)
    return paths


def make_model(out: Path, arch: str, size: int = 224) -> Path:
    import medvit
    from medvit.data.phantom_cxr import CXR_LABELS
    from medvit.models import WeightContract, save_checkpoint

    m = medvit.create_model(arch, in_chans=1, num_classes=len(CXR_LABELS), global_pool="avg")
    c = WeightContract(in_chans=1, input_size=(size, size), mean=(0.5,), std=(0.25,), label_names=list(CXR_LABELS),
                       modalities=["CR", "DX"], version="bench", source="benchmarks/infer_benchmark.py random")
    return save_checkpoint(m, out, contract=c)


def peak_rss_of_tree(proc: subprocess.Popen, box: dict) -> None:
    """Poll the RSS of ``proc`` and all its children every 50 ms; keep the peak sum in ``box['peak']``."""
    import psutil

    try:
        p = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return
    peak = 0
    while proc.poll() is None:
        try:
            total = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.05)
    box["peak"] = peak


def run_infer(model: Path, inp: Path, out: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "medvit.cli.main", "infer", "-m", str(model), "-i", str(inp), "-o", str(out),
           "--batch-size", str(args.batch), "--workers", str(args.workers), "--precision", args.precision,
           "--threads", str(args.threads), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    box: dict = {}
    th = threading.Thread(target=peak_rss_of_tree, args=(proc, box))
    th.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"medvit infer failed ({proc.returncode}): {stderr[-2000:]}")
    run = json.loads((out / "run.json").read_text())
    n = run["counts"]["predicted"]
    return {"command": " ".join(cmd[2:]), "n": n, "wall_s": wall, "run_s": run["seconds"],
            "img_s_run": n / run["seconds"], "img_s_wall": n / wall, "peak_rss_mb": box.get("peak", 0) / 2**20,
            "summary": stdout.strip().splitlines()[0]}


def model_alone(model_dir: Path, paths: list[Path], args: argparse.Namespace) -> dict:
    """Pre-decode + preprocess everything first (untimed), then time batched prediction only."""
    from medvit.infer.decode import DecodeSpec, decode_file
    from medvit.infer.predictor import Predictor, load_for_inference
    from medvit.infer.preprocess import Preprocessor
    from medvit.io.rules import SelectionRules

    model, contract, _ = load_for_inference(model_dir)
    spec = DecodeSpec(str(paths[0].parents[1]), Preprocessor.from_contract(contract), SelectionRules([]))
    x = torch.from_numpy(np.stack([decode_file(p, spec).x for p in paths]))
    pred = Predictor(model, args.precision)
    pred.predict(x[: args.batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(x), args.batch):
        pred.predict(x[i:i + args.batch])
    dt = time.perf_counter() - t0
    return {"n": len(x), "seconds": dt, "img_s": len(x) / dt}


def naive_loop(model_dir: Path, paths: list[Path]) -> dict:
    """pydicom read → modality LUT → file window → PIL resize → normalise → fp32 forward, one image at a time."""
    import pydicom
    from PIL import Image
    from pydicom.pixels import apply_modality_lut

    from medvit.models import load_model

    model = load_model(model_dir).eval()
    c = model.contract
    t0 = time.perf_counter()
    with torch.inference_mode():
        for p in paths:
            ds = pydicom.dcmread(p)
            a = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
            wc, ww = float(ds.WindowCenter), float(ds.WindowWidth)
            a = np.clip((a - (wc - 0.5)) / (ww - 1) + 0.5, 0, 1)
            if ds.PhotometricInterpretation == "MONOCHROME1":
                a = 1 - a
            a = np.asarray(Image.fromarray(a).resize(tuple(c.input_size), Image.BILINEAR), np.float32)
            x = torch.from_numpy((a - c.mean[0]) / c.std[0])[None, None]
            torch.sigmoid(model(x))
    dt = time.perf_counter() - t0
    return {"n": len(paths), "seconds": dt, "img_s": len(paths) / dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="images for the throughput comparison (memory: n and 4n)")
    ap.add_argument("--size", type=int, default=256, help="phantom image size (square)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (model)")
    ap.add_argument("--workers", type=int, default=1, help="decoding worker processes of medvit infer")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "int8"])
    ap.add_argument("--arch", default="vit_small_patch16_224")
    ap.add_argument("--naive-n", type=int, default=200, help="images for the (slow) naive loop")
    ap.add_argument("--no-memory", action="store_true", help="skip the 4n-image memory run")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of infer / model-alone (best kept)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="medvit_infer_bench_"))
    t_gen = time.perf_counter()
    n_big = args.n * 4 if not args.no_memory else args.n
    paths = make_phantoms(work / "big", n_big, args.size)
    small = work / "small"
    for p in paths[: args.n]:  # the first n images (same files) as a separate input folder
        q = small / p.relative_to(work / "big")
        q.parent.mkdir(parents=True, exist_ok=True)
        os.link(p, q)
    t_gen = time.perf_counter() - t_gen
    model = make_model(work / "model", args.arch)
    small_paths = sorted(small.rglob("*.dcm"))

    e2es, alones = [], []
    for r in range(args.repeats):  # interleaved, best of each: the machine is shared, load drifts
        e2es.append(run_infer(model, small, work / f"out_small{r}", args))
        alones.append(model_alone(model, small_paths, args))
    e2e = max(e2es, key=lambda d: d["img_s_run"])
    alone = max(alones, key=lambda d: d["img_s"])
    naive = naive_loop(model, small_paths[: args.naive_n])
    big = run_infer(model, work / "big", work / "out_big", args) if not args.no_memory else None

    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": vars(args),
        "command": "nice -n 10 python benchmarks/infer_benchmark.py " + " ".join(sys.argv[1:]),
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                 "load_avg_at_end": os.getloadavg()},
        "generate_s": t_gen, "medvit_infer": e2e, "model_alone": alone, "naive": naive, "memory_run": big,
        "all_repeats": {"medvit_infer_img_s_run": [d["img_s_run"] for d in e2es],
                        "model_alone_img_s": [d["img_s"] for d in alones]},
        "ratio_vs_model_alone_run_clock": e2e["img_s_run"] / alone["img_s"],
        "ratio_vs_model_alone_wall_clock": e2e["img_s_wall"] / alone["img_s"],
        "ratio_vs_naive_run_clock": e2e["img_s_run"] / naive["img_s"],
        "ratio_vs_naive_wall_clock": e2e["img_s_wall"] / naive["img_s"],
        "memory_growth_pct": (100.0 * (big["peak_rss_mb"] / e2e["peak_rss_mb"] - 1.0)) if big else None,
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "infer_benchmark.json").write_text(json.dumps(res, indent=2))
    (out / "infer_benchmark.md").write_text(render_md(res))
    print(render_md(res))  # noqa: T201


def render_md(r: dict) -> str:
    a, e, m, nv, big = r["args"], r["medvit_infer"], r["model_alone"], r["naive"], r["memory_run"]
    lines = [
        "# `medvit infer` end-to-end throughput and memory",
        "",
        f"Command: `{r['command']}`  ",
        f"{r['date']}; {r['host']['platform']}; {r['host']['cpus']} CPUs **shared with other jobs** (load average "
        f"at the end {', '.join(f'{x:.1f}' for x in r['host']['load_avg_at_end'])}); torch {r['host']['torch']}. "
        f"{a['arch']} (random weights, 1 channel, 224 px), {e['n']} phantom DX DICOM images of {a['size']}x"
        f"{a['size']} (12-bit, file VOI window, every 5th MONOCHROME1), precision {a['precision']}, batch "
        f"{a['batch']}, {a['threads']} torch threads, {a['workers']} decoding worker process(es).",
        "",
        "| pipeline | images | seconds | images/s | medvit infer / this |",
        "|---|---|---|---|---|",
        f"| medvit infer (run clock: walk → decode → predict → journal → tables) | {e['n']} | {e['run_s']:.1f} | "
        f"{e['img_s_run']:.1f} | 1.00 |",
        f"| medvit infer (wall clock incl. interpreter start + model load) | {e['n']} | {e['wall_s']:.1f} | "
        f"{e['img_s_wall']:.1f} | — |",
        f"| (a) model alone on pre-decoded tensors, same precision/batch/threads | {m['n']} | {m['seconds']:.1f} | "
        f"{m['img_s']:.1f} | {r['ratio_vs_model_alone_run_clock']:.2f} "
        f"(wall {r['ratio_vs_model_alone_wall_clock']:.2f}) |",
        f"| (b) naive loop: pydicom + numpy, fp32, batch 1 | {nv['n']} | {nv['seconds']:.1f} | {nv['img_s']:.1f} | "
        f"{r['ratio_vs_naive_run_clock']:.2f} (wall {r['ratio_vs_naive_wall_clock']:.2f}) |",
        "",
        f"Best of {a['repeats']} interleaved repeats (all: medvit infer "
        f"{', '.join(f'{v:.1f}' for v in r['all_repeats']['medvit_infer_img_s_run'])} images/s; model alone "
        f"{', '.join(f'{v:.1f}' for v in r['all_repeats']['model_alone_img_s'])} images/s). "
        "Goals: ≥ 0.8 × model alone, ≥ 2 × naive.",
        "",
    ]
    if big:
        lines += [
            "| memory (peak RSS of medvit infer + its worker processes) | images | peak MB |",
            "|---|---|---|",
            f"| small run | {e['n']} | {e['peak_rss_mb']:.0f} |",
            f"| large run | {big['n']} | {big['peak_rss_mb']:.0f} |",
            f"| growth | ×{big['n'] / e['n']:.0f} images | {r['memory_growth_pct']:+.1f} % (goal < 10 %) |",
            "",
            f"Large run throughput: {big['img_s_run']:.1f} images/s (run clock).",
            "",
        ]
    lines += [f"medvit infer summary line: `{e['summary']}`", "",
              "RSS is summed over the process tree, so pages shared by the forked workers count more than once "
              "(an over-estimate that is the same for both sizes)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
