"""Instruction data from chest phantoms, the mixture file, and the public-format readers (native-layout
fixtures written by the tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medvit.vlm import read_conversations
from medvit.vlm.experts import CXRExpert, model_cards
from medvit.vlm.instruct import MixtureEntry, phantom_instruction_data, read_mixture, write_mixture
from medvit.vlm.public import read_mimic_cxr_reports, read_pathvqa, read_slake, read_vqa_rad

DEMO = Path(__file__).resolve().parents[2] / "pipelines" / "demo" / "model"


def test_phantom_instruction_data(tmp_path):
    ex = CXRExpert([DEMO])
    res = phantom_instruction_data(tmp_path, n=20, seed=5, image_size=64, experts=[ex], expert_factor=3)
    tr = res["files"]["train"]
    assert set(tr) == {"caption", "report", "vqa", "expert"}
    recs, bad = read_conversations(tmp_path / tr["expert"])
    assert not bad and len(recs) == 7 * res["counts"]["train"]["caption"]
    withe = [r for r in recs if r["with_expert"]]
    assert 0.25 < len(withe) / len(recs) < 0.75  # about half with an expert turn
    r = withe[0]
    conv = r["conversations"]
    assert conv[0]["value"].startswith(model_cards([ex]) + "<image>This is a CXR image.\nIs there ")
    assert conv[1]["value"] == "This looks like an chest x-ray. Let me first trigger <CXR()>."
    assert conv[2]["value"].startswith("The resulting predictions are:\natelectasis: ")
    assert "\n. Use this result to respond to this prompt:\nIs there " in conv[2]["value"]
    assert conv[3]["value"] in ("yes", "no")
    # every yes/no finding question with model cards goes through the expert; the direct ones are other questions
    direct = [r for r in recs if not r["with_expert"]]
    assert direct and all("Is there " not in r["conversations"][0]["value"] for r in direct)
    # the answers are the phantom truth (not the expert's call)
    vqa, _ = read_conversations(tmp_path / tr["vqa"])
    assert {r["conversations"][1]["value"] for r in vqa if "label" in r} <= {"yes", "no"}
    assert (tmp_path / r["images"][0]).is_file()
    mix = read_mixture(res["mixture"], stage=3)
    assert [e.name for e, _ in mix] == ["phantom_report", "phantom_vqa", "expert_phantom_cxr"]
    assert mix[-1][0].factor == 3 and mix[-1][1] == tmp_path / tr["expert"]


def test_mixture_refuses_escapes_and_bad_factors(tmp_path):
    write_mixture(tmp_path / "m.yaml", [MixtureEntry("a", "../x.jsonl")])
    with pytest.raises(ValueError, match="no '..'"):
        read_mixture(tmp_path / "m.yaml")
    write_mixture(tmp_path / "m.yaml", [MixtureEntry("a", "x.jsonl", factor=0)])
    with pytest.raises(ValueError, match=r"mixture\[0\].factor"):
        read_mixture(tmp_path / "m.yaml")


def test_vqa_rad_reader(tmp_path):
    items = [{"qid": 1, "image_name": "synpic1.jpg", "question": "Is there a fracture?", "answer": "no",
              "answer_type": "CLOSED", "phrase_type": "test_freeform"},
             {"qid": 2, "image_name": "synpic1.jpg", "question": "What organ?", "answer": "chest",
              "answer_type": "OPEN", "phrase_type": "test_para"},
             {"qid": 3, "image_name": "synpic2.jpg", "question": "Is it normal?", "answer": "yes",
              "answer_type": "CLOSED", "phrase_type": "freeform"},
             {"qid": 4, "question": "broken"}]
    p = tmp_path / "VQA_RAD Dataset Public.json"
    p.write_text(json.dumps(items))
    test, bad = read_vqa_rad(p, "test")
    assert [r["id"] for r in test] == ["vqarad-1"] and len(bad) == 1 and "image_name" in bad[0]["reason"]
    train, _ = read_vqa_rad(p, "train")
    assert [r["conversations"][1]["value"] for r in train] == ["yes"]


def test_slake_reader_english_only(tmp_path):
    items = [{"qid": 1, "img_name": "xmlab1/source.jpg", "question": "Is this a CT?", "answer": "Yes",
              "answer_type": "CLOSED", "q_lang": "en"},
             {"qid": 2, "img_name": "xmlab1/source.jpg", "question": "这是CT吗", "answer": "是",
              "answer_type": "CLOSED", "q_lang": "zh"}]
    (tmp_path / "test.json").write_text(json.dumps(items, ensure_ascii=False))
    recs, bad = read_slake(tmp_path, "test")
    assert len(recs) == 1 and recs[0]["images"] == ["imgs/xmlab1/source.jpg"] and recs[0]["answer_type"] == "closed"


def test_pathvqa_reader(tmp_path):
    p = tmp_path / "pvqa.json"
    p.write_text(json.dumps([{"image": "test_0001", "question": "Is this malignant?", "answer": "yes"},
                             {"img_id": "x.png", "question": "What stain?", "answer": "h&e"}, {"image": "y"}]))
    recs, bad = read_pathvqa(p)
    assert [r["images"][0] for r in recs] == ["test_0001.jpg", "x.png"]
    assert [r["answer_type"] for r in recs] == ["closed", "open"] and len(bad) == 1


def test_mimic_cxr_reports(tmp_path):
    (tmp_path / "sec.csv").write_text("study,impression,findings,last_paragraph,comparison\n"
                                      "s50414267,No acute process.,Lungs are clear.,,\n"
                                      "s53189527,,,,\n")
    (tmp_path / "meta.csv").write_text("dicom_id,subject_id,study_id,ViewPosition\n"
                                       "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014,10000032,50414267,PA\n"
                                       "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962,10000032,50414267,LATERAL\n"
                                       "bad/../id,10000032,50414267,AP\n")
    recs, bad = read_mimic_cxr_reports(tmp_path / "sec.csv", tmp_path / "meta.csv")
    assert len(recs) == 1 and recs[0]["images"] == [
        "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"]
    assert recs[0]["conversations"][1]["value"] == "FINDINGS: Lungs are clear. IMPRESSION: No acute process."
    assert len(bad) == 2  # empty report, unsafe dicom id


def test_phantom_instruction_data_knobs(tmp_path):
    """Calibration knobs reach the phantom generator (the images differ from the default draw)."""
    from PIL import Image

    a = phantom_instruction_data(tmp_path / "a", n=10, seed=5, image_size=32, splits=("train",))
    b = phantom_instruction_data(tmp_path / "b", n=10, seed=5, image_size=32, splits=("train",),
                                 knobs={"lesion_contrast": 3.0, "anatomy": 0.5})
    assert a["counts"] == b["counts"]
    name = sorted((tmp_path / "a" / "images").iterdir())[0].name
    ia = np.asarray(Image.open(tmp_path / "a" / "images" / name))
    ib = np.asarray(Image.open(tmp_path / "b" / "images" / name))
    assert ia.shape == ib.shape and not np.array_equal(ia, ib)


def test_expert_balance_asks_present_findings(tmp_path):
    ex = CXRExpert([DEMO])
    res = phantom_instruction_data(tmp_path, n=30, seed=5, image_size=64, experts=[ex], splits=("train",),
                                   expert_balance=True)
    recs, _ = read_conversations(tmp_path / res["files"]["train"]["expert"])
    withe = [r for r in recs if r["with_expert"]]
    yes = [r for r in withe if r["conversations"][3]["value"] == "yes"
           or f"{r['label'].lower()}: yes" in r["conversations"][2]["value"]]
    assert withe and 0.3 <= len(yes) / len(withe) <= 0.7  # about half present (truth or expert), half absent
    assert any(not r["with_expert"] for r in recs)


def test_cite_answers_follow_the_expert(tmp_path):
    """expert_answer="cite": every answer after the expert turn quotes the result's line for the asked finding and
    answers with it (the expert's call, not the truth), ends with the OOD sentence exactly when the result carries
    the expert's caution; about half the cited calls are "yes" with expert_balance. A wrong value is refused."""
    import re

    from medvit.vlm.instruct import OOD_ANSWER, cited_answer

    ex = CXRExpert([DEMO])
    res = phantom_instruction_data(tmp_path, n=30, seed=5, image_size=64, experts=[ex], splits=("train",),
                                   expert_balance=True, expert_answer="cite")
    recs, _ = read_conversations(tmp_path / res["files"]["train"]["expert"])
    withe = [r for r in recs if r["with_expert"]]
    vqa, _ = read_conversations(tmp_path / res["files"]["train"]["vqa"])
    truth = {r["id"].replace("-cls-", "-exp-"): r["conversations"][1]["value"] == "yes" for r in vqa if "label" in r}
    assert withe
    differs = 0
    for r in withe:
        result, answer = r["conversations"][2]["value"], r["conversations"][3]["value"]
        said = re.search(rf"^{r['label'].lower()}: (yes|no)$", result, re.M).group(1) == "yes"
        assert answer == cited_answer("CXR", r["label"], said, "Caution: this image is outside" in result)
        assert answer.startswith(f"The CXR expert reports:\n{r['label'].lower()}: ")
        assert answer.split("\n")[2] == f"Answer: {'yes' if said else 'no'}"
        differs += said != truth[r["id"]]
    assert differs >= 1  # where the expert is wrong, the cited answer still follows the expert
    flagged = [r for r in withe if "Caution" in r["conversations"][2]["value"]]
    assert all(r["conversations"][3]["value"].endswith(OOD_ANSWER) for r in flagged)
    yes = sum("\nAnswer: yes" in r["conversations"][3]["value"] for r in withe)
    assert 0.2 <= yes / len(withe) <= 0.7
    with pytest.raises(ValueError, match="expert_answer"):
        phantom_instruction_data(tmp_path / "x", n=10, seed=5, image_size=32, experts=[ex], splits=("train",),
                                 expert_answer="expert")


def test_cite_balance_draws_absent_findings_the_expert_predicts():
    """cite + expert_balance with an expert that predicts one of the phantom's findings: the absent pick is that
    finding (drawn from the expert's labels), so every phantom gets its expert conversation; drawing from all the
    phantom's findings asked ones the expert cannot answer, which cite mode then drops (breaker B14)."""
    from medvit.data.phantom_cxr import ChestPhantomGenerator
    from medvit.vlm.experts import Expert, ExpertResult, ModelCard, cxr_text
    from medvit.vlm.instruct import phantom_conversations

    class OneFinding(Expert):
        name = "CXR"
        model_card = ModelCard("chest x-ray (CXR)", "classification", "one finding", "n/a")

        def __init__(self, label: str) -> None:
            self.label = label

        def run(self, images, args=""):
            calls = {self.label: False}
            return ExpertResult(cxr_text(calls), None, self.name, args, {"predictions": calls})

    g = ChestPhantomGenerator(image_size=32, seed=5)
    only = list(g.sample(0, 0).label_names)[-1]
    ex = OneFinding(only)
    for i in range(6):
        ph = g.sample(i, i)
        out = phantom_conversations(ph, f"img{i}.png", np.random.default_rng(i), [ex], expert_balance=True,
                                    expert_answer="cite")
        withe = [c for c in out["expert"] if c["with_expert"]]
        assert [c["label"] for c in withe] == [only], i
        assert withe[0]["conversations"][3]["value"].endswith("Answer: no")
