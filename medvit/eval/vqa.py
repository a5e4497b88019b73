"""VQA-style metrics of VILA-M3's evaluation (``m3/eval`` scripts): classification F1 from yes/no answers and
closed-question exact-match accuracy.

- :func:`parse_yes_no`: the first standalone ``yes`` or ``no`` in the lower-cased answer (word boundaries, so
  "nodule" is not "no"); anything else is unparseable (``None``).
- :func:`yes_no_f1`: mean over classes of the binary F1 (scikit-learn ``f1_score``, positive = yes,
  ``zero_division=0``), as ``metric_chexpert.py`` / ``metric_chestxray14.py``. An unparseable answer counts as
  wrong (the opposite of the truth), and the number of such answers is reported.
- :func:`exact_match`: lower-cased, whitespace-stripped (and trailing ``.`` removed) string equality
  (``metric_radvqa.py`` / ``metric_slakevqa.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from medvit.registry import REGISTRY

_YN = re.compile(r"\b(yes|no)\b")


def parse_yes_no(answer: str) -> bool | None:
    """True for yes, False for no, None when neither word appears."""
    m = _YN.search(str(answer).lower())
    return None if m is None else m.group(1) == "yes"


def yes_no_f1(truth: Sequence[bool | int], answers: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """Per-class and mean binary F1 of yes/no answers.

    truth: (N,) 0/1 ground truth per question; answers: (N,) free-text answers; classes: (N,) the class each
    question asks about. Returns {"mean_f1", "per_class": {class: f1}, "unparseable": count, "n": N}.
    Raises ``ValueError`` for length mismatches or empty input.
    """
    from sklearn.metrics import f1_score

    if not (len(truth) == len(answers) == len(classes)) or not len(truth):
        raise ValueError(f"truth, answers and classes must have one equal, non-zero length; got "
                         f"{len(truth)}, {len(answers)}, {len(classes)}")
    y = np.asarray(truth, dtype=int)
    parsed = [parse_yes_no(a) for a in answers]
    pred = np.array([int(p) if p is not None else 1 - t for p, t in zip(parsed, y)])
    per = {}
    cls = np.asarray(classes)
    for c in sorted(set(classes)):
        m = cls == c
        per[c] = float(f1_score(y[m], pred[m], zero_division=0))
    return {"mean_f1": float(np.mean(list(per.values()))), "per_class": per,
            "unparseable": int(sum(p is None for p in parsed)), "n": len(y)}


def _norm(s: str) -> str:
    return str(s).strip().lower().rstrip(".").strip()


def exact_match(references: Sequence[str], answers: Sequence[str]) -> float:
    """Fraction of answers equal to their reference after lower-casing and stripping (closed VQA accuracy)."""
    if len(references) != len(answers) or not len(references):
        raise ValueError(f"references and answers must have one equal, non-zero length; got {len(references)}, "
                         f"{len(answers)}")
    return float(np.mean([_norm(r) == _norm(a) for r, a in zip(references, answers)]))


def _register() -> None:
    REGISTRY.add("metric", "yes_no_f1", lambda truth, answers, classes: yes_no_f1(truth, answers, classes)["mean_f1"],
                 description="mean per-class binary F1 of yes/no answers (VILA-M3 classification)",
                 higher_is_better=True)
    REGISTRY.add("metric", "vqa_exact_match", exact_match, description="closed-question exact-match accuracy",
                 higher_is_better=True)


_register()
