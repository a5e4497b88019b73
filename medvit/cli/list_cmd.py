"""``medvit list [KIND]``: what is registered."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered backbones, weights, peft methods, tasks, datasets, ...",
                       description="List what is registered, by kind.")
    p.add_argument("kind", nargs="?", help="one kind (backbone, weight, peft, task, dataset, expert, projector, "
                   "metric, transform; singular or plural); default: all. Weight tags say whether their file is "
                   "present")
    p.add_argument("name", nargs="?", help="with kind task: that task's config keys, types, defaults and what "
                   "each does (the text validation errors quote); with kind loss: that loss's args and ranges")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medvit.registry import REGISTRY

    if args.name:
        if args.kind in ("loss", "losses"):
            from medvit.train.losses import describe_loss

            print(describe_loss(args.name))  # noqa: T201
            return 0
        if args.kind != "task":
            raise SystemExit(f"medvit list {args.kind} NAME: only tasks and losses are documented (medvit list task "
                             "NAME, medvit list loss NAME)")
        from medvit.config import format_fields

        spec = REGISTRY.get("task", args.name)
        print(f"task {spec.name}: {spec.description.strip()}\nconfig keys ({spec.config_cls.__name__}):")  # noqa: T201
        print(format_fields(spec.config_cls))  # noqa: T201
        return 0
    kinds = [resolve_kind(args.kind, REGISTRY.kinds)] if args.kind else REGISTRY.kinds
    for kind in kinds:
        names = REGISTRY.names(kind)
        print(f"{kind} ({len(names)}):")  # noqa: T201
        for e in REGISTRY.entries(kind):
            print(f"  {e.name:<40} {e.description}{_presence(kind, e.name)}")  # noqa: T201
    return 0


def resolve_kind(kind: str, kinds: list[str]) -> str:
    """``kind`` as registered, accepting singular and plural (``backbones``, ``weight``); a ValueError with a
    did-you-mean for anything else."""
    from medvit.registry import did_you_mean

    k = kind.strip().lower()
    for cand in (k, k.rstrip("s"), k + "s"):
        if cand in kinds:
            return cand
    hint = did_you_mean(k, kinds)
    raise ValueError(f"unknown kind {kind!r}" + (f"; {hint}" if hint else "") + f" (kinds: {', '.join(kinds)})")


def _presence(kind: str, name: str) -> str:
    """For weight tags: whether their file is on this machine (and where it is looked for)."""
    if kind != "weight":
        return ""
    from medvit.models.pretrained import resolve_weight_file, weights_dir

    try:
        return f"  [present: {resolve_weight_file(name)}]"
    except FileNotFoundError:
        return f"  [not on this machine: place it under {weights_dir() / name}/]"
