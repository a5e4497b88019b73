"""Instruction data for the VLM from medvit's chest phantoms, and the data-mixture file.

:func:`phantom_instruction_data` writes the phantoms as PNG plus conversation JSONL files (schema in
:mod:`medvit.vlm.data`), one set per split (train / val / test), from the phantoms' exact truth:

- ``caption``: ``<image>\\nDescribe the image briefly.`` → the report's impression (stage 0/1 alignment data);
- ``report``: ``Describe the image in detail.`` → the full report (findings + impression; the reference's report
  prompt);
- ``vqa``: closed questions: ``Is there {finding} in this image?`` → ``yes``/``no`` (one per label), ``Which of the
  following findings are present: …?`` → the present findings (or ``none``), ``Where is the {finding}?`` → side and
  zone of a present finding;
- ``expert``: questions with the model cards prepended (VILA-M3 expert conversations,
  ``expert_utils.add_expert_conversation``): with probability ``expert_fraction`` (reference: 50 %) a yes/no finding
  question, where the assistant first calls ``<CXR()>`` ("This looks like an chest x-ray. Let me first trigger
  <CXR()>."), the CXR expert's result (run on the image: a real, imperfect expert) comes back as the user turn the
  agent loop writes (result text + ``"Use this result to respond to this prompt:\\n" + question``), then the answer
  (the phantom's truth, as the reference's dataset answer; or, ``expert_answer="cite"``, the expert's line for the
  asked finding and the answer it gives: :func:`cited_answer`);
  otherwise a which / where / describe question answered directly (so whether to call is learnable from the
  question, like the reference's segmentation-type vs. what-type split).

The mixture file (:func:`write_mixture` / :func:`read_mixture`) lists JSONL files with up-sampling factors and
the stages that use them (the reference's 8B mixture is in ``pipelines/vila_m3/mixture_m3_8b.yaml``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvit.vlm.experts import FEEDBACK_PREFIX, Expert, cxr_line, modality_sentence, model_cards
from medvit.vlm.templates import IMAGE_TOKEN

logger = logging.getLogger(__name__)

REPORT_PROMPT = "Describe the image in detail."
CAPTION_PROMPT = "Describe the image briefly."
TRIGGER_REPLY = "This looks like an chest x-ray. Let me first trigger <CXR()>."
#: plain-English finding names used in questions (phantom label → words)
FINDING_WORDS = {"Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Consolidation": "consolidation",
                 "Effusion": "a pleural effusion", "Mass": "a mass", "Nodule": "a nodule",
                 "Pneumothorax": "a pneumothorax"}


def classification_question(label: str) -> str:
    """``Is there {finding} in this image?`` (the yes/no prompt the F1 evaluation uses)."""
    return f"Is there {FINDING_WORDS.get(label, label.lower())} in this image?"


#: the sentence a cited answer ends with when the expert flagged the image as out of its training distribution
OOD_ANSWER = "The expert flags this image as outside its training data, so this answer may be wrong."


def cited_answer(expert: str, label: str, present: bool, ood_flag: bool = False) -> str:
    """The ``cite`` answer after an expert turn: ``"The {expert} expert reports:\n{class}: yes|no\nAnswer: yes|no"``
    — the asked finding's line copied from the result (:func:`medvit.vlm.experts.cxr_line`), then the answer it
    gives; ``+ "\n" +`` :data:`OOD_ANSWER` when the result carries the expert's out-of-distribution caution. A
    direct function of the expert turn's text (a copy, which a small LM learns in a short training)."""
    yn = "yes" if present else "no"
    return f"The {expert} expert reports:\n{cxr_line(label, present)}\nAnswer: {yn}" + (
        f"\n{OOD_ANSWER}" if ood_flag else "")


def _where(f: dict[str, Any]) -> str | None:
    side, zone = f.get("side"), f.get("zone")
    if side and zone:
        return f"{side} {zone} zone"
    return str(side) if side else None


