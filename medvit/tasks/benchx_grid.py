"""Task ``benchx_grid``: BenchX's evaluation grid — methods × datasets × tasks × label fractions × seeds — with every
cell cached and resumable, mean ± sd aggregation, a Markdown + CSV leaderboard and PNG plots.

``medvit run pipelines/benchx/<grid>.yaml``. Layout under ``output_dir``::

    cells/<method>/<dataset>/<task>/frac_<pct>/seed_<s>/cell.json      resolved cell (method, protocol, data)
                                                       /metrics.json   written last, atomically: the cell is done
                                                       /run/           the training loop's folder (log.csv, best/)
    cells.jsonl        every finished cell (rebuilt from the metrics files at each run)
    failures.csv       cells that raised (the grid continues past them)
    leaderboard.md / leaderboard.csv / plots/*.png / summary.json

A cell whose ``metrics.json`` exists is skipped, so a killed grid restarts where it stopped and loses at most the
cells that were running. ``workers > 1`` runs cells in that many processes (each with ``cpu_threads`` torch
threads); data are prepared once per process and dataset/split. Splits: BenchX datasets use their split files
(``train_1`` / ``train_10`` / ``train`` for 1 / 10 / 100 %); other datasets (the phantoms) keep the fraction of
``train`` drawn per seed by :func:`medvit.data.fraction.subset_indices` (the same images for every method).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medvit.config import ConfigError, from_dict, option
from medvit.tasks.base import register_task
from medvit.tasks.benchx_protocols import (
    HEADLINE,
    PROTOCOLS,
    TASKS,
    CellData,
    MethodSpec,
    ProtocolConfig,
    check_protocol_loss,
    default_protocols,
)

logger = logging.getLogger(__name__)

_BENCHX_SPLIT = {0.01: "train_1", 0.1: "train_10", 1.0: "train"}


@dataclass
class DatasetSpec:
    """One dataset of the grid and the tasks run on it."""

    name: str = option("cxr_phantom_benchx", "registered dataset (`medvit list dataset`)")
    args: dict[str, Any] = option(default_factory=dict, help="build_dataset kwargs, e.g. {root: /data/vindr}")
    tasks: list[str] = option(default_factory=lambda: ["classification"], help=f"tasks among {', '.join(TASKS)}")
    image_size: int = option(224, "model input size (square); images are resized to it")
    max_images: dict[str, int] = option(default_factory=dict, help="cap per split, e.g. {val: 500} (0/absent = all)")

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ValueError(f"tasks: unknown task {bad[0]!r} for dataset {self.name!r}; tasks: {', '.join(TASKS)}")


@dataclass
class BenchXGridConfig:
    """The grid; every field can be overridden as ``key=value``."""

    output_dir: str = option("runs/benchx_grid", "grid folder: cells/, leaderboard.md/.csv, plots/")
    methods: list[MethodSpec] = option(default_factory=lambda: [MethodSpec()], help="compared methods (rows)")
    datasets: list[DatasetSpec] = option(default_factory=lambda: [DatasetSpec()], help="datasets and their tasks")
    fractions: list[float] = option(default_factory=lambda: [0.01, 0.1, 1.0], help="training label fractions")
    task_fractions: dict[str, list[float]] = option(
        default_factory=dict, help="per-task fractions replacing `fractions`, e.g. {report_generation: [1.0]}")
    seeds: list[int] = option(default_factory=lambda: [42, 0, 1], help="seeds (BenchX: 42, 0, 1)")
    protocols: dict[str, dict[str, Any]] = option(
        default_factory=dict, help="per task: ProtocolConfig field overrides over BenchX's defaults")
    data_root: str = option("", "dataset folder put into args.root of every dataset that has none (one-command "
                                "runs: `medvit run pipelines/benchx/vindr_cxr.yaml data_root=/data/vindr`)")
    split_dir: str = option("", "BenchX split folder put into args.split_dir of every dataset that has none")
    workers: int = option(1, "cells run in parallel (processes)")
    cpu_threads: int = option(0, "torch threads per worker (0 = cores / workers)")
    plots: bool = option(True, "write plots/*.png")

    def __post_init__(self) -> None:
        if not self.methods or not self.datasets or not self.seeds:
            raise ValueError("methods, datasets and seeds must each list at least one entry")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"methods: names must be unique, got {names}")
        for f in [*self.fractions, *(x for v in self.task_fractions.values() for x in v)]:
            if not 0.0 < f <= 1.0:
                raise ValueError(f"fractions must be in (0, 1], got {f}")
        for t in [*self.protocols, *self.task_fractions]:
            if t not in TASKS:
                raise ValueError(f"protocols/task_fractions: unknown task {t!r}; tasks: {', '.join(TASKS)}")
        for t in TASKS:
            self.protocol(t, None)  # validate every override now, before any cell runs
        for m in self.methods:
            for t in m.overrides:
                self.protocol(t, m)
        if self.data_root and not Path(self.data_root).is_dir():
            raise ValueError(f"data_root {self.data_root!r}: no such folder (the dataset folder as published)")
        for i, d in enumerate(self.datasets):
            if self.data_root and "root" not in d.args:
                d.args["root"] = self.data_root
            root = d.args.get("root")
            if isinstance(root, str | Path) and str(root) and not Path(root).is_dir():
                raise ValueError(f"datasets[{i}].args.root {str(root)!r} ({d.name}): no such folder")
            if self.split_dir and "split_dir" not in d.args:
                d.args["split_dir"] = self.split_dir
        if self.workers < 1 or self.cpu_threads < 0:
            raise ValueError("workers must be >= 1 and cpu_threads >= 0")

    def protocol(self, task: str, method: MethodSpec | None) -> ProtocolConfig:
        """BenchX defaults < grid ``protocols`` < the method's ``overrides`` for ``task``."""
        base = dataclasses.asdict(default_protocols()[task])
        base.update(self.protocols.get(task, {}))
        if method is not None:
            base.update(method.overrides.get(task, {}))
        try:
            proto = from_dict(ProtocolConfig, base, prefix=f"protocols.{task}")
            try:
                check_protocol_loss(task, proto)
            except ValueError as e:
                raise ConfigError(f"protocols.{task}.{e}") from None
            return proto
        except ConfigError as e:
            who = f" (method {method.name!r})" if method is not None else ""
            raise ConfigError(f"{e}{who}") from None


