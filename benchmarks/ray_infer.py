"""`medvit infer` images/s: the local engine vs ``--engine ray`` with 1 and 2 workers, and Ray's overhead per image.

One interleaved run on this machine. A Ray instance (``--cpus`` CPUs, no dashboard) is started by this script
and every Ray arm is a ``medvit infer --engine ray --address ...`` subprocess joining it (the cluster start is
not counted; each run's worker start, model transfer and imports are, as in production). Arms, each ``--rounds``
times in rotating order, on two phantom folders (``--sizes``, fresh OUTPUT each time), so that each arm's run
time splits into a fixed part and a per-image part (least squares T = a + b·N):

* ``local-1``: ``--workers 0 --threads 1``: one process decodes and predicts on one core — the same work as
  one Ray worker with 1 CPU, so ``ray-1`` − ``local-1`` is Ray's overhead;
* ``local``: the default local engine (1 decoding process + the model on 2 torch threads);
* ``ray-1``, ``ray-2``: ``--engine ray --num-workers 1|2 --cpus-per-worker 1``.

    nice -n 10 python benchmarks/ray_infer.py [--sizes 24,72] [--size 256] [--batch 16] [--rounds 2]
        [--arch vit_small_patch16_224] [--precision fp32]

Writes benchmarks/results/ray_infer.{md,json,png}. Random weights (speed does not depend on them).

``--overhead``: Ray's cost per image measured where it is not drowned by compute: only ``local-1`` and ``ray-1``,
with the demo model (``pipelines/demo/model``: a 64-px ViT, about a millisecond per image), default sizes 48 and
192 images; writes benchmarks/results/ray_infer_overhead.{md,json}. Both modes report the driver's own time per
image (run time minus the time it waited for workers, ``run.json`` ``engine.driver_wait_seconds``): the ceiling
of one driver, whatever the number of workers.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from infer_benchmark import make_model, make_phantoms  # noqa: E402  (benchmarks/ is not a package)

ARMS = {
    "local-1": ["--workers", "0", "--threads", "1"],
    "local": ["--workers", "1", "--threads", "2"],
    "ray-1": ["--engine", "ray", "--num-workers", "1", "--cpus-per-worker", "1"],
    "ray-2": ["--engine", "ray", "--num-workers", "2", "--cpus-per-worker", "1"],
}


def run_arm(name: str, model: Path, inp: Path, out: Path, address: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "medvit.cli.main", "infer", "-m", str(model), "-i", str(inp), "-o", str(out),
           "--batch-size", str(args.batch), "--precision", args.precision, "--quiet", *ARMS[name]]
    if name.startswith("ray"):
        cmd += ["--address", address]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    run = json.loads((out / "run.json").read_text())
    n = run["counts"]["predicted"]
    return {"arm": name, "images": n, "run_seconds": run["seconds"], "wall_seconds": round(wall, 2),
            "images_per_s": round(n / run["seconds"], 3), "engine": run["engine"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=None, help="image counts of the two folders (default 24,72; 48,192 with "
                    "--overhead)")
    ap.add_argument("--overhead", action="store_true", help="local-1 vs ray-1 with the demo model (see above)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--arch", default="vit_small_patch16_224")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.sizes = args.sizes or ("48,192" if args.overhead else "24,72")
    name = "ray_infer_overhead" if args.overhead else "ray_infer"
    args.out = args.out or str(ROOT / "benchmarks" / "results" / name)
    if args.overhead:
        args.arch = "medvit demo model (pipelines/demo/model)"
    import ray

    sizes = [int(x) for x in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="medvit-ray-bench-"))
    try:
        paths = make_phantoms(tmp / "all", max(sizes), args.size)
        for n in sizes:
            for p in paths[:n]:
                dst = tmp / f"in{n}" / p.relative_to(tmp / "all")
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(p, dst)
        model = ROOT / "pipelines" / "demo" / "model" if args.overhead else make_model(tmp / "model", args.arch)
        os.environ["PYTHONPATH"] = str(ROOT)  # the cluster's workers import this checkout
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, object_store_memory=256 * 2**20,
                 log_to_driver=False)
        cluster_start = time.perf_counter() - t0
        address = ray.get_runtime_context().gcs_address
        names = ["local-1", "ray-1"] if args.overhead else list(ARMS)
        runs = []
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # rotate: no arm always first or last
            for n in sizes:
                for name in order:
                    out = tmp / f"out-{name}-{n}-{r}"
                    res = run_arm(name, model, tmp / f"in{n}", out, address, args)
                    res["round"] = r
                    runs.append(res)
                    print(f"round {r} n={n} {name}: {res['images_per_s']} images/s ({res['run_seconds']} s)",
                          flush=True)
                    shutil.rmtree(out)
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import numpy as np

    summary = {}
    for name in names:
        best = {n: min(x["run_seconds"] for x in runs if x["arm"] == name and x["images"] == n) for n in sizes}
        b, a = np.polyfit(sizes, [best[n] for n in sizes], 1)  # T = a + b N on the best run of each size
        summary[name] = {"best_seconds": {str(n): best[n] for n in sizes},
                         "all_seconds": {str(n): [x["run_seconds"] for x in runs if x["arm"] == name
                                                  and x["images"] == n] for n in sizes},
                         "fixed_seconds": round(float(a), 2), "seconds_per_image": round(float(b), 4),
                         "images_per_s": round(1 / float(b), 3),
                         "images_per_s_end_to_end": round(max(sizes) / best[max(sizes)], 3)}
    for name in names:
        if name.startswith("ray"):
            busy = [(x["run_seconds"] - x["engine"]["driver_wait_seconds"]) / x["images"] for x in runs
                    if x["arm"] == name]
            summary[name]["driver_ms_per_image"] = round(1000 * min(busy), 1)
    overhead = summary["ray-1"]["seconds_per_image"] - summary["local-1"]["seconds_per_image"]
    fixed = summary["ray-1"]["fixed_seconds"] - summary["local-1"]["fixed_seconds"]
    doc = {"command": "nice -n 10 python benchmarks/ray_infer.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "platform": platform.platform(),
           "cpus": os.cpu_count(), "load_average": [round(x, 1) for x in os.getloadavg()],
           "ray_version": ray.__version__, "args": vars(args), "cluster_start_seconds": round(cluster_start, 2),
           "runs": runs, "summary": summary, "ray_overhead_ms_per_image": round(1000 * overhead, 1),
           "ray_fixed_overhead_seconds": round(fixed, 2), "sizes": sizes,
           "scaling_ray_2_over_1": (round(summary["ray-2"]["images_per_s"] / summary["ray-1"]["images_per_s"], 3)
                                    if "ray-2" in summary else None)}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    if not args.overhead:
        plot(doc, out.with_suffix(".png"))
    out.with_suffix(".md").write_text(render_md(doc))
    print(render_md(doc))


def plot(doc: dict, path: Path) -> None:
    """Bars: images/s end to end on the largest folder (best round, run clock); dots: every round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(doc["sizes"])
    arms = ("local-1", "local", "ray-1", "ray-2")
    labels = ["local\n1 proc, 1 thread", "local default\n1 decoder+2 thr.", "Ray\n1 worker", "Ray\n2 workers"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for i, k in enumerate(arms):
        ips = [n / t for t in doc["summary"][k]["all_seconds"][str(n)]]
        ax.bar(i, max(ips), color=["#999999", "#666666", "#4c72b0", "#2a4d8f"][i], width=0.6)
        ax.plot([i] * len(ips), ips, "k.", ms=6)
        ax.text(i, max(ips), f"{max(ips):.2f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(arms)), labels, fontsize=8)
    ax.set_ylabel(f"images/s, {n} images (run clock)")
    ax.set_title(f"medvit infer, {doc['args']['arch']}, {doc['cpus']} cores shared (load avg "
                 f"{doc['load_average'][0]:.0f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render_md(d: dict) -> str:
    a = d["args"]
    lines = [
        "# `medvit infer`: Ray's overhead per image (local-1 vs ray-1, demo model)" if a["overhead"] else
        "# `medvit infer`: local engine vs `--engine ray` (1 and 2 workers)", "",
        f"Command: `{d['command']}`  ",
        f"{d['date']}; {d['platform']}; {d['cpus']} CPUs **shared with other jobs** (load average at the end "
        f"{', '.join(map(str, d['load_average']))}); Ray {d['ray_version']} started by the script with "
        f"num_cpus={a['cpus']} (start {d['cluster_start_seconds']} s, not counted). {a['arch']}"
        + ("" if a["overhead"] else " (random weights, 1 channel, 224 px)")
        + f", phantom DX images of {a['size']}² ({a['sizes']} per folder), precision {a['precision']}, batch "
        f"{a['batch']}, {a['rounds']} interleaved rounds (arm order rotated). Budget: about "
        f"{sum(r['wall_seconds'] for r in d['runs']) / 60:.1f} wall-minutes.", "",
        "| arm | what | images/s (steady, 1/slope) | images/s end to end (largest folder) | fixed s | "
        "run seconds per folder size (all rounds) |", "|---|---|---|---|---|---|"]
    what = {"local-1": "`--workers 0 --threads 1`: one process decodes and predicts",
            "local": "default local engine: 1 decoding process + model on 2 torch threads",
            "ray-1": "`--engine ray --num-workers 1` (1 CPU per worker)",
            "ray-2": "`--engine ray --num-workers 2` (1 CPU per worker)"}
    for k, v in d["summary"].items():
        secs = "; ".join(f"{n}: {', '.join(map(str, t))}" for n, t in v["all_seconds"].items())
        lines.append(f"| {k} | {what[k]} | {v['images_per_s']} | {v['images_per_s_end_to_end']} | "
                     f"{v['fixed_seconds']} | {secs} |")
    lines += ["", "Driver's own time per image (run time − time waiting for workers; best run): "
              + ", ".join(f"{k} {v['driver_ms_per_image']} ms" for k, v in d["summary"].items()
                          if "driver_ms_per_image" in v) + "."]
    lines += ["", f"Ray overhead (ray-1 − local-1: the same work on one core; from T = a + b·N fitted on the best "
              f"run of each folder size): **{d['ray_overhead_ms_per_image']} ms per image** and "
              f"**{d['ray_fixed_overhead_seconds']} s per run** (the job's worker processes start, import torch and "
              f"receive the model)." + (f" Scaling ray-2 / ray-1 (steady images/s): **{d['scaling_ray_2_over_1']}×**."
                                       if d["scaling_ray_2_over_1"] else ""), "",
              "Run clock = `run.json` seconds (from the OUTPUT lock to the tables; includes, for Ray, starting "
              "the job's worker processes, importing torch there and shipping the model through the object "
              "store). " + ("" if a["overhead"] else "Figure: `ray_infer.png`."), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
