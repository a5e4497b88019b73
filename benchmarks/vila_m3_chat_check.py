"""Newcomer check of a trained VILA-M3 model (``medvit run pipelines/vila_m3/tiny_cpu.yaml``): the agent loop of
``medvit chat`` on unseen chest-phantom DICOMs (written by ``medvit data synth``, another seed than the training
phantoms) with several finding questions, some phrased as in training, some not. Per question: did the model call
``<CXR()>``, is its final yes/no answer the expert's result for the asked finding, and is it the phantom's truth.
Then ``--ood-n`` chest DICOMs drawn with ``medvit data synth``'s default settings (not the expert's training
distribution): does the expert flag them out of distribution, and does the model's answer say so.

    PYTHONPATH=. .venv/bin/python benchmarks/vila_m3_chat_check.py -m runs/vila_m3_tiny_cpu/model --n 6

Writes benchmarks/results/vila_m3_chat_check.{json,md} (with one full transcript).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
#: question -> phantom label (two phrased as in training, two not)
QUESTIONS = {"Is there cardiomegaly?": "Cardiomegaly",
             "Is there a pleural effusion in this image?": "Effusion",
             "Is there a pneumothorax?": "Pneumothorax",
             "Is there a nodule in this image?": "Nodule"}


def _expert_says(text: str, label: str) -> bool | None:
    m = re.search(rf"^{label.lower()}: (yes|no)$", text, re.M)
    return None if m is None else m.group(1) == "yes"


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True, help="VLM checkpoint directory")
    ap.add_argument("--n", type=int, default=6, help="phantom DICOMs")
    ap.add_argument("--seed", type=int, default=777, help="phantom seed (training phantoms use 101)")
    ap.add_argument("--like-pipeline", default=str(ROOT / "pipelines" / "demo" / "cxr_phantom_demo.yaml"),
                    help="draw the phantoms with this pipeline's dataset_args (size, calibration knobs: the CXR "
                    "expert's training distribution, as the tiny_cpu preset); '' = medvit data synth defaults")
    ap.add_argument("--ood-n", type=int, default=2, help="extra DICOMs drawn with synth defaults (OOD for the expert)")
    ap.add_argument("--name", default="vila_m3_chat_check")
    a = ap.parse_args()

    import torch

    from medvit.data.synth import write_synth
    from medvit.eval.vqa import parse_yes_no
    from medvit.vlm.chat import load_chat
    from medvit.vlm.train import PhantomData, phantom_draw_settings

    t0 = time.perf_counter()
    chat = load_chat(a.model, max_new_tokens=48)
    rows, transcript = [], None
    with tempfile.TemporaryDirectory() as tmp:
        size, knobs = phantom_draw_settings(PhantomData(like_pipeline=a.like_pipeline)) if a.like_pipeline else (
            None, {})
        write_synth("cxr", a.n, tmp, fmt="dicom", seed=a.seed, image_size=size, masks=False, **knobs)
        with open(Path(tmp) / "labels.csv", newline="") as f:
            labels = list(csv.DictReader(f))
        for lab_row in labels:
            dcm = Path(tmp) / lab_row["file"]
            for q, label in QUESTIONS.items():
                resp = chat.respond([str(dcm)], q)
                ex = next((t for t in resp.turns if t.role == "expert"), None)
                said = _expert_says(ex.text, label) if ex else None
                ans = parse_yes_no(resp.answer)
                rows.append({"image": lab_row["image_id"], "question": q, "label": label,
                             "truth": bool(int(lab_row[label])), "called": ex is not None and ex.expert == "CXR",
                             "expert": said, "answer": resp.answer, "answer_yes": ans,
                             "expert_text": ex.text if ex else None,
                             "replies": [t.text for t in resp.turns if t.role == "assistant"]})
                if transcript is None and ex is not None:
                    transcript = [{"role": t.role, "text": t.text} for t in resp.turns]
    ood_rows, ood_transcript = [], None
    with tempfile.TemporaryDirectory() as tmp:
        if a.ood_n:
            write_synth("cxr", a.ood_n, tmp, fmt="dicom", seed=a.seed + 1, masks=False)
            with open(Path(tmp) / "labels.csv", newline="") as f:
                labels = list(csv.DictReader(f))
        for lab_row in labels if a.ood_n else []:
            q = next(iter(QUESTIONS))
            resp = chat.respond([str(Path(tmp) / lab_row["file"])], q)
            ex = next((t for t in resp.turns if t.role == "expert"), None)
            direct = chat.experts[0].run([str(Path(tmp) / lab_row["file"])]).values if chat.experts else {}
            ood_rows.append({"image": lab_row["image_id"], "question": q, "called": ex is not None,
                             "expert_ood_flag": direct.get("ood_flag"), "expert_ood": direct.get("ood"),
                             "expert_flagged": bool(ex and "Caution: this image is outside" in ex.text),
                             "answer_says_ood": "outside" in resp.answer.lower(), "answer": resp.answer})
            if ood_transcript is None and ood_rows[-1]["expert_flagged"]:
                ood_transcript = [{"role": t.role, "text": t.text} for t in resp.turns]
    n = len(rows)
    called = [r for r in rows if r["called"]]
    agree = [r for r in called if r["expert"] is not None and r["answer_yes"] == r["expert"]]
    res = {"model": a.model, "n_images": a.n, "phantom_seed": a.seed, "like_pipeline": a.like_pipeline,
           "n_questions": n,
           "call_rate": len(called) / n, "answer_matches_expert": len(agree) / max(len(called), 1),
           "answer_matches_truth": sum(r["answer_yes"] == r["truth"] for r in rows) / n,
           "expert_matches_truth": (round(sum(r["expert"] == r["truth"] for r in called) / len(called), 2)
                                    if called else None),
           "unparseable": sum(r["answer_yes"] is None for r in rows),
           "per_question_call_rate": {q: sum(r["called"] for r in rows if r["question"] == q) / a.n
                                      for q in QUESTIONS},
           "expert_flagged_in_distribution": sum("Caution: this image is outside" in (r.get("expert_text") or "")
                                                 for r in rows),
           "ood_rows": ood_rows, "ood_transcript": ood_transcript,
           "wall_s": time.perf_counter() - t0, "threads": torch.get_num_threads(), "rows": rows,
           "transcript": transcript}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.name}.json").write_text(json.dumps(res, indent=2))
    md = [f"# VILA-M3 chat check: {a.model}", "",
          f"Command: `PYTHONPATH=. .venv/bin/python benchmarks/vila_m3_chat_check.py -m {a.model} --n {a.n} "
          f"--seed {a.seed}`  ",
          f"{a.n} unseen chest-phantom DICOMs (medvit data synth, seed {a.seed}, drawn like "
          f"`{a.like_pipeline or 'defaults'}`) x {len(QUESTIONS)} finding questions "
          f"= {n} questions; wall {res['wall_s']:.0f} s with {res['threads']} torch threads.", "",
          "| measure | value |", "|---|---|",
          f"| model called `<CXR()>` | {res['call_rate']:.2f} ({len(called)}/{n}) |",
          f"| final yes/no = the expert's result for the asked finding (of the calls) | "
          f"{res['answer_matches_expert']:.2f} ({len(agree)}/{len(called)}) |",
          f"| final yes/no = phantom truth | {res['answer_matches_truth']:.2f} |",
          f"| expert result = phantom truth (of the calls) | {res['expert_matches_truth']} |",
          f"| unparseable final answers | {res['unparseable']} |", "",
          "Call rate per question: " + ", ".join(f"`{q}` {v:.2f}" for q, v in res["per_question_call_rate"].items()),
          "", "## One transcript", ""]
    for t in transcript or []:
        md.append(f"- **{t['role']}**: " + t["text"].replace("\n", " / "))
    if ood_rows:
        fl = [r for r in ood_rows if r["expert_flagged"]]
        scores = ", ".join(f"{r['expert_ood'][0]['score']:.2f}" for r in ood_rows if r["expert_ood"]
                           and r["expert_ood"][0])
        md += ["", f"## Outside the expert's training distribution ({len(ood_rows)} DICOMs, synth defaults, "
               f"seed {a.seed + 1})", "",
               f"In-distribution questions above with the expert's OOD caution: "
               f"{res['expert_flagged_in_distribution']}/{n}.  ",
               f"The CXR expert run directly flags {sum(bool(r['expert_ood_flag']) for r in ood_rows)}/"
               f"{len(ood_rows)} of these images (OOD scores {scores}). "
               f"Model called the expert {sum(r['called'] for r in ood_rows)}/{len(ood_rows)}; its result flagged "
               f"the image "
               f"{len(fl)}/{len(ood_rows)}; the model's answer says it is outside the expert's data "
               f"{sum(r['answer_says_ood'] for r in fl)}/{len(fl)} (of the flagged).", ""]
        for t in ood_transcript or []:
            md.append(f"- **{t['role']}**: " + t["text"].replace("\n", " / "))
    (OUT / f"{a.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md[:14]))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