@dataclass(frozen=True)
class Cell:
    method: str
    dataset: str
    task: str
    fraction: float
    seed: int

    @property
    def rel(self) -> Path:
        return Path("cells", self.method, self.dataset, self.task, f"frac_{self.fraction * 100:g}", f"seed_{self.seed}")


def grid_cells(cfg: BenchXGridConfig) -> list[Cell]:
    """Every cell of the grid in run order (dataset, task, fraction, seed, method: methods interleave)."""
    out = []
    for d in cfg.datasets:
        for t in d.tasks:
            for f in cfg.task_fractions.get(t, cfg.fractions):
                for s in cfg.seeds:
                    for m in cfg.methods:
                        out.append(Cell(m.name, d.name, t, float(f), int(s)))
    return out


# ------------------------------------------------------------------------------------------------------ data
_CACHE: dict[str, list[dict[str, Any]]] = {}


def _prepare(item: dict[str, Any], size: int) -> dict[str, Any]:
    """Resize image (bilinear), lateral image and mask (nearest) to size × size; keep the keys protocols use."""
    out: dict[str, Any] = {}
    for k in ("image", "image_lateral"):
        if k in item:
            t = item[k].float()
            if tuple(t.shape[-2:]) != (size, size):
                t = torch.nn.functional.interpolate(t[None], size=(size, size), mode="bilinear", antialias=True,
                                                    align_corners=False)[0].clamp_(0, 1)
            out[k] = t.contiguous()
    if "mask" in item:
        m = item["mask"].float()
        if tuple(m.shape[-2:]) != (size, size):
            m = torch.nn.functional.interpolate(m[None], size=(size, size), mode="nearest")[0]
        out["mask"] = m
    for k in ("label", "report", "id"):
        if k in item:
            out[k] = item[k]
    return out


def _items(spec: DatasetSpec, split: str, task: str) -> list[dict[str, Any]]:
    from medvit.data import build_dataset
    from medvit.registry import REGISTRY

    meta = REGISTRY.entry("dataset", spec.name).meta
    args = dict(spec.args)
    if task == "segmentation" and meta.get("mask_arg"):  # adapters that build masks only when asked
        args["with_mask"] = True
    key = json.dumps([spec.name, args, split, spec.image_size, spec.max_images.get(split.split("_")[0], 0)],
                     sort_keys=True, default=str)
    if key not in _CACHE:
        ds = build_dataset(spec.name, split, **args)
        cap = spec.max_images.get(split.split("_")[0], 0) or len(ds)
        _CACHE[key] = [_prepare(ds[i], spec.image_size) for i in range(min(cap, len(ds)))]
        logger.info("prepared %s %s: %d images", spec.name, split, len(_CACHE[key]))
    return _CACHE[key]


