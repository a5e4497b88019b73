"""Tasks ``elastic_train`` (ElasticViT supernet training + subnet extraction) and ``snnet_train`` (SN-Netv2
stitching-layer training) on saved medvit checkpoints and a registered dataset.

``elastic_train`` (:mod:`medvit.compress.elastic`): the checkpoint's ViT becomes the supernet; ``steps`` of
conflict-aware training (adjacent-step FLOPs sampling + preference sampling + in-place distillation) on
``fit_split``; then, per MAC budget in ``mac_ratios``, a random search on ``eval_split`` loss picks a subnet,
extracted as an ordinary ``vit_pruned`` checkpoint with the original contract (``subnet_<ratio>/``); the trained
supernet is written too (``supernet/``).

``snnet_train`` (:mod:`medvit.compress.stitch`): two checkpoints on the same input contract (the small and the
large anchor) are stitched, the stitching layers initialised by least squares on ``calibration_images`` and
trained for ``steps`` with FLOPs-aware sampling (anchors frozen unless ``train_anchors``); one SN-Net checkpoint
(``model/``) serves every configuration; ``summary.json`` lists each configuration's MACs and ``eval_split``
metric.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from medvit.config import option
from medvit.tasks.base import register_task
from medvit.tasks.compress_tasks import (
    _Common,
    _data,
    _load,
    _load_checkpoint,
    _logits,
    _metric,
    _stack,
    _without_ood,
    _write,
    input_mismatch,
)

logger = logging.getLogger(__name__)


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor,
                                                                                              torch.Tensor]]:
    """Endless reshuffled minibatches of (x, y) (a new permutation every pass)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch_size + 1 if len(x) >= batch_size else 1, batch_size):
            idx = perm[i:i + batch_size]
            yield x[idx], y[idx]


def _loss_for(y: torch.Tensor) -> Any:
    return F.binary_cross_entropy_with_logits if y.dim() == 2 else F.cross_entropy


def _targets(y: torch.Tensor) -> torch.Tensor:
    return y.float() if y.dim() == 2 else y.long()


@dataclass
class ElasticTrainConfig(_Common):
    """ElasticViT: conflict-aware supernet training of a checkpoint's ViT, then subnets extracted to MAC budgets."""

    steps: int = option(200, "supernet training steps (each: largest subnet + one sampled subnet)")
    lr: float = option(1e-4, "AdamW learning rate (cosine to 0)")
    kd_weight: float = option(1.0, "weight of the in-place distillation towards the largest subnet")
    n_levels: int = option(5, "MAC levels of the adjacent-step sampler")
    bound: int = option(1, "largest level change between consecutive steps")
    mac_ratios: list[float] = option(default_factory=lambda: [0.75, 0.5], help="extract one subnet per budget "
                                     "(fraction of the supernet's MACs)")
    search_candidates: int = option(100, "random subnets tried per budget (lowest eval_split loss wins)")
    seed: int = option(0, "sampling and data-order seed")

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        bad = [r for r in self.mac_ratios if not 0 < r <= 1]
        if bad or not self.mac_ratios:
            raise ValueError(f"mac_ratios must be a non-empty list of values in (0, 1], got {self.mac_ratios}")


def run_elastic(cfg: ElasticTrainConfig) -> dict[str, Any]:
    """Train the supernet, search + extract a subnet per budget, save them; returns the summary."""
    from medvit.compress.elastic import ElasticViT, extract_subnet, search_subnet, train_supernet
    from medvit.models import save_checkpoint

    model, fit, ev = _load(cfg)
    if not hasattr(model, "blocks") or not hasattr(model.blocks[0], "attn"):
        raise ValueError(f"{cfg.checkpoint}: {getattr(model, 'arch_name', '?')} is not a medvit ViT (no blocks.attn)")
    xf, yf = _stack(fit)
    xe, ye = _stack(ev)
    yf, ye = _targets(yf), _targets(ye)
    loss_fn = _loss_for(yf)
    elastic = ElasticViT(model)
    before = _metric(_logits(model, xe, cfg.batch_size), ye)
    rec = train_supernet(elastic, _batches(xf, yf, cfg.batch_size, cfg.seed), cfg.steps, loss_fn, lr=cfg.lr,
                         kd_weight=cfg.kd_weight, n_levels=cfg.n_levels, bound=cfg.bound, seed=cfg.seed)
    out = Path(cfg.output_dir)
    contract = _without_ood(model.contract, "elastic_train")
    save_checkpoint(model, out / "supernet", contract=contract,
                    extra={"elastic": {"steps": cfg.steps, "source": cfg.checkpoint}})
    full_macs = elastic.macs(elastic.max_spec)

    @torch.no_grad()
    def val_loss(fn: Any) -> float:
        return float(loss_fn(torch.cat([fn(xe[i:i + cfg.batch_size]) for i in range(0, len(xe), cfg.batch_size)]),
                             ye))

    subnets = []
    for r in cfg.mac_ratios:
        spec, vl = search_subnet(elastic, int(r * full_macs), val_loss, n=cfg.search_candidates, seed=cfg.seed)
        sub = extract_subnet(elastic, spec).eval()
        d = out / f"subnet_{r:g}"
        save_checkpoint(sub, d, contract=contract,
                        extra={"elastic": {"depth": spec.depth, "heads": list(spec.heads), "mlp": list(spec.mlp)}})
        subnets.append({"mac_ratio_budget": r, "mac_ratio": elastic.macs(spec) / full_macs, "checkpoint": str(d),
                        "depth": spec.depth, "heads": list(spec.heads), "mlp": list(spec.mlp), "val_loss": vl,
                        cfg.eval_split: _metric(_logits(sub, xe, cfg.batch_size), ye)})
        logger.info("elastic subnet at %.2f MACs: %s", r, subnets[-1])
    summary = {"checkpoint": cfg.checkpoint, "supernet_checkpoint": str(out / "supernet"), "steps": cfg.steps,
               f"{cfg.eval_split}_before": before,
               f"{cfg.eval_split}_supernet": _metric(_logits(model, xe, cfg.batch_size), ye),
               "levels_visited": sorted(set(rec.levels)), "loss_max_first_last": [rec.loss_max[0], rec.loss_max[-1]],
               "loss_sub_first_last": [rec.loss_sub[0], rec.loss_sub[-1]], "subnets": subnets,
               "note": f"subnets chosen on {cfg.eval_split} loss: their {cfg.eval_split} metric is the selection "
                       "metric, not a held-out one"}
    _write(out, summary)
    return summary


