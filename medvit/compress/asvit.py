"""As-ViT training-free scaling probes (Chen et al., ICLR'22; ``VITA-Group/AsViT`` ``ntk.py`` / ``teg.py``):
rank candidate ViT configurations at initialisation, without training.

- **Trainability** (:func:`ntk_condition_number`): κ = λ_max / λ_min of the empirical NTK Θ = J Jᵀ, J the
  per-sample gradients of the summed outputs with respect to all weights (B × P); lower is better; averaged over
  ``repeat`` random initialisations (As-ViT: 3).
- **Expressivity** (:func:`length_distortion`): inputs on a circle x(θ) = cos θ·u₁ + sin θ·u₂ (u₁, u₂ a random
  orthonormal 2-plane of the input space, 500 values of θ in [0, 2π)); LE = Σ_θ ‖∂f(x(θ))/∂θ‖ (forward-mode
  Jacobian-vector products), with every LayerNorm replaced by the identity; higher is better.
- :func:`rank_candidates` builds each candidate with ``create_model``, measures both and orders the candidates by
  the sum of their two ranks (As-ViT's search combines both, with a FLOPs constraint applied by the caller).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel


def _flat_grads(model: nn.Module, out: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    g = torch.autograd.grad(out, params, retain_graph=True, allow_unused=True)
    return torch.cat([(gi if gi is not None else torch.zeros_like(p)).flatten() for gi, p in zip(g, params,
                                                                                                 strict=True)])


def ntk_gram(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Empirical NTK Θ = J Jᵀ (B, B), J_b = ∂(Σ_k f_k(x_b))/∂θ; the model runs in train mode without dropout
    effects being averaged (As-ViT evaluates at initialisation)."""
    rows = []
    for b in range(x.shape[0]):
        out = model(x[b:b + 1]).sum()
        rows.append(_flat_grads(model, out).double())
    j = torch.stack(rows)
    return j @ j.T


def ntk_condition_number(factory: Callable[[], nn.Module], x: torch.Tensor, repeat: int = 3, seed: int = 0
                         ) -> float:
    """Mean over ``repeat`` initialisations (seeds seed..seed+repeat−1) of λ_max/λ_min of :func:`ntk_gram`.
    ``factory()`` builds a freshly initialised model. Returns ``inf`` when Θ is singular."""
    ks = []
    for r in range(repeat):
        torch.manual_seed(seed + r)
        m = factory()
        ev = torch.linalg.eigvalsh(ntk_gram(m, x))
        ks.append(float(ev[-1] / ev[0]) if ev[0] > 0 else math.inf)
    return sum(ks) / len(ks)


def _without_norms(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model)
    for name, mod in list(m.named_modules()):
        if isinstance(mod, nn.LayerNorm):
            parent, _, leaf = name.rpartition(".")
            setattr(m.get_submodule(parent) if parent else m, leaf, nn.Identity())
    return m


def length_distortion(model: nn.Module, input_shape: tuple[int, ...], n_points: int = 500, seed: int = 0,
                      radius: float | None = None) -> float:
    """LE = Σ_θ ‖∂f(x(θ))/∂θ‖ over ``n_points`` θ on a circle in a random 2-plane of the input space.

    input_shape: (C, *S) of one input; ``radius`` defaults to √(C·prod(S)) (inputs of unit RMS). LayerNorms are
    replaced by the identity (As-ViT). Forward-mode JVPs in chunks of 50 points."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(input_shape)
    u, _ = torch.linalg.qr(torch.randn(n, 2, generator=g))
    r = math.sqrt(n) if radius is None else radius
    m = _without_norms(model).eval()
    theta = torch.arange(n_points) * (2 * math.pi / n_points)
    total = 0.0
    for i in range(0, n_points, 50):
        t = theta[i:i + 50]
        x = (r * (t.cos()[:, None] * u[:, 0] + t.sin()[:, None] * u[:, 1])).reshape(len(t), *input_shape)
        dx = (r * (-t.sin()[:, None] * u[:, 0] + t.cos()[:, None] * u[:, 1])).reshape(len(t), *input_shape)
        # the math attention kernel: the fused CPU kernel has no forward-mode derivative
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            _, jvp = torch.func.jvp(m, (x,), (dx,))
        total += float(jvp.reshape(len(t), -1).norm(dim=1).sum())
    return total


def rank_candidates(candidates: list[dict[str, Any]], arch: str, x: torch.Tensor, repeat: int = 3,
                    n_points: int = 500) -> list[dict[str, Any]]:
    """Measure κ (lower better) and LE (higher better) for each candidate (``create_model(arch, **cand)``);
    return the candidates with ``ntk_cond``, ``length_distortion`` and ``rank`` (sum of both ranks; 0-based
    order = best first)."""
    from medvit.models import create_model

    rows = []
    for c in candidates:
        k = ntk_condition_number(lambda c=c: create_model(arch, **c), x, repeat)
        torch.manual_seed(0)
        le = length_distortion(create_model(arch, **c), tuple(x.shape[1:]), n_points)
        rows.append({**c, "ntk_cond": k, "length_distortion": le})
    by_k = sorted(range(len(rows)), key=lambda i: rows[i]["ntk_cond"])
    by_le = sorted(range(len(rows)), key=lambda i: -rows[i]["length_distortion"])
    for i, r in enumerate(rows):
        r["rank_score"] = by_k.index(i) + by_le.index(i)
    return sorted(rows, key=lambda r: r["rank_score"])
