"""RetinaVLM closed-ended evaluation: two-step prompting, answer parsing, pooled F1 with bootstrap CIs, confusion PNGs.

Step 1 asks the model to describe the OCT image and list biomarkers; step 2 keeps that exchange, asks the task's
question and starts the answer with a preamble ("Based off the image and those findings, the patient's most likely AMD
stage is") that the model continues (Holland et al. 2025, Methods "Closed-ended evaluation"). The continuation is
parsed into the task's options (:func:`medvit.vlm.retina.answers.parse_answer`); unparseable answers are
``Invalid response`` and count against recall. Tasks: staging (the 6 options of ``staging.yaml``), referral (3 levels
of ``referral.yaml``), one binary task per biomarker with a ``task`` name in ``biomarkers.yaml``. Truth comes from
the guideline functions applied to the observations read from each image's report.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medvit.eval.closed_ended import INVALID, confusion_with_invalid, pooled_f1_ci
from medvit.vlm.retina.answers import BINARY_SYNONYMS, REFERRAL_SYNONYMS, STAGE_SYNONYMS, parse_answer
from medvit.vlm.retina.curriculum import ImageRow
from medvit.vlm.retina.guidelines import Guidelines, referral_from_stage, stage_from_biomarkers

logger = logging.getLogger(__name__)

DESCRIBE = ("Describe the OCT image in detail and list any biomarkers or abnormalities, including any that indicate "
            "the stage of age-related macular degeneration.")
PREAMBLE = "Based off the image and those findings, "


@dataclass(frozen=True)
class Task:
    """A closed-ended task: options, the positive classes F1 pools over, question, preamble, truth function."""

    name: str
    options: tuple[str, ...]
    positive: tuple[str, ...]
    question: str
    preamble: str
    synonyms: dict[str, tuple[str, ...]]
    truth: Callable[[dict[str, Any]], str]
    negation: bool = True


def tasks_for(g: Guidelines, which: Sequence[str] = ("staging", "referral", "biomarkers"),
              staging_positive: Sequence[str] | None = None,
              referral_positive: Sequence[str] | None = None) -> list[Task]:
    """The paper's closed-ended tasks from the guidelines. Positive classes (not published by the paper): staging —
    every option but ``healthy``; referral — every level but ``none``; biomarkers — ``yes``."""
    out: list[Task] = []
    so = g.stage_options
    if "staging" in which:
        out.append(Task("staging", so, tuple(staging_positive or [s for s in so if s != g.stages[0].name]),
                        f"What is the patient's AMD stage? The options are: {', '.join(so)}.",
                        PREAMBLE + "the patient's most likely AMD stage is",
                        {k: v for k, v in STAGE_SYNONYMS.items() if k in so},
                        lambda obs: stage_from_biomarkers(obs, g)))
    if "referral" in which:
        ro = g.referral_options
        out.append(Task("referral", ro, tuple(referral_positive or [r for r in ro if r != g.referral_levels[0]]),
                        "Following the referral guideline, what referral does the patient need? The options are: "
                        + ", ".join(f"{r} ({g.referral_text[r]})" for r in ro) + ".",
                        PREAMBLE + "the patient's referral should be",
                        {k: v for k, v in REFERRAL_SYNONYMS.items() if k in ro},
                        lambda obs: referral_from_stage(stage_from_biomarkers(obs, g), g)))
    if "biomarkers" in which:
        for name, b in g.biomarkers.items():
            if b.task:
                out.append(Task(b.task, ("yes", "no"), ("yes",), f"Is there {b.label} in the image? Answer yes or no.",
                                PREAMBLE + "the answer is", dict(BINARY_SYNONYMS),
                                (lambda n: lambda obs: "yes" if obs[n] else "no")(name), negation=False))
    return out


@torch.no_grad()
def generate_with_prefix(model: Any, messages: list[dict[str, Any]], images: torch.Tensor, prefix: str = "",
                         max_new_tokens: int = 32) -> str:
    """Greedy reply of a :class:`~medvit.vlm.VisionLanguageModel` whose answer is forced to start with ``prefix``
    (the evaluation preamble); returns only the continuation. images: (N, C, S, S) normalised."""
    from medvit.vlm.templates import encode_conversation

    enc = encode_conversation(model.tokenizer, model.template, messages, model.num_image_tokens,
                              add_generation_prompt=True)
    pre = model.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    ids = torch.tensor([enc["input_ids"] + pre])
    mask = torch.tensor([enc["image_mask"] + [False] * len(pre)])
    model.eval()
    emb = model.embed(ids, mask, images)
    eos = {model.tokenizer.convert_tokens_to_ids(model.template.eos), model.tokenizer.eos_token_id}
    out = model.lm.generate(inputs_embeds=emb, attention_mask=torch.ones_like(ids), do_sample=False,
                            max_new_tokens=int(max_new_tokens), temperature=None, top_p=None, top_k=None,
                            eos_token_id=sorted(e for e in eos if e is not None and e >= 0),
                            pad_token_id=model.tokenizer.pad_token_id)
    text = model.tokenizer.decode(out[0], skip_special_tokens=False)
    for stop in {model.template.eos, model.tokenizer.eos_token or model.template.eos}:
        text = text.split(stop)[0]
    return text.strip()


def run_closed_ended(model: Any, rows: Sequence[ImageRow], g: Guidelines, image_root: str | Path,
                     tasks: Sequence[Task] | None = None, describe_tokens: int = 64, answer_tokens: int = 16,
                     answer_fn: Callable[[ImageRow, Task, str], str] | None = None,
                     two_step: bool = True) -> list[dict[str, Any]]:
    """Two-step prompting over ``rows`` (each needs ``observations``); one prediction dict per (image, task):
    image_id, task, truth, description, answer (raw continuation), parsed. One description per image is shared by its
    tasks (greedy decoding gives the same description for the same prompt). ``answer_fn`` replaces the model (for
    tests and non-VLM baselines): (row, task, description) → raw answer. ``two_step=False`` skips the description and
    asks ``task.question`` directly with the image (a single-step diagnostic, not the paper's protocol)."""
    from medvit.vlm.data import VLMProcessor, safe_image_path

    tasks = list(tasks or tasks_for(g))
    proc = VLMProcessor.for_model(model) if model is not None else None
    preds = []
    for row in rows:
        if row.observations is None:
            raise ValueError(f"{row.image_id}: evaluation needs observations (a report)")
        if model is not None and proc is not None:
            img = proc.load_image(safe_image_path(Path(image_root), row.image, row.image_id))[None]
            turn1 = [{"role": "user", "content": "<image>\n" + DESCRIBE}]
            desc = generate_with_prefix(model, turn1, img, "", describe_tokens) if two_step else ""
        else:
            img, turn1, desc = None, [], ""
        for t in tasks:
            if answer_fn is not None:
                ans = answer_fn(row, t, desc)
            else:
                msgs = ([*turn1, {"role": "assistant", "content": desc}, {"role": "user", "content": t.question}]
                        if two_step else [{"role": "user", "content": "<image>\n" + t.question}])
                ans = generate_with_prefix(model, msgs, img, t.preamble, answer_tokens)
            preds.append({"image_id": row.image_id, "task": t.name, "truth": t.truth(row.observations),
                          "description": desc, "answer": ans,
                          "parsed": parse_answer(ans, t.options, t.synonyms, negation=t.negation)})
    return preds


def score(preds: Sequence[dict[str, Any]], tasks: Sequence[Task], n_resamples: int = 2000,
          seed: int = 0) -> dict[str, Any]:
    """Per task: pooled F1 with a 95 % bootstrap CI, counts, invalid answers, confusion matrix (rows truth, columns
    options + Invalid response); tasks without any positive truth report ``f1: null`` (F1 undefined)."""
    out = {}
    for t in tasks:
        p = [x for x in preds if x["task"] == t.name]
        if not p:
            continue
        truth, parsed = [x["truth"] for x in p], [x["parsed"] for x in p]
        n_pos = sum(x in t.positive for x in truth)
        cm = confusion_with_invalid(truth, parsed, t.options).tolist()
        entry: dict[str, Any] = {"n": len(p), "positives": n_pos, "invalid": sum(x == INVALID for x in parsed),
                                 "options": list(t.options), "positive_classes": list(t.positive), "confusion": cm}
        if n_pos and len(p) >= 2:
            r = pooled_f1_ci(truth, parsed, t.options, t.positive, n_resamples=n_resamples, seed=seed)
            entry.update(f1=r.f1, ci=list(r.ci), precision=r.precision, recall=r.recall)
        else:
            entry.update(f1=None, ci=None)
        out[t.name] = entry
    return out


def write_results(out_dir: str | Path, preds: Sequence[dict[str, Any]], scores: dict[str, Any],
                  plots: Sequence[str] = ("staging", "referral"), title: str = "") -> None:
    """``predictions.csv``, ``scores.json`` and ``confusion_<task>.png`` for the tasks in ``plots``."""
    from medvit.io.text import escape_text
    from medvit.visualize.confusion import plot_confusion

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["image_id", "task", "truth", "parsed", "answer", "description"],
                           lineterminator="\n")
        w.writeheader()
        for p in preds:  # model text escaped: a control character never reaches a terminal that cats the CSV
            w.writerow({k: escape_text(str(p[k])) if k in ("answer", "description") else p[k] for k in w.fieldnames})
    (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    for t in plots:
        if t in scores:
            s = scores[t]
            f1 = "n/a" if s["f1"] is None else f"{s['f1']:.2f} [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}]"
            plot_confusion(s["confusion"], s["options"], out / f"confusion_{t}.png",
                           f"{title} {t}: pooled F1 {f1}".strip())
