"""Confusion-matrix figure (PNG) with an optional "Invalid response" column (closed-ended VLM evaluation)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_confusion(cm: Sequence[Sequence[int]], options: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Write ``cm`` (K rows = true option, K or K + 1 columns = predicted option [+ invalid]) as a PNG heat map with
    counts; rows are normalised for the colour scale. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(cm, dtype=float)
    k = len(options)
    if m.ndim != 2 or m.shape[0] != k or m.shape[1] not in (k, k + 1):
        raise ValueError(f"confusion matrix shape {m.shape} does not fit {k} options (+ invalid column)")
    cols = list(options) + (["Invalid response"] if m.shape[1] == k + 1 else [])
    frac = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2.5, 0.8 * k + 2))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(len(cols)):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right")
    ax.set_yticks(range(k), list(options))
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
