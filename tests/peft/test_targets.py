"""Target-module resolution and bad input: unknown method, target matching nothing, rank too large."""

from __future__ import annotations

import re

import pytest

from medvit.config import ConfigError
from medvit.peft import apply_peft, resolve_targets
from medvit.peft.hf import adapter_layers
from tests.peft.conftest import make_base


@pytest.mark.parametrize(
    "targets, expected",
    [
        ("attention", ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.attn.qkv", "blocks.1.attn.proj"]),
        ("mlp", ["blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2"]),
        (["qkv"], ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]),
        (["blocks.1.mlp.fc2", "head"], ["blocks.1.mlp.fc2", "head"]),
        (["re:blocks\\.0\\.attn\\..*"], ["blocks.0.attn.qkv", "blocks.0.attn.proj"]),
    ],
)
def test_resolve_targets(targets, expected):
    assert sorted(resolve_targets(make_base(), targets)) == sorted(expected)


def test_all_linear_excludes_head_and_layers_restrict():
    names = resolve_targets(make_base(), "all-linear")
    assert len(names) == 8 and "head" not in names
    assert resolve_targets(make_base(), "attention", layers=[-1]) == ["blocks.1.attn.qkv", "blocks.1.attn.proj"]


@pytest.mark.parametrize("method", ["lora", "loha", "lokr", "ia3", "adalora", "oft", "vera"])
def test_library_methods_match_at_least_one_module(method):
    cfg = {"targets": ["attention"]}
    if method == "adalora":
        cfg.update(total_step=10)
    if method in ("lora", "vera", "loha", "lokr"):
        cfg.update(r=2)
    if method == "ia3":
        cfg.update(feedforward=[])
    if method == "oft":
        cfg.update(block_size=8)
    model = apply_peft(make_base(), method, cfg)
    layers = adapter_layers(model)
    assert len(layers) >= 1
    assert set(layers) == {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.attn.qkv", "blocks.1.attn.proj"}


def test_unknown_method_named():
    with pytest.raises(KeyError, match="unknown peft 'lorra'.*did you mean 'lora'"):
        apply_peft(make_base(), "lorra")


@pytest.mark.parametrize("targets", [["query", "value"], ["q_proj"], ["re:encoder\\.layer\\..*"]])
def test_target_matching_nothing_is_named(targets):
    with pytest.raises(ValueError, match=re.escape(f"target module {targets[0]!r} matches no nn.Linear")):
        apply_peft(make_base(), "lora", {"targets": targets, "r": 2})


@pytest.mark.parametrize(
    "method, cfg, match",
    [
        ("lora", {"r": 49}, r"r=49 is larger than the width of layer 'blocks.0.attn.qkv'"),
        ("loha", {"r": 64}, r"r=64 is larger than the width of layer"),
        ("lokr", {"r": 100}, r"r=100 is larger than the width of layer"),
        ("vera", {"r": 64}, r"r=64 is larger than the width of layer"),
        ("adalora", {"init_r": 49, "target_r": 2, "total_step": 5}, r"init_r=49 is larger than the width"),
        ("oft", {"block_size": 7}, r"block_size=7 does not divide the width of layer 'blocks.0.attn.qkv'"),
        ("dvpt", {"rank": 100}, r"rank=100 is larger than the embedding width D=48"),
    ],
)
def test_rank_larger_than_layer_width_is_named(method, cfg, match):
    with pytest.raises(ValueError, match=match):
        apply_peft(make_base(), method, cfg)


@pytest.mark.parametrize(
    "method, cfg, exc, match",
    [
        ("lora", {"rank": 4}, ConfigError, "unknown config key 'peft.lora.rank'.*valid keys.*, r, "),
        ("lora", {"r": 0}, ConfigError, "r must be >= 1"),
        ("adalora", {}, ValueError, "total_step is required"),
        ("adalora", {"total_step": 4, "tinit": 2, "tfinal": 2}, ConfigError, "must be < total_step"),
        ("ia3", {"targets": ["attention"], "feedforward": ["mlp.fc2"]}, ValueError, "not among the targets"),
        ("vpt_shallow", {"layers": [1]}, ValueError, "'layers' applies to vpt_deep"),
        ("vpt_deep", {"num_prompts": 0}, ConfigError, "num_prompts must be >= 1"),
        ("linear", {"train_head": False}, ConfigError, "would train nothing"),
        ("lora", {"extra_trainable": ["nonexistent"], "r": 2}, ValueError, "'nonexistent' matches no backbone param"),
    ],
)
def test_bad_configs_are_named(method, cfg, exc, match):
    with pytest.raises(exc, match=match):
        apply_peft(make_base(), method, cfg)


def test_extra_trainable_and_head_off():
    m = apply_peft(make_base(), "lora", {"r": 2, "train_head": False, "extra_trainable": [r"^norm\."]})
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert {"norm.weight", "norm.bias"} <= trainable
    assert not any(n.startswith("head.") for n in trainable)
