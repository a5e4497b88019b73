"""Curriculum training (frozen encoder and LM, projector only; schedules; part 2 from part 1) and the two-step
closed-ended evaluation end to end with a tiny random LM."""

import csv
import json

import pytest
import torch

from medvit.data.synth import write_synth
from medvit.eval.closed_ended import INVALID
from medvit.registry import REGISTRY
from medvit.vlm import VisionLanguageModel
from medvit.vlm.retina.curriculum import PART2_MODULES, CurriculumConfig, generate_curriculum, read_rows
from medvit.vlm.retina.evaluate import generate_with_prefix, run_closed_ended, score, tasks_for, write_results
from medvit.vlm.retina.guidelines import default_guidelines_dir, load_guidelines
from medvit.vlm.retina.train import TrainConfig, train_curriculum

BACKBONE = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "in_chans": 1}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matrices: one thread avoids oversubscription on a shared CI machine (10x faster here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def g():
    return load_guidelines(default_guidelines_dir())


@pytest.fixture(scope="module")
def data(tmp_path_factory, g):
    root = tmp_path_factory.mktemp("rdata")
    write_synth("retina", 30, root, fmt="png", seed=4, image_size=32, masks=False)
    generate_curriculum(root, root / "cur", CurriculumConfig(splits=[], part1_k=2, part2_k=dict.fromkeys(
        PART2_MODULES, 1), captions_k=1), g)
    return root


def _cfg(data, out, lm, **kw):
    base = dict(curriculum_dir=str(data / "cur"), data_root=str(data), output_dir=str(out),
                vlm=dict(lm_path=str(lm), backbone="vit_tiny_patch16_224", backbone_args=dict(BACKBONE),
                         projector="linear", max_length=200), part1_steps=2, part2_steps=2, batch_size=3, lr=1e-2,
                log_every=1)
    return TrainConfig(**{**base, **kw})


def _state(ckpt):
    m = VisionLanguageModel.load(ckpt)
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_projector_only_trained_and_part2_starts_from_part1(data, tiny_llama, tmp_path):
    torch.manual_seed(0)
    s = train_curriculum(_cfg(data, tmp_path / "run", tiny_llama))
    assert [p["name"] for p in s["phases"]] == ["part1", "part2"]
    p1, p2 = _state(tmp_path / "run" / "part1"), _state(tmp_path / "run" / "part2")
    fresh = VisionLanguageModel(VisionLanguageModel.load(tmp_path / "run" / "part1").cfg).state_dict()
    for k in p1:
        if k.startswith("projector."):
            assert not torch.equal(p1[k], p2[k])  # part 2 trained on
        elif k.startswith("lm."):
            assert torch.equal(p1[k], p2[k]) and torch.equal(p1[k], fresh[k])  # the LM stays frozen
        else:
            assert torch.equal(p1[k], p2[k])  # the vision encoder stays frozen
    assert s["trainable_parameters"] == sum(v.numel() for k, v in p1.items() if k.startswith("projector."))
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [r["phase"] for r in rows] == ["part1", "part1", "part2", "part2"]
    # part 2 initialised from part 1: restarting from the part-1 checkpoint with lr 0 keeps its projector
    train_curriculum(_cfg(data, tmp_path / "again", tiny_llama, init_from=str(tmp_path / "run" / "part1"),
                          schedule="part1_only", lr=0.0, part1_steps=1))
    p0 = _state(tmp_path / "again" / "part1")
    assert all(torch.equal(p0[k], p1[k]) for k in p1 if k.startswith("projector."))


def test_schedules_registered():
    mbm = REGISTRY.get("schedule", "module_by_module")()
    assert [p.modules for p in mbm[1:]] == [(m,) for m in PART2_MODULES]
    assert sum(p.share for p in mbm[1:]) == pytest.approx(1.0)
    assert [p.files for p in REGISTRY.get("schedule", "captions_only")()] == [("captions.jsonl",)]
    with pytest.raises(KeyError, match="did you mean"):
        REGISTRY.get("schedule", "sequentail")


def test_module_by_module_runs_every_module(data, tiny_llama, tmp_path):
    s = train_curriculum(_cfg(data, tmp_path / "mbm", tiny_llama, schedule="module_by_module", part2_steps=10,
                              part1_steps=1))
    assert len(s["phases"]) == 11 and all(p["steps"] == 1 for p in s["phases"])
    assert {p["records"] for p in s["phases"][1:]} == {30}  # K = 1 per image for each module


def test_two_step_evaluation_end_to_end(data, g, tiny_llama, tmp_path):
    train_curriculum(_cfg(data, tmp_path / "m", tiny_llama, part2_steps=1, part1_steps=1))
    model = VisionLanguageModel.load(tmp_path / "m" / "part2")
    rows, _ = read_rows(data, CurriculumConfig(splits=[], max_images=2), g)
    tasks = tasks_for(g)
    assert [t.name for t in tasks][:2] == ["staging", "referral"] and len(tasks) == 12
    preds = run_closed_ended(model, rows, g, data, tasks, describe_tokens=3, answer_tokens=3)
    assert len(preds) == 2 * 12
    for p in preds:
        t = next(t for t in tasks if t.name == p["task"])
        assert p["parsed"] in (*t.options, INVALID) and p["truth"] in t.options
    direct = run_closed_ended(model, rows[:1], g, data, tasks[:2], answer_tokens=3, two_step=False)
    assert [p["description"] for p in direct] == ["", ""] and {p["task"] for p in direct} == {"staging", "referral"}
    sc = score(preds, tasks, n_resamples=50)
    write_results(tmp_path / "ev", preds, sc)
    assert (tmp_path / "ev" / "confusion_staging.png").stat().st_size > 1000
    assert json.loads((tmp_path / "ev" / "scores.json").read_text())["staging"]["n"] == 2
    # greedy generation is deterministic and returns only the continuation after the preamble
    from medvit.vlm.data import VLMProcessor

    img = VLMProcessor.for_model(model).load_image(data / rows[0].image)[None]
    msgs = [{"role": "user", "content": "<image>\nWhat is the stage?"}]
    a = generate_with_prefix(model, msgs, img, "The stage is", 4)
    assert a == generate_with_prefix(model, msgs, img, "The stage is", 4) and not a.startswith("The stage is")


def test_scoring_with_oracle_and_garbage_answers(data, g):
    rows, _ = read_rows(data, CurriculumConfig(splits=[]), g)
    tasks = tasks_for(g, ["staging", "referral"])
    oracle = run_closed_ended(None, rows, g, data, tasks, answer_fn=lambda r, t, d: f"{t.truth(r.observations)}.")
    sc = score(oracle, tasks, n_resamples=100)
    assert sc["staging"]["f1"] == 1.0 and sc["referral"]["f1"] == 1.0 and sc["staging"]["ci"] == [1.0, 1.0]
    junk = run_closed_ended(None, rows, g, data, tasks, answer_fn=lambda r, t, d: "I cannot say.")
    sj = score(junk, tasks, n_resamples=100)
    assert sj["staging"]["invalid"] == len(rows) and sj["staging"]["f1"] == 0.0
    assert sj["staging"]["confusion"][0][-1] >= 1  # the invalid column is filled


def test_cli_train_and_evaluate(data, tiny_llama, tmp_path, capsys):
    import yaml

    from medvit.cli.main import main

    cfg = {"curriculum_dir": str(data / "cur"), "data_root": str(data), "output_dir": str(tmp_path / "run"),
           "vlm": {"lm_path": str(tiny_llama), "backbone": "vit_tiny_patch16_224", "backbone_args": BACKBONE,
                   "projector": "linear", "max_length": 200}, "part1_steps": 1, "part2_steps": 1, "batch_size": 2}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["curriculum", "train", str(tmp_path / "t.yaml"), "--set", "schedule=sequential"]) == 0
    assert main(["curriculum", "evaluate", str(data), "-m", str(tmp_path / "run" / "part2"), "-o",
                 str(tmp_path / "ev"), "--split", "all", "--max-images", "3", "--tasks", "staging",
                 "--describe-tokens", "2", "--answer-tokens", "2", "--resamples", "20"]) == 0
    out = capsys.readouterr().out
    assert "staging" in out and (tmp_path / "ev" / "predictions.csv").is_file()
    assert main(["curriculum", "evaluate", str(data), "-m", str(tmp_path / "run" / "part2"), "-o",
                 str(tmp_path / "ev2"), "--tasks", "staging,grading"]) == 2


def test_conversations_with_unreadable_images_are_counted_in_the_summary(data, tiny_llama, tmp_path):
    """breaker note: bad image paths were replaced by the next good item with only a log line; the phase
    summary now counts and lists them."""
    import shutil

    root = tmp_path / "d"
    shutil.copytree(data, root)
    imgs = sorted(p for p in root.rglob("*.png") if "cur" not in p.parts)
    for p in imgs[::2]:
        p.unlink()
    torch.manual_seed(0)
    s = train_curriculum(_cfg(root, tmp_path / "run", tiny_llama, curriculum_dir=str(root / "cur"),
                              schedule="part1_only", part1_steps=2))
    ph = s["phases"][0]
    assert ph["skipped_conversations"] > 0 and len(ph["problems"]) == min(ph["skipped_conversations"], 20)
    assert "not found" in ph["problems"][0]["reason"] or "No such file" in ph["problems"][0]["reason"]
