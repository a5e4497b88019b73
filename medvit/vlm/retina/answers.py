"""Free-text answers → one option of a closed-ended task, or ``INVALID`` (RetinaVLM's "Invalid response").

The answer is lower-cased; every option and synonym is searched as a whole phrase (longest first, so
"late wet (active)" is not read as "late wet"); the option whose mention comes first wins — the question's preamble
("the patient's most likely AMD stage is") makes the first mention the answer. A mention preceded by a negation cue
in its clause ("not intermediate") is skipped. No mention, or an empty answer, is ``INVALID``, which the pooled F1
counts against recall (:mod:`medvit.eval.closed_ended`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from medvit.eval.closed_ended import INVALID

#: default synonyms per option of the three task families (lower case); options match themselves too
STAGE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "healthy": ("normal", "no amd", "no signs of amd", "healthy retina"),
    "early": ("early amd", "early-stage amd", "early stage"),
    "intermediate": ("intermediate amd", "intermediate-stage amd"),
    "late dry": ("geographic atrophy", "late dry amd", "late-stage dry", "dry late", "atrophic amd"),
    "late wet (inactive)": ("inactive late wet", "inactive wet", "late wet inactive", "inactive neovascular"),
    "late wet (active)": ("active late wet", "active wet", "late wet active", "active neovascular", "wet amd",
                          "neovascular amd", "late wet"),
    "non-AMD pathology": ("non-amd", "other pathology"),
}
REFERRAL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "none": ("no referral", "not be referred", "no need", "routine monitoring", "not referred", "does not need"),
    "general attention": ("general attention", "routine referral", "refer to a specialist", "non-urgent",
                          "specialist review", "refer routinely", "general referral"),
    "urgent": ("urgent", "urgently", "anti-vegf", "within two weeks", "next two weeks", "immediate"),
}
BINARY_SYNONYMS: dict[str, tuple[str, ...]] = {
    "yes": ("yes", "present", "there is", "there are", "shows", "visible", "positive"),
    "no": ("no", "absent", "not present", "there is no", "there are no", "not visible", "negative", "none"),
}

_NEG = re.compile(r"\b(not|no|isn't|is not|rather than|instead of|without|nor)\s+(?:\w+\s+){0,2}$")


def parse_answer(text: str | None, options: Sequence[str],
                 synonyms: Mapping[str, Sequence[str]] | None = None, negation: bool = True) -> str:
    """The option ``text`` names first, or :data:`INVALID`.

    Args:
        text: the model's answer (after the preamble).
        options: the task's options (names match themselves, case-insensitive).
        synonyms: option → extra phrases; unknown option names raise ``ValueError``.
        negation: skip a mention preceded in its clause by a negation cue (off for yes/no tasks, where "no" is an
            answer).
    """
    syn = dict(synonyms or {})
    unknown = sorted(set(syn) - set(options))
    if unknown:
        raise ValueError(f"synonyms for unknown options {unknown}; options: {list(options)}")
    if not text or not text.strip():
        return INVALID
    s = " ".join(text.lower().split())
    phrases = sorted({(p.lower(), o) for o in options for p in (o, *syn.get(o, ()))}, key=lambda x: -len(x[0]))
    taken = [False] * len(s)
    hits: list[tuple[int, str]] = []
    for phrase, option in phrases:
        for m in re.finditer(r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])", s):
            if any(taken[m.start():m.end()]):
                continue  # inside a longer phrase already read
            for i in range(m.start(), m.end()):
                taken[i] = True
            clause = re.split(r"[.;,:!?]|\bbut\b|\bwhereas\b", s[:m.start()])[-1]
            if negation and _NEG.search(clause):
                continue
            hits.append((m.start(), option))
    return min(hits)[1] if hits else INVALID
