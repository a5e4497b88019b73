"""Weights are hashed at load; a swapped model.safetensors is refused; the computed hash is reported; oversized
model_args are refused before anything is allocated (SECURITY.md §2, §4)."""

from __future__ import annotations

import json
import shutil

import pytest

from medvit.infer import InferConfig, run_inference
from medvit.infer.outputs import StateMismatchError
from medvit.models import load_model
from medvit.models.checkpoint import CheckpointError, sha256_file
from medvit.models.verify import WeightsMismatchError
from tests.infer.helpers import make_model, make_studies


def test_swapped_weights_are_refused_naming_both_hashes(tmp_path):
    a = make_model(tmp_path / "a", seed=0)
    b = make_model(tmp_path / "b", seed=1)
    recorded = json.loads((a / "config.json").read_text())["sha256"]
    shutil.copy(b / "model.safetensors", a / "model.safetensors")  # same shapes, other weights
    swapped = sha256_file(a / "model.safetensors")
    with pytest.raises(WeightsMismatchError) as e:
        load_model(a)
    assert recorded in str(e.value) and swapped in str(e.value)
    inp = tmp_path / "in"
    make_studies(inp, n_studies=1, per_study=1)
    with pytest.raises(WeightsMismatchError):
        run_inference(InferConfig(str(a), str(inp), str(tmp_path / "out"), workers=0, progress=False))
    assert not (tmp_path / "out").exists()  # nothing written for a refused model


def test_computed_hash_is_reported_and_guards_resume(tmp_path):
    model = make_model(tmp_path / "m", seed=0)
    cfg = json.loads((model / "config.json").read_text())
    del cfg["sha256"]  # an older checkpoint without a recorded hash: the computed one is reported
    (model / "config.json").write_text(json.dumps(cfg))
    true_sha = sha256_file(model / "model.safetensors")
    inp = tmp_path / "in"
    make_studies(inp, n_studies=1, per_study=2)
    out = tmp_path / "out"
    run_inference(InferConfig(str(model), str(inp), str(out), workers=0, sr=True, progress=False))
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["model"]["sha256"] == true_sha
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(r["model"]["sha256"] == true_sha for r in rows)
    state = json.loads((out / ".medvit-infer" / "state.json").read_text())
    assert state["model_sha256"] == true_sha
    import pydicom

    sr = pydicom.dcmread(next((out / "sr").glob("*.dcm")))
    assert any(true_sha[:56] in str(e.value) for e in sr.iterall() if e.VR in ("LO", "UT", "ST", "LT"))
    # weights and config swapped together: a resume into the same OUTPUT refuses to mix two models
    other = make_model(tmp_path / "other", seed=3)
    shutil.copy(other / "model.safetensors", model / "model.safetensors")
    shutil.copy(other / "config.json", model / "config.json")
    before = (out / "predictions.jsonl").read_bytes()
    with pytest.raises(StateMismatchError, match="model_sha256"):
        run_inference(InferConfig(str(model), str(inp), str(out), workers=0, progress=False))
    assert (out / "predictions.jsonl").read_bytes() == before  # nothing already done is lost


def test_huge_model_args_refused_before_allocation(tmp_path):
    model = make_model(tmp_path / "m")
    cfg = json.loads((model / "config.json").read_text())
    cfg["model_args"].update(embed_dim=4_000_000, num_heads=4, depth=64)  # ~10^15 elements if built
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not fit the weights"):
        load_model(model)
