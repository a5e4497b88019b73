"""Text-generation metrics for report generation and captioning: BLEU-1..4, ROUGE-L, METEOR and CIDEr(-D).

The numbers come from ``pycocoevalcap`` (the MS-COCO caption evaluation code that R2Gen, BenchX and most
report-generation papers report with); medvit adds input checks, one text normalisation, and the rule for
METEOR when Java is missing. Nothing here re-implements a metric.

- BLEU-n (Papineni et al., ACL 2002): corpus-level, brevity penalty against the *closest* reference length
  (``pycocoevalcap.bleu``, option ``closest``), cumulative geometric mean of 1..n-gram precisions.
- ROUGE-L (Lin, 2004): LCS-based F-measure with beta = 1.2, averaged over reports (``pycocoevalcap.rouge``).
- METEOR 1.5 (Denkowski & Lavie, 2014): ``meteor-1.5.jar`` run through Java (``-l en -norm``). Without a
  ``java`` executable the score is skipped: it comes back as NaN and a warning says why (install
  ``default-jre-headless``; ``scripts/install_sysdeps.sh`` does).
- CIDEr-D (Vedantam et al., CVPR 2015; sigma 6, clipped counts, x10): ``pycocoevalcap.cider``. Its IDF is
  estimated from the references of the evaluated set, so it is a set-level score: a single report gets 0.

Tokenisation follows R2Gen (Chen et al., EMNLP 2020), not the PTB tokenizer (that one needs Java too):
:func:`normalize_report` lower-cases, keeps letters/digits, splits sentences on ``.`` and writes them joined by
`` . `` — so ``"No effusion. Heart normal."`` becomes ``"no effusion . heart normal ."``. Pass
``normalize=False`` to score strings exactly as given (split on single spaces, as pycocoevalcap does).

Every metric is registered under registry kind ``"metric"`` (``bleu_1`` … ``bleu_4``, ``rouge_l``, ``meteor``,
``cider``) with the signature ``fn(references, hypotheses) -> float``; :func:`report_generation_scores` computes
them all in one pass and returns the keys ``BLEU_1`` … ``BLEU_4``, ``ROUGE_L``, ``METEOR``, ``CIDEr``.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from collections.abc import Callable, Sequence

from medvit.registry import REGISTRY

logger = logging.getLogger(__name__)

#: keys returned by :func:`report_generation_scores`, in the order papers report them
SCORE_KEYS = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "METEOR", "CIDEr")
#: metric families accepted by ``metrics=``
METRIC_FAMILIES = ("bleu", "rouge_l", "meteor", "cider")

_NON_WORD = re.compile(r"[^a-z0-9' ]+")
_SPACES = re.compile(r"\s+")

References = Sequence[str | Sequence[str]]


def normalize_report(text: str) -> str:
    """One report as the metrics see it: lower case, sentences split on ``.`` and joined with `` . ``.

    Inside a sentence every character other than ``a-z``, ``0-9`` and the apostrophe becomes a space, runs of
    spaces collapse, empty sentences vanish; the result ends with `` .`` when it has any word. Source: the
    IU X-Ray cleaning of R2Gen (``clean_report_iu_xray``), restated; unlike R2Gen it also drops ``/`` and other
    symbols outside its punctuation list, so every token is a word or a number.

    Raises:
        TypeError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"a report must be a str, got {type(text).__name__}")
    sentences = []
    for raw in text.lower().replace("\n", " ").split("."):
        s = _SPACES.sub(" ", _NON_WORD.sub(" ", raw)).strip()
        if s:
            sentences.append(s)
    return " . ".join(sentences) + " ." if sentences else ""


def java_available() -> bool:
    """True when a ``java`` executable is on ``PATH`` (METEOR's jar needs it)."""
    return shutil.which("java") is not None


