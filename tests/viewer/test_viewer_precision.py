"""The viewer runs a model through the predictor and precision `medvit infer` uses by default, so a reader sees the
probabilities the batch run writes (before: the viewer predicted in fp32 while `auto` ran bf16 on bf16 CPUs)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def native_bf16(monkeypatch):
    """`auto` resolves to bf16 whatever this CPU is (the flag read by medvit.nn.precision.resolve_precision,
    which medvit.infer.fastpath re-exports)."""
    from medvit.nn import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)


def test_viewer_predicts_as_medvit_infer_and_says_at_which_precision(studies, tiny_model, tmp_path, native_bf16):
    from apps.viewer import cache
    from medvit.infer import InferConfig, run_inference

    image = studies / "a" / "img1.dcm"
    out = tmp_path / "infer"
    run_inference(InferConfig(model=str(tiny_model), input=str(image), output=str(out), workers=0))
    (rec,) = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    run = json.loads((out / "run.json").read_text())
    assert run["execution"]["precision"] == "bf16"

    cache.load_model.clear()
    cache.predict.clear()
    lm = cache.load_model(str(tiny_model))
    assert (lm.predictor.precision, lm.predictor.precision_reason) == ("bf16", "auto: CPU has native bf16 "
                                                                               "(AVX512-BF16/AMX)")
    assert next(lm.model.parameters()).dtype.is_floating_point and next(lm.model.parameters()).dtype != \
        __import__("torch").bfloat16  # heatmaps keep the fp32 module (gradients)
    res = cache.predict(str(tiny_model), lm.info.sha256, str(image), cache.mtime(image), None)
    assert res["precision"] == "bf16"
    assert res["probabilities"] == pytest.approx([rec["probabilities"][k] for k in lm.contract.label_names],
                                                 abs=1e-6)
    from apps.viewer.findings_panel import _model_text

    assert "runs in bf16 as `medvit infer`" in _model_text(lm)
    cache.load_model.clear()
    cache.predict.clear()


def test_infer_command_default_is_the_shared_default():
    """`medvit infer --precision` keeps a literal default (the parser is built without importing torch)."""
    from medvit.cli.main import build_parser
    from medvit.infer.fastpath import DEFAULT_PRECISION, PRECISIONS

    sub = next(a for a in build_parser()._actions if a.dest == "command" or getattr(a, "choices", None)
               and "infer" in (a.choices or {}))
    infer = sub.choices["infer"]
    opt = next(a for a in infer._actions if a.dest == "precision")
    assert opt.default == DEFAULT_PRECISION and tuple(opt.choices) == PRECISIONS