def phantom_conversations(ph: Any, image_name: str, rng: np.random.Generator, experts: Sequence[Expert] = (),
                          expert_fraction: float = 0.5, image: Any = None, ptp_grid: int = 0,
                          expert_balance: bool = False, expert_answer: str = "truth"
                          ) -> dict[str, list[dict[str, Any]]]:
    """The conversations of one phantom, by kind (caption, report, vqa, expert). ``experts``: the CXR expert is
    run on ``image`` (default ``ph.image``) for the expert conversations (none written without experts).
    ``ptp_grid`` > 0: the caption answer gets PTP's position prompt (:func:`medvit.data.ptp.position_prompt`) for
    one finding box from the phantom's masks (needs ``ph.masks``), drawn with a generator seeded by the image id.
    ``expert_balance``: the expert conversations ask about every finding present (truth or expert) and as many
    absent ones (about half "yes" answers, so a short training learns to read the expert's result; the other
    findings get a direct conversation with probability ``1 - expert_fraction``); default: each finding is asked
    through the expert with probability ``expert_fraction`` (reference). ``expert_answer``: the answer after the
    expert turn — ``"truth"`` (the phantom's truth as ``yes``/``no``; reference: the dataset's answer) or
    ``"cite"`` (:func:`cited_answer` with the expert's own call: the answer follows the result by construction;
    with ``expert_balance`` the expert's positive calls are the "present" findings asked and the absent ones are
    drawn from the findings the expert predicts); findings the expert does not predict are not asked through it in
    ``cite`` mode. Raises ``ValueError`` for another value."""
    if expert_answer not in ("truth", "cite"):
        raise ValueError(f"expert_answer must be 'truth' or 'cite', got {expert_answer!r}")
    pid = ph.meta.get("ImageID", image_name)
    labels = list(ph.label_names)
    present = [lab for lab, v in zip(labels, ph.labels) if v]
    impression = ph.report.split("IMPRESSION:")[-1].strip() if "IMPRESSION:" in ph.report else ph.report
    out: dict[str, list[dict[str, Any]]] = {"caption": [], "report": [], "vqa": [], "expert": []}

    def rec(kind: str, suffix: str, turns: list[tuple[str, str]], extra: dict[str, Any] | None = None) -> None:
        out[kind].append({"id": f"{pid}-{suffix}", "images": [image_name],
                          "conversations": [{"from": f, "value": v} for f, v in turns], **(extra or {})})

    caption = impression
    if ptp_grid:
        import zlib

        import torch

        from medvit.data.ptp import boxes_from_masks, position_prompt

        boxes, names = boxes_from_masks(getattr(ph, "masks", None) or {}, labels)
        gen = torch.Generator().manual_seed(zlib.crc32(str(pid).encode()))
        caption = position_prompt(impression, boxes, names, ph.image.shape[-2:], ptp_grid, gen)
    rec("caption", "cap", [("human", f"{IMAGE_TOKEN}\n{CAPTION_PROMPT}"), ("gpt", caption)])
    rec("report", "rep", [("human", f"{IMAGE_TOKEN}\n{REPORT_PROMPT}"), ("gpt", ph.report)])
    for lab, v in zip(labels, ph.labels):
        rec("vqa", f"cls-{lab}", [("human", f"{IMAGE_TOKEN}\n{classification_question(lab)}"),
                                  ("gpt", "yes" if v else "no")], {"label": lab, "answer_type": "closed"})
    rec("vqa", "which", [("human", f"{IMAGE_TOKEN}\nWhich of the following findings are present: "
                          + ", ".join(lab.lower() for lab in labels) + "? Answer with the findings, or none."),
                         ("gpt", ", ".join(lab.lower() for lab in present) or "none")], {"answer_type": "closed"})
    for f in ph.findings:
        w = _where(f)
        if w:
            rec("vqa", f"where-{f['label']}", [("human", f"{IMAGE_TOKEN}\nWhere is the {f['label'].lower()}?"),
                                               ("gpt", w)], {"answer_type": "open"})
    cxr = next((e for e in experts if e.name == "CXR"), None)
    if cxr is not None:
        cards = model_cards(experts)
        hint = modality_sentence(ph.meta)  # the phantoms' header: DX of the chest -> "This is a CXR image.\n"
        er = cxr.run([ph.image if image is None else image])
        result = er.text
        said = (er.values or {}).get("predictions", {})
        cite = expert_answer == "cite"
        pick: set[int] = set()
        if expert_balance:
            pos = [i for i, (lab, v) in enumerate(zip(labels, ph.labels)) if (said.get(lab) if cite else
                                                                                  (v or said.get(lab)))]
            # cite: an absent pick must be a finding the expert answers (else it is dropped below, unasked)
            neg = [i for i in range(len(labels)) if i not in pos and (not cite or labels[i] in said)]
            k = min(max(1, len(pos)), len(neg))
            pick = set(pos) | {int(i) for i in (rng.choice(neg, size=k, replace=False) if k else [])}
        # with the model cards in the prompt, a yes/no finding question is always answered through <CXR()>; the
        # other questions (which / where / describe) are answered directly: the policy is learnable from the
        # question, and about expert_fraction of these records carry an expert turn (reference: 50 %)
        direct = [c for c in out["vqa"] if "label" not in c] + out["report"]
        for i, (lab, v) in enumerate(zip(labels, ph.labels)):
            if expert_balance:
                call = i in pick
                if not call and rng.random() < expert_fraction:
                    continue
            else:
                call = rng.random() < expert_fraction
            if call and cite and lab not in said:
                call = False
            if call:
                q = classification_question(lab)
                ans = (cited_answer(cxr.name, lab, bool(said[lab]), bool(er.values.get("ood_flag"))) if cite
                       else "yes" if v else "no")
                rec("expert", f"exp-{lab}", [("human", f"{cards}{IMAGE_TOKEN}{hint}{q}"),
                                             ("gpt", TRIGGER_REPLY), ("human", f"{result} {FEEDBACK_PREFIX}{q}"),
                                             ("gpt", ans)], {"label": lab, "with_expert": True})
            else:
                d = direct[int(rng.integers(len(direct)))]
                q = d["conversations"][0]["value"].replace(IMAGE_TOKEN, "").strip()
                rec("expert", f"noexp-{lab}", [("human", f"{cards}{IMAGE_TOKEN}{hint}{q}"),
                                               ("gpt", d["conversations"][1]["value"])], {"with_expert": False})
    return out


