"""Text-generation metrics: parity with pycocoevalcap called directly, hand-computed BLEU/ROUGE-L values, METEOR's
Java rule, input errors and registration."""

from __future__ import annotations

import logging
import math

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from medvit.eval import text_metrics as tm
from medvit.registry import REGISTRY

REFS = [
    ["the heart is normal in size . no pleural effusion .", "heart size normal . no effusion ."],
    ["lungs are clear . no pneumothorax ."],
    ["mild cardiomegaly . small left pleural effusion ."],
    ["no acute cardiopulmonary abnormality ."],
]
HYPS = [
    "the heart is normal . no effusion .",
    "lungs are clear . no pneumothorax .",
    "mild cardiomegaly . no effusion .",
    "no acute abnormality seen .",
]


def _coco(refs, hyps):
    gts = {i: list(r) for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    return gts, res


def test_parity_with_pycocoevalcap_on_fixed_strings():
    gts, res = _coco(REFS, HYPS)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    ours = tm.report_generation_scores(REFS, HYPS, metrics=("bleu", "rouge_l", "cider"), normalize=False)
    assert [ours[f"BLEU_{n}"] for n in (1, 2, 3, 4)] == pytest.approx(bleu, abs=1e-12)
    assert ours["ROUGE_L"] == pytest.approx(rouge, abs=1e-12)
    assert ours["CIDEr"] == pytest.approx(cider, abs=1e-12)
    assert "METEOR" not in ours
    # the registered one-metric functions give the same numbers
    for n in (1, 2, 3, 4):
        assert REGISTRY.get("metric", f"bleu_{n}")(REFS, HYPS, normalize=False) == pytest.approx(bleu[n - 1])
    assert REGISTRY.get("metric", "rouge_l")(REFS, HYPS, normalize=False) == pytest.approx(rouge)
    assert REGISTRY.get("metric", "cider")(REFS, HYPS, normalize=False) == pytest.approx(cider)
    # and normalisation of raw text gives exactly the pre-tokenised strings above
    raw_refs = [[r.replace(" .", ".").capitalize() for r in rs] for rs in REFS]
    raw_hyps = [h.replace(" .", ".").upper() for h in HYPS]
    assert tm.report_generation_scores(raw_refs, raw_hyps, metrics=("bleu",)) == pytest.approx(
        {f"BLEU_{n}": b for n, b in zip((1, 2, 3, 4), bleu)}
    )


def test_bleu_hand_computed():
    # hyp "the cat sat on the mat" vs ref "the cat is on the mat": clipped 1-gram 5/6, 2-gram 3/5, 3-gram 1/4, BP 1
    s = tm.report_generation_scores(["the cat is on the mat"], ["the cat sat on the mat"], ("bleu",), normalize=False)
    assert s["BLEU_1"] == pytest.approx(5 / 6, abs=1e-6)
    assert s["BLEU_2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5), abs=1e-6)
    assert s["BLEU_3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3), abs=1e-6)
    assert s["BLEU_4"] < 1e-2  # no 4-gram matches: only pycocoevalcap's 1e-9 smoothing is left
    # brevity penalty: 2 matching words against a 6-word reference -> exp(1 - 6/2)
    s = tm.report_generation_scores(["the cat is on the mat"], ["the cat"], ("bleu",), normalize=False)
    assert s["BLEU_1"] == pytest.approx(math.exp(-2), abs=1e-6)


def test_rouge_l_hand_computed():
    # LCS("a b c d", "a c d e f") = 3 -> P 3/4, R 3/5, F_beta (beta 1.2) = (1 + b²) P R / (R + b² P)
    p, r, b2 = 3 / 4, 3 / 5, 1.2**2
    assert tm.rouge_l(["a c d e f"], ["a b c d"], normalize=False) == pytest.approx((1 + b2) * p * r / (r + b2 * p))


def test_cider_perfect_and_single_report():
    refs = [r[0] for r in REFS]
    assert tm.cider(refs, refs) == pytest.approx(10.0, abs=1e-6)  # identical reports: cosine 1 at every n
    assert tm.cider(refs[:1], refs[:1]) == 0.0  # IDF from one reference is zero everywhere (set-level score)


def test_normalize_report():
    assert tm.normalize_report("No effusion.  Heart  NORMAL (mild)...\n") == "no effusion . heart normal mild ."
    assert tm.normalize_report(" .. ") == ""
    with pytest.raises(TypeError, match="must be a str"):
        tm.normalize_report(3)  # type: ignore[arg-type]


def test_empty_hypothesis_scores_zero_not_error():
    s = tm.report_generation_scores(["no effusion ."], [""], ("bleu", "rouge_l"))
    assert s["ROUGE_L"] == 0.0 and s["BLEU_1"] < 1e-6


def test_input_errors_name_the_item():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        tm.bleu_4(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="not a single str"):
        tm.bleu_4("a b", "a b")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reference 1 is empty"):
        tm.rouge_l(["a b", "..."], ["a", "b"])
    with pytest.raises(TypeError, match="hypothesis 0"):
        tm.rouge_l(["a"], [None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="no reports"):
        tm.cider([], [])
    with pytest.raises(ValueError, match="unknown text metric 'spice'"):
        tm.report_generation_scores(["a"], ["a"], metrics=("spice",))


def test_meteor_skipped_with_a_logged_note_without_java(monkeypatch, caplog):
    monkeypatch.setattr(tm.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="medvit.eval.text_metrics"):
        s = tm.report_generation_scores(REFS, HYPS, normalize=False)
    assert math.isnan(s["METEOR"]) and s["BLEU_4"] > 0
    assert "METEOR skipped" in caplog.text and "default-jre-headless" in caplog.text


@pytest.mark.skipif(not tm.java_available(), reason="METEOR needs java (scripts/install_sysdeps.sh installs it)")
def test_meteor_parity_with_pycocoevalcap():
    from pycocoevalcap.meteor.meteor import Meteor

    gts, res = _coco(REFS, HYPS)
    ref_scorer = Meteor()
    try:
        expected, _ = ref_scorer.compute_score(gts, res)
    finally:
        ref_scorer.meteor_p.stdin.close()
        ref_scorer.meteor_p.kill()
        ref_scorer.meteor_p.wait()
    got = REGISTRY.get("metric", "meteor")(REFS, HYPS, normalize=False)
    assert got == pytest.approx(expected, abs=1e-9)
    assert 0.0 < got < 1.0


def test_registered_with_metadata():
    for name in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor", "cider"):
        entry = REGISTRY.entry("metric", name)
        assert entry.meta["higher_is_better"] and entry.meta["input"] == "text"
