"""`medvit infer` per execution path (issue 24): images/s vs HF ViTModel bf16 autocast vs the compute limit.

One run, interleaved per round, on the same phantom DICOM files (1024² DX by default):

* ``medvit infer`` end to end (subprocess; run clock from run.json, and wall clock) for each path:
  ``auto`` (what the default picks here), ``fp32``, ``bf16`` (bf16 weights), ``compile`` (``--compile inductor``:
  AOTInductor with freezing at the auto precision), ``int8`` (PT2E x86 static, compiled) and ``openvino``
  (``--compile openvino``: the optional OpenVINO backend at the auto precision); compile paths are
  warmed first on a subset holding the same first batch (compile time recorded apart), so the timed runs load
  the cached package;
* the same model alone on pre-decoded tensors, per path (the end-to-end / model-alone ratio);
* HF ``transformers.ViTModel`` of the same shape under bf16 autocast alone (random weights);
* the compute limit of this machine: measured GEMM throughput (fp32, bf16, int8) ÷ the model's FLOPs;
* ``--inputs``: the pipeline around the model — ``medvit infer`` on other inputs (e.g. ``2048:j2k`` = 2048² DX in
  JPEG 2000 lossless) against the model alone measured right after it, per input.

    python benchmarks/infer_fastpaths.py [--n 160] [--size 1024] [--archs vit_base_patch16_224,...]
        [--paths auto,fp32,bf16,compile,int8] [--inputs 1024:raw,1024:j2k,2048:raw,2048:j2k] [--device cpu|cuda]
        [--cache-dir DIR] [--warm-only] [--name infer_fastpaths]

Each file is a distinct instance (own UIDs; ``--distinct`` phantoms rendered, the rest copies of their pixels),
so nothing is skipped as a duplicate. Models are seeded (same weights and compile-cache key on every run):
``--warm-only`` with a ``--cache-dir`` compiles in one call and a later call times with the packages loaded.
Writes benchmarks/results/<name>.{json,md} (+ what was measured so far after every arm). Random weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.infer_benchmark import peak_rss_of_tree  # noqa: E402

ISSUE_LIMIT = 46.0  # images/s, issue 24: ViT-B/16 at 800 GFLOP/s bf16 on the machine it was measured on


def vit_flops(arch: str, img: int = 224, in_chans: int = 1) -> float:
    """FLOPs (2 × multiply-adds) of one forward pass, linear layers + attention matmuls + patch embedding."""
    from medvit.models import backbone_args

    a = backbone_args(arch)
    d, depth, p = a["embed_dim"], a["depth"], a.get("patch_size", 16)
    n = (img // p) ** 2
    t = n + 1
    macs = depth * t * (12 * d * d + 2 * t * d) + n * d * p * p * in_chans
    return 2.0 * macs


def gemm_gflops(device: str, threads: int) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of a (3152×768)·(768×3072) product: a ViT-B/16 MLP matmul at batch 16."""
    torch.set_num_threads(threads)
    out = {}
    m, k, n = 3152, 768, 3072
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("int8", torch.int8)):
        if dt is torch.int8:
            a = torch.randint(-64, 64, (m, k), dtype=dt, device=device)
            b = torch.randint(-64, 64, (k, n), dtype=dt, device=device)

            def f(a=a, b=b):
                return torch._int_mm(a, b)
        else:
            a, b = torch.randn(m, k, device=device).to(dt), torch.randn(k, n, device=device).to(dt)

            def f(a=a, b=b):
                return a @ b
        try:
            f()
            reps = 50 if device.startswith("cuda") else 5
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            _sync(device)
            out[name] = 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9
        except (RuntimeError, NotImplementedError) as e:
            out[name] = float("nan")
            print(f"gemm {name}: {e}", file=sys.stderr)  # noqa: T201
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def infer_cmd(model: Path, inp: Path, out: Path, path: str, args: argparse.Namespace) -> list[str]:
    prec = {"auto": "auto", "fp32": "fp32", "bf16": "bf16", "compile": "auto", "int8": "int8", "int8fp32": "int8",
            "openvino": "auto"}[path]
    cmd = [sys.executable, "-m", "medvit.cli.main", "infer", "-m", str(model), "-i", str(inp), "-o", str(out),
           "--batch-size", str(args.batch), "--precision", prec, "--device", args.device, "--quiet",
           "--threads", str(args.threads)]
    if path in ("compile", "openvino"):
        cmd += ["--compile", "inductor" if path == "compile" else "openvino"]
    if path in INT8_REST_ARMS:
        cmd += ["--int8-rest", INT8_REST_ARMS[path]]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    if args.reduced_decode:
        cmd += ["--reduced-decode"]
    return cmd


