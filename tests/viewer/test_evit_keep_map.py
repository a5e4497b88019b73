"""The EViT kept-token overlay in the viewer: shown for an EViT checkpoint, absent for a plain ViT."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.viewer.conftest import LABELS

APP = str(Path(__file__).resolve().parents[2] / "apps" / "viewer" / "app.py")


@pytest.fixture(scope="module")
def evit_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-block EViT (r = 0.5 at blocks 1, 2, 3) on 32x32 single-channel input with 8x8 patches of 4 px."""
    import torch

    from medvit.models import WeightContract, create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("evit_tiny_patch16_224", img_size=32, patch_size=4, embed_dim=48, depth=4, num_heads=4,
                         in_chans=1, num_classes=len(LABELS), keep_rate=0.5, keep_locs=(1, 2, 3))
    contract = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.5,), std=(0.25,), label_names=LABELS,
                              thresholds=[0.5, 0.4, 0.6], modalities=["DX", "CR"], version="test-1",
                              research_only=True, source="tests/viewer")
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny_evit", contract=contract)


def _app(studies: Path, model: Path, tmp_path: Path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MEDVIT_VIEWER_DATA", str(studies))
    monkeypatch.setenv("MEDVIT_VIEWER_MODEL", str(model))
    monkeypatch.setenv("MEDVIT_VIEWER_RESULTS", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    at.selectbox(key="study_idx").set_value(1).run()
    next(b for b in at.button if "CHEST PA" in b.label).click().run()
    at.button(key="run_model").click().run()
    assert not at.exception, at.exception
    return at


def _captions(at) -> list[str]:
    return [c.value for c in at.caption]


def test_viewer_shows_the_kept_token_map_for_an_evit_checkpoint(studies, evit_model, tmp_path, monkeypatch):
    import torch

    from apps.viewer import cache
    from medvit.infer.predictor import load_for_inference
    from medvit.infer.preprocess import Preprocessor
    from medvit.io import read_image

    at = _app(studies, evit_model, tmp_path, monkeypatch)
    assert "evit_keep" in [t.key for t in at.toggle]
    at.toggle(key="evit_keep").set_value(True).run()
    assert not at.exception, at.exception
    # the counts shown are the model's: 64 patches -> 32 -> 16(+fused) ... read from the same bookkeeping
    path = str(studies / "a" / "img1.dcm")
    model, contract, _ = load_for_inference(evit_model)
    pre = Preprocessor.from_contract(contract)
    x, notes, _ = pre(read_image(path))
    stages = model.keep_stage_map(torch.from_numpy(x[None]))[0]
    alive = [int((stages > s).sum()) for s in range(3)]
    assert alive[0] == 32 and alive[0] >= alive[1] >= alive[2] > 0
    text = " ".join(_captions(at))
    assert "Patches kept after each stage: " + " → ".join(map(str, alive)) in text
    assert any("kept-token map (EViT)" in c and "zoom" in c for c in _captions(at))  # the view says what it shows
    heat, got_alive = cache.keep_map(str(evit_model), cache.load_model(str(evit_model)).info.sha256, path,
                                     cache.mtime(path), None)
    assert got_alive == alive and heat.shape == (96, 80)
    # every level 0..3 of survival is on the map (values = stages survived / 3)
    assert set(np.unique(np.round(heat * 3)).tolist()) >= {0.0, 3.0}
    at.toggle(key="evit_keep").set_value(False).run()
    assert not any("kept-token map" in c for c in _captions(at))


def test_viewer_offers_no_kept_token_map_for_a_plain_vit(studies, tiny_model, tmp_path, monkeypatch):
    at = _app(studies, tiny_model, tmp_path, monkeypatch)
    assert "evit_keep" not in [t.key for t in at.toggle]
    assert not any("Kept-token map" in c for c in _captions(at))
    assert "heat_target" in [s.key for s in at.selectbox]  # the heatmap controls are there
