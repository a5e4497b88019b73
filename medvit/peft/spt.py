"""SPT: sensitivity-aware visual parameter-efficient fine-tuning (He et al., ICCV'23).

Three steps, the first two before training (general-vision notes, entry 20; ``ziplab/SPT`` ``engine.py``):

1. :func:`spt_sensitivity` — ``s(w) = Σ_batches (∂L/∂w)²`` for every entry of the candidate weight
   matrices (the targeted ``nn.Linear`` layers of the blocks), over a few batches of downstream data;
2. :func:`spt_allocate` — global top-τ of ``s`` over all candidate entries; a matrix with at least
   ``cost_lora / structured_alpha`` sensitive entries gets **structured** tuning (LoRA of rank ``r``
   through the huggingface ``peft`` library, cost ``r·(in + out)``), the others get **unstructured**
   tuning of exactly their sensitive entries; τ is searched so the total trainable count fits ``budget``;
3. the plan is applied as the registered PEFT method ``"spt"`` (:func:`apply_spt` does 1–3; the
   ``prompt_tune`` task calls it when the method config gives a ``budget`` and no plan).

Unstructured tuning is a sparse delta, not a gradient mask on the dense weight: the layer computes
``W' = W.flatten().index_add(0, idx, values)`` with ``W`` frozen, ``idx`` (persistent int64 buffer) the
selected flat indices and ``values`` (zero-initialised) the only trained tensor. Under SGD this equals
masking the gradient; unlike a mask it also keeps unselected entries bit-exact under AdamW's decoupled
weight decay (which moves every entry of a parameter whatever its gradient), and the adapter checkpoint
stores ``k`` values + ``k`` indices instead of the whole matrix.

Not implemented: SPT's vector rule (norm / bias vectors tuned whole when ``≥ size/β`` entries are
sensitive) and the adapter (instead of LoRA) structured variant. The fused ``qkv`` projection of medvit's
ViT is one candidate matrix (the paper's q, k, v are three).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvit.config import option
from medvit.peft.base import MethodConfig, apply_peft, register_method
from medvit.peft.targets import linear_layers, resolve_targets

logger = logging.getLogger(__name__)


class SparseDeltaLinear(nn.Module):
    """``nn.Linear`` whose weight entries at ``spt_index`` are shifted by trained ``spt_values``.

    ``base_layer`` is the original (frozen) linear; ``spt_index`` (k,) int64 flat indices into the
    (out, in) weight, ``spt_values`` (k,) trained deltas (zero at start: output = base output exactly).
    Input (..., in) → output (..., out).
    """

    def __init__(self, base: nn.Linear, k: int) -> None:
        super().__init__()
        n = base.weight.numel()
        if not 1 <= k <= n:
            raise ValueError(f"number of tuned entries k={k} must be in [1, {n}] (weight {tuple(base.weight.shape)})")
        self.base_layer = base
        # placeholder selection (the first k entries); spt_allocate / apply_spt write the sensitive ones
        self.register_buffer("spt_index", torch.arange(k, dtype=torch.long, device=base.weight.device))
        self.spt_values = nn.Parameter(torch.zeros(k, dtype=base.weight.dtype, device=base.weight.device))

    def effective_weight(self) -> torch.Tensor:
        """The weight the layer applies: base weight with the tuned entries shifted, shape (out, in)."""
        w = self.base_layer.weight
        return w.flatten().index_add(0, self.spt_index, self.spt_values).view_as(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.base_layer.bias)


@dataclass
class SPTConfig(MethodConfig):
    """An SPT allocation: which matrices get LoRA, which get unstructured tuning of how many entries.

    Usually written by :func:`spt_allocate`; the selected indices themselves are tensors saved in the
    adapter checkpoint (buffers ``*.spt_index``), not config values.
    """

    lora_targets: list[str] = option(default_factory=list, help="module names adapted with LoRA (structured)")
    sparse: dict[str, int] = option(default_factory=dict,
                                    help="module name -> number of individually tuned weight entries (unstructured)")
    r: int = option(8, "LoRA rank of the structured matrices (paper: 8)")
    alpha: float = option(16.0, "LoRA scaling numerator (update × alpha / r)")
    budget: int | None = option(None, "trainable-parameter budget (head excluded); with lora_targets and sparse "
                                      "empty, the tune task runs the sensitivity pass and allocates it")
    structured_alpha: float = option(10.0, "α of the allocation rule: LoRA when ≥ r·(in+out)/α entries of a "
                                           "matrix are sensitive (released configs: 10)")
    targets: list[str] = option(default_factory=lambda: ["all-linear"],
                                help="candidate matrices of the sensitivity pass (as for lora)")
    sensitivity_batches: int = option(8, "training batches of the sensitivity pass (paper: 8)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if not self.lora_targets and not self.sparse and self.budget is None:
            raise ValueError("lora_targets and sparse are both empty and no budget is set: nothing to tune "
                             "(set budget, or give a plan from spt_allocate)")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"budget must be >= 1 parameter, got {self.budget}")
        if self.structured_alpha < 1:
            raise ValueError(f"structured_alpha must be >= 1, got {self.structured_alpha}")
        if self.sensitivity_batches < 1:
            raise ValueError(f"sensitivity_batches must be >= 1, got {self.sensitivity_batches}")
        for name, k in self.sparse.items():
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"sparse: entry count for {name!r} must be a positive integer, got {k!r}")
        both = sorted(set(self.lora_targets) & set(self.sparse))
        if both:
            raise ValueError(f"sparse: {both} are also in lora_targets; a matrix gets LoRA or unstructured tuning")


def _check_linear(model: nn.Module, names: Iterable[str], what: str) -> dict[str, nn.Linear]:
    lin = linear_layers(model)
    bad = [n for n in names if n not in lin]
    if bad:
        raise ValueError(f"{what}: {bad} are not nn.Linear modules of the model (e.g. {list(lin)[:3]})")
    return {n: lin[n] for n in names}


@register_method("spt", SPTConfig,
                 "SPT sensitivity-aware PEFT: LoRA on sensitive matrices + sparse tuning of sensitive weights")
def inject(model: nn.Module, cfg: SPTConfig) -> nn.Module:
    """Apply the plan in place: LoRA (huggingface ``peft``) on ``lora_targets``, sparse deltas on ``sparse``."""
    if not cfg.lora_targets and not cfg.sparse:
        raise ValueError(f"spt: budget={cfg.budget} but no allocation; the sensitivity pass needs training data: "
                         "use medvit.peft.spt.apply_spt (the prompt_tune task does this)")
    _check_linear(model, cfg.lora_targets, "lora_targets")
    sparse_layers = _check_linear(model, cfg.sparse, "sparse")
    if cfg.lora_targets:
        import peft

        from medvit.peft.hf import inject_hf
        from medvit.peft.targets import check_rank

        check_rank(model, cfg.lora_targets, cfg.r)
        pc = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=list(cfg.lora_targets))
        inject_hf(model, pc, cfg.lora_targets)
    for name, layer in sparse_layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, SparseDeltaLinear(layer, cfg.sparse[name]))
    return model


def spt_sensitivity(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    targets: str | list[str] = "all-linear",
    layers: list[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-entry sensitivity ``Σ_b (∂L_b/∂W)²`` of the candidate weight matrices (SPT eq. 2, ``get_sensitivity``).

    Args:
        model: the base backbone (before :func:`apply_peft`), task head sized; left unchanged
            (``requires_grad`` flags and ``.grad`` restored, no optimizer step).
        batches: (images (B, C, H, W[, D]), targets) pairs; the paper uses 8 batches of training data.
        loss_fn: ``loss_fn(logits, targets)``; default cross-entropy (integer class targets).
        targets / layers: candidate matrices, as for the library methods (:mod:`medvit.peft.targets`).
    Returns:
        {module name: tensor of its weight's shape (out, in), float32}.
    Raises:
        ValueError: ``batches`` is empty.
    """
    loss_fn = loss_fn or F.cross_entropy
    names = resolve_targets(model, targets, layers)
    weights = {n: model.get_submodule(n).weight for n in names}
    flags = {id(p): p.requires_grad for p in model.parameters()}
    grads = {id(p): p.grad for p in model.parameters()}
    was_training = model.training
    sens = {n: torch.zeros_like(w, dtype=torch.float32) for n, w in weights.items()}
    n_batches = 0
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for w in weights.values():
            w.requires_grad_(True)
        model.eval()  # dropout / drop-path off: the gradient of the deterministic loss
        for x, y in batches:
            gs = torch.autograd.grad(loss_fn(model(x), y), list(weights.values()))
            for n, g in zip(weights, gs):
                sens[n] += g.detach().float() ** 2
            n_batches += 1
    finally:
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])
            p.grad = grads[id(p)]
        model.train(was_training)
    if n_batches == 0:
        raise ValueError("spt_sensitivity: batches is empty; pass a few batches of training data")
    logger.info("SPT sensitivity over %d batches, %d matrices", n_batches, len(sens))
    return sens


