"""Self-supervised, metric and distillation losses of issue 20 part B, registered under kind ``loss``.

Functions (tensor in, tensor out) and their registered :class:`~medvit.train.losses.Loss` wrappers:

- :func:`vicreg_terms` / ``tov_vicreg`` — VICReg invariance / variance / covariance (Bardes et al., ICLR'22) plus
  TOV-VICReg's temporal-order verification BCE (Goulão & Oliveira; mgoulao/TOV-VICReg ``builder.py``);
- :func:`multi_target_info_nce` / ``m3i_info_nce`` — M3I's sum of InfoNCE bounds, one per target source
  (another view, class embeddings, ...; Su et al., arXiv 2211.09807; exact form ``[verify]``, no code released);
- :func:`look_loss` / ``look`` — LOOK leave-one-out kNN loss (Feng et al., ICLR'22) over a memory bank;
- :func:`attention_kl`, :func:`attention_nmi` / ``attention_kl`` — UNIP attention-map distillation and the
  normalised mutual information used to pick the teacher layer (casiatao/UNIP ``models_unip.py``);
- ``dual_masked_mae`` — VideoMAE V2's dual-masked reconstruction loss (:func:`medvit.models.videomae.dual_masked_mse`).

Written from the papers and the general-vision notes (§18, 22, 23, 27, 31); no code copied.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from medvit.models.videomae import dual_masked_mse
from medvit.train.losses import Loss, register_loss

# ---------------------------------------------------------------------------------------------------- VICReg


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_terms(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """VICReg terms of two embedding batches (B, D), (B, D) -> {"invariance", "variance", "covariance"} scalars.

    invariance = MSE(x, y); variance = ½Σ_{z∈{x,y}} mean_d relu(1 − √(Var_b z_d + eps)); covariance =
    Σ_{z∈{x,y}} Σ_{i≠j} C(z)_ij² / D with C the (B − 1)-normalised covariance of the centred batch. B ≥ 2.
    """
    if x.shape != y.shape or x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"vicreg needs two (B >= 2, D) batches of the same shape, got {tuple(x.shape)}, "
                         f"{tuple(y.shape)}")
    x, y = x.float(), y.float()
    inv = F.mse_loss(x, y)
    b, d = x.shape
    xc, yc = x - x.mean(0), y - y.mean(0)
    std_x, std_y = torch.sqrt(xc.var(0) + eps), torch.sqrt(yc.var(0) + eps)
    var = F.relu(1 - std_x).mean() / 2 + F.relu(1 - std_y).mean() / 2
    cov_x, cov_y = xc.T @ xc / (b - 1), yc.T @ yc / (b - 1)
    cov = _off_diagonal(cov_x).pow(2).sum() / d + _off_diagonal(cov_y).pow(2).sum() / d
    return {"invariance": inv, "variance": var, "covariance": cov}


#: the six orders of (previous, current, next); index 0 is the true temporal order
ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def order_permutations(batch: int, generator: torch.Generator | None = None,
                       identity_prob: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one of :data:`ORDERS` per sample: (perm (B, 3) long, label (B,) float: 0 = true order, 1 = shuffled).

    ``identity_prob`` None = uniform over the six orders (notes §27); a number p draws the true order with
    probability p and one of the five shuffles otherwise.
    """
    if identity_prob is None:
        k = torch.randint(0, 6, (batch,), generator=generator)
    else:
        if not 0.0 <= identity_prob <= 1.0:
            raise ValueError(f"identity_prob must be in [0, 1], got {identity_prob}")
        keep = torch.rand(batch, generator=generator) < identity_prob
        k = torch.where(keep, 0, 1 + torch.randint(0, 5, (batch,), generator=generator))
    perm = torch.tensor(ORDERS)[k]
    return perm, (k != 0).float()


