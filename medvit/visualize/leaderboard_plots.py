"""Benchmark figures (PNG, matplotlib Agg): headline metric vs label fraction per method, and per-class AUROC bars.

Inputs are the rows of :func:`medvit.eval.leaderboard.aggregate` (``<metric>_mean`` / ``<metric>_sd`` per
(method, dataset, task, fraction)) and, for the bars, per-class AUROC means per method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _plt():  # noqa: ANN202 - matplotlib stays a lazy import
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fraction_curves(rows: Sequence[Mapping[str, Any]], dataset: str, task: str, metric: str,
                         path: str | Path, baseline: float | None = None, baseline_label: str = "") -> Path:
    """Test ``metric`` (mean ± sd error bars) vs label fraction (log x) per method for one dataset/task -> PNG.

    ``baseline``: a horizontal reference line (e.g. the empty-mask Dice). Raises ValueError when no row matches.
    """
    sel = [r for r in rows if r["dataset"] == dataset and r["task"] == task and f"{metric}_mean" in r]
    if not sel:
        raise ValueError(f"no aggregated rows for {dataset}/{task} with metric {metric!r}")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=120)
    for m in sorted({r["method"] for r in sel}):
        pts = sorted((r["fraction"], r[f"{metric}_mean"], r[f"{metric}_sd"]) for r in sel if r["method"] == m)
        x = [100 * p[0] for p in pts]
        ax.errorbar(x, [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3, label=m)
    if baseline is not None:
        ax.axhline(baseline, color="grey", ls="--", lw=1, label=baseline_label or "baseline")
    fracs = sorted({100 * r["fraction"] for r in sel})
    if len(fracs) > 1:
        ax.set_xscale("log")
    ax.set_xticks(fracs, [f"{f:g} %" for f in fracs])
    ax.set_xlabel("training labels")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{dataset} — {task}")
    ax.grid(alpha=0.3)
    return _save(plt, fig, ax, path)


def plot_per_class_bars(per_class: Mapping[str, Mapping[str, float]], title: str, path: str | Path) -> Path:
    """Grouped bars: per-class test AUROC (x = class, one bar per method) -> PNG. ``per_class``: method ->
    class -> AUROC."""
    if not per_class:
        raise ValueError("per_class is empty")
    plt = _plt()
    methods = sorted(per_class)
    classes = list(next(iter(per_class.values())))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(classes) + 1), 3.6), dpi=120)
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        xs = [i + (k - (len(methods) - 1) / 2) * width for i in range(len(classes))]
        ax.bar(xs, [per_class[m].get(c) or 0.0 for c in classes], width, label=m)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0.4, 1.0)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("test AUROC")
    ax.set_title(title)
    return _save(plt, fig, ax, path)


def _save(plt: Any, fig: Any, ax: Any, path: str | Path) -> Path:
    """Legend, tight layout, write the PNG (folders created), close the figure."""
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    plt.close(fig)
    return p
