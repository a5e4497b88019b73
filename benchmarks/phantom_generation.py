"""Phantom generation speed: 1,000 chest phantoms at 512×512 written as DICOM, and in-memory throughput.

Reports wall-clock seconds AND process CPU seconds (this machine's 2 cores are shared, so wall time
depends on what else runs; CPU time is the work itself) plus the load average during the run.

    nice -n 10 .venv/bin/python benchmarks/phantom_generation.py            # writes results/phantom_generation.*
    .venv/bin/python benchmarks/phantom_generation.py --n 100 --no-write   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def timed(fn):
    w0, c0, l0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0, (l0 + os.getloadavg()[0]) / 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="chest phantoms written as DICOM")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--n-memory", type=int, default=500, help="phantoms generated in memory per kind at 224 px")
    p.add_argument("--masks-only", action="store_true", help="skip the --no-masks variant")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    from medvit.data import build_dataset
    from medvit.data.synth import write_synth

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for masks in (True, False)[: 1 if args.masks_only else 2]:
            out = Path(tmp) / f"m{int(masks)}"
            _, wall, cpu, load = timed(lambda o=out, m=masks: write_synth("cxr", args.n, o, fmt="dicom", seed=0,
                                                                           image_size=args.size, masks=m))
            size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
            rows.append({"what": f"`medvit data synth --kind cxr --n {args.n} --format dicom --size {args.size}`"
                                 + ("" if masks else " --no-masks"), "n": args.n, "wall_s": round(wall, 1),
                         "cpu_s": round(cpu, 1), "images_per_s_wall": round(args.n / wall, 1),
                         "images_per_s_cpu": round(args.n / cpu, 1), "load_avg": round(load, 1),
                         "output_MB": round(size_mb, 1)})
            print(rows[-1], flush=True)
    for kind in ("cxr", "retina"):
        ds = build_dataset(f"{kind}_phantom", "all", n=args.n_memory, seed=0, image_size=224)
        _, wall, cpu, load = timed(lambda d=ds: [d[i]["image"] for i in range(len(d))])
        rows.append({"what": f"in memory `build_dataset('{kind}_phantom', n={args.n_memory}, image_size=224)`, "
                             "items as tensors", "n": args.n_memory, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                     "images_per_s_wall": round(args.n_memory / wall, 1),
                     "images_per_s_cpu": round(args.n_memory / cpu, 1), "load_avg": round(load, 1)})
        print(rows[-1], flush=True)
    if args.no_write:
        return 0
    cmd = "nice -n 10 .venv/bin/python benchmarks/phantom_generation.py " + shlex.join(argv or sys.argv[1:])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "phantom_generation.json").write_text(json.dumps({"command": cmd.strip(), "cpus": os.cpu_count(),
                                                                 "rows": rows}, indent=2))
    lines = ["# Phantom generation speed", "", f"Command: `{cmd.strip()}`", "",
             f"Machine: {os.cpu_count()} CPU cores shared with other jobs (load average column); one process, "
             "single-threaded numpy. Wall time depends on the load; CPU time is the work itself.", "",
             "| what | n | wall s | CPU s | images/s (wall) | images/s (CPU) | load avg |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['n']} | {r['wall_s']} | {r['cpu_s']} | {r['images_per_s_wall']} | "
                     f"{r['images_per_s_cpu']} | {r['load_avg']} |")
    (RESULTS / "phantom_generation.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