def run_infer(cmd: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    box: dict = {}
    th = threading.Thread(target=peak_rss_of_tree, args=(proc, box))
    th.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    th.join()
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"medvit infer failed ({proc.returncode}): {stderr[-3000:]}")
    run = json.loads((out / "run.json").read_text())
    n = run["counts"]["predicted"]
    return {"n": n, "wall_s": wall, "run_s": run["seconds"], "img_s_run": n / run["seconds"],
            "img_s_wall": n / wall, "failed": run["counts"].get("error"), "stderr_tail": stderr[-600:],
            "peak_rss_mb": box.get("peak", 0) / 2**20, "execution": run["execution"],
            "timing": run["counts"].get("timing") or {},
            "workers": run["config"]["workers"]}


def decoded(model_dir: Path, paths: list[Path]) -> torch.Tensor:
    from medvit.infer.decode import DecodeSpec, decode_file
    from medvit.infer.predictor import load_for_inference
    from medvit.infer.preprocess import Preprocessor
    from medvit.io.rules import SelectionRules

    _, contract, _ = load_for_inference(model_dir)  # decoded as medvit infer does (InferenceRun._decode_min_side)
    spec = DecodeSpec(str(paths[0].parents[1]), Preprocessor.from_contract(contract), SelectionRules([]),
                      min_side=2 * max(tuple(contract.input_size)[:2]))
    return torch.from_numpy(np.stack([decode_file(p, spec).x for p in paths]))


def decode_cost(model_dir: Path, paths: list[Path], reduced: bool, n: int = 8) -> dict:
    """Median ms per file of decode + preprocess (header, pixels, modality/VOI, resize to the model input) in this
    process on one thread, as a decoding worker of medvit infer does it (full decode unless ``reduced``)."""
    from medvit.infer.decode import DecodeSpec, decode_file
    from medvit.infer.predictor import load_for_inference
    from medvit.infer.preprocess import Preprocessor
    from medvit.io.rules import SelectionRules

    _, contract, _ = load_for_inference(model_dir)
    spec = DecodeSpec(str(paths[0].parents[1]), Preprocessor.from_contract(contract), SelectionRules([]),
                      min_side=2 * max(tuple(contract.input_size)[:2]) if reduced else None)
    decode_file(paths[0], spec)  # imports, decoder plugin selection
    ts, cpu = [], []
    for p in paths[:n]:
        t0, c0 = time.perf_counter(), time.process_time()
        d = decode_file(p, spec)
        ts.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # CPU time: what decoding takes from the cores, whatever the load
        if d.status != "ok":
            raise RuntimeError(f"{p}: {d.status} {d.reason}")
    return {"ms_median": 1000 * float(np.median(cpu)), "ms_min": 1000 * min(cpu), "n": len(ts),
            "wall_ms_median": 1000 * float(np.median(ts))}


def model_alone(model_dir: Path, x: torch.Tensor, path: str, args: argparse.Namespace) -> dict:
    from medvit.infer.predictor import Predictor, load_for_inference

    model, _, info = load_for_inference(model_dir)
    pred = predictor_for(Predictor, model, path, args, info.sha256)
    t0 = time.perf_counter()
    pred.predict(x[: args.batch])  # warm-up (compiled paths: loads the package the warm-up run wrote)
    _sync(args.device)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(x), args.batch):
        pred.predict(x[i:i + args.batch])
    _sync(args.device)
    dt = time.perf_counter() - t0
    return {"n": len(x), "seconds": dt, "img_s": len(x) / dt, "precision": pred.precision, "first_batch_s": first}


