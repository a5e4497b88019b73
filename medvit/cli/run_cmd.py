"""``medvit run PIPELINE.yaml [key.sub=value ...]``: run a registered task from a YAML config."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a pipeline YAML (task + config), with key=value overrides",
                       description="Run a pipeline: the YAML names a registered task; overrides look like "
                       "train.epochs=3 output_dir=runs/x. Unknown keys fail before any work starts.")
    p.add_argument("pipeline", help="pipeline YAML file")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides (values parsed as YAML)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved config, run nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from medvit.config import to_dict
    from medvit.tasks import build_config, run_task

    if args.dry_run:
        spec, cfg = build_config(args.pipeline, args.overrides)
        print(yaml.safe_dump({"task": spec.name, **to_dict(cfg)}, sort_keys=False))  # noqa: T201
        return 0
    summary = run_task(args.pipeline, args.overrides)
    print(json.dumps(summary, indent=2, default=str))  # noqa: T201
    return 0
