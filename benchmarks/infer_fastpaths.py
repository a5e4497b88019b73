"""`medvit infer` per execution path (issue 24): images/s vs HF ViTModel bf16 autocast vs the compute limit.

One run, interleaved per round, on the same phantom DICOM files (1024² DX by default):

* ``medvit infer`` end to end (subprocess; run clock from run.json, and wall clock) for each path:
  ``auto`` (what the default picks here), ``fp32``, ``bf16`` (bf16 weights), ``compile`` (``--compile inductor``:
  AOTInductor with freezing, fp32 on CPU / bf16 on CUDA) and ``int8`` (PT2E x86 static, compiled);
  compile paths are warmed first on a subset holding the same first batch (compile time recorded apart),
  so the timed runs load the cached package;
* the same model alone on pre-decoded tensors, per path (the end-to-end / model-alone ratio);
* HF ``transformers.ViTModel`` of the same shape under bf16 autocast alone (random weights);
* the compute limit of this machine: measured GEMM throughput (fp32, bf16, int8) ÷ the model's FLOPs.

    nice -n 10 python benchmarks/infer_fastpaths.py [--n 160] [--size 1024] [--archs vit_base_patch16_224,...]
        [--paths auto,fp32,bf16,compile,int8] [--device cpu|cuda] [--name infer_fastpaths]

Writes benchmarks/results/<name>.{json,md}. Random weights (speed does not depend on them).
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

from benchmarks.infer_benchmark import make_model, make_phantoms, peak_rss_of_tree  # noqa: E402

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
    prec = {"auto": "auto", "fp32": "fp32", "bf16": "bf16", "compile": "auto", "int8": "int8"}[path]
    cmd = [sys.executable, "-m", "medvit.cli.main", "infer", "-m", str(model), "-i", str(inp), "-o", str(out),
           "--batch-size", str(args.batch), "--precision", prec, "--device", args.device, "--quiet",
           "--threads", str(args.threads)]
    if path == "compile":
        cmd += ["--compile", "inductor"]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
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
            "workers": run["config"]["workers"]}


def decoded(model_dir: Path, paths: list[Path]) -> torch.Tensor:
    from medvit.infer.decode import DecodeSpec, decode_file
    from medvit.infer.predictor import load_for_inference
    from medvit.infer.preprocess import Preprocessor
    from medvit.infer.rules import SelectionRules

    _, contract, _ = load_for_inference(model_dir)
    spec = DecodeSpec(str(paths[0].parents[1]), Preprocessor.from_contract(contract), SelectionRules([]))
    return torch.from_numpy(np.stack([decode_file(p, spec).x for p in paths]))


def model_alone(model_dir: Path, x: torch.Tensor, path: str, args: argparse.Namespace) -> dict:
    from medvit.infer.predictor import Predictor, load_for_inference

    model, _, info = load_for_inference(model_dir)
    prec = {"compile": "auto"}.get(path, path)
    pred = Predictor(model, prec, args.device, compile="inductor" if path == "compile" else "none",
                     model_sha256=info.sha256)
    pred.predict(x[: args.batch])  # warm-up (compiled paths: loads the package the warm-up run wrote)
    _sync(args.device)
    t0 = time.perf_counter()
    for i in range(0, len(x), args.batch):
        pred.predict(x[i:i + args.batch])
    _sync(args.device)
    dt = time.perf_counter() - t0
    return {"n": len(x), "seconds": dt, "img_s": len(x) / dt, "precision": pred.precision}


def hf_alone(arch: str, x: torch.Tensor, args: argparse.Namespace) -> dict:
    """transformers.ViTModel (same width/depth/patch, 1 channel, random weights) under bf16 autocast."""
    from transformers import ViTConfig, ViTModel

    from medvit.models import backbone_args

    a = backbone_args(arch)
    cfg = ViTConfig(hidden_size=a["embed_dim"], num_hidden_layers=a["depth"], num_attention_heads=a["num_heads"],
                    intermediate_size=4 * a["embed_dim"], image_size=224, patch_size=16, num_channels=1,
                    attn_implementation="sdpa")
    m = ViTModel(cfg, add_pooling_layer=False).eval().to(args.device)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--workers", type=int, default=None, help="decoding workers (default: medvit's choice)")
    ap.add_argument("--archs", default="vit_base_patch16_224,vit_small_patch16_224")
    ap.add_argument("--paths", default="auto,fp32,bf16,compile,int8")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (best of each kept)")
    ap.add_argument("--replicate", type=int, default=1,
                    help="copy the n files this many times (a GPU needs more images than are worth generating)")
    ap.add_argument("--alone-n", type=int, default=None,
                    help="images for the model-alone and HF arms (default: all; fewer on a slow shared CPU)")
    ap.add_argument("--e2e-paths", default=None,
                    help="paths also run end to end through medvit infer (default: all of --paths)")
    ap.add_argument("--name", default="infer_fastpaths")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MEDVIT_COMPILE_CACHE", tempfile.mkdtemp(prefix="medvit_compile_"))
    work = Path(tempfile.mkdtemp(prefix="medvit_fastpaths_"))
    t0 = time.perf_counter()
    paths = make_phantoms(work / "in", args.n, args.size)
    warm = work / "warm"  # the first batch's files: compile and int8 calibration see the same first batch
    for p in paths[: args.batch]:
        q = warm / p.relative_to(work / "in")
        q.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, q)
    for k in range(1, args.replicate):
        for p in paths[: args.n]:
            q = work / "in" / f"copy{k}" / p.relative_to(work / "in")
            q.parent.mkdir(parents=True, exist_ok=True)
            os.link(p, q)
    gen_s = time.perf_counter() - t0
    archs, fast = args.archs.split(","), args.paths.split(",")
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": vars(args),
                 "command": "python benchmarks/infer_fastpaths.py " + " ".join(sys.argv[1:]),
                 "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
                          "load_avg_start": os.getloadavg()},
                 "generate_s": gen_s, "gemm_gflops": gemm_gflops(args.device, args.threads), "models": {}}
    models = {a: make_model(work / f"model_{a}", a) for a in archs}
    xs = {a: decoded(models[a], paths[: args.alone_n]).repeat(args.replicate, 1, 1, 1) for a in archs}
    e2e_paths = args.e2e_paths.split(",") if args.e2e_paths else fast
    for a in archs:
        r = res["models"][a] = {"gflop_per_image": vit_flops(a) / 1e9, "warmup": {}, "rounds": []}
        for path in fast:
            if path in ("compile", "int8"):
                out = work / f"warm_{a}_{path}"
                r["warmup"][path] = run_infer(infer_cmd(models[a], warm, out, path, args), out)["execution"]
                print(a, path, "warm-up", r["warmup"][path], flush=True)  # noqa: T201
    for rnd in range(args.rounds):
        for a in archs:
            row: dict = {"e2e": {}, "alone": {}, "hf_bf16_autocast": hf_alone(a, xs[a], args)}
            print(a, "hf", row["hf_bf16_autocast"]["img_s"], flush=True)  # noqa: T201
            for path in fast:
                out = work / f"out_{a}_{path}_{rnd}"
                if path in e2e_paths:
                    row["e2e"][path] = run_infer(infer_cmd(models[a], work / "in", out, path, args), out)
                row["alone"][path] = model_alone(models[a], xs[a], path, args)
                print(a, path, row["e2e"].get(path, {}).get("img_s_run"), row["alone"][path]["img_s"],  # noqa: T201
                      flush=True)
                write(res | {"partial": row}, args)
            res["models"][a]["rounds"].append(row)
            write(res, args)  # after every model: a run cut short keeps what it measured
    print(render_md(res))  # noqa: T201
    shutil.rmtree(work, ignore_errors=True)


def write(res: dict, args: argparse.Namespace) -> None:
    res["host"]["load_avg_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(res, indent=2, default=str))
    (out / f"{args.name}.md").write_text(render_md(res))


def render_md(r: dict) -> str:
    a, h, g = r["args"], r["host"], r["gemm_gflops"]
    lines = [f"# `medvit infer` execution paths ({a['device']})", "",
             f"Command: `{r['command']}`  ",
             f"{r['date']}; {h['platform']}; {h['cpus']} CPUs ({h['cpu_capability']}); GPU {h['gpu']}; torch "
             f"{h['torch']}; load average at start {', '.join(f'{x:.1f}' for x in h['load_avg_start'])}, at end "
             f"{', '.join(f'{x:.1f}' for x in h['load_avg_end'])}. {a['n']} phantom DX DICOM {a['size']}² "
             f"(12-bit; {a.get('replicate', 1)} copies of each file), batch {a['batch']}, {a['threads']} torch "
             "threads, random weights, 1 channel, 224 px.",
             "",
             f"GEMM throughput here (3152×768 · 768×3072): fp32 {g['fp32']:.0f} GFLOP/s, bf16 {g['bf16']:.0f} "
             f"GFLOP/s, int8 {g['int8']:.0f} GOP/s.", ""]
    for arch, m in r["models"].items():
        if not m["rounds"]:
            continue
        gf = m["gflop_per_image"]
        best = {k: max(x["e2e"][k]["img_s_run"] for x in m["rounds"]) for k in m["rounds"][0]["e2e"]}
        alone = {k: max(x["alone"][k]["img_s"] for x in m["rounds"]) for k in m["rounds"][0]["alone"]}
        n_alone = m["rounds"][0]["hf_bf16_autocast"]["n"]
        hf = max(x["hf_bf16_autocast"]["img_s"] for x in m["rounds"])
        lines += [f"## {arch} ({gf:.1f} GFLOP/image = 2 × {gf / 2:.1f} G multiply-adds)", "",
                  f"HF ViTModel bf16 autocast alone: **{hf:.1f} images/s**. Limits from the GEMM rates: fp32 "
                  f"{g['fp32'] / gf:.1f}, bf16 {g['bf16'] / gf:.1f}, int8 {g['int8'] / gf:.1f} images/s; the "
                  f"issue's figure: {ISSUE_LIMIT:.0f} images/s (ViT-B/16, another machine with AMX).", "",
                  "| path | precision used | e2e images/s (run clock) | e2e wall (incl. start, load) | model alone "
                  "| e2e / alone | e2e / HF bf16 | peak RSS MB | workers | files failed |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for k, v in best.items():
            e = next(x["e2e"][k] for x in m["rounds"] if x["e2e"][k]["img_s_run"] == v)
            used = e["execution"]["precision"] + (" compiled" if e["execution"]["compile"] != "none" else "")
            lines.append(f"| {k} | {used} | {v:.2f} | {e['img_s_wall']:.2f} | {alone[k]:.2f} | {v / alone[k]:.2f} | "
                         f"{v / hf:.2f} | {e['peak_rss_mb']:.0f} | {e['workers']} | {e.get('failed', 0)} |")
        for k, w in m["warmup"].items():
            cc = w.get("compile_cache") or {}
            lines.append(f"\nCompile ({k}, first run, cached afterwards): {cc.get('seconds', float('nan')):.0f} s.")
        for k in alone.keys() - best.keys():
            lines.append(f"\nModel alone only (no medvit infer run): {k} {alone[k]:.2f} images/s "
                         f"({alone[k] / hf:.2f} × HF bf16).")
        lines.append(f"\nModel-alone and HF arms on {n_alone} pre-decoded images; medvit infer on all files.")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
