"""The research verbs ``medvit pretrain | finetune | tune | eval`` over the registered tasks (one training path).

Each verb is a registered task with a default; the config is built in this order, later wins:
the task's dataclass defaults < ``--preset NAME`` (a YAML of ``pipelines/``, ``medvit list preset``) < the common
flags (``--epochs``, ``--lr`` ...) < ``key.sub=value`` overrides. ``--dry-run`` prints the resolved config and runs
nothing; ``--help`` lists every config key with the documentation of its dataclass field
(:func:`medvit.config.format_fields`), so the help cannot drift from the code. ``medvit export`` lives in
:mod:`medvit.cli.export_cmd`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verb:
    """A subcommand: the task it runs and what it is for."""

    name: str
    task: str
    help: str
    flags: tuple[str, ...] = ()


_TRAIN = ("epochs", "lr", "blr", "batch_size", "precision", "keep_last", "model_ema", "report_to", "output", "dataset",
          "data", "pretrained", "backbone", "seed", "resume")
VERBS = [
    Verb("pretrain", "mae_pretrain", "MAE self-supervised pretraining of a ViT encoder", _TRAIN),
    Verb("finetune", "finetune_multilabel", "full fine-tuning for multi-label findings (masked BCE, per-label AUROC, "
                                            "thresholds on validation, a servable model)", _TRAIN),
    Verb("tune", "prompt_tune", "parameter-efficient tuning with a PEFT method by name (--method lora, dvpt, ...)",
         (*_TRAIN, "method")),
    Verb("eval", "evaluate", "evaluate a trained model on a dataset split: per-label AUROC, ROC/PR curves, "
                             "reliability diagram, confusion table at the operating thresholds",
         ("model", "split", "batch_size", "precision", "output", "dataset", "data")),
]

#: common flag -> (config key, how its value is written); keys absent from a task's config are refused
FLAGS: dict[str, tuple[str, str]] = {
    "epochs": ("train.epochs", "number of passes over the training set"),
    "lr": ("train.lr", "absolute learning rate (overrides --blr)"),
    "blr": ("train.blr", "base learning rate, scaled by effective batch / 256"),
    "batch_size": ("train.batch_size", "samples per micro-batch"),
    "precision": ("train.precision", "fp32 | bf16"),
    "keep_last": ("train.keep_last", "resumable checkpoints kept on disk (the validation-best is kept apart)"),
    "model_ema": ("train.ema_decay", "keep an exponential moving average of the weights with this decay (e.g. "
                                     "0.999) and evaluate/save it"),
    "report_to": ("train.report_to", "experiment trackers beside log.csv: none | tensorboard | mlflow "
                                     "(comma-separated)"),
    "output": ("output_dir", "run folder"),
    "dataset": ("dataset", "registered dataset name (`medvit list dataset`)"),
    "data": ("dataset_args.root", "the dataset's folder (its root argument)"),
    "pretrained": ("pretrained", "starting weights: checkpoint dir / weights file / weight tag / MAE run folder"),
    "backbone": ("backbone", "registered backbone (`medvit list backbone`)"),
    "method": ("method", "PEFT method (`medvit list peft`)"),
    "model": ("model", "trained model directory (model.safetensors + config.json) or adapter directory"),
    "split": ("split", "dataset split evaluated"),
    "seed": ("seeds", "one seed: seeds=[SEED]"),
    "resume": ("train.resume", "continue from the latest checkpoint of the run folder (or from DIR)"),
}
_TYPES: dict[str, Any] = {"epochs": float, "lr": float, "blr": float, "batch_size": int, "keep_last": int,
                          "model_ema": float, "seed": int}


def _config_keys(cls: type) -> set[str]:
    from medvit.config import describe

    return {d.key for d in describe(cls)} | {d.key.split(".")[0] for d in describe(cls)}


def add_parser(sub: argparse._SubParsersAction) -> None:
    for verb in VERBS:
        p = sub.add_parser(verb.name, help=verb.help, description=f"{verb.help}. Runs task {verb.task!r}.",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=run, verb=verb)
        p.add_argument("overrides", nargs="*", help="key.sub=value config overrides (values parsed as YAML; "
                                                    "applied last)")
        p.add_argument("--preset", help="a preset name (`medvit list preset`; those for this verb are listed "
                                        "below) or a YAML file")
        for flag in verb.flags:
            key, text = FLAGS[flag]
            extra: dict[str, Any] = {"nargs": "?", "const": "auto"} if flag == "resume" else {}
            p.add_argument("--" + flag.replace("_", "-"), dest=flag, type=_TYPES.get(flag, str), default=None,
                           help=f"{text} [{key}]", **extra)
        p.add_argument("--dry-run", action="store_true", help="print the resolved config, run nothing")
        p.add_argument("--json", action="store_true", help="print the task's whole summary as JSON")
        _lazy_epilog(p, verb.task)


def _lazy_epilog(p: argparse.ArgumentParser, task: str) -> None:
    """Build the config-key epilog only when ``--help`` is printed (importing the tasks is not free)."""
    plain = p.format_help

    def format_help() -> str:
        if p.epilog is None:
            p.epilog = verb_epilog(task)
        return plain()

    p.format_help = format_help  # type: ignore[method-assign]


def verb_epilog(task: str) -> str:
    """The ``--help`` text after the flags: presets for ``task`` and every config key with its field documentation."""
    from medvit.config import format_fields
    from medvit.registry import REGISTRY
    from medvit.tasks.presets import presets_for

    spec = REGISTRY.get("task", task)
    presets = presets_for(task)
    lines = [f"presets ({len(presets)}): " + (", ".join(presets) or "none"), "",
             f"config keys of task {task} ({spec.config_cls.__name__}), settable as key.sub=value:",
             format_fields(spec.config_cls)]
    if "method_config" in {f.name for f in dataclasses.fields(spec.config_cls)}:
        from medvit.peft import get_method

        lines += ["", "method_config keys of each PEFT method (--method NAME method_config='{key: value}'):"]
        for name in REGISTRY.names("peft"):
            cls = get_method(name).config_cls
            lines += [f"{name} ({cls.__name__}):", format_fields(cls) or "  (no keys)"]
    return "\n".join(lines)


def resolve(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """(TaskSpec, typed config, raw dict) for a verb's arguments; ConfigError / KeyError name what is wrong."""
    from medvit.config import ConfigError, apply_overrides, load_yaml
    from medvit.registry import REGISTRY
    from medvit.tasks import build_config
    from medvit.tasks.presets import preset_path

    task = args.verb.task
    spec = REGISTRY.get("task", task)
    raw: dict[str, Any] = {}
    if args.preset:
        path = preset_path(args.preset)
        raw = load_yaml(path)
        if raw.get("task") != task:
            raise ConfigError(f"preset {args.preset!r} ({path}) runs task {raw.get('task')!r}, not {task!r} of "
                              f"`medvit {args.verb.name}`; presets for it: "
                              f"{', '.join(_presets(task)) or 'none'}")
    raw["task"] = task
    if getattr(args, "dataset", None) and raw.get("dataset") not in (None, args.dataset) and raw.get("dataset_args"):
        # the preset's dataset arguments belong to its dataset (phantom sizes, ...), not to the one named here
        logging.getLogger(__name__).info("--dataset %s: the preset's dataset_args for %s are dropped (%s)",
                                         args.dataset, raw.get("dataset"), raw["dataset_args"])
        raw["dataset_args"] = {}
    keys = _config_keys(spec.config_cls)
    for flag in args.verb.flags:
        key = FLAGS[flag][0]
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag == "seed":
            key, value = ("seeds", [value]) if "seeds" in keys else ("train.seed", value)
        if key not in keys and key.startswith("train.") and key[len("train."):] in keys:
            key = key[len("train."):]  # a task without a train section (evaluate: batch_size, precision)
        if key not in keys and key.split(".")[0] not in keys:
            raise ConfigError(f"--{flag.replace('_', '-')} does not apply to `medvit {args.verb.name}` (task {task} "
                              f"has no key {key!r})")
        if flag == "report_to":
            value = [v.strip() for v in str(value).split(",") if v.strip()]
        _set(raw, key, value)
    if getattr(args, "data", None):
        _keep_folder_args(raw)
    raw = apply_overrides(raw, list(args.overrides))
    spec, cfg = build_config(None, [], data=raw)
    return spec, cfg, raw


