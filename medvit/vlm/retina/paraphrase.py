"""Optional answer paraphrasing by a local Hugging Face causal LM, with a fact check (off by default).

RetinaVLM's curriculum text comes from GPT-4o; medvit's comes from templates. A local LM (any directory
``transformers.AutoModelForCausalLM`` loads, e.g. SmolLM2-135M-Instruct) may rewrite answers for lexical variety. A
rewrite is kept only if it keeps every fact of the original (:func:`keeps_facts`); otherwise the template answer
stays. Greedy decoding keeps it deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

_FACT = re.compile(r"\d+(?:\.\d+)?|\b(?:no|not|none|absent|without|yes|left|right|male|female)\b")


def facts(text: str) -> set[str]:
    """Numbers and polarity/laterality words of ``text`` (lower case) — what a paraphrase must not change."""
    return set(_FACT.findall(text.lower()))


def keeps_facts(original: str, rewrite: str, value: str = "") -> bool:
    """True when ``rewrite`` is non-empty, states the answer's ``value`` and has exactly the original's facts."""
    r = rewrite.strip()
    if not r or (value and value.lower() not in r.lower()):
        return False
    return facts(original) == facts(r)


def hf_paraphraser(model_dir: str | Path, max_new_tokens: int = 96) -> Callable[[list[str]], list[str]]:
    """A paraphrase function backed by the causal LM in ``model_dir`` (loaded once, CPU, greedy)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = Path(model_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: paraphraser model directory not found")
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d).eval()

    def run(answers: list[str]) -> list[str]:
        out = []
        for a in answers:
            prompt = f"Rewrite in different words, keeping every fact and number:\n{a}\nRewrite:"
            ids = tok(prompt, return_tensors="pt")
            with torch.no_grad():
                gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id or tok.eos_token_id)
            out.append(tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).split("\n")[0].strip())
        return out

    return run
