"""Tasks ``ptq`` and ``nvit_prune``: post-training compression of a saved medvit checkpoint on a registered dataset.

``ptq`` (Q-HyViT-style, :mod:`medvit.compress.ptq`): calibrate on ``calibration_images`` of one split, search and
reconstruct, write a PTQ checkpoint (``ptq.safetensors`` beside the on-grid weights and the original contract)
that ``medvit infer --precision int8`` runs statically; reports fp32 vs int8 (exact fake-quant simulation of the
exported graph) on another split. ``nvit_prune`` (:mod:`medvit.compress.prune`): saliency on ``saliency_images``,
prune to ``mac_ratio`` of the dense MACs, write a ``vit_pruned`` checkpoint with the same contract; reports the
metric before/after (fine-tune it afterwards: NViT does).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medvit.config import option
from medvit.tasks.base import register_task

logger = logging.getLogger(__name__)


@dataclass
class _Common:
    checkpoint: str = option("", "medvit checkpoint directory (model.safetensors + config.json with a contract)")
    output_dir: str = option("runs/compressed", "where the compressed checkpoint and summary.json go")
    dataset: str = option("cxr_phantom", "registered dataset name (`medvit list dataset`)")
    dataset_args: dict[str, Any] = option(default_factory=dict, help="build_dataset kwargs, e.g. {n: 400, seed: 0}")
    fit_split: str = option("train", "split the calibration / saliency images come from")
    eval_split: str = option("val", "split the fp32 vs compressed comparison runs on (disjoint from fit_split)")
    batch_size: int = option(32, "images per forward pass")


def _data(cfg: Any, contract: Any) -> tuple[Any, Any]:
    """fit_split and eval_split of ``cfg.dataset`` through the contract's eval preprocessing, in memory."""
    from medvit.data import build_dataset
    from medvit.data.augment import build_contract_eval_transform
    from medvit.eval.predict import cache_dataset

    if cfg.fit_split == cfg.eval_split:
        raise ValueError(f"fit_split and eval_split must differ (both {cfg.fit_split!r}): the comparison must run on "
                         "images the calibration / saliency never saw")
    tf = build_contract_eval_transform(contract)
    fit = cache_dataset(build_dataset(cfg.dataset, cfg.fit_split, **cfg.dataset_args), tf, keys=("image", "label"))
    ev = cache_dataset(build_dataset(cfg.dataset, cfg.eval_split, **cfg.dataset_args), tf, keys=("image", "label"))
    if not len(fit) or not len(ev):
        raise ValueError(f"{cfg.dataset}: empty split ({cfg.fit_split}: {len(fit)}, {cfg.eval_split}: {len(ev)})")
    return fit, ev


def _load_checkpoint(path: str, key: str = "checkpoint") -> Any:
    from medvit.models import load_model

    if not path:
        raise ValueError(f"{key} is required (a medvit checkpoint directory)")
    model = load_model(path).eval()
    if model.contract is None:
        raise ValueError(f"{path}: config.json has no weight contract (preprocessing); re-save it with one")
    return model


def input_mismatch(a: Any, a_key: str, b: Any, b_key: str) -> str | None:
    """Why two models cannot take the same input tensor, or None when they can: ``a`` / ``b`` are loaded medvit
    models, ``a_key`` / ``b_key`` the config keys that named them. Compared: the weight contracts' ``in_chans``,
    ``input_size``, ``mean``, ``std`` (the model input: channels, pixels, normalisation); for a model without a
    contract (a public backbone), its ``model_args`` ``in_chans`` and ``img_size`` against the other's contract.
    The message names both keys and the first differing field."""
    ca, cb = getattr(a, "contract", None), getattr(b, "contract", None)
    if ca is None and cb is None:
        return None
    if ca is None or cb is None:  # one side has only its architecture's arguments
        (cm, ck), (bm, bk) = ((b, b_key), (a, a_key)) if ca is None else ((a, a_key), (b, b_key))
        c, args = cm.contract, dict(getattr(bm, "model_args", {}) or {})
        size = args.get("img_size")
        fields = [("in_chans", args.get("in_chans"), int(c.in_chans)),
                  ("img_size", None if size is None else tuple(size) if isinstance(size, list | tuple)
                   else (int(size), int(size)), tuple(int(s) for s in c.input_size))]
        for name, got, want in fields:
            if got is not None and got != want:
                return (f"{bk}: model_args {name!r} is {got}, but {ck}'s contract takes {want} "
                        f"({'in_chans' if name == 'in_chans' else 'input_size'})")
        return None
    for name in ("in_chans", "input_size", "mean", "std"):
        va, vb = getattr(ca, name), getattr(cb, name)
        va, vb = (tuple(va), tuple(vb)) if isinstance(va, list | tuple) else (va, vb)
        if va != vb:
            return f"{a_key} and {b_key}: contract key {name!r} differs ({va} vs {vb})"
    return None


def _load(cfg: Any) -> tuple[Any, Any, Any]:
    if not cfg.checkpoint:
        raise ValueError("checkpoint is required (a medvit checkpoint directory)")
    if cfg.fit_split == cfg.eval_split:
        raise ValueError(f"fit_split and eval_split must differ (both {cfg.fit_split!r}): the comparison must run on "
                         "images the calibration / saliency never saw")
    model = _load_checkpoint(cfg.checkpoint)
    return (model, *_data(cfg, model.contract))


