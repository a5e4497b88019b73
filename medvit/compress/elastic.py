"""ElasticViT (Tang et al., ICCV'23): a weight-sharing ViT supernet with conflict-aware subnet sampling, and
subnet extraction to a MAC budget as an ordinary checkpoint.

- **Supernet** (:class:`ElasticViT`): a medvit ViT whose subnets keep the first ``depth`` blocks, the first
  ``heads[i]`` heads and the first ``mlp[i]`` MLP units of each block (:class:`SubnetSpec`). A subnet's forward
  uses *views* (slices) of the supernet's weights, so every subnet trains the shared weights.
- **Complexity-aware sampling** (:class:`AdjacentFlopsSampler`, ElasticViT's ``adjacent_step``): subnets are
  grouped into MAC levels; consecutive training steps draw from levels at most ``bound`` apart (nearby
  complexities → less gradient conflict), sweeping back and forth so every level is visited.
- **Performance-aware sampling** (:class:`PreferenceSampler`): each level keeps a bank of candidate subnets with a
  running loss; lower-loss candidates are drawn more often (softmax of −loss / temperature).
- **Extraction** (:func:`extract_subnet`): the subnet's weights sliced into a ``vit_pruned`` model (NViT's
  family), so it saves and reloads like any checkpoint; :func:`search_subnet` picks, among random subnets under a
  MAC budget, the one with the lowest validation loss (the paper uses an evolutionary search).

- **Supernet training** (:func:`train_supernet`): each step trains the largest subnet on the labels and one
  subnet drawn by the two samplers (level by ``adjacent_step``, candidate by preference) on the labels plus an
  in-place distillation term towards the largest subnet's detached predictions (ElasticViT's in-place
  distillation; the paper uses α-divergence, here KL for softmax heads / BCE on soft targets for multi-label
  heads); the drawn subnet's loss updates its preference score.

Not implemented: elastic resolution and v-scale, the conv stages of the paper's hybrid space, α-divergence and the
external teacher, the evolutionary search (random search under the budget instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medvit.compress.optim import optimizer_step
from medvit.compress.prune import PrunePlan, apply_plan, pruned_macs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubnetSpec:
    """Kept depth and per-block head counts / MLP widths (the first ones of each block)."""

    depth: int
    heads: tuple[int, ...]
    mlp: tuple[int, ...]


class ElasticViT(nn.Module):
    """Weight-sharing supernet over a medvit VisionTransformer ``supernet``: ``forward(x, spec)``."""

    def __init__(self, supernet: nn.Module, min_depth: int = 1, mlp_choices: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)):
        super().__init__()
        self.net = supernet
        self.min_depth = min_depth
        self.mlp_choices = mlp_choices

    @property
    def max_spec(self) -> SubnetSpec:
        b = self.net.blocks
        return SubnetSpec(len(b), tuple(x.attn.num_heads for x in b), tuple(x.mlp.fc1.out_features for x in b))

    def check(self, spec: SubnetSpec) -> None:
        mx = self.max_spec
        ok = (self.min_depth <= spec.depth <= mx.depth and len(spec.heads) == len(spec.mlp) == spec.depth
              and all(1 <= h <= H for h, H in zip(spec.heads, mx.heads, strict=False))
              and all(1 <= m <= M for m, M in zip(spec.mlp, mx.mlp, strict=False)))
        if not ok:
            raise ValueError(f"subnet {spec} does not fit the supernet {mx}")

    def random_spec(self, g: torch.Generator) -> SubnetSpec:
        mx = self.max_spec
        d = int(torch.randint(self.min_depth, mx.depth + 1, (1,), generator=g))
        heads = tuple(int(torch.randint(1, mx.heads[i] + 1, (1,), generator=g)) for i in range(d))
        e = self.net.embed_dim
        mlp = tuple(min(mx.mlp[i], int(self.mlp_choices[int(torch.randint(len(self.mlp_choices), (1,),
                                                                                 generator=g))] * e))
                    for i in range(d))
        return SubnetSpec(d, heads, mlp)

    def macs(self, spec: SubnetSpec) -> int:
        n = self.net.num_prefix_tokens + self.net.patch_embed.num_patches
        return pruned_macs(self.net.embed_dim, list(spec.heads), self.net.blocks[0].attn.head_dim, list(spec.mlp), n,
                           self.net.in_chans, self.net.patch_embed.patch_size, self.net.num_classes)

    def _block(self, blk: nn.Module, x: torch.Tensor, h: int, m: int) -> torch.Tensor:
        a, mlp = blk.attn, blk.mlp
        hd, H = a.head_dim, a.num_heads
        B, T, _ = x.shape
        y = blk.norm1(x)
        w = a.qkv.weight.view(3, H, hd, -1)[:, :h].reshape(3 * h * hd, -1)  # views of the shared weights
        bias = a.qkv.bias.view(3, H, hd)[:, :h].reshape(-1) if a.qkv.bias is not None else None
        q, k, v = F.linear(y, w, bias).reshape(B, T, 3, h, hd).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, h * hd)
        o = F.linear(o, a.proj.weight[:, :h * hd], a.proj.bias)
        x = x + blk.ls1(o)
        y = blk.norm2(x)
        y = F.linear(mlp.act(F.linear(y, mlp.fc1.weight[:m], mlp.fc1.bias[:m])), mlp.fc2.weight[:, :m], mlp.fc2.bias)
        return x + blk.ls2(y)

    def forward(self, x: torch.Tensor, spec: SubnetSpec | None = None) -> torch.Tensor:
        """(B, C, H, W) -> logits of subnet ``spec`` (the full supernet when None)."""
        spec = spec or self.max_spec
        self.check(spec)
        t = self.net.embed(x)
        for i in range(spec.depth):
            t = self._block(self.net.blocks[i], t, spec.heads[i], spec.mlp[i])
        return self.net.forward_head(self.net.norm(t))


def extract_subnet(elastic: ElasticViT, spec: SubnetSpec) -> nn.Module:
    """The subnet as a standalone ``vit_pruned`` model (copies of the kept weights; ``model_args`` record shapes)."""
    elastic.check(spec)
    plan = PrunePlan([list(range(h)) for h in spec.heads], [list(range(m)) for m in spec.mlp],
                     list(range(elastic.net.embed_dim)), elastic.macs(elastic.max_spec), elastic.macs(spec))
    return apply_plan(elastic.net, plan)


class AdjacentFlopsSampler:
    """Levels = ``n_levels`` equal MAC bins between the smallest and largest subnet; step t draws a level within
    ``bound`` of step t−1's (a random walk that reflects at the ends), then a random subnet in that level."""

    def __init__(self, elastic: ElasticViT, n_levels: int = 5, bound: int = 1, seed: int = 0, pool: int = 400):
        self.g = torch.Generator().manual_seed(seed)
        self.elastic, self.bound = elastic, bound
        specs = [elastic.random_spec(self.g) for _ in range(pool)]
        macs = [elastic.macs(s) for s in specs]
        lo, hi = min(macs), max(macs)
        width = (hi - lo) / n_levels or 1
        self.levels: list[list[SubnetSpec]] = [[] for _ in range(n_levels)]
        for s, m in zip(specs, macs, strict=True):
            self.levels[min(int((m - lo) / width), n_levels - 1)].append(s)
        self.levels = [lv for lv in self.levels if lv]
        self.level = 0

    def sample(self) -> tuple[int, SubnetSpec]:
        step = int(torch.randint(-self.bound, self.bound + 1, (1,), generator=self.g))
        lv = self.level + step
        n = len(self.levels)
        if lv < 0 or lv >= n:
            lv = self.level - step
        self.level = min(max(lv, 0), n - 1)
        bank = self.levels[self.level]
        return self.level, bank[int(torch.randint(len(bank), (1,), generator=self.g))]


