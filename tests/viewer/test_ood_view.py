"""The viewer shows the model's out-of-distribution flag next to the findings."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

APP = str(Path(__file__).resolve().parents[2] / "apps" / "viewer" / "app.py")


def _model_with_reference(out: Path, threshold: float) -> Path:
    """A tiny classifier with an OOD reference fitted on phantoms; ``threshold`` replaces the fitted one so the
    flag state on the test images is known (this tests the display, test_ood.py tests the detection)."""
    import torch

    import medvit
    from medvit.data import build_dataset
    from medvit.data.augment import build_contract_eval_transform
    from medvit.eval.predict import cache_dataset
    from medvit.models import WeightContract, save_checkpoint
    from medvit.tasks.finetune_multilabel import fit_ood
    from tests.viewer.conftest import LABELS

    torch.manual_seed(0)
    m = medvit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=48, depth=2, num_heads=4,
                            in_chans=1, num_classes=len(LABELS)).eval()
    c = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.5,), std=(0.25,), label_names=list(LABELS),
                       modalities=["DX", "CR"], name="ood-view", version="1")
    tf = build_contract_eval_transform(c)
    ds = cache_dataset(build_dataset("cxr_phantom", "all", n=40, seed=0, image_size=32), tf, keys=("image",))
    c.ood = {**fit_ood(m, ds, ds, None, tf, 0.1, 100, 40, "cpu", out), "threshold": threshold}
    return save_checkpoint(m, out, contract=c)


@pytest.mark.parametrize("threshold, flagged", [(0.0, True), (1e9, False)])
def test_findings_show_the_ood_flag(studies, tmp_path, monkeypatch, threshold, flagged):
    from streamlit.testing.v1 import AppTest

    model = _model_with_reference(tmp_path / "model", threshold)
    monkeypatch.setenv("MEDVIT_VIEWER_DATA", str(studies))
    monkeypatch.setenv("MEDVIT_VIEWER_MODEL", str(model))
    monkeypatch.setenv("MEDVIT_VIEWER_RESULTS", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.selectbox(key="study_idx").set_value(1).run()
    next(b for b in at.button if "CHEST PA" in b.label).click().run()
    at.button(key="run_model").click().run()
    assert not at.exception, at.exception
    warnings = [w.value for w in at.warning]
    captions = [c.value for c in at.caption]
    assert any("Out of distribution" in w for w in warnings) == flagged
    assert any(c.startswith("In distribution") for c in captions) == (not flagged)
