"""End-of-run evaluation report of a multi-label classifier: per-label ROC and PR curves, a reliability diagram,
the confusion table at the operating thresholds, as PNG figures plus a one-page ``report.md`` / ``report.html``.

Curves and calibration come from scikit-learn (``roc_curve``, ``precision_recall_curve``,
``average_precision_score``, ``calibration.calibration_curve``: uniform probability bins, fraction of positives
per bin); unknown labels (mask False or NaN) are left out per label. Expected calibration error (ECE) is the
bin-count-weighted mean |fraction positive − mean probability| over the non-empty bins (Guo et al., ICML 2017 §2).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvit.eval.operating import FindingOperatingPoint, operating_summary


@dataclass(frozen=True)
class LabelReport(FindingOperatingPoint):
    """One label on the evaluated split: the confusion counts at its threshold
    (:class:`medvit.eval.operating.FindingOperatingPoint`, with sensitivity / specificity) plus AUROC and average
    precision (NaN where the label lacks known positives or negatives)."""

    auroc: float = math.nan
    average_precision: float = math.nan
    threshold: float = 0.5

    @property
    def n_pos(self) -> int:
        return self.tp + self.fn

    @property
    def n_neg(self) -> int:
        return self.tn + self.fp

    @property
    def ppv(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan


def label_reports(y: np.ndarray, prob: np.ndarray, mask: np.ndarray, names: Sequence[str],
                  thresholds: Sequence[float]) -> list[LabelReport]:
    """Per-label AUROC, average precision and the confusion counts at ``thresholds`` (prob >= t is positive;
    counts from :func:`medvit.eval.operating.operating_summary`).

    ``y``, ``prob``: (N, K) floats; ``mask``: (N, K) bool, False = unknown. Raises ValueError on shape mismatch.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, prob, mask = np.asarray(y, float), np.asarray(prob, float), np.asarray(mask, bool)
    if not (y.shape == prob.shape == mask.shape) or y.ndim != 2 or not y.shape[1] == len(names) == len(thresholds):
        raise ValueError(f"report: y {y.shape}, prob {prob.shape}, mask {mask.shape}, {len(names)} names and "
                         f"{len(thresholds)} thresholds do not agree")
    known = mask & np.isfinite(y)
    points = operating_summary(np.nan_to_num(y), prob >= np.asarray(thresholds, float)[None, :], names, known)
    out = []
    for k, pt in enumerate(points.findings):
        yk, pk = y[known[:, k], k] > 0.5, prob[known[:, k], k]
        both = yk.any() and (~yk).any()
        out.append(LabelReport(pt.name, pt.tp, pt.fn, pt.tn, pt.fp,
                               float(roc_auc_score(yk, pk)) if both else math.nan,
                               float(average_precision_score(yk, pk)) if both else math.nan, float(thresholds[k])))
    return out


def calibration(y: np.ndarray, prob: np.ndarray, mask: np.ndarray, n_bins: int = 10
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Reliability over all known (sample, label) pairs: (fraction positive, mean probability, count per
    non-empty bin, ECE), ``n_bins`` uniform bins on [0, 1]."""
    from sklearn.calibration import calibration_curve

    sel = np.asarray(mask, bool) & np.isfinite(y)
    yk, pk = (np.asarray(y)[sel] > 0.5).astype(int), np.asarray(prob)[sel]
    if yk.size == 0 or yk.min() == yk.max():
        return np.zeros(0), np.zeros(0), np.zeros(0, int), math.nan
    frac, mean_p = calibration_curve(yk, pk, n_bins=n_bins, strategy="uniform")
    bins = np.clip((pk * n_bins).astype(int), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    counts = counts[counts > 0]
    ece = float(np.sum(counts * np.abs(frac - mean_p)) / counts.sum())
    return frac, mean_p, counts, ece


def write_report(out_dir: str | Path, y: np.ndarray, prob: np.ndarray, mask: np.ndarray, names: Sequence[str],
                 thresholds: Sequence[float], title: str = "evaluation", n_bins: int = 10) -> dict[str, object]:
    """Write ``roc.png``, ``pr.png``, ``reliability.png``, ``confusion.csv``, ``report.md`` and ``report.html``
    into ``out_dir``; returns the numbers (per-label rows, ECE) and the file names."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = label_reports(y, prob, mask, names, thresholds)
    y, prob, mask = np.asarray(y, float), np.asarray(prob, float), np.asarray(mask, bool)
    figs = {}
    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(6, 5))
        for k, r in enumerate(rows):
            if math.isnan(r.auroc):
                continue
            sel = mask[:, k] & np.isfinite(y[:, k])
            yk, pk = y[sel, k] > 0.5, prob[sel, k]
            if kind == "roc":
                fpr, tpr, _ = roc_curve(yk, pk)
                ax.plot(fpr, tpr, label=f"{r.name} (AUROC {r.auroc:.3f})")
                ax.plot([1 - r.specificity], [r.sensitivity], "o", color=ax.lines[-1].get_color())
            else:
                prec, rec, _ = precision_recall_curve(yk, pk)
                ax.plot(rec, prec, label=f"{r.name} (AP {r.average_precision:.3f})")
        if kind == "roc":
            ax.plot([0, 1], [0, 1], ":", color="grey")
            ax.set(xlabel="1 − specificity (FPR)", ylabel="sensitivity (TPR)",
                   title=f"{title}\nROC (dots: operating thresholds)")
        else:
            ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=f"{title}\nprecision-recall")
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
        fig.tight_layout()
        fig.savefig(out / f"{kind}.png", dpi=110)
        plt.close(fig)
        figs[kind] = f"{kind}.png"
    frac, mean_p, counts, ece = calibration(y, prob, mask, n_bins)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    if len(frac):
        ax.plot(mean_p, frac, "o-", label=f"model (ECE {ece:.3f})")
    ax.set(xlabel="mean predicted probability", ylabel="fraction positive", xlim=(0, 1), ylim=(0, 1),
           title=f"{title}\nreliability, all labels, {n_bins} bins")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=110)
    plt.close(fig)
    figs["reliability"] = "reliability.png"
    header = ["label", "n_pos", "n_neg", "auroc", "average_precision", "threshold", "tp", "fp", "tn", "fn",
              "sensitivity", "specificity", "ppv"]
    table = [[r.name, r.n_pos, r.n_neg, r.auroc, r.average_precision, r.threshold, r.tp, r.fp, r.tn, r.fn,
              r.sensitivity, r.specificity, r.ppv] for r in rows]
    with open(out / "confusion.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(table)

    def cell(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    md = [f"# {title}", "", f"{y.shape[0]} images, {len(rows)} labels; expected calibration error {ece:.4f} "
          f"({n_bins} bins).", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table]
    md += ["", "![ROC](roc.png) ![PR](pr.png) ![reliability](reliability.png)", ""]
    (out / "report.md").write_text("\n".join(md))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>" for row in table)
    (out / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{y.shape[0]} images, {len(rows)} labels; ECE {ece:.4f}</p>"
        "<table border='1' cellspacing='0'><tr>" + "".join(f"<th>{h}</th>" for h in header) + f"</tr>{body}</table>"
        "<p><img src='roc.png'> <img src='pr.png'> <img src='reliability.png'></p></body></html>")
    return {"labels": [dict(zip(header, row)) for row in table], "ece": ece,
            "files": [*figs.values(), "confusion.csv", "report.md", "report.html"]}