#: int8 with fp32 between the GEMMs (``--int8-rest fp32``), to compare with the default (int8-mixed-bf16 on a CPU
#: with native bf16)
INT8_REST_ARMS = {"int8fp32": "fp32"}


def predictor_for(cls: type, model: torch.nn.Module, path: str, args: argparse.Namespace, sha: str):
    """The Predictor ``medvit infer`` builds for a path name."""
    prec = {"compile": "auto", "openvino": "auto", "int8fp32": "int8"}.get(path, path)
    mode = {"compile": "inductor", "openvino": "openvino"}.get(path, "none")
    return cls(model, prec, args.device, compile=mode, model_sha256=sha, int8_rest=INT8_REST_ARMS.get(path))


def hf_vit(arch: str, device: str) -> torch.nn.Module:
    """transformers.ViTModel of the same width/depth/patch as ``arch``, 1 channel, random weights, SDPA attention."""
    from transformers import ViTConfig, ViTModel

    from medvit.models import backbone_args

    a = backbone_args(arch)
    cfg = ViTConfig(hidden_size=a["embed_dim"], num_hidden_layers=a["depth"], num_attention_heads=a["num_heads"],
                    intermediate_size=4 * a["embed_dim"], image_size=224, patch_size=16, num_channels=1,
                    attn_implementation="sdpa")
    return ViTModel(cfg, add_pooling_layer=False).eval().to(device)


def hf_alone(arch: str, x: torch.Tensor, args: argparse.Namespace) -> dict:
    """transformers.ViTModel (same width/depth/patch, 1 channel, random weights) under bf16 autocast."""
    m = hf_vit(arch, args.device)
    dev = torch.device(args.device)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16):
        m(pixel_values=x[: args.batch].to(dev))
        _sync(args.device)
        t0 = time.perf_counter()
        for i in range(0, len(x), args.batch):
            m(pixel_values=x[i:i + args.batch].to(dev)).last_hidden_state.float().cpu()
        _sync(args.device)
    dt = time.perf_counter() - t0
    return {"n": len(x), "seconds": dt, "img_s": len(x) / dt}