def cell_data(spec: DatasetSpec, task: str, fraction: float, seed: int) -> CellData:
    """The train (label fraction), val and test items of one cell."""
    from medvit.data.fraction import subset_indices
    from medvit.registry import REGISTRY

    meta = REGISTRY.entry("dataset", spec.name).meta
    splits = tuple(meta.get("splits", ("train", "val", "test")))
    if "train_1" in splits and fraction in _BENCHX_SPLIT:
        train = _items(spec, _BENCHX_SPLIT[fraction], task)
    else:
        full = _items(spec, "train", task)
        train = [full[i] for i in subset_indices(len(full), fraction, seed)]
    val, test = _items(spec, "val", task), _items(spec, "test", task)
    problem = meta.get("task", "multilabel")
    names = list(meta.get("label_names") or [])
    if problem != "multilabel":
        names = list(meta.get("class_names") or names)
    if task == "segmentation" and "mask" not in train[0]:
        raise ValueError(f"dataset {spec.name!r} gives no 'mask' for segmentation")
    if task in ("report_generation", "retrieval") and "report" not in train[0]:
        raise ValueError(f"dataset {spec.name!r} gives no 'report' for {task}")
    for name, d in (("train", train), ("val", val), ("test", test)):
        if not d:
            raise ValueError(f"dataset {spec.name!r}: the {name} split of this cell is empty")
    return CellData(train, val, test, names, problem if task == "classification" else "multilabel",
                    tuple(meta.get("mean", (0.4978,))), tuple(meta.get("std", (0.2449,))), spec.image_size)


# ------------------------------------------------------------------------------------------------------- run
def _write_json(path: Path, data: Any) -> None:
    from medvit.io.safe_write import atomic_write

    atomic_write(path, json.dumps(data, indent=2, default=_json_default), root=path.parent, mode=0o644)


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and math.isnan(o):
        return None
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _clean(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def run_cell(cfg: BenchXGridConfig, cell: Cell) -> dict[str, Any]:
    """Run one cell (skipped when its metrics.json exists); returns its record."""
    out = Path(cfg.output_dir) / cell.rel
    done = out / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    method = next(m for m in cfg.methods if m.name == cell.method)
    spec = next(d for d in cfg.datasets if d.name == cell.dataset)
    proto = cfg.protocol(cell.task, method)
    if (out / "run").exists():  # a cell killed mid-run restarts from scratch
        shutil.rmtree(out / "run")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "cell.json", {**dataclasses.asdict(cell), "method_spec": dataclasses.asdict(method),
                                    "protocol": dataclasses.asdict(proto), "dataset_spec": dataclasses.asdict(spec)})
    data = cell_data(spec, cell.task, cell.fraction, cell.seed)
    import time

    t0 = time.perf_counter()
    result = PROTOCOLS[cell.task](method, data, proto, cell.seed, out / "run")
    record = {**dataclasses.asdict(cell), "metrics": _clean({k: v for k, v in result["test"].items()
                                                              if isinstance(v, (int, float))}),
              "per_class": _clean(result["test"].get("per_class_auroc")), "val": _clean(result["val"]),
              "extra": _clean({k: v for k, v in result.items() if k not in ("test", "val")}),
              "wall_s": time.perf_counter() - t0}
    _write_json(done, record)
    logger.info("cell %s: %s", cell.rel, {k: round(v, 4) for k, v in record["metrics"].items()
                                         if isinstance(v, float)})
    return record


def _worker(cfg_dict: dict[str, Any], cells: list[dict[str, Any]], threads: int, level: int) -> list[dict[str, Any]]:
    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = from_dict(BenchXGridConfig, cfg_dict)
    out = []
    for c in cells:
        out.append(_safe_run(cfg, Cell(**c)))
    return out


