"""The viewer's Chat tab (AppTest): research banner, question → answer, the expert call shown with its result;
only pixels reach the model (no header text in the prompt)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.viewer.conftest import PATIENT_NAME

APP = str(Path(__file__).resolve().parents[2] / "apps" / "viewer" / "app.py")
DEMO = str(Path(__file__).resolve().parents[2] / "pipelines" / "demo" / "model")


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    import torch

    from medvit.vlm import VisionLanguageModel, VLMConfig
    from medvit.vlm.testing import build_tiny_lm

    d = tmp_path_factory.mktemp("vlm")
    lm = build_tiny_lm(d / "lm", "qwen2")
    torch.manual_seed(0)
    vlm = VisionLanguageModel(VLMConfig(lm_path=str(lm), backbone="vit_tiny_patch16_224", backbone_args={
        "img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "in_chans": 1}))
    vlm.save(d / "model", extra={"experts": [{"kind": "cxr", "checkpoints": [DEMO]}]})
    return d / "model"


def _open_dx_study(studies, tiny_model, tiny_vlm, tmp_path, monkeypatch):
    """The viewer (AppTest) with the chat's VLM, the DX study opened."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MEDVIT_VIEWER_DATA", str(studies))
    monkeypatch.setenv("MEDVIT_VIEWER_MODEL", str(tiny_model))
    monkeypatch.setenv("MEDVIT_VIEWER_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("MEDVIT_VIEWER_VLM", str(tiny_vlm))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, at.exception
    next(b for b in at.button if "DX" in b.label or "series" in b.label.lower()).click().run()
    return at


def test_chat_tab_shows_expert_call_and_answer(studies, tiny_model, tiny_vlm, tmp_path, monkeypatch):
    from medvit.vlm import VisionLanguageModel

    seen = []
    replies = ["Let me first trigger <CXR()>.", "yes, there is an effusion"]

    def fake_generate(self, messages, images=None, **kw):
        seen.append(([m["content"] for m in messages], None if images is None else tuple(images.shape)))
        return replies[len(seen) - 1]

    monkeypatch.setattr(VisionLanguageModel, "generate", fake_generate)
    at = _open_dx_study(studies, tiny_model, tiny_vlm, tmp_path, monkeypatch)
    assert not at.exception, at.exception
    assert any("The model sees only this image's pixels" in e.value for e in at.error)
    assert any("Experts the model may call: CXR" in c.value for c in at.caption)
    at.text_input(key="vlm_question").set_value("Is there a pleural effusion?")
    next(b for b in at.button if b.label == "Ask").click().run()
    assert not at.exception, at.exception
    texts = [t.value for t in at.text]
    assert "Is there a pleural effusion?" in texts and "yes, there is an effusion" in texts
    assert any(t.startswith("The resulting predictions are:\natelectasis: ") for t in texts)
    assert any(c.value == "Expert call: CXR()" for c in at.caption)
    # pixels only: one (1, C, S, S) image; no patient name anywhere in the prompt
    assert seen[0][1] == (1, 1, 32, 32)
    assert all(PATIENT_NAME not in c and "Doe" not in c for msgs, _ in seen for c in msgs)


def test_chat_tab_shows_the_experts_ood_caution_as_a_warning_whatever_the_model_answers(
        studies, tiny_model, tiny_vlm, tmp_path, monkeypatch):
    """The language model need not repeat the CXR expert's OOD caution; the Chat tab shows it as a warning after
    the answer. The expert's OOD check is forced to flag (score 9 >= threshold 2) so the test does not depend on
    which study the viewer opens."""
    from medvit.vlm import VisionLanguageModel
    from medvit.vlm.experts import CXRExpert

    real_assess = CXRExpert.assess

    def flagged(self, image):
        probs, ood = real_assess(self, image)
        return probs, [{"score": 9.0, "threshold": 2.0, "flag": True} for _ in ood]

    replies = iter(["Let me first trigger <CXR()>.", "No abnormality."])
    monkeypatch.setattr(VisionLanguageModel, "generate", lambda self, messages, images=None, **kw: next(replies))
    monkeypatch.setattr(CXRExpert, "assess", flagged)
    at = _open_dx_study(studies, tiny_model, tiny_vlm, tmp_path, monkeypatch)
    at.text_input(key="vlm_question").set_value("Is there a pleural effusion?")
    next(b for b in at.button if b.label == "Ask").click().run()
    assert not at.exception, at.exception
    assert "No abnormality." in [t.value for t in at.text]
    assert any(w.value == "Caution from the CXR expert: this image is outside the expert's training distribution "
               "(OOD score 9.00 >= threshold 2.00); these predictions may be unreliable." for w in at.warning)
