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


@pytest.mark.parametrize("args, match", [
    # breaker33 B9: depth 1e9 built a billion blocks on the meta device (memory without bound); an integer larger
    # than the weights' element count is refused before anything is built
    ({"depth": 1_000_000_000}, r"config.json: model_args.depth is 1000000000, more than the [\d,]+ elements"),
    ({"embed_dim": 10**12}, r"config.json: model_args.embed_dim is 1000000000000"),
    # a depth within that bound: the meta build is stopped once it outgrows the file
    ({"depth": 200_000}, r"do not fit the weights: the config builds more than [\d,]+ (elements|modules)"),
    ({"img_size": -32}, r"config.json: model_args.img_size must be a positive int"),
    ({"patch_size": [16, 0]}, r"config.json: model_args.patch_size must be a positive int"),
    # value types by the constructor's annotations, before anything is built (review-fix D1)
    ({"mlp_ratio": "NaN"}, r"config.json: model_args.mlp_ratio: expected a number, got 'NaN'"),
    ({"drop_rate": "x"}, r"config.json: model_args.drop_rate: expected a number, got 'x'"),
])
def test_model_args_from_file_refused_fast_naming_the_key(tmp_path, args, match):
    model = make_model(tmp_path / "m")
    cfg = json.loads((model / "config.json").read_text())
    cfg["model_args"].update(args)
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match):
        load_model(model)


@pytest.mark.parametrize("names", [["A", "B", "C", "D", "E"], ["A"]])
def test_contract_label_count_must_match_the_head(tmp_path, names):
    # breaker33 B10: 5 (or 1) label names for a 3-output head loaded; only batch infer refused it later
    model = make_model(tmp_path / "m")
    cfg = json.loads((model / "config.json").read_text())
    cfg["contract"].update(label_names=names, thresholds=[0.5] * len(names))
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=rf"config.json: contract.label_names names {len(names)} labels but "
                                              r"the model has 3 outputs"):
        load_model(model)
    cfg["contract"].update(label_names=["A", "A ", "C"], thresholds=[0.5] * 3)
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"label_names' must not repeat a name .*'A' more than once"):
        load_model(model)


def test_empty_contract_label_list_on_a_classifier_is_refused_on_load(tmp_path):
    """stop-33 leftover: an empty label list on a 3-output head loaded (read as "no named outputs"); batch infer
    refused only later and the other load_model users (chat experts, viewer, export) would have had to repeat it.
    An empty list stays legal for an encoder without a head (num_classes 0: MAE / SSL encoders)."""
    import torch

    from medvit.models import WeightContract, create_model, save_checkpoint

    model = make_model(tmp_path / "m")
    cfg = json.loads((model / "config.json").read_text())
    cfg["contract"].update(label_names=[], thresholds=[])
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"m/config\.json: contract\.label_names is empty \(for an encoder "
                                              r"without a classification head, num_classes 0\) but the model has 3 "
                                              r"outputs"):
        load_model(model)
    torch.manual_seed(0)
    enc = create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=2,
                       in_chans=1, num_classes=0)
    out = save_checkpoint(enc, tmp_path / "enc", contract=WeightContract(in_chans=1, input_size=(32, 32)))
    assert load_model(out).contract.label_names == []


def _tiny(num_classes):
    import torch

    from medvit.models import create_model

    torch.manual_seed(0)
    return create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=2,
                        in_chans=1, num_classes=num_classes)


@pytest.mark.parametrize("names", [[], ["A", "B"], ["A", "B", "C", "D"]])
def test_save_checkpoint_refuses_a_label_list_load_model_would_refuse(tmp_path, names):
    """breaker34 B11: save_checkpoint wrote [] / 2 / 4 names for a 3-output head, load_model refused it later (a
    training run found out only when someone loaded its model). One rule (label_count_problem) on both sides."""
    from medvit.models import WeightContract, save_checkpoint

    with pytest.raises(CheckpointError, match=r"refusing to save checkpoint .*bad: contract\.label_names .* but the "
                                              r"model has 3 outputs"):
        save_checkpoint(_tiny(3), tmp_path / "bad", contract=WeightContract(in_chans=1, input_size=(32, 32),
                                                                            label_names=names))
    assert not (tmp_path / "bad").exists()  # nothing written
    good = save_checkpoint(_tiny(3), tmp_path / "good", contract=WeightContract(
        in_chans=1, input_size=(32, 32), label_names=["A", "B", "C"]))
    assert load_model(good).contract.label_names == ["A", "B", "C"]


def test_label_names_on_an_encoder_without_a_head_are_refused_on_save_and_load(tmp_path):
    """breaker34 B12: num_classes 0 with three label names saved and loaded silently (only `medvit infer` refused,
    saying "0 outputs but the contract names 0 labels" for a head-less encoder without names)."""
    from medvit.infer.predictor import load_for_inference
    from medvit.models import WeightContract, save_checkpoint

    named = WeightContract(in_chans=1, input_size=(32, 32), label_names=["A", "B", "C"])
    with pytest.raises(CheckpointError, match=r"contract\.label_names names 3 labels but the model has no "
                                              r"classification head \(model_args\.num_classes 0\)"):
        save_checkpoint(_tiny(0), tmp_path / "enc_named", contract=named)
    enc = save_checkpoint(_tiny(0), tmp_path / "enc", contract=WeightContract(in_chans=1, input_size=(32, 32)))
    with pytest.raises(ValueError, match=r"enc has no classification head \(num_classes 0"):
        load_for_inference(enc)
    cfg = json.loads((enc / "config.json").read_text())
    cfg["contract"].update(label_names=["A", "B", "C"], thresholds=[0.5] * 3)
    (enc / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"enc/config\.json: contract\.label_names names 3 labels but the model "
                                              r"has no classification head"):
        load_model(enc)


def test_meta_build_is_stopped_when_it_registers_far_more_modules_than_the_file_has_tensors():
    from torch import nn

    from medvit.models.verify import check_args_fit_weights

    with pytest.raises(CheckpointError, match=r"w.safetensors: .*the config builds more than 1,016 modules"):
        check_args_fit_weights(lambda: nn.Sequential(*[nn.Identity() for _ in range(100_000)]), {"w": (10,)},
                               "w.safetensors")
    assert check_args_fit_weights(lambda: nn.Linear(3, 2), {"weight": (2, 3), "bias": (2,)}, "w").weight.is_meta
