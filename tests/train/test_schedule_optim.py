"""Schedules are pure functions matching the reference formulas; groups follow the BEiT layer-decay rule."""

from __future__ import annotations

import math

import pytest
import torch

from medvit.models import create_model
from medvit.train import build_optimizer, layer_ids, param_groups, scaled_lr, warmup_cosine_lr
from medvit.train.config import TrainConfig


def test_warmup_cosine_reference_formula():
    lr, w, T, mn = 1e-3, 5, 75, 1e-5
    for s in [0, 1, 2.5, 4.99]:
        assert warmup_cosine_lr(s, lr, T, w, mn) == pytest.approx(lr * s / w)
    for s in [5, 10, 40, 74.5]:
        ref = mn + (lr - mn) * 0.5 * (1 + math.cos(math.pi * (s - w) / (T - w)))
        assert warmup_cosine_lr(s, lr, T, w, mn) == pytest.approx(ref)
    assert warmup_cosine_lr(T, lr, T, w, mn) == pytest.approx(mn)
    assert warmup_cosine_lr(w, lr, T, w, mn) == pytest.approx(lr)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine_lr(0, lr, 10, 11)


def test_scaled_lr():
    assert scaled_lr(1.5e-4, 2048) == pytest.approx(1.2e-3)
    assert scaled_lr(2.5e-4, 1024) == pytest.approx(1e-3)


def test_layer_decay_follows_beit_rule():
    m = create_model("vit_small_patch16_224", embed_dim=48, depth=3, num_heads=4, img_size=32, num_classes=5,
                     global_pool="avg")
    groups = param_groups(m, weight_decay=0.05, layer_decay=0.5)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    num_layers = 3 + 1
    assert scale["patch_embed.proj.weight"] == pytest.approx(0.5**num_layers)
    assert scale["cls_token"] == pytest.approx(0.5**num_layers)
    assert scale["blocks.0.attn.qkv.weight"] == pytest.approx(0.5**3)
    assert scale["blocks.2.mlp.fc1.weight"] == pytest.approx(0.5**1)
    assert scale["head.weight"] == 1.0 and scale["fc_norm.weight"] == 1.0
    assert wd["blocks.0.attn.qkv.weight"] == 0.05 and wd["blocks.0.attn.qkv.bias"] == 0.0
    assert wd["cls_token"] == 0.0 and wd["blocks.1.norm1.weight"] == 0.0 and wd["head.weight"] == 0.05
    assert "pos_embed" in wd and wd["pos_embed"] == 0.0
    ids, n = layer_ids(list(scale), m.group_matcher())
    assert n == num_layers and ids["blocks.1.norm2.bias"] == 2


def test_groups_only_trainable_and_without_layer_decay():
    m = create_model("vit_small_patch16_224", embed_dim=48, depth=2, num_heads=4, img_size=32, num_classes=2)
    for n, p in m.named_parameters():
        p.requires_grad = n.startswith("head")
    groups = param_groups(m, 0.1, layer_decay=None)
    names = sorted(n for g in groups for n in g["param_names"])
    assert names == ["head.bias", "head.weight"]
    assert all(g["lr_scale"] == 1.0 for g in groups)
    opt = build_optimizer(groups, lr=1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == 2
    for p in m.parameters():
        p.requires_grad = False
    with pytest.raises(ValueError, match="no trainable"):
        param_groups(m)


@pytest.mark.parametrize(
    "kw, key",
    [({"batch_size": 0}, "batch_size"), ({"precision": "fp16"}, "precision"), ({"layer_decay": 1.5}, "layer_decay"),
     ({"clip_grad": 0.0}, "clip_grad"), ({"betas": (0.9, 1.0)}, "betas")],
)
def test_train_config_rejects(kw, key):
    with pytest.raises(ValueError, match=key):
        TrainConfig(**kw)


def test_finite_params_after_optimizer_groups_step():
    m = torch.nn.Linear(3, 2)
    opt = build_optimizer(param_groups(m, 0.05), lr=0.1)
    m(torch.ones(1, 3)).sum().backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in m.parameters())
