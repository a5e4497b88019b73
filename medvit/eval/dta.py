"""Downstream Transfer Attack (DTA, arXiv 2408.01705) as a robustness audit of models tuned from a public backbone.

With only the *pre-trained* backbone, PGD (ℓ∞ ball of radius ε, sign steps) crafts a perturbation δ that
minimises the average-token cosine similarity between the clean and the perturbed token representations at one
block ``l`` (:func:`dta_attack`); ``l`` is the backbone's most vulnerable block (:func:`most_vulnerable_layer`:
the lowest cosine after a short attack). The adversarial images are then fed to a downstream model fine-tuned (or
PEFT-tuned) from the same weights — which the attacker never queried — and :func:`transfer_report` compares its
loss and accuracy on clean images, on the attack, and on random ±ε sign noise of the same ℓ∞ norm.

Mechanism from the notes (``[paper, verify]``: the official code was not located).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def token_cosine(backbone: nn.Module, x: torch.Tensor, ref_tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """Average-token cosine similarity (B,) between block ``layer``'s tokens of ``x`` and ``ref_tokens`` (B, T, D)."""
    t = backbone.forward_intermediates(x, [layer], return_prefix_tokens=True)[0]
    return F.cosine_similarity(t, ref_tokens, dim=-1).mean(-1)


def dta_attack(backbone: nn.Module, x: torch.Tensor, eps: float, layer: int, steps: int = 10,
               step_size: float | None = None, clamp: tuple[float, float] | None = None, seed: int = 0
               ) -> tuple[torch.Tensor, dict[str, Any]]:
    """PGD on the backbone alone: minimise the clean/adversarial token cosine at block ``layer``.

    x: (B, C, *S) model inputs; eps: ℓ∞ radius in input units; ``step_size`` defaults to eps/4; random start in
    the ball; ``clamp`` keeps pixels in a valid range. Returns (x_adv, {"cosine": (B,) final cosine,
    "linf": max |δ|}). The backbone's parameters get no gradient; it runs in eval mode."""
    if eps <= 0 or steps < 1:
        raise ValueError(f"need eps > 0 and steps >= 1, got eps={eps}, steps={steps}")
    was = backbone.training
    backbone.eval()
    req = [p.requires_grad for p in backbone.parameters()]
    for p in backbone.parameters():
        p.requires_grad_(False)
    alpha = step_size or eps / 4
    g = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            ref = backbone.forward_intermediates(x, [layer], return_prefix_tokens=True)[0]
        delta = (torch.rand(x.shape, generator=g) * 2 - 1).to(x) * eps
        for _ in range(steps):
            delta.requires_grad_(True)
            xa = x + delta
            if clamp:
                xa = xa.clamp(*clamp)
            cos = token_cosine(backbone, xa, ref, layer)
            (grad,) = torch.autograd.grad(cos.sum(), delta)
            delta = (delta.detach() - alpha * grad.sign()).clamp(-eps, eps)
        x_adv = x + delta
        if clamp:
            x_adv = x_adv.clamp(*clamp)
        with torch.no_grad():
            cos = token_cosine(backbone, x_adv, ref, layer)
    finally:
        for p, r in zip(backbone.parameters(), req, strict=True):
            p.requires_grad_(r)
        backbone.train(was)
    return x_adv.detach(), {"cosine": cos, "linf": float((x_adv - x).abs().max())}


def most_vulnerable_layer(backbone: nn.Module, x: torch.Tensor, eps: float, layers: Sequence[int] | None = None,
                          steps: int = 3) -> tuple[int, dict[int, float]]:
    """The block whose tokens a short attack moves most (lowest mean cosine): (layer, {layer: mean cosine})."""
    layers = list(range(len(backbone.blocks))) if layers is None else list(layers)
    scores = {l: float(dta_attack(backbone, x, eps, l, steps)[1]["cosine"].mean()) for l in layers}
    return min(scores, key=scores.get), scores


@torch.no_grad()
def transfer_report(downstream: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, eps: float,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy, seed: int = 0,
                    clamp: tuple[float, float] | None = None, logits: dict[str, torch.Tensor] | None = None
                    ) -> dict[str, float]:
    """Loss and accuracy of a downstream classifier on clean images, on DTA images and on random ±eps sign noise
    (same ℓ∞ norm; ``clamp`` keeps it in the valid input range as the attack does). Single-label targets (B,)
    for accuracy; any ``loss_fn`` for the loss. When ``logits`` is a dict, the three (B, K) logit tensors are
    stored in it under "clean", "dta", "noise"."""
    was = downstream.training
    downstream.eval()
    g = torch.Generator().manual_seed(seed)
    noise = x + eps * (torch.randint(0, 2, x.shape, generator=g).to(x) * 2 - 1)
    if clamp:
        noise = noise.clamp(*clamp)
    out = {}
    for name, xx in (("clean", x), ("dta", x_adv), ("noise", noise)):
        z = downstream(xx)
        if logits is not None:
            logits[name] = z
        out[f"loss_{name}"] = float(loss_fn(z, y))
        if y.dim() == 1:
            out[f"acc_{name}"] = float((z.argmax(-1) == y).float().mean())
    if "acc_clean" in out:
        out["acc_drop_dta"] = out["acc_clean"] - out["acc_dta"]
    downstream.train(was)
    return out