def phantom_instruction_data(out_dir: str | Path, n: int = 400, seed: int = 101, image_size: int = 64,
                             experts: Sequence[Expert] = (), expert_fraction: float = 0.5,
                             splits: Sequence[str] = ("train", "val", "test"), expert_factor: int = 2,
                             ptp_grid: int = 0, knobs: dict[str, float] | None = None,
                             expert_balance: bool = False, expert_answer: str = "truth") -> dict[str, Any]:
    """Write phantoms + conversation JSONL per split and kind to ``out_dir`` (``{split}_{kind}.jsonl``, images in
    ``images/``) and ``mixture.yaml``. ``n``: phantoms in all splits together (patient-disjoint 70/15/15 split of
    medvit's phantom dataset). ``expert_factor``: the up-sampling factor of the expert conversations in the mixture
    (stage 3; reference mixture: 2 for its expert sets). ``ptp_grid`` > 0: PTP position prompts on the *training*
    captions (the image–text alignment stage; evaluation captions stay plain). ``expert_balance``, ``expert_answer``:
    see :func:`phantom_conversations`. Returns
    {"files": {split: {kind: path}}, "counts": …, "mixture": path}."""
    from PIL import Image

    from medvit.data.phantom_datasets import PhantomDataset

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    counts: dict[str, dict[str, int]] = {}
    for split in splits:
        ds = PhantomDataset("cxr", split=split, n=n, seed=seed, image_size=image_size, with_masks=True,
                            **(knobs or {}))
        rng = np.random.default_rng([seed, len(split), 7])
        recs: dict[str, list[dict[str, Any]]] = {}
        for i in range(len(ds)):
            ph = ds.phantom(i)
            name = f"images/{ph.meta['ImageID']}.png"
            img8 = np.clip(np.round(ph.image * 255), 0, 255).astype(np.uint8)
            Image.fromarray(img8).save(out / name)
            # the expert sees what is stored (8-bit PNG), as at inference
            conv = phantom_conversations(ph, name, rng, experts, expert_fraction, image=img8.astype(np.float32) / 255,
                                         ptp_grid=ptp_grid if split == "train" else 0, expert_balance=expert_balance,
                                         expert_answer=expert_answer)
            for k, v in conv.items():
                recs.setdefault(k, []).extend(v)
        files[split], counts[split] = {}, {}
        for k, v in recs.items():
            if not v:
                continue
            p = out / f"{split}_{k}.jsonl"
            p.write_text("".join(json.dumps(r) + "\n" for r in v))
            files[split][k], counts[split][k] = p.name, len(v)
    entries = [MixtureEntry("phantom_caption", files["train"]["caption"], 1, [0, 1])] if "train" in files else []
    if "train" in files:
        entries += [MixtureEntry("phantom_report", files["train"]["report"], 1, [1, 2, 3]),
                    MixtureEntry("phantom_vqa", files["train"]["vqa"], 1, [2, 3])]
        if "expert" in files["train"]:
            entries.append(MixtureEntry("expert_phantom_cxr", files["train"]["expert"], int(expert_factor), [3]))
    mix = write_mixture(out / "mixture.yaml", entries)
    return {"files": files, "counts": counts, "mixture": str(mix)}


