"""Evaluation of a VLM on the phantom test split, as VILA-M3's table: classification F1 from yes/no answers
without and with the CXR expert in the loop, the expert alone and the majority-class baseline; closed-VQA
exact-match accuracy; report generation BLEU/ROUGE-L/METEOR/CIDEr (``medvit.eval.text_metrics``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvit.eval.text_metrics import METRIC_FAMILIES, report_generation_scores
from medvit.eval.vqa import exact_match, yes_no_f1
from medvit.vlm.chat import VLMChat
from medvit.vlm.data import VLMProcessor, read_conversations, safe_image_path
from medvit.vlm.experts import CXRExpert
from medvit.vlm.templates import IMAGE_TOKEN

logger = logging.getLogger(__name__)


def _question(rec: dict[str, Any]) -> str:
    return rec["conversations"][0]["value"].replace(IMAGE_TOKEN, "").strip()


def evaluate_phantoms(vlm: Any, data_dir: str | Path, expert_checkpoints: Sequence[str], settings: Any,
                      with_expert: bool = True) -> dict[str, Any]:
    """Evaluate on ``data_dir/test_*.jsonl`` (written by :func:`medvit.vlm.instruct.phantom_instruction_data`).

    settings: ``max_images``, ``report_images``, ``vqa_items``, ``max_new_tokens``. Returns a JSON-able dict:
    ``f1_without_expert``, ``f1_with_expert``, ``f1_expert_alone``, ``f1_majority``, per-class tables,
    ``unparseable_*``, ``expert_call_rate``, ``vqa_exact_match``, report scores, ``tokens_per_s``.
    """
    d = Path(data_dir)
    proc = VLMProcessor.for_model(vlm)
    test, _ = read_conversations(d / "test_vqa.jsonl")
    train, _ = read_conversations(d / "train_vqa.jsonl")
    keep = set(getattr(settings, "classes", None) or [])
    cls_recs = [r for r in test if "label" in r and (not keep or r["label"] in keep)]
    by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in cls_recs:
        by_image[r["images"][0]].append(r)
    images = sorted(by_image)[: settings.max_images]
    gen = {"max_new_tokens": settings.max_new_tokens, "temperature": 0.0}
    truth, classes, ans_wo, ans_w, ans_ex, calls = [], [], [], [], [], 0
    expert = CXRExpert(list(expert_checkpoints)) if (with_expert and expert_checkpoints) else None
    # the chat needs room for the trigger reply ("This looks like an chest x-ray. Let me first trigger <CXR()>.")
    # the test images are the chest phantoms' PNGs (no header): the modality line is stated, as in training
    chat = VLMChat(vlm, [expert] if expert else [], max_new_tokens=max(settings.max_new_tokens, 32), temperature=0.0,
                   modality_hint="CXR")
    n_tokens, t_gen = 0, 0.0
    for name in images:
        path = safe_image_path(d, name, "test_vqa.jsonl")
        pix = proc.load_image(path)[None]
        ex_calls = expert.run([str(path)]).values["predictions"] if expert else {}
        for r in by_image[name]:
            q, lab = _question(r), r["label"]
            truth.append(r["conversations"][1]["value"] == "yes")
            classes.append(lab)
            t0 = time.perf_counter()
            ids = vlm.generate_ids([{"role": "user", "content": f"{IMAGE_TOKEN}\n{q}"}], pix, **gen)
            t_gen += time.perf_counter() - t0
            n_tokens += len(ids)
            ans_wo.append(vlm.tokenizer.decode(ids, skip_special_tokens=True).strip())
            if expert:
                resp = chat.respond([str(path)], q)
                ans_w.append(resp.answer)
                calls += resp.expert_calls > 0
                ans_ex.append("yes" if ex_calls[lab] else "no")
    out: dict[str, Any] = {"n_images": len(images), "n_questions": len(truth)}
    if truth:
        wo = yes_no_f1(truth, ans_wo, classes)
        out.update(f1_without_expert=wo["mean_f1"], per_class_without=wo["per_class"],
                   unparseable_without=wo["unparseable"])
        freq = Counter((r["label"], r["conversations"][1]["value"]) for r in train if "label" in r)
        major = {c: "yes" if freq[(c, "yes")] > freq[(c, "no")] else "no" for c in set(classes)}
        out["f1_majority"] = yes_no_f1(truth, [major[c] for c in classes], classes)["mean_f1"]
        if expert:
            w = yes_no_f1(truth, ans_w, classes)
            out.update(f1_with_expert=w["mean_f1"], per_class_with=w["per_class"], unparseable_with=w["unparseable"],
                       expert_call_rate=calls / len(truth),
                       f1_expert_alone=yes_no_f1(truth, ans_ex, classes)["mean_f1"])
        out["answers_sample"] = [{"q": c, "truth": t, "without": a, "with": (ans_w[i] if ans_w else None)}
                                 for i, (c, t, a) in enumerate(zip(classes[:7], truth[:7], ans_wo[:7]))]
    closed = [r for r in test if r.get("answer_type") == "closed" and "label" not in r][: settings.vqa_items]
    if closed:
        refs, hyps = [], []
        for r in closed:
            pix = proc.load_image(safe_image_path(d, r["images"][0], "test_vqa.jsonl"))[None]
            hyps.append(vlm.generate([{"role": "user", "content": f"{IMAGE_TOKEN}\n{_question(r)}"}], pix, **gen))
            refs.append(r["conversations"][1]["value"])
        out["vqa_exact_match"] = exact_match(refs, hyps)
        out["vqa_n"] = len(refs)
    reps, _ = read_conversations(d / "test_report.jsonl") if (d / "test_report.jsonl").is_file() else ([], [])
    reps = reps[: settings.report_images]
    if reps:
        refs, hyps = [], []
        for r in reps:
            pix = proc.load_image(safe_image_path(d, r["images"][0], "test_report.jsonl"))[None]
            hyps.append(vlm.generate([{"role": "user", "content": f"{IMAGE_TOKEN}\n{_question(r)}"}], pix,
                                     max_new_tokens=settings.max_new_tokens * 6, temperature=0.0) or "empty")
            refs.append(r["conversations"][1]["value"])
        fams = [m for m in METRIC_FAMILIES if m != "meteor" or getattr(settings, "meteor", True)]
        scores = report_generation_scores(refs, hyps, metrics=fams)
        out.update({f"report_{k}": (None if v is None or (isinstance(v, float) and np.isnan(v)) else v)
                    for k, v in scores.items()})
        out["report_sample"] = hyps[0][:400]
    out["generation_tokens_per_s"] = n_tokens / t_gen if t_gen > 0 else None
    return out