def _prepare(
    references: References, hypotheses: Sequence[str], normalize: bool
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Check the inputs and build pycocoevalcap's ``{id: [text]}`` dicts (references: 1+ per item)."""
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("references and hypotheses must be sequences of reports, not a single str")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses; they must pair up")
    if len(hypotheses) == 0:
        raise ValueError("no reports to score (empty hypotheses)")
    fix = normalize_report if normalize else (lambda t: _SPACES.sub(" ", t).strip())
    gts: dict[int, list[str]] = {}
    res: dict[int, list[str]] = {}
    for i, (ref, hyp) in enumerate(zip(references, hypotheses)):
        if not isinstance(hyp, str):
            raise TypeError(f"hypothesis {i} must be a str, got {type(hyp).__name__}")
        refs = [ref] if isinstance(ref, str) else list(ref)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise TypeError(f"reference {i} must be a str or a non-empty list of str")
        refs = [fix(r) for r in refs]
        if not any(refs):
            raise ValueError(f"reference {i} is empty after normalisation: {ref!r}")
        gts[i] = [r for r in refs if r]
        # an empty hypothesis scores 0 everywhere; pycocoevalcap needs a token, so it gets one that matches nothing
        res[i] = [fix(hyp) or "<empty>"]
    return gts, res


def _bleu(gts: dict, res: dict) -> list[float]:
    from pycocoevalcap.bleu.bleu import Bleu

    score, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return [float(s) for s in score]


def _rouge(gts: dict, res: dict) -> float:
    from pycocoevalcap.rouge.rouge import Rouge

    score, _ = Rouge().compute_score(gts, res)
    return float(score)


def _cider(gts: dict, res: dict) -> float:
    from pycocoevalcap.cider.cider import Cider

    score, _ = Cider().compute_score(gts, res)
    return float(score)


def _meteor(gts: dict, res: dict) -> float:
    """METEOR 1.5 through pycocoevalcap's Java wrapper; NaN (with a warning) when Java is missing."""
    if not java_available():
        logger.warning(
            "METEOR skipped: no 'java' on PATH (meteor-1.5.jar needs a JRE; install default-jre-headless, "
            "e.g. scripts/install_sysdeps.sh); reported as NaN"
        )
        return math.nan
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    finally:  # end the JVM now instead of at garbage collection
        proc = scorer.meteor_p
        if proc.stdin is not None:
            proc.stdin.close()
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return float(score)


def report_generation_scores(
    references: References,
    hypotheses: Sequence[str],
    metrics: Sequence[str] = METRIC_FAMILIES,
    normalize: bool = True,
) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L, METEOR and CIDEr-D of generated reports against their references (corpus level).

    Args:
        references: N ground-truth reports, each a ``str`` or a list of ``str`` (several references).
        hypotheses: N generated reports (``str``), paired with ``references`` by position.
        metrics: families to compute, from :data:`METRIC_FAMILIES`; the rest are left out of the result.
        normalize: apply :func:`normalize_report` to both sides first (R2Gen's cleaning).
    Returns:
        ``{"BLEU_1": …, "BLEU_2": …, "BLEU_3": …, "BLEU_4": …, "ROUGE_L": …, "METEOR": …, "CIDEr": …}`` in
        [0, 1] (CIDEr-D in [0, 10]); ``METEOR`` is NaN when Java is missing (logged).
    Raises:
        ValueError: lengths differ, nothing to score, an empty reference, or an unknown metric family.
        TypeError: a report that is not a ``str``.
    """
    unknown = [m for m in metrics if m not in METRIC_FAMILIES]
    if unknown:
        raise ValueError(f"unknown text metric {unknown[0]!r}; choose from {', '.join(METRIC_FAMILIES)}")
    gts, res = _prepare(references, hypotheses, normalize)
    out: dict[str, float] = {}
    if "bleu" in metrics:
        out.update({f"BLEU_{n + 1}": v for n, v in enumerate(_bleu(gts, res))})
    if "rouge_l" in metrics:
        out["ROUGE_L"] = _rouge(gts, res)
    if "meteor" in metrics:
        out["METEOR"] = _meteor(gts, res)
    if "cider" in metrics:
        out["CIDEr"] = _cider(gts, res)
    return out


def _bleu_n(n: int) -> Callable[..., float]:
    def bleu(references: References, hypotheses: Sequence[str], normalize: bool = True) -> float:
        gts, res = _prepare(references, hypotheses, normalize)
        return _bleu(gts, res)[n - 1]

    bleu.__name__ = f"bleu_{n}"
    bleu.__doc__ = f"Corpus BLEU-{n} (pycocoevalcap, closest reference length): N refs, N hypotheses -> float."
    return bleu


def rouge_l(references: References, hypotheses: Sequence[str], normalize: bool = True) -> float:
    """ROUGE-L F-measure (beta 1.2, pycocoevalcap) averaged over N reports -> float in [0, 1]."""
    gts, res = _prepare(references, hypotheses, normalize)
    return _rouge(gts, res)


def meteor(references: References, hypotheses: Sequence[str], normalize: bool = True) -> float:
    """METEOR 1.5 (pycocoevalcap jar) over N reports -> float; NaN with a logged warning without Java."""
    gts, res = _prepare(references, hypotheses, normalize)
    return _meteor(gts, res)


def cider(references: References, hypotheses: Sequence[str], normalize: bool = True) -> float:
    """CIDEr-D (pycocoevalcap; IDF from the N references) -> float in [0, 10]."""
    gts, res = _prepare(references, hypotheses, normalize)
    return _cider(gts, res)


bleu_1, bleu_2, bleu_3, bleu_4 = (_bleu_n(n) for n in (1, 2, 3, 4))


def _register() -> None:
    for fn, desc in (
        (bleu_1, "corpus BLEU-1 of generated text (pycocoevalcap)"),
        (bleu_2, "corpus BLEU-2 of generated text (pycocoevalcap)"),
        (bleu_3, "corpus BLEU-3 of generated text (pycocoevalcap)"),
        (bleu_4, "corpus BLEU-4 of generated text (pycocoevalcap)"),
        (rouge_l, "ROUGE-L F-measure, beta 1.2 (pycocoevalcap)"),
        (meteor, "METEOR 1.5 (pycocoevalcap jar; NaN without Java)"),
        (cider, "CIDEr-D (pycocoevalcap; IDF from the evaluated references)"),
    ):
        REGISTRY.add("metric", fn.__name__, fn, description=desc, higher_is_better=True, input="text")


_register()
