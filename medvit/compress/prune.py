"""NViT global structural pruning (Yang et al., CVPR'23, arXiv 2110.04869) of a medvit ViT to a MAC budget.

- **Groups**: the heads of every block (q, k, v rows of ``qkv`` and the matching ``proj`` columns), the hidden
  units of every MLP (an ``fc1`` row and an ``fc2`` column) and the embedding dimensions (one channel of the patch
  embedding, CLS token, position table, every norm, every block's input/output projections and the head), all
  ranked together.
- **Hessian-aware saliency** (:func:`group_saliency`): ``I_S = Σ_batches (Σ_{w∈S} g_w·w)²`` — with the Fisher
  approximation of the Hessian (``H ≈ Σ_b g_b g_bᵀ``) this is ``w_Sᵀ H w_S``, the second-order loss change of
  removing S (NViT; exact normalisation `[verify]`).
- **Latency/FLOP-aware ranking**: NViT trades importance against the latency a group saves (a lookup table);
  medvit divides the saliency by the MACs the group saves (:mod:`medvit.nn.flops` formula) and removes the
  lowest ratio first until the model's analytic MACs fall under the budget (:func:`prune_to_budget`). At least
  one head and one MLP unit stay in every block; the kept embedding width stays a multiple of 4 (sin-cos
  position tables).
- **Result**: a :class:`~medvit.models.pruned.PrunedViT` (``vit_pruned``) whose ``model_args`` record the new
  shapes, so ``save_checkpoint`` / ``load_model`` handle it like any checkpoint. NViT then fine-tunes with
  distillation; that is a training run (``medvit finetune``), not part of this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class Saliency:
    """Per-group saliency: heads[b] (H_b,), mlp[b] (M_b,), embed (E,)."""

    heads: list[torch.Tensor]
    mlp: list[torch.Tensor]
    embed: torch.Tensor


def _check(model: nn.Module) -> None:
    from medvit.models.pruned import PrunedViT
    from medvit.models.vit import VisionTransformer

    if type(model) not in (VisionTransformer, PrunedViT):
        raise ValueError(f"NViT pruning handles the plain ViT (vit_*, vit_pruned), not {type(model).__name__}")
    if not hasattr(model, "arch_name"):
        raise ValueError("prune a model made by medvit.create_model / load_model (it records its arguments)")


def _gw(p: torch.Tensor | None) -> torch.Tensor | None:
    if p is None or p.grad is None:
        return None
    return (p.grad * p.detach()).double()


def _embed_terms(model: nn.Module) -> torch.Tensor:
    """Σ g·w per embedding channel over every parameter that has an embedding axis: (E,)."""
    e = model.embed_dim
    acc = torch.zeros(e, dtype=torch.float64)

    def add(t: torch.Tensor | None, axis: int) -> None:
        if t is not None:
            acc.add_(t.movedim(axis, 0).reshape(e, -1).sum(1))

    pe = model.patch_embed.proj
    add(_gw(pe.weight), 0), add(_gw(pe.bias), 0)
    for p in (model.cls_token, model.pos_embed):
        add(_gw(p), -1)
    for b in model.blocks:
        for n in (b.norm1, b.norm2):
            add(_gw(n.weight), 0), add(_gw(n.bias), 0)
        add(_gw(b.attn.qkv.weight), 1), add(_gw(b.attn.proj.weight), 0), add(_gw(b.attn.proj.bias), 0)
        add(_gw(b.mlp.fc1.weight), 1), add(_gw(b.mlp.fc2.weight), 0), add(_gw(b.mlp.fc2.bias), 0)
        for ls in (b.ls1, b.ls2):
            if hasattr(ls, "gamma"):
                add(_gw(ls.gamma), 0)
    for n in (model.norm, model.fc_norm):
        if isinstance(n, nn.LayerNorm):
            add(_gw(n.weight), 0), add(_gw(n.bias), 0)
    if isinstance(model.head, nn.Linear):
        add(_gw(model.head.weight), 1)
    return acc


def _head_terms(b: nn.Module) -> torch.Tensor:
    a = b.attn
    h, hd = a.num_heads, a.head_dim
    acc = _gw(a.qkv.weight).view(3, h, hd, -1).sum((0, 2, 3))
    if a.qkv.bias is not None:
        acc = acc + _gw(a.qkv.bias).view(3, h, hd).sum((0, 2))
    return acc + _gw(a.proj.weight).view(-1, h, hd).sum((0, 2))


def _mlp_terms(b: nn.Module) -> torch.Tensor:
    m = b.mlp
    return _gw(m.fc1.weight).sum(1) + _gw(m.fc1.bias) + _gw(m.fc2.weight).sum(0)


def group_saliency(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Saliency:
    """NViT saliency ``Σ_batches (Σ_{w∈S} g_w·w)²`` of every head, MLP unit and embedding channel.

    batches: (images (B, C, H, W), targets) pairs; ``loss_fn(logits, targets)`` the task loss (e.g. BCE with
    logits for multi-label). The model runs in eval mode (no dropout) with gradients; its parameters' ``.grad``
    are cleared afterwards. Raises ``ValueError`` for a model other than the plain ViT or no batches."""
    _check(model)
    was = model.training
    model.eval()
    req = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(True)
    heads = [torch.zeros(b.attn.num_heads, dtype=torch.float64) for b in model.blocks]
    mlp = [torch.zeros(b.mlp.fc1.out_features, dtype=torch.float64) for b in model.blocks]
    embed = torch.zeros(model.embed_dim, dtype=torch.float64)
    n = 0
    try:
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss_fn(model(x), y).backward()
            for i, b in enumerate(model.blocks):
                heads[i] += _head_terms(b) ** 2
                mlp[i] += _mlp_terms(b) ** 2
            embed += _embed_terms(model) ** 2
            n += 1
    finally:
        model.zero_grad(set_to_none=True)
        for name, p in model.named_parameters():
            p.requires_grad_(req[name])
        model.train(was)
    if not n:
        raise ValueError("group_saliency needs at least one batch")
    return Saliency(heads, mlp, embed)


# ---------------------------------------------------------------------------------------------- budget
def pruned_macs(embed_dim: int, heads: list[int], head_dim: int, mlp: list[int], num_tokens: int,
                in_chans: int, patch_size: tuple[int, ...], num_classes: int) -> int:
    """Analytic MACs (:mod:`medvit.nn.flops` conventions) of a ViT with per-block heads / MLP widths:
    Σ_b [4·N·E·H_b·hd + 2·N²·H_b·hd + 2·N·E·M_b] + patch embedding + head."""
    from medvit.nn.flops import patch_embed_macs

    n = num_tokens
    total = sum(4 * n * embed_dim * h * head_dim + 2 * n * n * h * head_dim + 2 * n * embed_dim * m
                for h, m in zip(heads, mlp, strict=True))
    npatch = n - 1  # the CLS token has no patch
    return int(total + patch_embed_macs(npatch, in_chans, patch_size, embed_dim) + embed_dim * num_classes)


@dataclass
class PrunePlan:
    """Kept indices: heads[b], mlp[b] (sorted), embed (sorted); MACs before/after (analytic)."""

    heads: list[list[int]]
    mlp: list[list[int]]
    embed: list[int]
    macs_dense: int
    macs_pruned: int
    requested_ratio: float | None = None  # the mac_ratio asked for (None: not recorded)

    @property
    def budget_met(self) -> bool:
        """Whether the pruned MACs are within the requested ratio (False when the floor of one head and one MLP
        unit per block and 4 embedding channels is above it)."""
        return self.requested_ratio is None or self.macs_pruned <= self.requested_ratio * self.macs_dense

    def to_dict(self) -> dict[str, Any]:
        return {"kept_heads": [len(h) for h in self.heads], "kept_mlp": [len(m) for m in self.mlp],
                "kept_embed": len(self.embed), "macs_dense": self.macs_dense, "macs_pruned": self.macs_pruned,
                "mac_ratio": self.macs_pruned / self.macs_dense, "requested_mac_ratio": self.requested_ratio,
                "budget_met": self.budget_met}


def plan_pruning(model: nn.Module, sal: Saliency, mac_ratio: float) -> PrunePlan:
    """Greedy global ranking by saliency / MACs saved until analytic MACs ≤ ``mac_ratio`` × dense.

    Raises ``ValueError`` for a ratio outside (0, 1]."""
    _check(model)
    if not 0 < mac_ratio <= 1:
        raise ValueError(f"mac_ratio must be in (0, 1], got {mac_ratio}")
    pe = model.patch_embed
    n = model.num_prefix_tokens + pe.num_patches
    hd = model.blocks[0].attn.head_dim
    heads = [list(range(b.attn.num_heads)) for b in model.blocks]
    mlp = [list(range(b.mlp.fc1.out_features)) for b in model.blocks]
    embed = list(range(model.embed_dim))
    k = model.num_classes

    def macs() -> int:
        return pruned_macs(len(embed), [len(h) for h in heads], hd, [len(m) for m in mlp], n, model.in_chans,
                           pe.patch_size, k)

    dense = macs()
    e = model.embed_dim
    cand: list[tuple[float, str, int, int]] = []
    for b, blk in enumerate(model.blocks):
        cost_h = 4 * n * e * hd + 2 * n * n * hd
        cand += [(float(sal.heads[b][j]) / cost_h, "head", b, j) for j in range(blk.attn.num_heads)]
        cand += [(float(sal.mlp[b][j]) / (2 * n * e), "mlp", b, j) for j in range(blk.mlp.fc1.out_features)]
    cost_e = sum(4 * n * b.attn.num_heads * hd + 2 * n * b.mlp.fc1.out_features for b in model.blocks)
    cand += [(float(sal.embed[j]) / cost_e, "embed", -1, j) for j in range(e)]
    cand.sort(key=lambda c: c[0])
    budget = mac_ratio * dense
    removed_embed: list[int] = []
    for _, kind, b, j in cand:
        if macs() <= budget:
            break
        if kind == "head" and len(heads[b]) > 1:
            heads[b].remove(j)
        elif kind == "mlp" and len(mlp[b]) > 1:
            mlp[b].remove(j)
        elif kind == "embed" and len(embed) > 4:
            embed.remove(j)
            removed_embed.append(j)
    while len(embed) % 4:  # sin-cos position tables need a multiple of 4: restore the most salient removed
        embed.append(removed_embed.pop())
    for _, kind, b, j in cand:  # the restored channels may lift MACs over the budget: heads / units make it up
        if macs() <= budget:
            break
        if kind == "head" and j in heads[b] and len(heads[b]) > 1:
            heads[b].remove(j)
        elif kind == "mlp" and j in mlp[b] and len(mlp[b]) > 1:
            mlp[b].remove(j)
    embed.sort()
    plan = PrunePlan(heads, mlp, embed, dense, macs(), mac_ratio)
    if not plan.budget_met:
        logger.warning("mac_ratio %.3g is not reachable: the smallest model this pruning keeps (one head and one "
                       "MLP unit per block, %d embedding channels) has %.3g of the dense MACs", mac_ratio, len(embed),
                       plan.macs_pruned / dense)
    return plan


def _slice(model: nn.Module, plan: PrunePlan) -> dict[str, torch.Tensor]:
    e = torch.tensor(plan.embed)
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    hd = model.blocks[0].attn.head_dim
    for name, t in sd.items():
        if name.startswith("blocks."):
            continue
        if name.startswith("patch_embed.proj."):
            out[name] = t[e]
        elif name in ("cls_token", "pos_embed"):
            out[name] = t[..., e]
        elif name.startswith(("norm.", "fc_norm.")):
            out[name] = t[e]
        elif name == "head.weight":
            out[name] = t[:, e]
        else:
            out[name] = t
    for i in range(len(plan.heads)):  # a plan may keep fewer blocks (elastic depth): later blocks are dropped
        blk = model.blocks[i]
        p = f"blocks.{i}."
        h_all = blk.attn.num_heads
        inner = torch.tensor([hh * hd + d for hh in plan.heads[i] for d in range(hd)])
        rows = torch.cat([part * h_all * hd + inner for part in range(3)])
        m = torch.tensor(plan.mlp[i])
        for k, t in sd.items():
            if not k.startswith(p):
                continue
            r = k[len(p):]
            if r in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "ls1.gamma", "ls2.gamma",
                     "attn.proj.bias", "mlp.fc2.bias"):
                out[k] = t[e]
            elif r == "attn.qkv.weight":
                out[k] = t[rows][:, e]
            elif r == "attn.qkv.bias":
                out[k] = t[rows]
            elif r == "attn.proj.weight":
                out[k] = t[e][:, inner]
            elif r == "mlp.fc1.weight":
                out[k] = t[m][:, e]
            elif r == "mlp.fc1.bias":
                out[k] = t[m]
            elif r == "mlp.fc2.weight":
                out[k] = t[e][:, m]
            else:
                raise ValueError(f"NViT slicing does not know parameter {k!r}")
    return {k: v.contiguous().clone() for k, v in out.items()}


def apply_plan(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """Build the ``vit_pruned`` model holding ``model``'s kept weights (its ``model_args`` record the shapes)."""
    from medvit.models import create_model
    from medvit.models.checkpoint import load_state_dict_checked

    _check(model)
    args = dict(model.model_args)
    args.update(embed_dim=len(plan.embed), depth=len(plan.heads), block_heads=[len(h) for h in plan.heads],
                head_dim=model.blocks[0].attn.head_dim, block_mlp=[len(m) for m in plan.mlp])
    args.pop("num_heads", None)
    pruned = create_model("vit_pruned", **args)
    load_state_dict_checked(pruned, _slice(model, plan), "NViT pruning")
    pruned.contract = getattr(model, "contract", None)
    return pruned.eval()


def prune_to_budget(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], mac_ratio: float = 0.5
                    ) -> tuple[nn.Module, PrunePlan]:
    """Saliency on ``batches``, plan to ``mac_ratio`` × dense MACs, slice: -> (pruned model, plan)."""
    sal = group_saliency(model, batches, loss_fn)
    plan = plan_pruning(model, sal, mac_ratio)
    logger.info("NViT: %s", plan.to_dict())
    return apply_plan(model, plan), plan