@dataclass
class MixtureEntry:
    """One dataset of a mixture: ``name``, ``path`` (JSONL, relative to the mixture file), up-sampling
    ``factor`` (integer ≥ 1: each record is used that many times per epoch), ``stages`` using it."""

    name: str
    path: str
    factor: int = 1
    stages: list[int] = field(default_factory=lambda: [0, 1, 2, 3])


def write_mixture(path: str | Path, entries: Sequence[MixtureEntry]) -> Path:
    """Write a mixture YAML (``mixture: [{name, path, factor, stages}]``)."""
    from medvit.config import yaml_dumps

    p = Path(path)
    p.write_text(yaml_dumps({"mixture": [vars(e) for e in entries]}))
    return p


def read_mixture(path: str | Path, stage: int | None = None) -> list[tuple[MixtureEntry, Path]]:
    """Entries of a mixture YAML (those of ``stage`` if given) with their resolved JSONL paths. Paths must be
    relative, inside the mixture's folder. Raises ``ValueError`` naming the file and key."""
    from medvit.config import yaml_loads
    from medvit.vlm.data import ConversationError, safe_image_path

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"mixture file not found: {p}")
    raw = yaml_loads(p.read_text()) or {}
    items = raw.get("mixture") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"{p}: key 'mixture' must be a list of {{name, path, factor, stages}}")
    out = []
    for i, it in enumerate(items):
        try:
            e = MixtureEntry(**it)
        except TypeError as ex:
            raise ValueError(f"{p}: mixture[{i}]: {ex}") from ex
        if not isinstance(e.factor, int) or e.factor < 1:
            raise ValueError(f"{p}: mixture[{i}].factor must be an integer >= 1, got {e.factor!r}")
        try:
            f = safe_image_path(p.parent, e.path, f"{p}: mixture[{i}].path")
        except ConversationError as ex:
            raise ValueError(str(ex)) from ex
        if stage is None or stage in e.stages:
            out.append((e, f))
    return out