class PreferenceSampler:
    """Per-level candidate banks with running losses; draws softmax(−loss / temperature) (unseen = mean loss)."""

    def __init__(self, banks: list[list[SubnetSpec]], temperature: float = 0.1, momentum: float = 0.9, seed: int = 0):
        self.banks = banks
        self.loss: dict[SubnetSpec, float] = {}
        self.t, self.mom = temperature, momentum
        self.g = torch.Generator().manual_seed(seed)

    def update(self, spec: SubnetSpec, loss: float) -> None:
        old = self.loss.get(spec)
        self.loss[spec] = loss if old is None else self.mom * old + (1 - self.mom) * loss

    def sample(self, level: int) -> SubnetSpec:
        bank = self.banks[level]
        seen = [self.loss[s] for s in bank if s in self.loss]
        fill = sum(seen) / len(seen) if seen else 0.0
        losses = torch.tensor([self.loss.get(s, fill) for s in bank])
        p = torch.softmax(-losses / self.t, 0)
        return bank[int(torch.multinomial(p, 1, generator=self.g))]


@torch.no_grad()
def search_subnet(elastic: ElasticViT, mac_budget: int, val_loss: Callable[[Callable], float], n: int = 50,
                  seed: int = 0, max_draws: int | None = None) -> tuple[SubnetSpec, float]:
    """Among ``n`` random subnets with MACs ≤ ``mac_budget`` (drawn until ``n`` fit, at most ``max_draws``
    draws, default 200·n), the one with the lowest ``val_loss(forward)``. Raises ``ValueError`` when no drawn
    subnet fits the budget."""
    g = torch.Generator().manual_seed(seed)
    best: tuple[SubnetSpec, float] | None = None
    fit = 0
    for _ in range(max_draws or 200 * n):
        s = elastic.random_spec(g)
        if elastic.macs(s) > mac_budget:
            continue
        v = val_loss(lambda x, s=s: elastic(x, s))
        if best is None or v < best[1]:
            best = (s, v)
        fit += 1
        if fit == n:
            break
    if best is None:
        raise ValueError(f"no sampled subnet under {mac_budget} MACs (smallest depth {elastic.min_depth})")
    return best