def _safe_run(cfg: BenchXGridConfig, cell: Cell) -> dict[str, Any]:
    try:
        return run_cell(cfg, cell)
    except Exception as e:  # noqa: BLE001 - a long grid continues past a failing cell and reports it
        logger.error("cell %s failed: %s", cell.rel, e)
        return {**dataclasses.asdict(cell), "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(limit=3)}


def run(cfg: BenchXGridConfig) -> dict[str, Any]:
    """Run (or resume) the grid, then aggregate; returns the summary written to ``summary.json``."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells = grid_cells(cfg)
    todo = [c for c in cells if not (out / c.rel / "metrics.json").is_file()]
    logger.info("benchx grid: %d cells, %d to run, %d cached", len(cells), len(todo), len(cells) - len(todo))
    if cfg.workers > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        threads = cfg.cpu_threads or max(1, (os.cpu_count() or 1) // cfg.workers)
        shards = [[dataclasses.asdict(c) for c in todo[k :: cfg.workers]] for k in range(cfg.workers)]
        raw = dataclasses.asdict(cfg)
        with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn")) as ex:
            level = logging.getLogger().getEffectiveLevel()
            futures = [ex.submit(_worker, raw, s, threads, level) for s in shards if s]
            records = [r for fut in futures for r in fut.result()]
    else:
        if cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        records = [_safe_run(cfg, c) for c in todo]
    failures = [r for r in records if "error" in r]
    return write_reports(cfg, cells, failures)


def write_reports(cfg: BenchXGridConfig, cells: list[Cell], failures: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate the finished cells into leaderboard.md/.csv, cells.jsonl, plots and summary.json."""
    from medvit.eval.leaderboard import aggregate, to_csv, to_markdown
    from medvit.io.safe_write import atomic_write

    out = Path(cfg.output_dir)
    finished = [json.loads((out / c.rel / "metrics.json").read_text()) for c in cells
                if (out / c.rel / "metrics.json").is_file()]
    rows = aggregate(finished)
    atomic_write(out / "cells.jsonl", "".join(json.dumps(r) + "\n" for r in finished), root=out, mode=0o644)
    atomic_write(out / "leaderboard.csv", to_csv(rows), root=out, mode=0o644)
    md = ["# BenchX leaderboard", "", f"{len(finished)} of {len(cells)} cells finished; seeds {list(cfg.seeds)}; "
          "test metrics of the checkpoint selected on validation.", "", to_markdown(rows, HEADLINE)]
    seg = [r for r in rows if r["task"] == "segmentation" and "empty_mask_dice_mean" in r]
    if seg:
        md += ["Empty-mask baseline (test Dice of predicting no foreground): " + ", ".join(
            sorted({f"{r['dataset']} {r['empty_mask_dice_mean']:.4f}" for r in seg})), ""]
    atomic_write(out / "leaderboard.md", "\n".join(md), root=out, mode=0o644)
    if failures:
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", "dataset", "task", "fraction", "seed", "error"])
        for f in failures:
            w.writerow([f["method"], f["dataset"], f["task"], f["fraction"], f["seed"], f["error"]])
        atomic_write(out / "failures.csv", buf.getvalue(), root=out, mode=0o644)
    plots = _plots(out, rows, finished) if cfg.plots and rows else []
    summary = {"task": "benchx_grid", "cells": len(cells), "finished": len(finished), "failed": len(failures),
               "leaderboard": str(out / "leaderboard.md"), "plots": plots, "rows": rows}
    _write_json(out / "summary.json", summary)
    return summary


def _plots(out: Path, rows: list[dict[str, Any]], finished: list[dict[str, Any]]) -> list[str]:
    from medvit.visualize.leaderboard_plots import plot_fraction_curves, plot_per_class_bars

    paths = []
    for ds, task in sorted({(r["dataset"], r["task"]) for r in rows}):
        metric = HEADLINE[task]
        base = None
        if task == "segmentation":
            vals = [r.get("empty_mask_dice_mean") for r in rows if r["dataset"] == ds and r["task"] == task]
            base = next((v for v in vals if v is not None), None)
        try:
            paths.append(str(plot_fraction_curves(rows, ds, task, metric, out / "plots" / f"{ds}_{task}.png", base,
                                                  "empty mask")))
        except ValueError as e:
            logger.warning("no plot for %s/%s: %s", ds, task, e)
    cls = [c for c in finished if c["task"] == "classification" and c.get("per_class")]
    for ds in sorted({c["dataset"] for c in cls}):
        top = max(c["fraction"] for c in cls if c["dataset"] == ds)
        per: dict[str, dict[str, list[float]]] = {}
        for c in cls:
            if c["dataset"] == ds and c["fraction"] == top:
                for k, v in c["per_class"].items():
                    if v is not None:
                        per.setdefault(c["method"], {}).setdefault(k, []).append(v)
        means = {m: {k: sum(v) / len(v) for k, v in d.items()} for m, d in per.items()}
        if means:
            paths.append(str(plot_per_class_bars(means, f"{ds}: per-class test AUROC ({top * 100:g} % labels)",
                                                 out / "plots" / f"{ds}_per_class_auroc.png")))
    return paths


register_task("benchx_grid", BenchXGridConfig,
              "BenchX grid: methods x datasets x tasks x label fractions x seeds; cached cells, leaderboard")(run)