def _stack(ds: Any, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    items = ds.items[:n] if n else ds.items
    return torch.stack([it["image"] for it in items]), torch.stack([torch.as_tensor(it["label"]) for it in items])


def _metric(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    from medvit.eval.frozen import score_report

    if y.dim() == 2:
        return {"mean_auroc": score_report(torch.sigmoid(logits).double().numpy(), y.numpy().round())["mean_auroc"]}
    return {"accuracy": float((logits.argmax(1) == y).float().mean())}


@torch.no_grad()
def _logits(model: Any, x: torch.Tensor, bs: int) -> torch.Tensor:
    return torch.cat([model(x[i:i + bs]).float() for i in range(0, len(x), bs)])


def _without_ood(contract: Any, what: str) -> Any:
    """The contract minus its OOD reference: a reference fitted on the source model's features does not describe
    a model whose features changed (pruned, retrained)."""
    import dataclasses

    if getattr(contract, "ood", None):
        logger.warning("%s: the source checkpoint's OOD reference is dropped (its features changed); fit a new one "
                       "with task ood_reference", what)
        return dataclasses.replace(contract, ood=None)
    return contract


def _copy_ood(src: str, dst: Path, contract: Any) -> None:
    """Copy the source checkpoint's ood.safetensors next to a checkpoint that keeps its contract's reference."""
    import shutil

    if getattr(contract, "ood", None):
        shutil.copyfile(Path(src) / "ood.safetensors", dst / "ood.safetensors")


def _write(out: Path, summary: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))


@dataclass
class PTQTaskConfig(_Common):
    """Q-HyViT-style static int8 PTQ of a checkpoint (writes a PTQ checkpoint for `medvit infer --precision int8`)."""

    calibration_images: int = option(256, "calibration images from fit_split")
    recon_iters: int = option(200, "AdaRound steps per block (0: nearest rounding)")


def run_ptq(cfg: PTQTaskConfig) -> dict[str, Any]:
    """Calibrate, search, reconstruct, save; compare fp32 and int8 on eval_split."""
    from medvit.compress.ptq import PTQConfig, ptq_calibrate, save_ptq_checkpoint, simulate

    model, fit, ev = _load(cfg)
    xc, _ = _stack(fit, cfg.calibration_images)
    qm, res = ptq_calibrate(model, list(xc.split(cfg.batch_size)), PTQConfig(recon_iters=cfg.recon_iters))
    out = Path(cfg.output_dir)
    save_ptq_checkpoint(qm, res, out / "model", contract=model.contract)
    _copy_ood(cfg.checkpoint, out / "model", model.contract)  # int8 features ≈ fp32: the reference stays
    xe, ye = _stack(ev)
    ref, q = _logits(model, xe, cfg.batch_size), _logits(simulate(qm, res.qparams), xe, cfg.batch_size)
    act = torch.sigmoid if ye.dim() == 2 else (lambda t: torch.softmax(t, 1))
    summary = {"checkpoint": cfg.checkpoint, "ptq_checkpoint": str(out / "model"),
               "calibration_images": int(len(xc)), "eval_images": int(len(xe)), "fp32": _metric(ref, ye),
               "int8": _metric(q, ye), "max_abs_prob_diff": float((act(q) - act(ref)).abs().max()),
               "choice_counts": res.report["choice_counts"], "blocks": res.report.get("blocks", [])}
    _write(out, summary)
    logger.info("ptq: fp32 %s, int8 %s, max |Δp| %.4f", summary["fp32"], summary["int8"], summary["max_abs_prob_diff"])
    return summary


@dataclass
class NViTPruneConfig(_Common):
    """NViT pruning of a checkpoint to a MAC budget (writes a vit_pruned checkpoint; fine-tune it afterwards)."""

    saliency_images: int = option(256, "images from fit_split the saliency is accumulated over")
    mac_ratio: float = option(0.5, "kept fraction of the dense model's MACs, in (0, 1]")

    def __post_init__(self) -> None:
        if not 0 < self.mac_ratio <= 1:  # before anything is written (the resolved config included)
            raise ValueError(f"mac_ratio must be in (0, 1], got {self.mac_ratio}")


def run_nvit(cfg: NViTPruneConfig) -> dict[str, Any]:
    """Saliency, plan, slice, save; compare dense and pruned on eval_split."""
    import torch.nn.functional as F

    from medvit.compress.prune import prune_to_budget
    from medvit.models import save_checkpoint

    model, fit, ev = _load(cfg)
    xs, ys = _stack(fit, cfg.saliency_images)
    loss = F.binary_cross_entropy_with_logits if ys.dim() == 2 else F.cross_entropy
    ys = ys.float() if ys.dim() == 2 else ys.long()
    pruned, plan = prune_to_budget(model, list(zip(xs.split(cfg.batch_size), ys.split(cfg.batch_size),
                                                   strict=True)), loss, cfg.mac_ratio)
    out = Path(cfg.output_dir)
    save_checkpoint(pruned, out / "model", contract=_without_ood(model.contract, "nvit_prune"),
                    extra={"nvit": plan.to_dict()})
    xe, ye = _stack(ev)
    summary = {"checkpoint": cfg.checkpoint, "pruned_checkpoint": str(out / "model"), **plan.to_dict(),
               "dense": _metric(_logits(model, xe, cfg.batch_size), ye),
               "pruned_before_finetune": _metric(_logits(pruned, xe, cfg.batch_size), ye),
               "params_dense": sum(p.numel() for p in model.parameters()),
               "params_pruned": sum(p.numel() for p in pruned.parameters())}
    _write(out, summary)
    logger.info("nvit_prune: %s", {k: summary[k] for k in ("mac_ratio", "dense", "pruned_before_finetune")})
    return summary


register_task("ptq", PTQTaskConfig, "Q-HyViT-style static int8 PTQ of a checkpoint for medvit infer --precision int8")(
    run_ptq)
register_task("nvit_prune", NViTPruneConfig, "NViT pruning of a checkpoint to a MAC budget")(run_nvit)