def _keep_folder_args(raw: dict[str, Any]) -> None:
    """``--data DIR`` reads a folder: the preset's in-memory arguments of its dataset (a phantom's ``n``, ``seed``,
    calibration knobs: the registry meta ``folder_args`` lists what the folder form takes) are dropped, logged, so
    the run reads the folder instead of refusing ``root`` next to ``n``."""
    from medvit.registry import REGISTRY

    dargs, ds = raw.get("dataset_args"), raw.get("dataset")
    if not (isinstance(dargs, dict) and isinstance(ds, str) and ("dataset", ds) in REGISTRY):
        return
    keep = REGISTRY.entry("dataset", ds).meta.get("folder_args")
    if keep is None:
        return
    dropped = {k: v for k, v in dargs.items() if k not in keep}
    if dropped:
        logging.getLogger(__name__).info("--data: %s reads the folder; the preset's in-memory dataset_args %s are "
                                         "dropped", ds, dropped)
        raw["dataset_args"] = {k: v for k, v in dargs.items() if k in keep}


def _presets(task: str) -> list[str]:
    from medvit.tasks.presets import presets_for

    return presets_for(task)


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            from medvit.config import ConfigError

            raise ConfigError(f"{p!r} is a value in the preset, not a section (setting {key})")
    node[parts[-1]] = value


def run(args: argparse.Namespace) -> int:
    from medvit.cli.run_cmd import format_summary
    from medvit.config import to_dict, yaml_dumps
    from medvit.tasks import run_task
    from medvit.train.distributed import finish_distributed

    spec, cfg, raw = resolve(args)
    if args.dry_run:
        print(yaml_dumps({"task": spec.name, **to_dict(cfg)}))  # noqa: T201
        return 0
    summary = run_task(None, [], data=raw)
    finish_distributed()  # as `medvit run`: ranks leave the process group together, after rank 0's last writes
    if os.environ.get("RANK", "0") != "0":
        return 0
    if args.json:
        print(json.dumps(summary, indent=2, default=str))  # noqa: T201
    else:
        print(format_summary(summary, getattr(cfg, "output_dir", None)).replace(  # noqa: T201
            "medvit run: done", f"medvit {args.verb.name}: done", 1))
    return 0
