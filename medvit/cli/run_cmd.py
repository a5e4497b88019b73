"""``medvit run PIPELINE.yaml [key.sub=value ...]``: run a registered task from a YAML config.

Exit codes (as ``medvit infer``): 0 done; 3 some units of a task that counts them failed (summary keys
``failed`` / ``finished`` as integers, e.g. BenchX grid cells; see the task's failures file); 4 none finished;
2 bad arguments or configuration."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a pipeline YAML (task + config), with key=value overrides",
                       description="Run a pipeline: the YAML names a registered task; overrides look like "
                       "train.epochs=3 output_dir=runs/x. Unknown keys fail before any work starts.")
    p.add_argument("pipeline", help="pipeline YAML file")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides (values parsed as YAML)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved config, run nothing")
    p.epilog = "exit codes: 0 done, 3 some units (e.g. grid cells) failed, 4 none finished, 2 bad arguments"
    p.add_argument("--json", action="store_true", help="print the task's whole summary as JSON (default: a short "
                   "readable summary and where the results are)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medvit.config import to_dict, yaml_dumps
    from medvit.tasks import build_config, run_task
    from medvit.train.distributed import finish_distributed

    if args.dry_run:
        spec, cfg = build_config(args.pipeline, args.overrides)
        print(yaml_dumps({"task": spec.name, **to_dict(cfg)}))  # noqa: T201
        return 0
    summary = run_task(args.pipeline, args.overrides)
    finish_distributed()  # every rank waits for rank 0's last writes, then leaves the process group in order
    if os.environ.get("RANK", "0") != "0":  # torchrun: the summary once, from rank 0
        return 0
    if args.json:
        print(json.dumps(summary, indent=2, default=str))  # noqa: T201
    else:
        _, cfg = build_config(args.pipeline, args.overrides)
        print(format_summary(summary, getattr(cfg, "output_dir", None)))  # noqa: T201
    return failure_exit_code(summary)


def failure_exit_code(summary: Any) -> int:
    """0, or 3 when the summary counts failed units (int ``failed`` > 0), 4 when none of them finished (int
    ``finished`` == 0); a line on stderr says so."""
    if not isinstance(summary, dict):
        return 0
    failed, finished = summary.get("failed"), summary.get("finished")
    if not isinstance(failed, int) or isinstance(failed, bool) or failed <= 0:
        return 0
    none = isinstance(finished, int) and finished == 0
    print(f"medvit run: {failed} of {failed + (finished or 0) if isinstance(finished, int) else '?'} "  # noqa: T201
          f"failed{' (nothing finished)' if none else ''}; see failures.csv in the output folder", file=sys.stderr)
    return 4 if none else 3


def format_summary(summary: Any, output_dir: str | None, max_items: int = 12) -> str:
    """A short readable summary: scalars as ``key: value``, small tables of numbers on one line, long lists
    as their length and last value, markdown text as it is; then where the results are."""
    lines = []
    items = summary.items() if isinstance(summary, dict) else [("result", summary)]
    for k, v in items:
        if isinstance(v, str) and "\n" in v:
            lines += ["", v.rstrip(), ""]
        elif isinstance(v, float):
            lines.append(f"  {k}: {v:.4g}")
        elif isinstance(v, str | int | bool) or v is None:
            lines.append(f"  {k}: {v}")
        elif isinstance(v, list):
            if v and all(isinstance(x, int | float) for x in v) and len(v) > max_items:
                lines.append(f"  {k}: {len(v)} values, first {v[0]:.4g}, last {v[-1]:.4g}")
            elif len(v) <= max_items and all(isinstance(x, str | int | float) for x in v):
                lines.append(f"  {k}: {', '.join(f'{x:.4g}' if isinstance(x, float) else str(x) for x in v)}")
            else:
                lines.append(f"  {k}: {len(v)} entries (see summary.json)")
        elif isinstance(v, dict) and len(v) <= max_items and all(isinstance(x, str | int | float | bool) or x is None
                                                                 for x in v.values()):
            lines.append(f"  {k}: " + ", ".join(f"{a} {b:.4g}" if isinstance(b, float) else f"{a} {b}"
                                                for a, b in v.items()))
        else:
            lines.append(f"  {k}: {type(v).__name__} (see summary.json)")
    if output_dir:
        out = Path(output_dir)
        files = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()) if out.is_dir() else []
        lines.append(f"results: {out}/" + (f"  ({', '.join(files[:12])}{', ...' if len(files) > 12 else ''})"
                                            if files else ""))
        for name in ("results.md", "summary.json"):
            if (out / name).is_file():
                lines.append(f"  {name}: {out / name}")
    return "\n".join(["medvit run: done", *lines])