@dataclass
class SNNetTrainConfig(_Common):
    """SN-Netv2: stitch two checkpoints (small, large anchor) and train the stitching layers."""

    large_checkpoint: str = option("", "the large anchor's medvit checkpoint (``checkpoint`` is the small one)")
    rank: int = option(8, "LoRA rank of the stitching layers")
    calibration_images: int = option(128, "fit_split images for the least-squares stitch initialisation")
    steps: int = option(200, "training steps (one FLOPs-aware sampled configuration each)")
    lr: float = option(1e-3, "AdamW learning rate (cosine to 0)")
    train_anchors: bool = option(False, "also fine-tune the anchors (SN-Netv2 joint training); False = stitches only")
    n_bins: int = option(4, "MAC bins of the FLOPs-aware sampler")
    seed: int = option(0, "sampling and data-order seed")

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def run_snnet(cfg: SNNetTrainConfig) -> dict[str, Any]:
    """Stitch, least-squares init, train, save one SN-Net checkpoint; per-configuration MACs and metric."""
    from medvit.compress.stitch import StitchedViT, save_stitched, train_stitches

    small = _load_checkpoint(cfg.checkpoint)
    large = _load_checkpoint(cfg.large_checkpoint, "large_checkpoint")
    cs = small.contract
    why = input_mismatch(small, "checkpoint", large, "large_checkpoint")
    if why:
        raise ValueError(f"{cfg.checkpoint} and {cfg.large_checkpoint}: the anchors' input contracts differ "
                         f"(channels / size / normalisation), they cannot share one input: {why}")
    fit, ev = _data(cfg, cs)
    xf, yf = _stack(fit)
    xe, ye = _stack(ev)
    yf, ye = _targets(yf), _targets(ye)
    model = StitchedViT(small, large, rank=cfg.rank)
    model.init_stitches(xf[:cfg.calibration_images])
    init_metric = [_metric(_logits(lambda x, c=c: model.forward_config(x, c), xe, cfg.batch_size), ye)
                   for c in model.configs]
    rec = train_stitches(model, _batches(xf, yf, cfg.batch_size, cfg.seed), cfg.steps, _loss_for(yf), lr=cfg.lr,
                         train_anchors=cfg.train_anchors, n_bins=cfg.n_bins, seed=cfg.seed)
    out = Path(cfg.output_dir)
    save_stitched(model, out / "model")
    macs = model.config_macs(xe[:1])
    rows = []
    for i, c in enumerate(model.configs):
        m = _metric(_logits(lambda x, c=c: model.forward_config(x, c), xe, cfg.batch_size), ye)
        rows.append({"config_id": i, "key": c.key, "macs": macs[i], cfg.eval_split: m,
                     f"{cfg.eval_split}_after_least_squares_init": init_metric[i]})
    summary = {"small": cfg.checkpoint, "large": cfg.large_checkpoint, "snnet_checkpoint": str(out / "model"),
               "steps": cfg.steps, "train_anchors": cfg.train_anchors,
               "loss_first_last": [rec.losses[0], rec.losses[-1]], "configs": rows}
    _write(out, summary)
    logger.info("snnet_train: %d configurations, %s", len(rows),
                [(r["key"], r[cfg.eval_split]) for r in rows])
    return summary


register_task("elastic_train", ElasticTrainConfig, "ElasticViT conflict-aware supernet training + subnet "
              "extraction to MAC budgets")(run_elastic)
register_task("snnet_train", SNNetTrainConfig, "SN-Netv2 stitching of two checkpoints + stitching-layer "
              "training")(run_snnet)
