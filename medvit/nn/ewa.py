"""Experts Weights Averaging (EWA; Huang et al., "Experts Weights Averaging: A New General Training Scheme for Vision
Transformers", arXiv 2308.06093): a train-time MoE that is averaged back into the plain ViT.

- :func:`apply_ewa` replaces the MLP of chosen blocks by an :class:`EWAMoE` of ``n`` experts, each a copy of that
  MLP. Routing is a random uniform partition: the B·T tokens are shuffled and split into ``n`` equal chunks (sizes
  differ by at most one), one per expert; no router, no auxiliary loss.
- After every optimizer step each expert moves toward the others: ``W_i <- (1-β)·W_i + β·mean_{j≠i} W_j``
  (share rate β). This runs in :meth:`EWAMoE.on_train_step`, the training loop's per-step hook, which is called
  before each step — i.e. right after the previous optimizer step. The experts' mean is invariant under this
  update, so the last step's averaging does not change the converted model.
- :func:`convert_ewa` replaces every MoE by one ``Mlp`` holding the experts' mean weights: the model is again the
  ordinary registered backbone (same state-dict keys), saved and served as any checkpoint. In eval mode an
  :class:`EWAMoE` already computes that averaged MLP, so validation during training measures the converted model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from medvit.config import option
from medvit.nn.mlp import Mlp


@dataclass
class EWAConfig:
    """EWA settings of a fine-tuning run (``ewa: {experts: 4, share_rate: 0.3, layers: []}``; ``ewa: null`` = off)."""

    experts: int = option(4, "experts per MoE layer (n)")
    share_rate: float = option(0.3, "β of W_i <- (1-β)W_i + β·mean_{j≠i}W_j after each optimizer step")
    layers: list[int] = option(default_factory=list, help="block indices whose MLP becomes an MoE; empty = every "
                                                          "other block (1, 3, 5, ...)")

    def __post_init__(self) -> None:
        if self.experts < 2:
            raise ValueError(f"ewa.experts must be >= 2, got {self.experts}")
        if not 0.0 <= self.share_rate <= 1.0:
            raise ValueError(f"ewa.share_rate must be in [0, 1], got {self.share_rate}")


def random_partition(num_tokens: int, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Shuffle token positions ``0..num_tokens-1`` and split them into ``n`` disjoint chunks covering all tokens,
    of sizes ``num_tokens // n`` or one more (the first ``num_tokens % n`` chunks)."""
    perm = torch.randperm(num_tokens, generator=generator, device=device)
    return list(torch.tensor_split(perm, n))


class EWAMoE(nn.Module):
    """``n`` expert MLPs with random uniform token partition: (B, T, D) -> (B, T, D).

    Training: every token goes through exactly one expert (:func:`random_partition`, torch's global generator).
    Eval: the MLP with the experts' mean weights (what :func:`convert_ewa` produces).
    """

    def __init__(self, mlp: Mlp, n: int = 4, share_rate: float = 0.3):
        super().__init__()
        if n < 2:
            raise ValueError(f"EWA needs n >= 2 experts, got {n}")
        self.experts = nn.ModuleList([copy.deepcopy(mlp) for _ in range(n)])
        self.n, self.share_rate = n, float(share_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return torch.func.functional_call(self.experts[0], self.mean_state(), (x,))
        flat = x.reshape(-1, x.shape[-1])
        out = torch.empty_like(flat)
        for expert, idx in zip(self.experts, random_partition(flat.shape[0], self.n, device=x.device)):
            out[idx] = expert(flat[idx]).to(out.dtype)
        return out.reshape(x.shape)

    def mean_state(self) -> dict[str, torch.Tensor]:
        """The experts' element-wise mean parameters (expert-0 names: fc1.weight, ...)."""
        states = [dict(e.named_parameters()) for e in self.experts]
        return {k: torch.stack([s[k] for s in states]).mean(0) for k in states[0]}

    @torch.no_grad()
    def average_experts(self) -> None:
        """``W_i <- (1-β)·W_i + β·mean_{j≠i} W_j`` for every parameter (all experts at once)."""
        b, n = self.share_rate, self.n
        for group in zip(*(e.parameters() for e in self.experts)):
            total = torch.stack(list(group)).sum(0)
            for p in group:
                p.copy_((1 - b) * p + b * (total - p) / (n - 1))

    def on_train_step(self, step: int, total_steps: int) -> None:
        """Loop hook before step ``step``: average the experts updated by the previous optimizer step."""
        if step > 0 and self.training:
            self.average_experts()

    def to_mlp(self) -> Mlp:
        """One MLP with the experts' mean weights (a copy of expert 0's structure)."""
        mlp = copy.deepcopy(self.experts[0])
        with torch.no_grad():
            for k, v in self.mean_state().items():
                mlp.get_parameter(k).copy_(v)
        return mlp

    def extra_repr(self) -> str:
        return f"experts={self.n}, share_rate={self.share_rate}"


def ewa_layers(depth: int, layers: list[int] | None = None) -> list[int]:
    """The block indices to convert: ``layers`` (checked) or every other block 1, 3, 5, ..."""
    chosen = list(range(1, depth, 2)) if not layers else sorted(set(layers))
    bad = [i for i in chosen if not 0 <= i < depth]
    if bad:
        raise ValueError(f"ewa.layers {bad} outside the model's blocks 0..{depth - 1}")
    return chosen


def apply_ewa(model: nn.Module, experts: int = 4, share_rate: float = 0.3,
              layers: list[int] | None = None) -> list[int]:
    """Replace ``model.blocks[i].mlp`` by an :class:`EWAMoE` for the chosen blocks; returns their indices.
    ValueError when the model has no ``blocks`` with ``mlp`` modules."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or not all(hasattr(b, "mlp") for b in blocks):
        raise ValueError(f"EWA needs a ViT whose blocks have an mlp; {type(model).__name__} has none")
    chosen = ewa_layers(len(blocks), layers)
    for i in chosen:
        if isinstance(blocks[i].mlp, EWAMoE):
            raise ValueError(f"block {i} already has an EWA MoE")
        blocks[i].mlp = EWAMoE(blocks[i].mlp, experts, share_rate)
    return chosen


def convert_ewa(model: nn.Module) -> int:
    """Replace every :class:`EWAMoE` in ``model`` by its averaged MLP, in place; returns how many were converted."""
    count = 0
    for name, mod in list(model.named_modules()):
        if isinstance(mod, EWAMoE):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], mod.to_mlp())
            count += 1
    return count
