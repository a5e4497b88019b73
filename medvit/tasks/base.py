"""Building and running a task from pipeline YAML (:class:`TaskSpec` and :func:`register_task` live in
:mod:`medvit.registry`, so rooms beside ``tasks`` — e.g. ``vlm`` — register tasks too; re-exported here).
Task modules import this module, never the ``medvit.tasks`` package (which imports them).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medvit.config import ConfigError, apply_overrides, from_dict, load_yaml, save_resolved
from medvit.registry import REGISTRY, TaskSpec, register_task

logger = logging.getLogger(__name__)

__all__ = ["TaskSpec", "build_config", "register_task", "run_task"]


def build_config(path: str | Path | None, overrides: list[str], data: dict | None = None) -> tuple[TaskSpec, Any]:
    """Load YAML (or ``data``), apply overrides, and build the task's typed config."""
    raw = load_yaml(path) if path is not None else dict(data or {})
    raw = apply_overrides(raw, overrides)
    name = raw.pop("task", None)
    if not name:
        raise ConfigError(f"{path or 'config'}: missing top-level key 'task' (see `medvit list task`)")
    spec: TaskSpec = REGISTRY.get("task", name)
    cfg = from_dict(spec.config_cls, raw)
    ds = getattr(cfg, "dataset", None)
    if isinstance(ds, str) and ds:  # a registered dataset name: checked here so --dry-run catches a typo too
        try:
            REGISTRY.entry("dataset", ds)
        except KeyError as e:
            raise ConfigError(f"dataset: {e.args[0]}") from None
        dargs = getattr(cfg, "dataset_args", None)
        if isinstance(dargs, dict):
            from medvit.data.datasets import check_dataset_args

            try:
                dargs.update(check_dataset_args(ds, dargs))  # values as the run takes them (n: 1e3 -> 1000)
            except (TypeError, ValueError) as e:
                raise ConfigError(str(e)) from None
    check_loss_values(cfg)
    return spec, cfg


def check_loss_values(cfg: Any) -> None:
    """The task's ``loss`` checked at config time (so ``--dry-run`` refuses what the run would): its argument values,
    against the dataset's registered label names when it has them (e.g. TinyViT's top-k <= labels), and — for a
    config with ``loss_feed(meta) -> LossFeed`` — against what the task feeds its loss (batch keys, label kind,
    per-output argument lengths). ``loss.args`` without ``loss.name`` becomes the task's default loss with those
    arguments (the feed's default, else the ``loss`` field's default)."""
    import dataclasses

    from medvit.train.losses import LossSpec

    loss = getattr(cfg, "loss", None)
    if not isinstance(loss, LossSpec):
        return
    ds = getattr(cfg, "dataset", None)
    meta = REGISTRY.entry("dataset", ds).meta if isinstance(ds, str) and ds else {}
    labels = meta.get("label_names")
    feed = cfg.loss_feed(meta) if hasattr(cfg, "loss_feed") else None
    if not loss.name:
        default = feed.default if feed is not None else None
        if default is None:
            field = next((f for f in dataclasses.fields(cfg) if f.name == "loss"), None)
            made = field.default_factory() if field is not None and callable(field.default_factory) else None
            default = made if isinstance(made, LossSpec) and made.name else None
        if default is None:  # the default depends on the data (e.g. multilabel vs ordinal)
            raise ConfigError("loss.name: not given, and this task's default loss depends on the data (see the "
                              "loss option's help); give loss.name with loss.args")
        loss = cfg.loss = loss.or_default(default)
    loss.check(list(labels) if labels else None, feed)


def run_task(path: str | Path | None, overrides: list[str] | None = None, data: dict | None = None) -> dict[str, Any]:
    """Build, save the resolved config beside the outputs, and run. Returns the task's summary."""
    spec, cfg = build_config(path, overrides or [], data)
    out = getattr(cfg, "output_dir", None)
    if out:
        p = save_resolved(cfg, out)
        (Path(out) / "task.txt").write_text(spec.name + "\n")
        logger.info("resolved config written to %s", p)
    return spec.run(cfg)