def temporal_order_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the order head: logits (B,) or (B, 1), labels (B,) in {0, 1} -> scalar."""
    return F.binary_cross_entropy_with_logits(logits.reshape(-1).float(), labels.reshape(-1).float())


def _ex_tov(g: torch.Generator) -> tuple[Any, dict[str, Any]]:
    za, zb = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    return {"z_a": za, "z_b": zb, "order_logit": torch.randn(8, generator=g),
            "order_label": (torch.rand(8, generator=g) > 0.5).float()}, {}


@register_loss("tov_vicreg", example=_ex_tov,
               description="VICReg (invariance/variance/covariance) + temporal-order verification BCE (TOV-VICReg)")
class TOVVICRegLoss(Loss):
    """``sim·inv + std·var + cov·cov + temporal·BCE(order)``; weights 10 / 10 / 10 / 0.1 as in TOV-VICReg's run script
    (notes §27; plain VICReg uses 25 / 25 / 1 and ``temporal_weight = 0``).

    Output dict: ``z_a``, ``z_b`` (B, D) projector outputs of two views of the same frame; optional
    ``order_logit`` (B,) and ``order_label`` (B,) of the order head (required when ``temporal_weight > 0``).
    Returns {"loss", "invariance", "variance", "covariance", "temporal"}.
    """

    def __init__(self, sim_weight: float = 10.0, std_weight: float = 10.0, cov_weight: float = 10.0,
                 temporal_weight: float = 0.1, eps: float = 1e-4):
        super().__init__()
        for k, v in (("sim_weight", sim_weight), ("std_weight", std_weight), ("cov_weight", cov_weight),
                     ("temporal_weight", temporal_weight)):
            if v < 0:
                raise ValueError(f"{k} must be >= 0, got {v}")
        self.w = (float(sim_weight), float(std_weight), float(cov_weight), float(temporal_weight))
        self.eps = float(eps)

    def forward(self, output: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        t = vicreg_terms(output["z_a"], output["z_b"], self.eps)
        temporal = torch.zeros((), device=output["z_a"].device)
        if self.w[3] > 0:
            if "order_logit" not in output:
                raise KeyError("tov_vicreg: temporal_weight > 0 needs output['order_logit'] and ['order_label']")
            temporal = temporal_order_loss(output["order_logit"], output["order_label"])
        loss = self.w[0] * t["invariance"] + self.w[1] * t["variance"] + self.w[2] * t["covariance"] + \
            self.w[3] * temporal
        return {"loss": loss, **{k: v.detach() for k, v in t.items()}, "temporal": temporal.detach()}


# ---------------------------------------------------------------------------------------------------- M3I


def info_nce(query: torch.Tensor, keys: torch.Tensor, positive: torch.Tensor,
             temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE with cosine similarities: (B, D) queries, (K, D) keys, (B,) index of each query's positive key.

    −mean_b log softmax_k(cos(q_b, k_k)/τ)[positive_b] — i.e. cross-entropy on cosine logits; with the class
    embeddings as keys and the labels as positives it is CE against class prototypes.
    """
    if query.ndim != 2 or keys.ndim != 2 or query.shape[1] != keys.shape[1]:
        raise ValueError(f"info_nce needs (B, D) queries and (K, D) keys, got {tuple(query.shape)}, "
                         f"{tuple(keys.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = F.normalize(query.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T / temperature
    return F.cross_entropy(logits, positive.long())


def multi_target_info_nce(query: torch.Tensor, targets: dict[str, tuple[torch.Tensor, torch.Tensor]],
                          weights: dict[str, float] | None = None,
                          temperature: float = 0.1) -> dict[str, torch.Tensor]:
    """M3I: Σ_s w_s · InfoNCE(query, keys_s, positives_s) over target sources s (``{name: (keys (K_s, D),
    positives (B,))}``). Returns {"loss", "nce_<name>" per source}. Unknown weight names raise ``KeyError``."""
    weights = dict(weights or {})
    bad = set(weights) - set(targets)
    if bad:
        raise KeyError(f"weights name target sources {sorted(bad)} not among {sorted(targets)}")
    if not targets:
        raise ValueError("multi_target_info_nce needs at least one target source")
    out: dict[str, torch.Tensor] = {}
    total = torch.zeros((), device=query.device)
    for name, (keys, pos) in targets.items():
        term = info_nce(query, keys, pos, temperature)
        out[f"nce_{name}"] = term.detach()
        total = total + float(weights.get(name, 1.0)) * term
    out["loss"] = total
    return out


def _ex_m3i(g: torch.Generator) -> tuple[Any, dict[str, Any]]:
    return {"query": torch.randn(6, 8, generator=g),
            "targets": {"view": torch.randn(6, 8, generator=g), "class": torch.randn(3, 8, generator=g)}}, \
        {"label": torch.randint(0, 3, (6,), generator=g)}


@register_loss("m3i_info_nce", example=_ex_m3i,
               description="M3I multi-target InfoNCE: another view (positives on the diagonal) + class embeddings")
class M3IInfoNCE(Loss):
    """Multi-target InfoNCE of M3I over the targets a model returns.

    Output dict: ``query`` (B, D) and ``targets`` {name: keys}. Positives: ``view`` and any name in
    ``diagonal`` — keys (B, D) of the same batch, positive = own row (another view / paired text through a target
    encoder); ``class`` — class embeddings (C, D), positive = ``batch["label"]``. ``weights``: per-source weight
    (default 1); ``temperature`` τ (M3I does not state it; 0.1 here ``[verify]``).
    """

    def __init__(self, temperature: float = 0.1, weights: dict[str, float] | None = None,
                 diagonal: tuple[str, ...] = ("view", "text")):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature, self.weights, self.diagonal = float(temperature), dict(weights or {}), tuple(diagonal)

    def forward(self, output: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        q = output["query"]
        targets = {}
        for name, keys in output["targets"].items():
            if name == "class":
                if "label" not in batch:
                    raise KeyError("m3i_info_nce: the 'class' target needs batch['label'] (class indices)")
                targets[name] = (keys, batch["label"])
            elif name in self.diagonal:
                targets[name] = (keys, torch.arange(q.shape[0], device=q.device))
            else:
                raise KeyError(f"m3i_info_nce: target {name!r} is neither 'class' nor one of {self.diagonal}")
        return multi_target_info_nce(q, targets, self.weights, self.temperature)


# ---------------------------------------------------------------------------------------------------- LOOK


def look_loss(query: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
              k: int = 20, temperature: float = 0.1, query_ids: torch.Tensor | None = None,
              bank_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """LOOK: −log Σ_{j∈N_k(i), y_j = y_i} e^{s_ij/τ} / Σ_{j∈N_k(i)} e^{s_ij/τ}, s = cosine similarity.

    query (B, D) with labels (B,); bank (M, D) with bank_labels (M,) (keys of a momentum encoder, no gradient
    flows into them). N_k(i): the k most similar bank entries, leaving out entries whose id equals the query's
    (``query_ids`` (B,), ``bank_ids`` (M,): the sample itself, leave-one-out) and entries with label < 0 (empty
    slots). Queries with no same-class neighbour among their k contribute 0 (their share is returned as
    ``no_positive``). Returns {"loss", "no_positive"}.
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"look_loss needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    q = F.normalize(query.float(), dim=-1)
    kb = F.normalize(bank.detach().float(), dim=-1)
    sim = q @ kb.T  # (B, M)
    valid = (bank_labels >= 0)[None, :].expand_as(sim)
    if query_ids is not None and bank_ids is not None:
        valid = valid & (query_ids[:, None] != bank_ids[None, :])
    sim = sim.masked_fill(~valid, float("-inf"))
    kk = min(int(k), sim.shape[1])
    top, idx = sim.topk(kk, dim=1)
    ok = torch.isfinite(top)
    same = (bank_labels[idx] == labels[:, None]) & ok
    logits = (top / temperature).masked_fill(~ok, float("-inf"))
    log_all = torch.logsumexp(logits, dim=1)
    log_pos = torch.logsumexp(logits.masked_fill(~same, float("-inf")), dim=1)
    has = same.any(1)
    per = torch.where(has, log_all - log_pos, torch.zeros_like(log_all))
    loss = per.sum() / has.sum().clamp(min=1)
    return {"loss": loss, "no_positive": (~has).float().mean().detach()}


def _ex_look(g: torch.Generator) -> tuple[Any, dict[str, Any]]:
    return {"query": torch.randn(6, 8, generator=g), "key": torch.randn(6, 8, generator=g)}, \
        {"label": torch.tensor([0, 0, 1, 1, 2, 2]), "index": torch.arange(6)}


@register_loss("look", example=_ex_look, description="LOOK leave-one-out kNN loss over a momentum-key memory bank")
class LOOKLoss(Loss):
    """LOOK with a FIFO memory bank of momentum keys (``bank_size`` entries, labels and sample ids).

    Output dict: ``query`` (B, D) (online encoder, gradients) and ``key`` (B, D) (momentum encoder; detached).
    Batch: ``label`` (B,) class indices and optional ``index`` (B,) sample ids (leave-one-out across epochs).
    Neighbours come from the bank plus the other samples' keys of this batch; after the loss the batch's keys are
    enqueued. ``k`` and ``temperature`` are ``[verify]`` in the notes (defaults 20 / 0.1).
    """

    inputs = ("label",)
    label_kind = "classes"

    def __init__(self, k: int = 20, temperature: float = 0.1, bank_size: int = 1024, dim: int | None = None):
        super().__init__()
        if k < 1 or temperature <= 0 or bank_size < 1:
            raise ValueError(f"look: need k >= 1, temperature > 0, bank_size >= 1; got {k}, {temperature}, "
                             f"{bank_size}")
        self.k, self.temperature, self.bank_size = int(k), float(temperature), int(bank_size)
        self.register_buffer("bank", torch.zeros(0), persistent=False)
        self.register_buffer("bank_labels", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("bank_ids", torch.zeros(0, dtype=torch.long), persistent=False)
        self.ptr = 0
        self._seen = 0
        if dim:
            self._reset(int(dim), torch.device("cpu"))

    def _reset(self, dim: int, device: torch.device) -> None:
        self.bank = torch.zeros(self.bank_size, dim, device=device)
        self.bank_labels = torch.full((self.bank_size,), -1, dtype=torch.long, device=device)
        self.bank_ids = torch.full((self.bank_size,), -1, dtype=torch.long, device=device)
        self.ptr = 0

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> None:
        """FIFO write of (B, D) keys with labels and ids (the oldest entries are overwritten)."""
        if self.bank.ndim != 2 or self.bank.shape[1] != keys.shape[1] or self.bank.device != keys.device:
            self._reset(keys.shape[1], keys.device)
        n = keys.shape[0]
        pos = (self.ptr + torch.arange(n, device=keys.device)) % self.bank_size
        self.bank[pos] = F.normalize(keys.float(), dim=-1)
        self.bank_labels[pos] = labels.long()
        self.bank_ids[pos] = ids.long()
        self.ptr = int((self.ptr + n) % self.bank_size)

    def forward(self, output: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        q, key = output["query"], output["key"].detach()
        labels = batch["label"].long().reshape(-1)
        b = q.shape[0]
        ids = batch.get("index")
        if ids is None:  # no sample ids: fresh negative ids, so only this batch's own key is left out
            ids = -(2 + self._seen + torch.arange(b, device=q.device))
            self._seen += b
        ids = ids.long().reshape(-1)
        if self.bank.ndim == 2 and self.bank.shape[1] == key.shape[1] and self.bank.device == key.device:
            bank = torch.cat([self.bank, F.normalize(key.float(), dim=-1)])
            bl, bi = torch.cat([self.bank_labels, labels]), torch.cat([self.bank_ids, ids])
        else:
            bank, bl, bi = F.normalize(key.float(), dim=-1), labels, ids
        out = look_loss(q, labels, bank, bl, self.k, self.temperature, ids, bi)
        if self.training:
            self.enqueue(key, labels, ids)
        return out


# ---------------------------------------------------------------------------------------------------- UNIP


def attention_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                 temperature: float = 1.0) -> torch.Tensor:
    """UNIP attention distillation: KL(softmax(t/T) ‖ softmax(s/T)) summed over keys, averaged over B·H·N queries.

    Inputs (B, H, N, N) pre-softmax attention logits (teacher detached). Different head counts H_t ≠ H_s are
    compared on head-averaged probabilities (our choice; UNIP gives the student's last block the teacher's head
    count, which is the equal-H case). Raises ``ValueError`` when the token counts differ.
    """
    if teacher_logits.shape[-2:] != student_logits.shape[-2:] or teacher_logits.ndim != 4 or \
            student_logits.ndim != 4:
        raise ValueError(f"attention maps must be (B, H, N, N) with equal N, got {tuple(teacher_logits.shape)} "
                         f"and {tuple(student_logits.shape)}")
    t = teacher_logits.detach().float() / temperature
    s = student_logits.float() / temperature
    if t.shape[1] == s.shape[1]:
        log_p, log_q = t.log_softmax(-1), s.log_softmax(-1)
    else:
        log_p = t.softmax(-1).mean(1, keepdim=True).clamp_min(1e-12).log()
        log_q = s.softmax(-1).mean(1, keepdim=True).clamp_min(1e-12).log()
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return kl.mean()


def attention_nmi(attn: torch.Tensor) -> torch.Tensor:
    """Normalised mutual information of attention maps (..., N, N) (rows = queries, probabilities summing to 1).

    The map divided by N is a joint p(q, k) with p(q) = 1/N; NMI = I(Q; K) / √(H(Q) H(K)). Identity (local)
    attention gives 1, uniform (global) attention 0. Returns (...) values in [0, 1].
    """
    n = attn.shape[-1]
    p = attn.float() / n
    pk = p.sum(-2)  # (..., N) key marginal
    hq = math.log(n)
    hk = -(pk * pk.clamp_min(1e-30).log()).sum(-1)
    ratio = (p / ((1.0 / n) * pk[..., None, :]).clamp_min(1e-30)).clamp_min(1e-30)
    mi = (p * ratio.log()).sum((-2, -1))
    return (mi / (hq * hk).clamp_min(1e-30).sqrt()).clamp(0.0, 1.0)


def _ex_attn(g: torch.Generator) -> tuple[Any, dict[str, Any]]:
    return {"teacher_logits": torch.randn(2, 2, 5, 5, generator=g),
            "student_logits": torch.randn(2, 2, 5, 5, generator=g)}, {}


@register_loss("attention_kl", example=_ex_attn,
               description="UNIP attention-map distillation: KL(teacher softmax ‖ student softmax) over keys")
class AttentionKL(Loss):
    """Output dict ``teacher_logits``, ``student_logits`` (B, H, N, N) -> :func:`attention_kl` at ``temperature``."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, output: Any, batch: dict[str, Any]) -> torch.Tensor:
        return attention_kl(output["teacher_logits"], output["student_logits"], self.temperature)


# ---------------------------------------------------------------------------------------------------- VideoMAE V2


def _ex_dual(g: torch.Generator) -> tuple[Any, dict[str, Any]]:
    return {"pred": torch.randn(2, 4, 6, generator=g), "target": torch.randn(2, 4, 6, generator=g),
            "weight": torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0]], dtype=torch.bool)}, {}


@register_loss("dual_masked_mae", example=_ex_dual,
               description="VideoMAE V2 dual-masked MAE loss: MSE over decoded (encoder-masked) tokens")
class DualMaskedMAELoss(Loss):
    """Output dict of :class:`medvit.models.videomae.DualMaskedAutoencoder` (``pred``, ``target``, ``weight``) ->
    :func:`~medvit.models.videomae.dual_masked_mse`; ``loss_on="decoded"`` ignores ``weight`` (official engine)."""

    def __init__(self, loss_on: str = "masked"):
        super().__init__()
        if loss_on not in ("masked", "decoded"):
            raise ValueError(f"loss_on must be 'masked' or 'decoded', got {loss_on!r}")
        self.loss_on = loss_on

    def forward(self, output: Any, batch: dict[str, Any]) -> torch.Tensor:
        w = output.get("weight") if self.loss_on == "masked" else None
        return dual_masked_mse(output["pred"], output["target"], w)