def interleaved_alone(model_dir: Path, arch: str, x: torch.Tensor, paths: list[str], rounds: int,
                      args: argparse.Namespace) -> dict:
    """Model-alone rates measured batch by batch in turn: HF bf16 autocast, then each path, ``rounds`` times over,
    in one process (a load change hits every arm alike). Returns per arm the images/s of every batch."""
    from medvit.infer.predictor import Predictor, load_for_inference

    hf = hf_vit(arch, args.device)
    dev = torch.device(args.device)

    def run_hf(t: torch.Tensor) -> None:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16):
            hf(pixel_values=t.to(dev)).last_hidden_state.float().cpu()

    arms = {"hf_bf16_autocast": run_hf}
    for path in paths:
        model, _, info = load_for_inference(model_dir)
        pred = predictor_for(Predictor, model, path, args, info.sha256)
        arms[path] = pred.predict
    b = x[: args.batch]
    for f in arms.values():  # warm-up (packages loaded, int8 calibrated on the first batch as in medvit infer)
        f(b)
    rates: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(rounds):
        c = x[(r % max(1, len(x) // args.batch)) * args.batch:][: args.batch]
        for k, f in arms.items():
            _sync(args.device)
            t0 = time.perf_counter()
            f(c)
            _sync(args.device)
            rates[k].append(len(c) / (time.perf_counter() - t0))
    return {"rounds": rounds, "batch": args.batch, "rates": rates,
            "median": {k: float(np.median(v)) for k, v in rates.items()}}


def make_inputs(out: Path, n: int, size: int, j2k: bool, distinct: int) -> list[Path]:
    """``n`` DX DICOM files (12-bit, file VOI window, 4 images per study, every 5th MONOCHROME1) from ``distinct``
    rendered chest phantoms; copies get their own Study/Series/SOP Instance UIDs (no duplicate is skipped)."""
    import pydicom
    from pydicom.uid import generate_uid

    from medvit.data.phantom_cxr import ChestPhantomGenerator
    from medvit.io.writers import write_dicom_dx

    gen = ChestPhantomGenerator(image_size=size, seed=7, with_masks=False)
    base = []
    for i in range(min(distinct, n)):
        ph = gen.sample(i, patient=i // 4, visit=0)
        px = np.round(ph.image * 4095).astype(np.uint16)
        p = out / "base" / f"base{i:03d}.dcm"
        p.parent.mkdir(parents=True, exist_ok=True)
        write_dicom_dx(p, px, dict(ph.meta), window=(2048.0, 4096.0), monochrome1=(i % 5 == 0), jpeg2000=j2k)
        base.append(pydicom.dcmread(p))
    paths = []
    for i in range(n):
        ds = base[i % len(base)]
        if i % 4 == 0:
            study, series = generate_uid(), generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study, series, f"P{i // 4:05d}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        p = out / "in" / f"patient{i // 4:05d}" / f"img{i:05d}.dcm"
        p.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    shutil.rmtree(out / "base")
    return paths


def seeded_model(out: Path, arch: str) -> Path:
    """A random-weight checkpoint with a fixed seed (same hash, hence same compile-cache entry, on every run)."""
    from benchmarks.infer_benchmark import make_model

    torch.manual_seed(24)
    return make_model(out, arch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--distinct", type=int, default=32, help="phantoms rendered; the other files copy their pixels")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--workers", type=int, default=None, help="decoding workers (default: medvit's choice)")
    ap.add_argument("--archs", default="vit_base_patch16_224,vit_small_patch16_224")
    ap.add_argument("--paths", default="auto,fp32,bf16,compile,int8")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reduced-decode", action=argparse.BooleanOptionalAction, default=False,
                    help="pass --reduced-decode to medvit infer (default: full decode, medvit infer's default; the "
                    "session-31 figures in results/infer_fastpaths_run*.md were measured with it)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (best of each kept)")
    ap.add_argument("--replicate", type=int, default=1,
                    help="files = n x replicate (a GPU needs more images than are worth rendering)")
    ap.add_argument("--alone-n", type=int, default=None,
                    help="images for the model-alone and HF arms (default: all; fewer on a slow shared CPU)")
    ap.add_argument("--e2e-paths", default=None,
                    help="paths also run end to end through medvit infer (default: all of --paths)")
    ap.add_argument("--inputs", default="",
                    help="pipeline section: SIZE:raw|j2k,... run with the first arch and --pipeline-paths")
    ap.add_argument("--pipeline-n", type=int, default=96, help="files per --inputs entry")
    ap.add_argument("--pipeline-paths", default="auto")
    ap.add_argument("--alone-rounds", type=int, default=0,
                    help="also measure the model-alone arms batch by batch in turn, this many rounds per model")
    ap.add_argument("--cache-dir", default=None, help="compile cache (default: a fresh temporary folder)")
    ap.add_argument("--warm-only", action="store_true", help="only compile (into --cache-dir) and exit")
    ap.add_argument("--decode-only", action="store_true",
                    help="only time decode + preprocess (one thread, 8 distinct files per --inputs entry) and exit")
    ap.add_argument("--model-rates", default="",
                    help="with --decode-only: PATH=images/s,... model-alone rates (2 threads) the ratio bounds use")
    ap.add_argument("--render", metavar="JSON", help="only write the .md of an earlier run's .json and exit")
    ap.add_argument("--name", default="infer_fastpaths")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    if args.render:
        f = Path(args.render)
        r = json.loads(f.read_text())
        f.with_suffix(".md").write_text(render_md(r))
        plot_png(r, f.with_suffix(".png"))
        return
    torch.set_num_threads(args.threads)
    os.environ["MEDVIT_COMPILE_CACHE"] = args.cache_dir or tempfile.mkdtemp(prefix="medvit_compile_")
    work = Path(tempfile.mkdtemp(prefix="medvit_fastpaths_"))
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": vars(args),
                 "command": "python benchmarks/infer_fastpaths.py " + " ".join(sys.argv[1:]),
                 "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "native_bf16": _native_bf16(), "cpu_model": _cpu_model(),
                          "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
                          "load_avg_start": os.getloadavg()}, "models": {}, "pipeline": []}
    if args.decode_only:  # decode + preprocess cost per input kind, one thread, no model run
        torch.set_num_threads(1)
        res["decode_only"] = []
        model = seeded_model(work / "model", args.archs.split(",")[0])
        for spec in args.inputs.split(","):
            size, kind = spec.split(":")
            files = make_inputs(work / f"dec_{size}_{kind}", 8, int(size), kind == "j2k", 8)
            res["decode_only"].append({"input": spec, **decode_cost(model, files, args.reduced_decode),
                                       "mb_per_file": sum(f.stat().st_size for f in files) / len(files) / 2**20})
            print(res["decode_only"][-1], flush=True)  # noqa: T201
            write(res, args)
        shutil.rmtree(work, ignore_errors=True)
        return
    t0 = time.perf_counter()
    paths = make_inputs(work / "main", args.n * args.replicate, args.size, False, args.distinct)
    warm = work / "warm"  # the first batch's files: compile and int8 calibration see the same first batch
    for p in paths[: args.batch]:
        q = warm / p.relative_to(work / "main" / "in")
        q.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, q)
    res["generate_s"] = time.perf_counter() - t0
    archs, fast = args.archs.split(","), args.paths.split(",")
    models = {a: seeded_model(work / f"model_{a}", a) for a in archs}
    for a in archs:
        res["models"][a] = {"gflop_per_image": vit_flops(a) / 1e9, "warmup": {}, "rounds": []}
        for path in fast + (args.pipeline_paths.split(",") if a == archs[0] and args.inputs else []):
            if path in ("compile", "int8", "int8fp32", "openvino") and path not in res["models"][a]["warmup"]:
                out = work / f"warm_{a}_{path}"
                t1 = time.perf_counter()
                r = run_infer(infer_cmd(models[a], warm, out, path, args), out)
                res["models"][a]["warmup"][path] = r["execution"] | {"run_wall_s": time.perf_counter() - t1}
                print(a, path, "warm-up", res["models"][a]["warmup"][path], flush=True)  # noqa: T201
    if args.warm_only:
        write(res, args)
        return
    res["gemm_gflops"] = gemm_gflops(args.device, args.threads)
    xs = {a: decoded(models[a], paths[: args.alone_n]) for a in archs}
    e2e_paths = args.e2e_paths.split(",") if args.e2e_paths else fast
    if args.alone_rounds:
        for a in archs:
            res["models"][a]["interleaved_alone"] = interleaved_alone(models[a], a, xs[a], fast, args.alone_rounds,
                                                                      args)
            print(a, "interleaved", res["models"][a]["interleaved_alone"]["median"], flush=True)  # noqa: T201
            write(res, args)
    for rnd in range(args.rounds):
        for a in archs:
            row: dict = {"e2e": {}, "alone": {}, "hf_bf16_autocast": hf_alone(a, xs[a], args)}
            print(a, "hf", row["hf_bf16_autocast"]["img_s"], flush=True)  # noqa: T201
            for path in fast:
                out = work / f"out_{a}_{path}_{rnd}"
                if path in e2e_paths:
                    row["e2e"][path] = run_infer(infer_cmd(models[a], work / "main" / "in", out, path, args), out)
                    shutil.rmtree(out, ignore_errors=True)
                row["alone"][path] = model_alone(models[a], xs[a], path, args)
                print(a, path, row["e2e"].get(path, {}).get("img_s_run"), row["alone"][path]["img_s"],  # noqa: T201
                      flush=True)
                write(res | {"partial": row}, args)
            row["hf_bf16_autocast_after"] = hf_alone(a, xs[a], args)  # the HF arm again: load drift across the round
            res["models"][a]["rounds"].append(row)
            write(res, args)  # after every model: a run cut short keeps what it measured
    if args.inputs:
        a = archs[0]
        for spec in args.inputs.split(","):
            size, kind = spec.split(":")
            inp = work / f"pipe_{size}_{kind}"
            t1 = time.perf_counter()
            files = make_inputs(inp, args.pipeline_n, int(size), kind == "j2k", min(args.distinct, 16))
            gen_s = time.perf_counter() - t1
            n_threads = torch.get_num_threads()
            torch.set_num_threads(1)
            dec = decode_cost(models[a], files, args.reduced_decode)
            torch.set_num_threads(n_threads)
            for path in args.pipeline_paths.split(","):
                out = inp / f"out_{path}"
                e = run_infer(infer_cmd(models[a], inp / "in", out, path, args), out)
                alone = model_alone(models[a], xs[a], path, args)
                res["pipeline"].append({"arch": a, "input": spec, "files": len(files), "path": path, "e2e": e,
                                        "alone": alone, "generate_s": gen_s, "decode": dec,
                                        "mb_per_file": sum(f.stat().st_size for f in files) / len(files) / 2**20})
                print(spec, path, e["img_s_run"], alone["img_s"], flush=True)  # noqa: T201
                write(res, args)
            shutil.rmtree(inp, ignore_errors=True)
    write(res, args)
    print(render_md(res))  # noqa: T201
    shutil.rmtree(work, ignore_errors=True)


def _native_bf16() -> bool:
    from medvit.infer.fastpath import cpu_has_native_bf16

    return cpu_has_native_bf16()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def plot_png(r: dict, f: Path) -> bool:
    """Bar chart of the interleaved model-alone arms per model (median, min–max) and the end-to-end runs, with the
    bf16 GEMM limit; False when the run has no interleaved measurement."""
    arches = [a for a, m in r["models"].items() if m.get("interleaved_alone")]
    if not arches:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(arches), figsize=(6 * len(arches), 4.2), squeeze=False)
    g = r.get("gemm_gflops") or {}
    for ax, a in zip(axes[0], arches, strict=True):
        m = r["models"][a]
        il = m["interleaved_alone"]
        names = list(il["median"])
        med = [il["median"][k] for k in names]
        lo = [med[i] - min(il["rates"][k]) for i, k in enumerate(names)]
        hi = [max(il["rates"][k]) - med[i] for i, k in enumerate(names)]
        xs = np.arange(len(names))
        ax.bar(xs - 0.2, med, 0.4, yerr=[lo, hi], capsize=3, label="model alone (interleaved, median)")
        e2e = [max((x["e2e"].get(k) or {}).get("img_s_run", 0) for x in m["rounds"]) if m["rounds"] else 0
               for k in names]
        ax.bar(xs + 0.2, e2e, 0.4, label="medvit infer end to end (run clock)")
        if g.get("bf16"):
            ax.axhline(g["bf16"] / m["gflop_per_image"], color="k", ls="--", lw=1, label="bf16 GEMM limit")
        if a.startswith("vit_base"):
            ax.axhline(30, color="r", ls=":", lw=1, label="issue target 30")
        ax.set_xticks(xs, [n.replace("hf_bf16_autocast", "HF bf16\nautocast") for n in names])
        ax.set_ylabel("images / s")
        ax.set_title(f"{a} ({r['host'].get('cpus')} CPUs)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f, dpi=110)
    plt.close(fig)
    return True


def write(res: dict, args: argparse.Namespace) -> None:
    res["host"]["load_avg_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(res, indent=2, default=str))
    (out / f"{args.name}.md").write_text(render_md(res))
    if not res.get("partial"):
        plot_png(res, out / f"{args.name}.png")


def render_md(r: dict) -> str:
    a, h = r["args"], r["host"]
    g = r.get("gemm_gflops") or {}
    la = ", ".join(f"{x:.1f}" for x in h["load_avg_start"])
    lb = ", ".join(f"{x:.1f}" for x in h.get("load_avg_end", []))
    lines = [f"# `medvit infer` execution paths ({a['device']})", "",
             f"Command: `{r['command']}`  ",
             f"{r['date']}; {h['platform']}; {h['cpus']} CPUs ({h.get('cpu_model', '?')}, torch capability "
             f"{h['cpu_capability']}, native bf16 {h.get('native_bf16')}); GPU {h['gpu']}; torch {h['torch']}; "
             f"load average (1, 5, 15 min) at start {la}, at end {lb}. {a['n'] * a.get('replicate', 1)} phantom DX "
             f"DICOM {a['size']}² (12-bit, distinct instances), batch {a['batch']}, {a['threads']} torch threads, "
             "random weights, 1 channel, 224 px.", ""]
    if g:
        lines += [f"GEMM throughput here (3152×768 · 768×3072): fp32 {g['fp32']:.0f} GFLOP/s, bf16 {g['bf16']:.0f} "
                  f"GFLOP/s, int8 {g['int8']:.0f} GOP/s.", ""]
    for arch, m in r["models"].items():
        il = m.get("interleaved_alone")
        if il:
            med = il["median"]
            hf = med["hf_bf16_autocast"]
            gf = m["gflop_per_image"]
            lim = g.get("bf16", float("nan")) / gf
            lines += [f"### {arch}: model alone, interleaved batch by batch ({il['rounds']} rounds of batch "
                      f"{il['batch']}; median, min–max images/s)", "",
                      "| arm | images/s (median) | min–max | × HF bf16 autocast | × bf16 GEMM limit |",
                      "|---|---|---|---|---|"]
            for k, v in med.items():
                lo, hi = min(il["rates"][k]), max(il["rates"][k])
                lines.append(f"| {k} | {v:.2f} | {lo:.2f}–{hi:.2f} | {v / hf:.2f} | {v / lim:.2f} |")
            lines.append("")
        if not m["rounds"]:
            for k, w in m["warmup"].items():
                cc = w.get("compile_cache") or {}
                lines.append(f"{arch} {k}: compiled in {cc.get('seconds', float('nan')):.0f} s "
                             f"(reused: {cc.get('reused')}).  ")
            continue
        gf = m["gflop_per_image"]
        best = {k: max(x["e2e"][k]["img_s_run"] for x in m["rounds"]) for k in m["rounds"][0]["e2e"]}
        alone = {k: max(x["alone"][k]["img_s"] for x in m["rounds"]) for k in m["rounds"][0]["alone"]}
        n_alone = m["rounds"][0]["hf_bf16_autocast"]["n"]
        hfs = [x["hf_bf16_autocast"]["img_s"] for x in m["rounds"]] + \
            [x["hf_bf16_autocast_after"]["img_s"] for x in m["rounds"] if "hf_bf16_autocast_after" in x]
        hf = max(hfs)
        lim = (f"Limits from the GEMM rates: fp32 {g['fp32'] / gf:.1f}, bf16 {g['bf16'] / gf:.1f}, int8 "
               f"{g['int8'] / gf:.1f} images/s; " if g else "")
        lines += [f"## {arch} ({gf:.1f} GFLOP/image = 2 × {gf / 2:.1f} G multiply-adds)", "",
                  f"HF ViTModel bf16 autocast alone: **{hf:.1f} images/s** (arm before / after the round: "
                  f"{' / '.join(f'{x:.1f}' for x in hfs)}). {lim}the issue's figure: {ISSUE_LIMIT:.0f} images/s.", "",
                  "| path | precision used | e2e images/s (run clock) | e2e after 1st batch | e2e wall (incl. start, "
                  "load) | model alone | e2e / alone (after 1st batch) | e2e / HF bf16 | e2e / 46 | peak RSS MB | "
                  "workers | files failed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for k, v in best.items():
            e = next(x["e2e"][k] for x in m["rounds"] if x["e2e"][k]["img_s_run"] == v)
            ex = e["execution"]
            used = ex["precision"] + (f" ({ex['int8_rest']} between GEMMs)" if ex.get("int8_rest") else "") + \
                (" compiled" if ex["compile"] != "none" else "")
            steady = (e.get("timing") or {}).get("images_per_s_after_first_batch") or float("nan")
            lines.append(f"| {k} | {used} | {v:.2f} | {steady:.2f} | {e['img_s_wall']:.2f} | {alone[k]:.2f} | "
                         f"{v / alone[k]:.2f} ({steady / alone[k]:.2f}) | {v / hf:.2f} | {v / ISSUE_LIMIT:.2f} | "
                         f"{e['peak_rss_mb']:.0f} | {e['workers']} | {e.get('failed', 0)} |")
        for k, w in m["warmup"].items():
            cc = w.get("compile_cache") or {}
            how = ("loaded from the cache (compiled by an earlier --warm-only call) in" if cc.get("reused") else
                   "compiled the first time in")
            lines.append(f"\nCompile ({k}): {how} {cc.get('seconds', float('nan')):.1f} s; the timed runs loaded the "
                         f"package (cache key {cc.get('key', '?')}).")
        for k in alone.keys() - best.keys():
            lines.append(f"\nModel alone only (no medvit infer run): {k} {alone[k]:.2f} images/s "
                         f"({alone[k] / hf:.2f} × HF bf16).")
        fb = {k: m["rounds"][0]["alone"][k].get("first_batch_s") for k in alone}
        lines.append("\nFirst batch of the model alone (oneDNN primitive creation / package load; inside the e2e run "
                     "clock, outside the model-alone rate): " + ", ".join(f"{k} {v:.1f} s" for k, v in fb.items()
                                                                           if v is not None) + ".")
        lines.append(f"\nModel-alone and HF arms on {n_alone} pre-decoded images; medvit infer on all files.")
        lines.append("")
    if r.get("decode_only"):
        rates = dict(kv.split("=") for kv in filter(None, r["args"].get("model_rates", "").split(",")))
        th = r["args"]["threads"]
        lines += ["## Decode + preprocess cost per file (one thread, no model; 8 distinct files each)", "",
                  "| input | MB/file | CPU ms/file (median) | min | wall ms/file (median) | " +
                  " | ".join(f"ratio bound, {k} at {float(v):.1f} img/s" for k, v in rates.items()) + " |",
                  "|---|---|---|---|---|" + "---|" * len(rates)]
        for d in r["decode_only"]:
            bounds = []
            for v in rates.values():
                m = th * 1000 / float(v)  # model CPU ms per image on `threads` cores
                bounds.append(f"{m / (m + d['ms_median']):.2f}")
            lines.append(f"| {d['input']} | {d['mb_per_file']:.1f} | {d['ms_median']:.1f} | {d['ms_min']:.1f} | "
                         f"{d.get('wall_ms_median', float('nan')):.1f} | " + " | ".join(bounds) + " |")
        lines += ["", f"Ratio bound = model CPU time / (model + decode CPU time) per image, model CPU time = {th} "
                  "threads / model-alone images/s: the best end-to-end / model-alone ratio when decoding and the "
                  "model share these cores perfectly.", ""]
    if r.get("pipeline"):
        lines += ["## The pipeline around the model (end to end vs the model alone right after it)", "",
                  "| model | input | MB/file | files | path | e2e images/s (run clock) | e2e after 1st batch | model "
                  "alone | e2e / alone (after 1st batch) | decode + preprocess CPU ms/file | ratio bound | "
                  "waiting for input s / run s | decoding workers | peak RSS MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in r["pipeline"]:
            e, al = p["e2e"], p["alone"]
            t = e.get("timing") or {}
            steady = t.get("images_per_s_after_first_batch") or float("nan")
            dec_ms = (p.get("decode") or {}).get("ms_median", float("nan"))
            model_core_ms = r["args"]["threads"] * 1000 / al["img_s"]  # CPU time of the model per image
            bound = model_core_ms / (model_core_ms + dec_ms)  # both on the same cores, perfectly shared
            lines.append(f"| {p['arch']} | {p['input']} | {p['mb_per_file']:.1f} | {p['files']} | {p['path']} | "
                         f"{e['img_s_run']:.2f} | {steady:.2f} | {al['img_s']:.2f} | "
                         f"{e['img_s_run'] / al['img_s']:.2f} ({steady / al['img_s']:.2f}) | "
                         f"{dec_ms:.1f} | {bound:.2f} | {t.get('input_wait_s', float('nan')):.1f} / "
                         f"{e['run_s']:.1f} | {e['workers']} | {e['peak_rss_mb']:.0f} |")
        lines += ["", "Ratio bound = model CPU time per image / (model + decode CPU time per image): the best "
                  "end-to-end / model-alone ratio when decoding and the model share these cores perfectly (model CPU "
                  "time = threads × 1 / model-alone images/s; decode measured on one core in the benchmark process).",
                  ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
