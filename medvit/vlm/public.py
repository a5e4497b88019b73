"""Readers for public medical VQA / report data in their native layouts, producing conversation records
(:mod:`medvit.vlm.data` schema) — the reference's ``m3/data_prepare`` inputs.

- VQA-RAD (Lau et al. 2018, OSF release): one JSON list (``VQA_RAD Dataset Public.json``) of items with
  ``image_name``, ``question``, ``answer``, ``answer_type`` (CLOSED/OPEN), ``phrase_type`` (``freeform``, ``para``,
  ``test_freeform``, ``test_para``); images in ``VQA_RAD Image Folder/``. Split by ``phrase_type``: test =
  ``test_*`` (the reference evaluates CLOSED test questions only), train = the rest.
- SLAKE (Liu et al. 2021): ``train.json`` / ``validate.json`` / ``test.json`` lists with ``img_name``
  (``xmlab102/source.jpg``), ``question``, ``answer``, ``answer_type``, ``q_lang``; images under ``imgs/``. English
  only (``q_lang == "en"``), as the reference.
- PathVQA (He et al. 2020) as JSON: a list of ``{"image": name, "question", "answer"}`` (``image``/``img_id``/
  ``image_name`` accepted; ``.jpg`` added when the name has no suffix); yes/no answers are CLOSED.
- MIMIC-CXR reports: the sectioned report CSV (``mimic_cxr_sectioned.csv`` from the MIMIC-CXR code's
  ``create_section_files.py``: ``study``, ``impression``, ``findings``) joined with MIMIC-CXR-JPG's
  ``mimic-cxr-2.0.0-metadata.csv`` (``dicom_id``, ``subject_id``, ``study_id``, ``ViewPosition``); frontal (PA/AP)
  images at ``files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg``; the prompt is the reference's
  ``Describe the image in detail.``, the answer ``FINDINGS: … IMPRESSION: …``.

Each reader returns ``(records, problems)``: unusable rows are reported (``{"where", "reason"}``), never fatal.
Image names are kept relative (the dataset resolves them under its image root and refuses escapes).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from medvit.io.jsonfile import read_json
from medvit.vlm.instruct import REPORT_PROMPT
from medvit.vlm.templates import IMAGE_TOKEN

Records = tuple[list[dict[str, Any]], list[dict[str, str]]]


def _load_json_list(path: Path) -> list[Any]:
    return read_json(path, expect=list, missing="a JSON array of question items")


def _qa(rid: str, image: str, q: str, a: str, closed: bool, source: str) -> dict[str, Any]:
    return {"id": rid, "images": [image], "answer_type": "closed" if closed else "open", "source": source,
            "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n{q}"}, {"from": "gpt", "value": a}]}


def _need(item: Any, keys: tuple[str, ...], where: str) -> list[str]:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: not an object")
    miss = [k for k in keys if item.get(k) in (None, "")]
    if miss:
        raise ValueError(f"{where}: missing key(s) {miss}")
    return [str(item[k]).strip() for k in keys]


def read_vqa_rad(json_path: str | Path, split: str = "test", closed_only: bool | None = None) -> Records:
    """VQA-RAD items of ``split`` (train | test); ``closed_only`` defaults to True for test (the reference)."""
    p = Path(json_path)
    if split not in ("train", "test"):
        raise ValueError(f"VQA-RAD split must be train or test, got {split!r}")
    closed_only = (split == "test") if closed_only is None else closed_only
    recs, bad = [], []
    for i, it in enumerate(_load_json_list(p)):
        where = f"{p}[{i}]"
        try:
            img, q, a = _need(it, ("image_name", "question", "answer"), where)
        except ValueError as e:
            bad.append({"where": where, "reason": str(e)})
            continue
        is_test = str(it.get("phrase_type", "")).startswith("test")
        closed = str(it.get("answer_type", "")).upper().startswith("CLOSED")
        if (split == "test") != is_test or (closed_only and not closed):
            continue
        recs.append(_qa(f"vqarad-{it.get('qid', i)}", img, q, a, closed, "vqa_rad"))
    return recs, bad


def read_slake(root: str | Path, split: str = "test") -> Records:
    """SLAKE English items of ``split`` (train | validate | test) from ``root/{split}.json``; images ``imgs/…``."""
    r = Path(root)
    if split not in ("train", "validate", "test"):
        raise ValueError(f"SLAKE split must be train, validate or test, got {split!r}")
    p = r / f"{split}.json"
    recs, bad = [], []
    for i, it in enumerate(_load_json_list(p)):
        where = f"{p}[{i}]"
        try:
            img, q, a = _need(it, ("img_name", "question", "answer"), where)
        except ValueError as e:
            bad.append({"where": where, "reason": str(e)})
            continue
        if it.get("q_lang", "en") != "en":
            continue
        closed = str(it.get("answer_type", "")).upper() == "CLOSED"
        recs.append(_qa(f"slake-{it.get('qid', i)}", f"imgs/{img}", q, a, closed, "slake"))
    return recs, bad


def read_pathvqa(json_path: str | Path) -> Records:
    """PathVQA question list (module docstring); yes/no answers are closed questions."""
    p = Path(json_path)
    recs, bad = [], []
    for i, it in enumerate(_load_json_list(p)):
        where = f"{p}[{i}]"
        key = next((k for k in ("image", "img_id", "image_name") if isinstance(it, dict) and it.get(k)), "image")
        try:
            img, q, a = _need(it, (key, "question", "answer"), where)
        except ValueError as e:
            bad.append({"where": where, "reason": str(e)})
            continue
        if not Path(img).suffix:
            img += ".jpg"
        recs.append(_qa(f"pathvqa-{i}", img, q, a, a.lower() in ("yes", "no"), "pathvqa"))
    return recs, bad


def read_mimic_cxr_reports(sectioned_csv: str | Path, metadata_csv: str | Path,
                           views: tuple[str, ...] = ("PA", "AP")) -> Records:
    """Report-generation conversations, one per frontal image of a study with a findings or impression section."""
    sp, mp = Path(sectioned_csv), Path(metadata_csv)
    for f in (sp, mp):
        if not f.is_file():
            raise FileNotFoundError(f"file not found: {f}")
    reports: dict[str, str] = {}
    bad: list[dict[str, str]] = []
    with open(sp, newline="", encoding="utf-8") as fh:
        rd = csv.DictReader(fh)
        if not rd.fieldnames or "study" not in rd.fieldnames:
            raise ValueError(f"{sp}: needs a 'study' column (and 'findings'/'impression'); has {rd.fieldnames}")
        for i, row in enumerate(rd, 2):
            fnd, imp = (row.get("findings") or "").strip(), (row.get("impression") or "").strip()
            if not fnd and not imp:
                bad.append({"where": f"{sp}:{i}", "reason": "no findings and no impression"})
                continue
            text = " ".join(x for x in (f"FINDINGS: {fnd}" if fnd else "", f"IMPRESSION: {imp}" if imp else "") if x)
            reports[row["study"].strip().lstrip("s")] = text
    recs = []
    with open(mp, newline="", encoding="utf-8") as fh:
        rd = csv.DictReader(fh)
        need = {"dicom_id", "subject_id", "study_id", "ViewPosition"}
        if not rd.fieldnames or not need <= set(rd.fieldnames):
            raise ValueError(f"{mp}: needs columns {sorted(need)}; has {rd.fieldnames}")
        for i, row in enumerate(rd, 2):
            if row["ViewPosition"] not in views:
                continue
            st, su, di = row["study_id"].strip(), row["subject_id"].strip(), row["dicom_id"].strip()
            if not (st.isdigit() and su.isdigit() and di.replace("-", "").isalnum()):
                bad.append({"where": f"{mp}:{i}", "reason": "ids must be digits (dicom_id alphanumeric)"})
                continue
            if st not in reports:
                continue
            img = f"files/p{su[:2]}/p{su}/s{st}/{di}.jpg"
            recs.append({"id": f"mimic-{di}", "images": [img], "source": "mimic_cxr",
                         "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n{REPORT_PROMPT}"},
                                           {"from": "gpt", "value": reports[st]}]})
    return recs, bad
