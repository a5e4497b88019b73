"""BenchX CPU preset on chest phantoms: MAE pretraining (if missing), the grid, and the verdicts on its orderings.

    nice -n 10 python benchmarks/benchx_phantoms.py [--out benchmarks/results/benchx_phantoms] [--runs runs]

Runs ``pipelines/benchx/mae_phantoms.yaml`` (skipped when ``runs/benchx_mae_phantoms/encoder`` exists) and
``pipelines/benchx/cpu_phantoms.yaml`` (cached cells are skipped, so a rerun only aggregates), then copies the
leaderboard (Markdown + CSV) and plots to ``--out`` and writes ``README.md`` there with the command, the CPU time
used, and for each expected ordering whether it holds, does not hold, or is not separable at this budget
(difference of means within the larger standard deviation over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_s() -> float:
    """CPU seconds of this process and its finished children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def verdict(a: tuple[float, float], b: tuple[float, float]) -> str:
    """'holds' when mean a > mean b by more than the larger sd, 'does not hold' when b > a by as much, else
    'not separable at this budget'."""
    (ma, sa), (mb, sb) = a, b
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (ma, mb)):
        return "not measured"
    margin = max(sa or 0.0, sb or 0.0)
    if ma - mb > margin:
        return "holds"
    if mb - ma > margin:
        return "does not hold"
    return "not separable at this budget"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "benchx_phantoms"))
    ap.add_argument("--overrides", nargs="*", default=[], help="key=value overrides for the grid")
    args = ap.parse_args()
    os.chdir(ROOT)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    from medvit.tasks import run_task

    t0, c0 = time.time(), cpu_s()
    if not (ROOT / "runs" / "benchx_mae_phantoms" / "encoder").is_dir():
        run_task("pipelines/benchx/mae_phantoms.yaml")
    t_mae, c_mae = time.time() - t0, cpu_s() - c0
    summary = run_task("pipelines/benchx/cpu_phantoms.yaml", args.overrides)
    wall, cpu = time.time() - t0, cpu_s() - c0
    grid = ROOT / "runs" / "benchx_cpu_phantoms"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("leaderboard.md", "leaderboard.csv", "cells.jsonl"):
        shutil.copy(grid / name, out / name)
    if (out / "plots").exists():
        shutil.rmtree(out / "plots")
    shutil.copytree(grid / "plots", out / "plots")
    rows = summary["rows"]

    def get(method: str, task: str, frac: float, metric: str) -> tuple[float, float]:
        r = next((r for r in rows if r["method"] == method and r["task"] == task and r["fraction"] == frac), None)
        return (r.get(f"{metric}_mean"), r.get(f"{metric}_sd")) if r else (math.nan, math.nan)

    checks = []
    for frac in (0.01, 0.1, 1.0):
        a, b = get("mae-phantoms", "classification", frac, "auroc"), get("random-init", "classification", frac, "auroc")
        checks.append((f"classification AUROC, {frac * 100:g} % labels: MAE-init > random-init", a, b))
    for frac in (0.01, 0.1, 1.0):
        a = get("mae-phantoms+lora", "classification", frac, "auroc")
        b = get("random-init", "classification", frac, "auroc")
        checks.append((f"classification AUROC, {frac * 100:g} % labels: MAE+LoRA > random-init", a, b))
    seg_fracs = sorted({r["fraction"] for r in rows if r["task"] == "segmentation"})
    for m in ("random-init", "mae-phantoms", "mae-phantoms+lora"):
        for frac in seg_fracs:
            d = get(m, "segmentation", frac, "dice")
            e = get(m, "segmentation", frac, "empty_mask_dice")
            checks.append((f"segmentation Dice, {m}, {frac * 100:g} %: above the empty-mask baseline", d, e))
    for metric, task in (("BLEU_4", "report_generation"), ("hits@5", "retrieval")):
        a, b = get("mae-phantoms", task, 1.0, metric), get("random-init", task, 1.0, metric)
        checks.append((f"{task} {metric}: MAE-init > random-init (frozen encoder)", a, b))
    lines = [
        "# BenchX CPU preset on chest phantoms", "",
        "Command (from the repository root; the machine: 2 shared cores, loaded by other jobs):", "",
        "```", "nice -n 10 .venv/bin/python benchmarks/benchx_phantoms.py", "```", "",
        "= `medvit run pipelines/benchx/mae_phantoms.yaml` then `medvit run pipelines/benchx/cpu_phantoms.yaml` "
        "(ViT 48 px, patch 8, width 64, depth 4; 400 phantoms, patient-disjoint 80/10/10 by patient; seeds 42, 0, 1; "
        "one torch thread).", "",
        f"CPU budget: {cpu / 60:.1f} CPU-min in this invocation ({wall / 60:.1f} min wall), of which MAE "
        f"pretraining {c_mae / 60:.1f} CPU-min ({t_mae / 60:.1f} min wall; 0 when its encoder was already there). "
        f"Cells: {summary['finished']} of {summary['cells']} finished, {summary['failed']} failed "
        "(cells cached by an earlier invocation are not counted in this CPU time).", "",
        "## Expected orderings (test metric, mean ± sd over 3 seeds; 'holds' = difference larger than the larger sd)",
        "", "| claim | A | B | verdict |", "|---|---|---|---|"]
    def fmt(t: tuple[float, float]) -> str:
        missing = t[0] is None or (isinstance(t[0], float) and math.isnan(t[0]))
        return "n/a" if missing else f"{t[0]:.4f} ± {(t[1] or 0):.4f}"

    for claim, a, b in checks:
        lines.append(f"| {claim} | {fmt(a)} | {fmt(b)} | {verdict(a, b)} |")
    lines += ["", "## Leaderboard", "", (out / "leaderboard.md").read_text(), "",
              "Plots: " + ", ".join(f"`plots/{Path(p).name}`" for p in summary["plots"]), ""]
    (out / "README.md").write_text("\n".join(lines))
    (out / "verdicts.json").write_text(json.dumps([{"claim": c, "a": a, "b": b, "verdict": verdict(a, b)}
                                                   for c, a, b in checks], indent=2, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
