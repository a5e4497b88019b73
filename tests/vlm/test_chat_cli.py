"""``medvit chat``: a saved VLM with its recorded CXR expert answers about a phantom DICOM; the expert call is shown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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
