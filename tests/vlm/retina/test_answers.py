"""Parsing free-text answers into the option set: valid answers, synonyms, negations, invalid answers."""

import pytest

from medvit.eval.closed_ended import INVALID
from medvit.vlm.retina.answers import BINARY_SYNONYMS, REFERRAL_SYNONYMS, STAGE_SYNONYMS, parse_answer

STAGES = ["healthy", "early", "intermediate", "late dry", "late wet (inactive)", "late wet (active)"]
STAGE_SYN = {k: v for k, v in STAGE_SYNONYMS.items() if k in STAGES}


@pytest.mark.parametrize("text,want", [
    ("Intermediate", "intermediate"),
    ("  LATE DRY AMD.", "late dry"),
    ("late wet (active), given the subretinal fluid", "late wet (active)"),
    ("late wet (inactive)", "late wet (inactive)"),  # not read as the shorter "late wet"
    ("inactive wet AMD with fibrosis", "late wet (inactive)"),
    ("wet AMD", "late wet (active)"),
    ("geographic atrophy", "late dry"),
    ("normal retina", "healthy"),
    ("early, although intermediate cannot be excluded", "early"),  # first mention wins
    ("not intermediate but late dry", "late dry"),  # negated mention skipped
    ("intermediate, not late dry", "intermediate"),
    ("", INVALID), (None, INVALID), ("I am unable to assess this image", INVALID),
    ("earlyish", INVALID),  # whole phrases only
])
def test_stage_parsing(text, want):
    assert parse_answer(text, STAGES, STAGE_SYN) == want


@pytest.mark.parametrize("text,want", [
    ("urgent referral for anti-VEGF", "urgent"), ("The patient should be referred urgently.", "urgent"),
    ("general attention by a specialist", "general attention"), ("routine referral", "general attention"),
    ("no referral is needed", "none"), ("none", "none"), ("refer them whenever", INVALID),
])
def test_referral_parsing(text, want):
    assert parse_answer(text, ["none", "general attention", "urgent"], REFERRAL_SYNONYMS) == want


@pytest.mark.parametrize("text,want", [
    ("Yes.", "yes"), ("yes, drusen are present", "yes"), ("No", "no"), ("There is no subretinal fluid", "no"),
    ("absent", "no"), ("present", "yes"), ("possibly", INVALID),
])
def test_binary_parsing(text, want):
    assert parse_answer(text, ["yes", "no"], BINARY_SYNONYMS, negation=False) == want


def test_synonyms_for_unknown_option_raise():
    with pytest.raises(ValueError, match="unknown options"):
        parse_answer("x", ["a"], {"b": ["bee"]})