def distill_loss(student: torch.Tensor, teacher: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """In-place distillation towards the largest subnet's detached logits (B, K): BCE on its sigmoid for
    multi-label heads, KL(teacher ‖ student) of the softmaxes otherwise."""
    t = teacher.detach()
    if multilabel:
        return F.binary_cross_entropy_with_logits(student, torch.sigmoid(t))
    return F.kl_div(F.log_softmax(student, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")


@dataclass
class SupernetTrainResult:
    """Per-step record of :func:`train_supernet`: drawn level and subnet MACs, losses of the largest and the
    drawn subnet."""

    levels: list[int]
    macs: list[int]
    loss_max: list[float]
    loss_sub: list[float]


def train_supernet(elastic: ElasticViT, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], steps: int,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], lr: float = 1e-4,
                   weight_decay: float = 0.05, kd_weight: float = 1.0, n_levels: int = 5, bound: int = 1,
                   bank_size: int = 8, temperature: float = 0.1, multilabel: bool | None = None, seed: int = 0,
                   clip_grad: float = 1.0) -> SupernetTrainResult:
    """ElasticViT conflict-aware supernet training, in place on ``elastic.net`` (AdamW, cosine LR).

    ``batches`` yields (x (B, C, H, W), y) for ``steps`` steps (``y`` (B, K) float for multi-label, (B,) int
    otherwise; ``multilabel`` defaults to ``y.dim() == 2``). A step: loss_fn(largest subnet) + loss_fn(drawn
    subnet) + ``kd_weight`` · :func:`distill_loss`(drawn, largest). The drawn subnet's level comes from an
    :class:`AdjacentFlopsSampler` (levels at most ``bound`` apart between steps), the subnet from a
    :class:`PreferenceSampler` over ``bank_size`` candidates per level. Raises ``ValueError`` when ``steps`` < 1
    or ``batches`` runs out early."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    adj = AdjacentFlopsSampler(elastic, n_levels=n_levels, bound=bound, seed=seed)
    pref = PreferenceSampler([lv[:bank_size] for lv in adj.levels], temperature=temperature, seed=seed)
    params = [p for p in elastic.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    mx = elastic.max_spec
    rec = SupernetTrainResult([], [], [], [])
    elastic.train()
    for step in range(steps):
        try:
            x, y = next(batches)
        except StopIteration:
            raise ValueError(f"batches ran out after {step} of {steps} steps") from None
        ml = (y.dim() == 2) if multilabel is None else multilabel
        level, _ = adj.sample()
        spec = pref.sample(level)
        out_max = elastic(x, mx)
        out_sub = elastic(x, spec)
        l_max, l_sub = loss_fn(out_max, y), loss_fn(out_sub, y)
        loss = l_max + l_sub + kd_weight * distill_loss(out_sub, out_max, ml)
        optimizer_step(loss, opt, sched, params, clip_grad)
        pref.update(spec, float(l_sub.detach()))
        rec.levels.append(level)
        rec.macs.append(elastic.macs(spec))
        rec.loss_max.append(float(l_max.detach()))
        rec.loss_sub.append(float(l_sub.detach()))
        if (step + 1) % 25 == 0 or step + 1 == steps:
            logger.info("supernet step %d/%d: level %d, loss max %.4f, subnet %.4f", step + 1, steps, level,
                        rec.loss_max[-1], rec.loss_sub[-1])
    elastic.eval()
    return rec
