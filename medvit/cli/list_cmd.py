"""``medvit list [KIND]``: what is registered."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered backbones, weights, peft methods, tasks, datasets, ...",
                       description="List what is registered, by kind.")
    p.add_argument("kind", nargs="?", help="one kind (backbone, weights, peft, task, dataset, expert, metric, "
                   "transform); default: all")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medvit.registry import REGISTRY

    kinds = [args.kind] if args.kind else REGISTRY.kinds
    for kind in kinds:
        names = REGISTRY.names(kind)
        print(f"{kind} ({len(names)}):")  # noqa: T201
        for e in REGISTRY.entries(kind):
            print(f"  {e.name:<40} {e.description}")  # noqa: T201
    return 0
