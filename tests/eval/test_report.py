"""End-of-run report numbers: confusion counts at the thresholds, AUROC/AP, unknown labels left out, ECE."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medvit.visualize.report import calibration, label_reports, write_report


def test_counts_auroc_and_masking():
    y = np.array([[1, 0], [0, 1], [1, np.nan], [0, 0]], float)
    p = np.array([[0.9, 0.2], [0.4, 0.8], [0.6, 0.9], [0.7, 0.1]])
    mask = np.array([[1, 1], [1, 1], [1, 1], [1, 0]], bool)  # (3, 1) NaN and (3, 1) masked: unknown
    a, b = label_reports(y, p, mask, ["A", "B"], [0.5, 0.5])
    assert (a.tp, a.fp, a.tn, a.fn) == (2, 1, 1, 0) and a.sensitivity == 1.0 and a.specificity == 0.5
    assert a.auroc == pytest.approx(0.75) and a.ppv == pytest.approx(2 / 3)
    assert (b.n_pos, b.n_neg) == (1, 1) and b.auroc == 1.0  # rows 3 and 4 unknown for B
    c, = label_reports(np.ones((3, 1)), np.full((3, 1), 0.7), np.ones((3, 1), bool), ["C"], [0.5])
    assert math.isnan(c.auroc) and c.tp == 3  # no negatives: AUROC undefined, counts still there
    with pytest.raises(ValueError, match="do not agree"):
        label_reports(y, p, mask, ["A"], [0.5])


def test_ece_is_the_weighted_calibration_gap(tmp_path):
    y = np.array([[0], [1], [1], [1]], float)
    p = np.array([[0.05], [0.95], [0.95], [0.95]])  # bins: {0.05: 0/1}, {0.95: 3/3}
    frac, mean_p, counts, ece = calibration(y, p, np.ones_like(y, bool), n_bins=10)
    assert counts.tolist() == [1, 3] and ece == pytest.approx((1 * 0.05 + 3 * 0.05) / 4)
    out = write_report(tmp_path, y, p, np.ones_like(y, bool), ["X"], [0.5], title="t")
    assert out["ece"] == pytest.approx(ece) and "| X | 3 | 1 |" in (tmp_path / "report.md").read_text()
