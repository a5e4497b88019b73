"""Leaderboard of a benchmark grid: per-cell test metrics -> mean ± sd over seeds, as rows, Markdown and CSV.

A *cell* is one (method, dataset, task, label fraction, seed) run; its record is a flat dict with those keys and
``metrics`` (metric name -> float). :func:`aggregate` groups the cells that differ only by seed and reports every
numeric metric as mean and sample standard deviation (:func:`medvit.eval.metrics.mean_sd`; NaN/None skipped) and
the seeds that contributed, as BenchX's ``get_results.py`` averages seeds {42, 0, 1}.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from medvit.eval.metrics import mean_sd

GROUP_KEYS = ("method", "dataset", "task", "fraction")


def aggregate(cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows ``{method, dataset, task, fraction, n_seeds, seeds, <metric>_mean, <metric>_sd, ...}``, sorted by
    dataset, task, fraction, method. Raises KeyError naming a cell without one of the group keys."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for c in cells:
        missing = [k for k in (*GROUP_KEYS, "seed", "metrics") if k not in c]
        if missing:
            raise KeyError(f"cell {dict(c)} lacks {missing[0]!r}")
        groups.setdefault(tuple(c[k] for k in GROUP_KEYS), []).append(c)
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip(GROUP_KEYS, key))
        row["seeds"] = sorted(int(m["seed"]) for m in members)
        row["n_seeds"] = len(members)
        names = sorted({k for m in members for k, v in m["metrics"].items() if isinstance(v, (int, float))})
        for n in names:
            mean, sd = mean_sd([m["metrics"].get(n) for m in members])
            row[f"{n}_mean"], row[f"{n}_sd"] = mean, sd
        rows.append(row)
    return sorted(rows, key=lambda r: (r["dataset"], r["task"], r["fraction"], r["method"]))


def _fmt(mean: float, sd: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.4f} ± {sd:.4f}"


def to_markdown(rows: Sequence[Mapping[str, Any]], headline: Mapping[str, str]) -> str:
    """One Markdown table per (dataset, task): methods × label fractions of the task's headline metric."""
    out = []
    for ds, task in sorted({(r["dataset"], r["task"]) for r in rows}):
        metric = headline.get(task, "")
        sel = [r for r in rows if r["dataset"] == ds and r["task"] == task]
        fracs = sorted({r["fraction"] for r in sel})
        out += [f"### {ds} — {task} (test {metric}, mean ± sd over seeds)", "",
                "| method | " + " | ".join(f"{f * 100:g} %" for f in fracs) + " | seeds |",
                "|---|" + "---|" * (len(fracs) + 1)]
        for m in sorted({r["method"] for r in sel}):
            cells, seeds = [], set()
            for f in fracs:
                r = next((r for r in sel if r["method"] == m and r["fraction"] == f), None)
                cells.append(_fmt(r.get(f"{metric}_mean"), r.get(f"{metric}_sd")) if r else "—")
                if r:
                    seeds.update(r["seeds"])
            out.append(f"| {m} | " + " | ".join(cells) + f" | {', '.join(str(s) for s in sorted(seeds))} |")
        out.append("")
    return "\n".join(out)


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """All aggregated rows as CSV (union of the columns; seeds joined by ';')."""
    cols: list[str] = list(GROUP_KEYS) + ["n_seeds", "seeds"]
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "seeds": ";".join(str(s) for s in r["seeds"])})
    return buf.getvalue()
