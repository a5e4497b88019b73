"""``medvit chat``: a saved VLM with its recorded CXR expert answers about a phantom DICOM; the expert call is shown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from medvit.cli.main import main
from medvit.vlm import VisionLanguageModel

DEMO = str(Path(__file__).resolve().parents[2] / "pipelines" / "demo" / "model")


def _dicom(tmp_path):
    from medvit.data.synth import write_synth

    write_synth("cxr", 1, tmp_path / "synth", fmt="dicom", seed=4, image_size=64, masks=False)
    return next((tmp_path / "synth" / "images").rglob("*.dcm"))


def _png(tmp_path):
    from PIL import Image

    from medvit.data.phantom_cxr import ChestPhantomGenerator

    ph = ChestPhantomGenerator(image_size=64, seed=4).sample(2)
    p = tmp_path / "cxr.png"
    Image.fromarray((ph.image * 255).astype(np.uint8)).save(p)
    return p


def test_chat_cli_shows_the_expert_call(make_vlm, tmp_path, capsys, monkeypatch):
    vlm = make_vlm()
    vlm.save(tmp_path / "vlm", extra={"experts": [{"kind": "cxr", "checkpoints": [DEMO]}]})
    img = _dicom(tmp_path)
    replies = iter(["Let me first trigger <CXR()>.", "yes"])
    seen = []

    def fake_generate(self, messages, images=None, **kw):
        seen.append((messages, images.shape))
        return next(replies)

    monkeypatch.setattr(VisionLanguageModel, "generate", fake_generate)
    assert main(["chat", "-m", str(tmp_path / "vlm"), str(img), "Is there a pleural effusion?", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] == "yes" and out["expert_calls"] == 1
    ex = [t for t in out["turns"] if t["role"] == "expert"][0]
    assert ex["expert"] == "CXR" and ex["text"].startswith("The resulting predictions are:\natelectasis: ")
    assert seen[0][0][0]["content"].startswith("Here is a list of available expert models:\n<CXR(args)>")
    assert seen[0][1] == (1, 1, 32, 32)
    # plain text output, the banner, and --no-experts (no model cards in the prompt)
    replies = iter(["no"])
    seen.clear()
    assert main(["chat", "-m", str(tmp_path / "vlm"), str(img), "Is there a mass?", "--no-experts"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Research use only - not for diagnosis.") and "assistant: no" in text
    assert not seen[0][0][0]["content"].startswith("Here is a list")


def test_chat_cli_real_generation_runs(make_vlm, tmp_path, capsys):
    vlm = make_vlm()
    vlm.save(tmp_path / "vlm")
    img = _png(tmp_path)
    assert main(["chat", "-m", str(tmp_path / "vlm"), str(img), "Describe the image.", "--max-new-tokens", "3",
                 "--expert", f"cxr={DEMO}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["turns"][0] == {"role": "user", "text": "Describe the image.", "expert": None, "args": None}


def test_chat_and_cxr_expert_respect_the_image_and_the_contract_scope(make_vlm, tmp_path, capsys, monkeypatch):
    """Breaker F7: on a CT slice the CXR expert (demo contract: CR/DX) declines in the conversation — no findings,
    no exception — and the modality line comes from the image's own header ("CT", not "CXR"); a chest DX keeps
    the reference's "This is a CXR image." and gets findings; a 2-frame DX is declined as infer skips it."""
    import pydicom
    from pydicom.data import get_testdata_file

    from medvit.vlm.experts import CXRExpert

    ct = get_testdata_file("CT_small.dcm")
    ex = CXRExpert([DEMO])
    r = ex.run([ct])
    assert "does not apply" in r.text and "Modality CT" in r.text and "CR or DX" in r.text
    assert "predictions" not in r.values and "resulting predictions" not in r.text
    dx = _dicom(tmp_path)
    assert ex.run([dx]).text.startswith("The resulting predictions are:\n")
    ds = pydicom.dcmread(dx)
    ds.NumberOfFrames, ds.PixelData = 2, ds.PixelData * 2
    ds.save_as(tmp_path / "two.dcm")
    assert "multi-frame" in ex.run([str(tmp_path / "two.dcm")]).values["out_of_scope"]

    vlm = make_vlm()
    vlm.save(tmp_path / "vlm", extra={"experts": [{"kind": "cxr", "checkpoints": [DEMO]}]})
    seen = []

    def fake_generate(self, messages, images=None, **kw):
        seen.append([dict(m) for m in messages])
        return "Let me first trigger <CXR()>." if len(seen) % 2 else "I cannot tell."

    monkeypatch.setattr(VisionLanguageModel, "generate", fake_generate)
    assert main(["chat", "-m", str(tmp_path / "vlm"), ct, "Is there a pleural effusion?", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    first = seen[0][0]["content"]
    assert "This is a CT image.\nIs there a pleural effusion?" in first and "CXR image" not in first
    assert [t["role"] for t in out["turns"]] == ["user", "assistant", "error", "assistant"]
    assert "does not apply" in out["turns"][2]["text"] and out["answer"] == "I cannot tell."
    assert "predictions" not in seen[1][-1]["content"] and "does not apply" in seen[1][-1]["content"]
    seen.clear()
    assert main(["chat", "-m", str(tmp_path / "vlm"), str(dx), "Is there a mass?", "--json"]) == 0
    assert "<image>This is a CXR image.\nIs there a mass?" in seen[0][0]["content"]
    assert json.loads(capsys.readouterr().out)["turns"][2]["role"] == "expert"
    seen.clear()
    assert main(["chat", "-m", str(tmp_path / "vlm"), str(_png(tmp_path)), "Is there a mass?", "--json"]) == 0
    assert "This is a" not in seen[0][0]["content"]  # a PNG has no header: no modality line


def test_saved_vlm_is_relocatable_and_follows_no_outside_path_from_its_config(make_vlm, tiny_llama, tmp_path,
                                                                              capsys, monkeypatch):
    """Breaker F8: a VLM saved with a CWD-relative vision checkpoint and expert checkpoints, then moved, loads from
    another directory (checkpoints copied into the model directory, recorded relative to it); a moved LM is named
    in the error with the --lm override, which works (hash-checked); paths in vlm_config.json that are absolute
    or lead out of the model directory are refused naming the key, unless the experts are given explicitly."""
    import shutil

    import pytest

    from medvit.vlm.chat import load_chat

    lm = tmp_path / "lm"
    shutil.copytree(tiny_llama, lm)
    img = _dicom(tmp_path)
    monkeypatch.chdir(Path(DEMO).parents[2])
    rel = "pipelines/demo/model"
    make_vlm(lm=lm, vision_checkpoint=rel).save(tmp_path / "run" / "model",
                                                extra={"experts": [{"kind": "cxr", "checkpoints": [rel]}]})
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "run" / "model", moved)
    shutil.rmtree(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    cf = moved / "vlm_config.json"
    meta = json.loads(cf.read_text())
    assert meta["config"]["vision_checkpoint"] == "vision" and meta["experts"][0]["checkpoints"] == ["experts/cxr_0"]
    chat = load_chat(moved)
    assert chat.experts[0].name == "CXR" and chat.model.vision_from_checkpoint

    shutil.move(lm, tmp_path / "lm2")
    with pytest.raises(FileNotFoundError, match=r"key 'lm.path'.*--lm DIR"):
        VisionLanguageModel.load(moved)
    monkeypatch.setattr(VisionLanguageModel, "generate", lambda self, m, i=None, **kw: "no")
    assert main(["chat", "-m", str(moved), str(img), "Is there a mass?", "--lm", str(tmp_path / "lm2"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == "no"

    good = cf.read_text()
    for bad in ["/etc", "../lm2", DEMO]:
        meta["experts"][0]["checkpoints"] = [bad]
        cf.write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=r"experts\[0\]\.checkpoints.*outside the model directory"):
            load_chat(moved, lm_path=tmp_path / "lm2")
    assert load_chat(moved, [{"kind": "cxr", "checkpoints": [DEMO]}], lm_path=tmp_path / "lm2").experts
    meta = json.loads(good)
    meta["config"]["vision_checkpoint"] = "../run/model/vision"
    cf.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"config.vision_checkpoint.*outside the model directory"):
        VisionLanguageModel.load(moved, lm_path=tmp_path / "lm2")
    assert VisionLanguageModel.load(moved, lm_path=tmp_path / "lm2", vision_checkpoint=DEMO).vision_from_checkpoint


def test_expert_paths_one_shape_rule_and_a_single_path_kind_refuses_several_dirs(tmp_path):
    """One rule shapes an expert's checkpoint paths (``checkpoints`` a list, other kinds one path) for
    ``--expert``, bundling and reading vlm_config.json back. ``--expert segmentation=A,B`` silently dropped B."""
    import pytest

    from medvit.cli.chat_cmd import _expert_specs
    from medvit.vlm.paths import bundle_expert_specs, recorded_expert_specs

    assert _expert_specs(["cxr=a,b", "segmentation=s"]) == [{"kind": "cxr", "checkpoints": ["a", "b"]},
                                                             {"kind": "segmentation", "checkpoint": "s"}]
    with pytest.raises(SystemExit, match=r"--expert 'segmentation=a,b': expert kind 'segmentation' takes one "
                                         r"checkpoint, got 2"):
        _expert_specs(["segmentation=a,b"])
    src = tmp_path / "ck"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"x")
    model_dir = tmp_path / "vlm"
    specs = bundle_expert_specs([{"kind": "cxr", "checkpoints": [str(src)]},
                                 {"kind": "segmentation", "checkpoint": str(src)}], model_dir)
    assert specs == [{"kind": "cxr", "checkpoints": ["experts/cxr_0"]},
                     {"kind": "segmentation", "checkpoint": "experts/segmentation_1"}]
    assert recorded_expert_specs(specs, model_dir) == [
        {"kind": "cxr", "checkpoints": [str(model_dir / "experts" / "cxr_0")]},
        {"kind": "segmentation", "checkpoint": str(model_dir / "experts" / "segmentation_1")}]


def test_chat_reads_the_image_file_once_for_the_modality_line_the_vlm_and_the_expert(make_vlm, tmp_path, capsys,
                                                                                     monkeypatch):
    """closing 32: a chat turn with a file path read the file three times (its header for the modality line, its
    pixels for the VLM, again for the expert). One read serves all three; the answer and the expert's findings are
    those of the path read as before."""
    import medvit.io
    import medvit.io.rules

    vlm = make_vlm()
    vlm.save(tmp_path / "vlm", extra={"experts": [{"kind": "cxr", "checkpoints": [DEMO]}]})
    img = _dicom(tmp_path)
    reads, headers = [], []
    real_read, real_header = medvit.io.read_image, medvit.io.rules.header_of
    monkeypatch.setattr(medvit.io, "read_image", lambda p, *a, **k: reads.append(str(p)) or real_read(p, *a, **k))
    monkeypatch.setattr(medvit.io.rules, "header_of", lambda im: headers.append(type(im).__name__) or real_header(im))
    replies = iter(["Let me first trigger <CXR()>.", "yes"])
    seen = []

    def fake_generate(self, messages, images=None, **kw):
        seen.append((messages, images))
        return next(replies)

    monkeypatch.setattr(VisionLanguageModel, "generate", fake_generate)
    assert main(["chat", "-m", str(tmp_path / "vlm"), str(img), "Is there a pleural effusion?", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert reads == [str(img)] and set(headers) == {"MedicalImage"}  # one read; no header re-read from the path
    assert out["expert_calls"] == 1 and seen[0][0][0]["content"].split("<image>")[1].startswith("This is a CXR image.")
    ex = [t for t in out["turns"] if t["role"] == "expert"][0]
    assert ex["text"].startswith("The resulting predictions are:\natelectasis: ")
    from medvit.vlm.data import VLMProcessor

    assert torch.equal(seen[0][1][0], VLMProcessor.for_model(vlm).load_image(img))  # the pixels a path gives


def test_chat_shows_the_experts_ood_caution_apart_from_the_answer(make_vlm, tmp_path, capsys, monkeypatch):
    """The language model need not repeat the CXR expert's OOD caution (the tiny one here says "No abnormality."),
    so `medvit chat` prints the caution itself after the answer (and lists it in --json), whatever the model wrote.
    The image: a CT slice saved as PNG (no header, so no scope refusal) — outside the demo expert's distribution."""
    from PIL import Image
    from pydicom.data import get_testdata_file

    from medvit.io import read_image

    ct = read_image(get_testdata_file("CT_small.dcm")).pixels.astype(np.float32).squeeze()
    png = tmp_path / "ct.png"
    Image.fromarray((255 * (ct - ct.min()) / (ct.max() - ct.min())).astype(np.uint8)).save(png)
    vlm = make_vlm()
    vlm.save(tmp_path / "vlm", extra={"experts": [{"kind": "cxr", "checkpoints": [DEMO]}]})
    answers = {"first": "Let me first trigger <CXR()>.", "then": "No abnormality."}

    def fake_generate(self, messages, images=None, **kw):
        return answers["then" if len(messages) > 1 else "first"]

    monkeypatch.setattr(VisionLanguageModel, "generate", fake_generate)
    assert main(["chat", "-m", str(tmp_path / "vlm"), str(png), "Is there a pleural effusion?", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] == "No abnormality." and out["expert_calls"] == 1
    (caution,) = out["cautions"]
    assert caution.startswith("Caution from the CXR expert: this image is outside the expert's training "
                              "distribution (OOD score ") and caution.endswith("these predictions may be unreliable.")
    assert main(["chat", "-m", str(tmp_path / "vlm"), str(png), "Is there a pleural effusion?"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"!! {caution}" and "assistant: No abnormality." in lines  # after the answer, on its own
    # no expert consulted: no caution
    assert main(["chat", "-m", str(tmp_path / "vlm"), str(png), "Is there a pleural effusion?", "--no-experts",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cautions"] == []


def test_expert_dirs_with_an_empty_entry_are_refused():
    """breaker33 B20: ``--expert cxr=A,`` (trailing / doubled comma) added '' = the current directory to the
    ensemble, which then averaged in whatever checkpoint the CWD held."""
    import pytest

    from medvit.cli.chat_cmd import _expert_specs
    from medvit.vlm.experts import CXRExpert

    for bad in ("cxr=A,", "cxr=A,,B", "cxr=,A", "segmentation= ", "cxr=A, "):
        with pytest.raises(SystemExit, match=rf"--expert '{bad}': an empty path .*trailing or doubled comma"):
            _expert_specs([bad])
    with pytest.raises(ValueError, match=r"checkpoints\[1\] is an empty path"):
        CXRExpert(["A", ""])
