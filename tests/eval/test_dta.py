"""DTA: a PGD crafted on the pre-trained backbone alone (token cosine at one block) raises the loss of a model
fine-tuned from that backbone more than random noise of the same ℓ∞ norm."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import medvit
from medvit.eval.dta import dta_attack, most_vulnerable_layer, transfer_report


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.5 * torch.randn(n, 1, 16, 16, generator=g)
    x[y == 0, :, :8] += 1.0  # class-specific bright halves
    x[y == 1, :, 8:] += 1.0
    return x, y


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    backbone = medvit.create_model("vit_small_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=3,
                                   num_heads=4, in_chans=1, num_classes=0).eval()
    tuned = copy.deepcopy(backbone)
    tuned.reset_classifier(3)
    opt = torch.optim.AdamW(tuned.parameters(), lr=3e-3)
    x, y = data(240, 0)
    tuned.train()
    for i in range(0, 240, 16):  # a brief full fine-tune of the downstream copy
        opt.zero_grad()
        F.cross_entropy(tuned(x[i:i + 16]), y[i:i + 16]).backward()
        opt.step()
    return backbone, tuned.eval()


def test_attack_lowers_token_cosine_within_the_ball(pair):
    backbone, _ = pair
    x, _ = data(16, 1)
    eps = 0.5  # input units (images have sd ≈ 0.5)
    x_adv, info = dta_attack(backbone, x, eps, layer=2, steps=10)
    assert info["linf"] <= eps + 1e-6
    assert float(info["cosine"].mean()) < 0.5
    assert all(p.grad is None for p in backbone.parameters())


def test_dta_raises_downstream_loss_more_than_noise(pair):
    backbone, tuned = pair
    x, y = data(48, 2)
    eps = 0.5
    layer, scores = most_vulnerable_layer(backbone, x[:8], eps, steps=2)
    assert set(scores) == {0, 1, 2} and scores[layer] == min(scores.values())
    x_adv, _ = dta_attack(backbone, x, eps, layer=layer, steps=10)
    rep = transfer_report(tuned, x, y, x_adv, eps)
    assert rep["loss_dta"] > rep["loss_noise"] and rep["loss_dta"] > rep["loss_clean"]
    assert rep["acc_dta"] <= rep["acc_clean"]


def test_bad_arguments():
    m = medvit.create_model("vit_small_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=4,
                            in_chans=1, num_classes=0)
    with pytest.raises(ValueError, match="eps"):
        dta_attack(m, torch.zeros(1, 1, 16, 16), 0.0, 0)