@dataclass
class SPTPlan:
    """Result of :func:`spt_allocate`: the method config plus the selected flat indices per sparse matrix."""

    config: SPTConfig
    indices: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> sorted int64 flat indices
    tau: int = 0  # number of globally top-ranked entries the allocation used
    trainable: int = 0  # LoRA + unstructured parameters (head excluded)


def _cost(shape: torch.Size, r: int) -> int:
    out_f, in_f = shape
    return r * (in_f + out_f)


def spt_allocate(
    sensitivity: dict[str, torch.Tensor],
    budget: int,
    r: int = 8,
    structured_alpha: float = 10.0,
    alpha: float = 16.0,
    extra: dict[str, Any] | None = None,
) -> SPTPlan:
    """Budgeted allocation between LoRA and unstructured tuning (SPT §3.2, rule of ``ziplab/SPT``).

    For τ top-ranked entries (global ranking of all candidate entries by sensitivity, ties broken by
    order), matrix i with n_i selected entries gets LoRA if n_i ≥ r·(in+out)/structured_alpha, else
    unstructured tuning of its n_i entries. τ is the largest value (binary search) whose trainable
    count Σ LoRA costs + Σ unstructured n_i is ≤ ``budget``.

    ``extra``: further :class:`SPTConfig` fields to record in the plan's config (``train_head``, ``targets``...).

    Raises:
        ValueError: empty sensitivity, budget < 1, or no τ ≥ 1 fits the budget.
    """
    if not sensitivity:
        raise ValueError("spt_allocate: sensitivity is empty")
    if budget < 1:
        raise ValueError(f"spt_allocate: budget must be >= 1 parameter, got {budget}")
    if structured_alpha < 1:
        raise ValueError(f"spt_allocate: structured_alpha must be >= 1, got {structured_alpha}")
    names = list(sensitivity)
    flat = torch.cat([sensitivity[n].flatten().float() for n in names])
    sizes = [sensitivity[n].numel() for n in names]
    owner = torch.repeat_interleave(torch.arange(len(names)), torch.tensor(sizes))
    offsets = torch.tensor([0, *sizes]).cumsum(0)[:-1]
    order = torch.sort(flat, descending=True, stable=True).indices
    costs = torch.tensor([_cost(sensitivity[n].shape, r) for n in names])
    if any(min(sensitivity[n].shape) < r for n in names):
        raise ValueError(f"spt_allocate: r={r} exceeds min(in, out) of some candidate matrix")

    def evaluate(tau: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        counts = torch.bincount(owner[order[:tau]], minlength=len(names))
        lora = counts.ge(costs.float() / structured_alpha) & counts.gt(0)
        total = int(costs[lora].sum() + counts[~lora].sum())
        return counts, lora, total

    lo, hi = 0, flat.numel()
    while lo < hi:  # largest τ with total ≤ budget (for structured_alpha ≥ 1 the total is nondecreasing in τ)
        mid = (lo + hi + 1) // 2
        if evaluate(mid)[2] <= budget:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        raise ValueError(f"spt_allocate: no allocation fits a budget of {budget} parameters")
    counts, lora, total = evaluate(lo)
    top = order[:lo]
    lora_targets = [n for i, n in enumerate(names) if lora[i]]
    indices: dict[str, torch.Tensor] = {}
    for i, n in enumerate(names):
        if lora[i] or counts[i] == 0:
            continue
        sel = top[owner[top] == i] - offsets[i]
        indices[n] = torch.sort(sel).values.long()
    cfg = SPTConfig(lora_targets=lora_targets, sparse={n: int(v.numel()) for n, v in indices.items()}, r=r,
                    alpha=alpha, budget=budget, structured_alpha=structured_alpha, **(extra or {}))
    logger.info("SPT plan: τ=%d, %d LoRA matrices, %d sparse matrices, %d trainable (budget %d)",
                lo, len(lora_targets), len(indices), total, budget)
    return SPTPlan(config=cfg, indices=indices, tau=lo, trainable=total)


def apply_spt(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, Any]],
    config: SPTConfig | dict[str, Any],
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
    **peft_kwargs: Any,
) -> nn.Module:
    """Sensitivity pass + allocation for ``config.budget`` + ``apply_peft(model, "spt", plan)``.

    Args:
        model: the base backbone with its task head sized.
        batches: (images, targets) pairs; only the first ``config.sensitivity_batches`` are used.
        config: an :class:`SPTConfig` (or mapping) with ``budget`` set; its ``r``, ``alpha``,
            ``structured_alpha``, ``targets``, ``train_head`` and ``extra_trainable`` are kept.
        loss_fn: ``loss_fn(logits, targets)``; default cross-entropy.
        peft_kwargs: to :func:`apply_peft` (``base_weights``, ...).
    Returns:
        the model to train; the selected indices are in its ``spt_index`` buffers, so
        :func:`medvit.peft.save_adapter` stores them with the deltas.
    Raises:
        ValueError: ``budget`` is not set.
    """
    from itertools import islice

    from medvit.peft.base import make_config

    cfg = make_config("spt", config)
    assert isinstance(cfg, SPTConfig)
    if cfg.budget is None:
        raise ValueError("apply_spt: config.budget is not set (trainable parameters to allocate)")
    sens = spt_sensitivity(model, islice(batches, cfg.sensitivity_batches), loss_fn=loss_fn, targets=cfg.targets)
    keep = {"train_head": cfg.train_head, "extra_trainable": list(cfg.extra_trainable), "targets": list(cfg.targets),
            "sensitivity_batches": cfg.sensitivity_batches}
    plan = spt_allocate(sens, cfg.budget, r=cfg.r, structured_alpha=cfg.structured_alpha, alpha=cfg.alpha,
                        extra=keep)
    out = apply_peft(model, "spt", plan.config, **peft_kwargs)
    set_sparse_indices(out, plan.indices)
    return out


@torch.no_grad()
def set_sparse_indices(model: nn.Module, indices: dict[str, torch.Tensor]) -> None:
    """Write selected flat indices into the ``spt_index`` buffers of an SPT model (before training)."""
    for name, idx in indices.items():
        layer = model.get_submodule(name)
        if not isinstance(layer, SparseDeltaLinear):
            raise ValueError(f"{name!r} is not an SPT sparse layer of this model")
        if idx.shape != layer.spt_index.shape:
            raise ValueError(f"{name}: {idx.numel()} indices for a layer tuning {layer.spt_index.numel()} entries")
        n = layer.base_layer.weight.numel()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n or idx.unique().numel() != idx.numel()):
            raise ValueError(f"{name}: indices must be distinct and in [0, {n})")
        layer.spt_index.copy_(idx)
