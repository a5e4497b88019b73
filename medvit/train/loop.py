"""The training loop shared by MAE pretraining, fine-tuning and PEFT.

``Trainer(model, cfg, train_set, step_fn, evaluate=...).fit()``:

- ``step_fn(model, batch) -> loss | {"loss": loss, other scalars}`` computes the loss of one micro-batch; it
  must call ``model(...)`` (under DDP that is the wrapped model), batch tensors are already on the device;
- ``evaluate(model) -> {metric: value}`` runs on rank 0 every ``eval_every`` steps / each epoch and at the end;
  the best value of ``select_metric`` (validation!) is kept in ``output_dir/best`` and restored at the end;
  ``early_stop_patience`` evaluations without improvement end the run early (the best weights are restored).

Optimizer: AdamW over :func:`medvit.train.optim.param_groups` (trainable parameters only, no-decay groups,
layer-wise LR decay); LR from a pure schedule of the step times each group's ``lr_scale``; gradient accumulation
(``no_sync`` between micro-batches under DDP); bf16 autocast; optional clipping; non-finite losses are skipped
up to ``max_nonfinite`` times, then raise. Checkpoints every ``ckpt_every`` steps resume exactly: model,
optimizer, RNG states (per rank) and data position (epoch, batch).
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medvit.nn.precision import autocast
from medvit.train import state as st
from medvit.train.config import TrainConfig
from medvit.train.csv_log import CSVLogger
from medvit.train.distributed import DistInfo, all_reduce_min, barrier, init_distributed, resolve_device
from medvit.train.optim import build_optimizer, param_groups
from medvit.train.sampler import ResumableBatchSampler, SeededTransformDataset, Transform
from medvit.train.schedule import SCHEDULES, scaled_lr
from medvit.train.tracking import RunLog

logger = logging.getLogger(__name__)

#: the EMA weights inside a resumable checkpoint (``TrainConfig.ema_decay`` > 0)
EMA_FILE = "ema.safetensors"

StepOutput = torch.Tensor | dict[str, torch.Tensor]
StepFn = Callable[[nn.Module, dict[str, Any]], StepOutput]
EvalFn = Callable[[nn.Module], dict[str, float]]


@dataclass
class TrainResult:
    """What a run did: per-step losses (this rank), evaluations, the selected step and throughput."""

    steps: int  # optimizer steps completed (including resumed ones)
    total_steps: int  # length of the LR schedule
    losses: list[float] = field(default_factory=list)  # loss of each step run in this process (mean of micro-batches)
    lrs: list[float] = field(default_factory=list)  # base LR (scale 1.0) used at each of those steps
    history: list[dict[str, float]] = field(default_factory=list)  # evaluation rows {"step": s, metric: v}
    best: dict[str, float] | None = None  # the evaluation row selected on select_metric
    best_dir: str = ""  # where the selected weights are (output_dir/best), "" when kept in memory / none
    samples_per_s: float = 0.0  # training samples per second over all ranks (this process' wall time)
    wall_s: float = 0.0
    skipped_steps: int = 0  # steps skipped for a non-finite loss
    stopped_early: bool = False  # ended by early_stop_patience (a finished run, best weights restored)

    @property
    def finished(self) -> bool:
        """The schedule ran to its end or early stopping ended it; false for an interrupted run (stop_at_step), whose
        tasks save no final model and evaluate nothing on test."""
        return self.steps >= self.total_steps or self.stopped_early

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors (nested in dicts/lists) to ``device``; other values unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


class Trainer:
    """One training run (see module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        train_set: Dataset,
        step_fn: StepFn,
        *,
        evaluate: EvalFn | None = None,
        select_metric: str | None = None,
        select_mode: str = "max",
        transform: Transform | None = None,
        collate_fn: Callable | None = None,
        groups: list[dict[str, Any]] | None = None,
        find_unused_parameters: bool = False,
        restore_best: bool = True,
        sample_labels: Any = None,
    ):
        if select_mode not in ("max", "min"):
            raise ValueError(f"select_mode must be 'max' or 'min', got {select_mode!r}")
        if select_metric and evaluate is None:
            raise ValueError("select_metric needs an evaluate function")
        self.cfg, self.step_fn, self.evaluate = cfg, step_fn, evaluate
        self.select_metric, self.select_mode = select_metric, select_mode
        self.device = resolve_device(cfg.device)
        self.dist: DistInfo = init_distributed(self.device)
        self.model = model.to(self.device)
        if isinstance(step_fn, nn.Module):  # a registered loss (medvit.train.losses.LossStep): its teacher etc.
            step_fn.to(self.device)
        self.groups = groups
        self.find_unused = find_unused_parameters
        self.restore_best = restore_best
        self.out = Path(cfg.output_dir) if cfg.output_dir else None
        self.sampler = ResumableBatchSampler(len(train_set), cfg.batch_size, cfg.seed, self.dist.rank,
                                             self.dist.world_size)
        if cfg.sampler is not None:  # long-tail re-sampling (train.sampler): per-sample probabilities per epoch
            from medvit.data.fraction import label_table

            labels = label_table(train_set) if sample_labels is None else sample_labels
            if len(labels) != len(train_set):
                raise ValueError(f"train.sampler: {len(labels)} labels for {len(train_set)} training items")
            spec = cfg.sampler
            spec.probabilities(labels)  # refuse label tables it cannot use before training starts
            self.sampler.probabilities = lambda epoch: spec.probabilities(labels, epoch, self.total_epochs)
        self.loader = DataLoader(
            SeededTransformDataset(train_set, transform, getattr(step_fn, "seed_key", None)),
            batch_sampler=self.sampler, num_workers=cfg.num_workers,
            collate_fn=collate_fn, generator=torch.Generator().manual_seed(cfg.seed),
            persistent_workers=False, pin_memory=self.device.type == "cuda",
        )
        per_epoch = self.sampler.batches_per_epoch
        self.total_steps = cfg.steps or max(1, math.ceil(cfg.epochs * per_epoch / cfg.accum_steps))
        self.total_epochs = max(1, math.ceil(self.total_steps * cfg.accum_steps / per_epoch))
        steps_per_epoch = max(per_epoch / cfg.accum_steps, 1e-9)
        self.warmup_steps = cfg.warmup_steps if cfg.warmup_steps >= 0 else round(cfg.warmup_epochs * steps_per_epoch)
        self.warmup_steps = min(self.warmup_steps, self.total_steps)
        self.eval_every = cfg.eval_every or max(1, round(steps_per_epoch))
        eff_batch = cfg.batch_size * cfg.accum_steps * self.dist.world_size
        self.base_lr = cfg.lr if cfg.lr is not None else scaled_lr(cfg.blr, eff_batch)
        self.schedule = SCHEDULES[cfg.schedule]
        self.best: dict[str, float] | None = None
        self.history: list[dict[str, float]] = []
        self._best_state: dict[str, torch.Tensor] | None = None
        self.ema: torch.optim.swa_utils.AveragedModel | None = None
        if cfg.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        self.stale_evals = 0  # evaluations since select_metric last improved (early stopping)
        self.stopped_early = False

    # ------------------------------------------------------------------ helpers
    def lr_at(self, step: int) -> float:
        return self.schedule(step, self.base_lr, self.total_steps, self.warmup_steps, self.cfg.min_lr)

    def _micro_batches(self, start_micro: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """Endless stream of (epoch, batch) from data position ``start_micro``; data fetch never touches the
        global RNG (model-side randomness stays identical whether batches were skipped or not)."""
        per_epoch = self.sampler.batches_per_epoch
        micro = start_micro
        while True:
            epoch, off = divmod(micro, per_epoch)
            self.sampler.set_epoch(epoch, off)
            with torch.random.fork_rng(devices=[]):
                it = iter(self.loader)
            while True:
                with torch.random.fork_rng(devices=[]):
                    batch = next(it, None)
                if batch is None:
                    break
                micro += 1
                yield epoch, batch

    def _better(self, value: float) -> bool:
        if self.best is None or not math.isfinite(self.best[self.select_metric]):  # type: ignore[index]
            return math.isfinite(value)
        cur = self.best[self.select_metric]  # type: ignore[index]
        return value > cur if self.select_mode == "max" else value < cur

    def _run_eval(self, module: nn.Module, step: int, csv: RunLog) -> None:
        if self.evaluate is None:
            return
        if self.dist.is_main:
            was = module.training
            module.eval()
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), \
                    torch.no_grad(), autocast(self.device, self.cfg.precision):
                metrics = {k: float(v) for k, v in self.evaluate(module).items()}
            module.train(was)
            row = {"step": float(step), **metrics}
            self.history.append(row)
            csv.log({"step": step, "kind": "eval", **metrics})
            if self.select_metric:
                if self.select_metric not in metrics:
                    raise KeyError(f"select_metric {self.select_metric!r} is not among the evaluation results "
                                   f"{sorted(metrics)}")
                if self._better(metrics[self.select_metric]):
                    self.best = row
                    self._save_best(module)
                    self.stale_evals = 0
                else:
                    self.stale_evals += 1
            logger.info("step %d eval %s", step, {k: round(v, 4) for k, v in metrics.items()})
        barrier(self.dist)

    def _patience_spent(self) -> bool:
        """Early stopping (``cfg.early_stop_patience`` evaluations without improvement), agreed by every rank."""
        if not (self.cfg.early_stop_patience and self.select_metric):
            return False
        spent = float(self.stale_evals >= self.cfg.early_stop_patience) if self.dist.is_main else 0.0
        import torch.distributed as dist

        if self.dist.enabled:
            flag = torch.tensor([spent], device=self.device)
            dist.broadcast(flag, 0)
            spent = float(flag.item())
        return spent > 0

    def _save_best(self, module: nn.Module) -> None:
        sd = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        if self.out is not None:
            from medvit.models.checkpoint import write_safetensors

            d = self.out / "best"
            d.mkdir(parents=True, exist_ok=True)
            write_safetensors(d / "model.safetensors", sd)
        else:
            self._best_state = sd

    def _save(self, module: nn.Module, optimizer: torch.optim.Optimizer, step: int, micro: int) -> None:
        if self.out is None:
            return
        d = self.out / "checkpoints" / f"step_{step:06d}"
        tmp = d.with_name(d.name + ".tmp")
        if self.dist.is_main:
            if tmp.exists():  # left over from a killed run
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        barrier(self.dist)
        if not self.dist.is_main:
            st.save_rank_rng(tmp, self.dist.rank)
        barrier(self.dist)
        if self.dist.is_main:
            meta = {"step": step, "micro": micro, "total_steps": self.total_steps, "best": self.best,
                    "history": self.history, "world_size": self.dist.world_size, "seed": self.cfg.seed}
            if self.ema is not None:
                from medvit.models.checkpoint import write_safetensors

                write_safetensors(tmp / EMA_FILE, {k: v.detach().cpu() for k, v in self.ema.state_dict().items()})
            st.save_train_state(d, module, optimizer, meta)
            st.prune_checkpoints(self.out, self.cfg.keep_last)
            logger.info("checkpoint %s", d)
        barrier(self.dist)

    def _resume_dir(self) -> Path | None:
        r = self.cfg.resume
        if not r:
            return None
        if r == "auto":
            if self.out is None:
                raise ValueError("resume='auto' needs output_dir (where checkpoints/ is searched)")
            return st.latest_checkpoint(self.out)
        p = Path(r)
        if not p.is_dir():
            raise FileNotFoundError(f"resume checkpoint {p} does not exist (use resume='auto' to pick the latest)")
        return p

    # ------------------------------------------------------------------ main
    def fit(self) -> TrainResult:
        cfg, dev = self.cfg, self.device
        torch.manual_seed(cfg.seed * 1000 + self.dist.rank)
        module = self.model
        groups = self.groups or param_groups(module, cfg.weight_decay, cfg.layer_decay)
        optimizer = build_optimizer(groups, self.base_lr, tuple(cfg.betas), cfg.eps)
        step, micro = 0, 0
        ckpt = self._resume_dir()
        if ckpt is not None:
            meta = st.load_train_state(ckpt, module, optimizer, restore_rng=self.dist.is_main)
            if not self.dist.is_main:
                st.load_rank_rng(ckpt, self.dist.rank)
            if meta.get("world_size", 1) != self.dist.world_size:
                raise ValueError(f"{ckpt} was written with {meta.get('world_size')} processes, this run has "
                                 f"{self.dist.world_size}; exact resumption needs the same number")
            step, micro = int(meta["step"]), int(meta["micro"])
            if self.ema is not None:
                if (ckpt / EMA_FILE).is_file():
                    from safetensors.torch import load_file

                    self.ema.load_state_dict(load_file(str(ckpt / EMA_FILE)))
                else:
                    logger.warning("%s holds no EMA weights; the average restarts from the resumed weights", ckpt)
            self.best, self.history = meta.get("best"), list(meta.get("history", []))
            if self.best is not None:
                self.stale_evals = sum(1 for r in self.history if r["step"] > self.best["step"])
            logger.info("resumed from %s at step %d", ckpt, step)
        csv = RunLog(CSVLogger(self.out / "log.csv" if (self.out and self.dist.is_main) else None),
                     list(cfg.report_to), self.out, asdict(cfg))
        csv.truncate_after(step)  # a fresh run (step 0) starts a new log; a resumed one drops replayed rows
        model: nn.Module = module
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(module, device_ids=[dev.index] if dev.type == "cuda" else None,
                        find_unused_parameters=self.find_unused)
        model.train()
        stop = min(self.total_steps, cfg.stop_at_step or self.total_steps)
        if ckpt is not None and step < stop and self._patience_spent():  # resuming a run that stopped early
            self.stopped_early, stop = True, step
            logger.info("%s: the run had stopped early (%s did not improve in %d evaluations); nothing to train",
                        ckpt, self.select_metric, cfg.early_stop_patience)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        # modules that follow training progress (e.g. EViT's keep-rate warm-up): on_train_step(step, total_steps)
        # (also the modules of a step_fn that is an nn.Module, e.g. a loss's class-weight schedule)
        hooked = [*module.modules(), *(self.step_fn.modules() if isinstance(self.step_fn, nn.Module) else [])]
        progress_hooks = [m.on_train_step for m in hooked if callable(getattr(m, "on_train_step", None))]
        result = TrainResult(steps=step, total_steps=self.total_steps)
        bar = tqdm(total=stop, initial=step, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr,
                   mininterval=1.0, disable=not (cfg.progress and self.dist.is_main))
        stream = self._micro_batches(micro)
        window: dict[str, list[float]] = {}
        t0, n_samples, skipped = time.perf_counter(), 0, 0
        try:
            while step < stop:
                lr = self.lr_at(step)
                for g in optimizer.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
                for hook in progress_hooks:
                    hook(step, self.total_steps)
                step_losses, bad, epoch = [], False, 0
                for i in range(cfg.accum_steps):
                    epoch, batch = next(stream)
                    micro += 1
                    batch = move_to(batch, dev)
                    sync = i == cfg.accum_steps - 1 or not self.dist.enabled
                    ctx = contextlib.nullcontext() if sync else model.no_sync()  # type: ignore[operator]
                    with ctx:
                        with autocast(dev, cfg.precision):
                            out = self.step_fn(model, batch)
                        loss = out if isinstance(out, torch.Tensor) else out["loss"]
                        finite = all_reduce_min(float(torch.isfinite(loss.detach()).all()), self.dist, dev)
                        if finite < 1.0:
                            bad = True
                            continue
                        (loss.float() / cfg.accum_steps).backward()
                    step_losses.append(float(loss.detach()))
                    n_samples += _batch_len(batch) * self.dist.world_size
                    if isinstance(out, dict):
                        for k, v in out.items():
                            if k != "loss" and isinstance(v, torch.Tensor) and v.numel() == 1:
                                window.setdefault(k, []).append(float(v.detach()))
                if bad:
                    optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    logger.warning("step %d: non-finite loss, step skipped (%d/%d allowed)", step, skipped,
                                   cfg.max_nonfinite)
                    if skipped > cfg.max_nonfinite:
                        raise FloatingPointError(
                            f"loss is not finite at step {step} (lr {lr:.3g}); lower lr/blr, add clip_grad, "
                            f"or use precision='fp32'. Set max_nonfinite to tolerate a few bad batches."
                        )
                else:
                    if cfg.clip_grad is not None:
                        gn = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
                        window.setdefault("grad_norm", []).append(float(gn))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if self.ema is not None:
                        self.ema.update_parameters(module)
                step += 1
                mean_loss = sum(step_losses) / len(step_losses) if step_losses else math.nan
                result.losses.append(mean_loss)
                result.lrs.append(lr)
                window.setdefault("loss", []).append(mean_loss)
                bar.update(1)
                if step % cfg.log_every == 0 or step == stop:
                    row = {"step": step, "kind": "train", "epoch": round(micro / self.sampler.batches_per_epoch, 4),
                           "lr": lr, **{k: sum(v) / len(v) for k, v in window.items()},
                           "samples_per_s": n_samples / max(time.perf_counter() - t0, 1e-9)}
                    csv.log(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}")
                    window = {}
                if step % self.eval_every == 0 or step == self.total_steps:
                    self._run_eval(self.ema.module if self.ema is not None else module, step, csv)
                    if self._patience_spent():
                        self.stopped_early = True
                        logger.info("early stop at step %d: %s did not improve in %d evaluations", step,
                                    self.select_metric, cfg.early_stop_patience)
                        self._save(module, optimizer, step, micro)
                        break
                if cfg.ckpt_every and step % cfg.ckpt_every == 0 or step == stop:
                    self._save(module, optimizer, step, micro)
        finally:
            bar.close()
            csv.close()
            stream.close()  # stops DataLoader workers of the unfinished epoch
        result.wall_s = time.perf_counter() - t0
        result.samples_per_s = n_samples / max(result.wall_s, 1e-9)
        result.steps, result.skipped_steps, result.stopped_early = step, skipped, self.stopped_early
        result.history, result.best = list(self.history), self.best
        if self.ema is not None and step == self.total_steps:  # the average is the model (unless best replaces it)
            module.load_state_dict(self.ema.module.state_dict())
        if self.restore_best and (step == self.total_steps or self.stopped_early):
            self._load_best(module)
        if self.out is not None and self.best is not None:
            result.best_dir = str(self.out / "best")
        return result

    def _load_best(self, module: nn.Module) -> None:
        """Put the selected (validation-best) weights back into the model; rank 0 broadcasts them under DDP."""
        loaded = 0.0
        if self.dist.is_main and self.best is not None:
            if self._best_state is not None:
                module.load_state_dict(self._best_state)
                loaded = 1.0
            elif self.out is not None and (self.out / "best" / "model.safetensors").is_file():
                from safetensors.torch import load_file

                module.load_state_dict(load_file(str(self.out / "best" / "model.safetensors")))
                loaded = 1.0
            logger.info("restored the best weights (step %s)", self.best.get("step"))
        if self.dist.enabled:
            import torch.distributed as dist

            flag = torch.tensor([loaded], device=self.device)
            dist.broadcast(flag, 0)
            if flag.item() > 0:
                for t in module.state_dict().values():
                    dist.broadcast(t, 0)


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        for v in batch.values():
            if isinstance(v, torch.Tensor):
                return int(v.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_len(batch[0])
    return 0


def fit(model: nn.Module, cfg: TrainConfig, train_set: Dataset, step_fn: StepFn, **kwargs: Any) -> TrainResult:
    """Functional form of ``Trainer(model, cfg, train_set, step_fn, **kwargs).fit()``."""
    return Trainer(model, cfg, train_set, step_fn, **kwargs).fit()
