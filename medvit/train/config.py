"""``TrainConfig``: every knob of the training loop, validated before any work starts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from medvit.config import option
from medvit.train.sampler import SamplerSpec


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision, checkpointing and logging of one training run."""

    epochs: float = option(1.0, "passes over the training set (fractional allowed); ignored when steps > 0")
    steps: int = option(0, "total optimizer steps of the schedule; 0 = epochs × steps per epoch")
    stop_at_step: int = option(0, "stop after this step without changing the schedule (0 = run to the end)")
    batch_size: int = option(64, "samples per micro-batch per process")
    accum_steps: int = option(1, "micro-batches accumulated per optimizer step")
    blr: float = option(1e-3, "base LR; lr = blr × batch_size × accum_steps × world_size / 256")
    lr: float | None = option(None, "absolute LR; overrides blr when set")
    min_lr: float = option(0.0, "final LR of the cosine")
    schedule: str = option("cosine", '"cosine" (warmup + half-cycle cosine), "constant" or "poly" (warmup + linear)')
    warmup_epochs: float = option(0.0, "linear warmup length in epochs (used when warmup_steps < 0)")
    warmup_steps: int = option(-1, "linear warmup length in steps; -1 = from warmup_epochs")
    weight_decay: float = option(0.05, "AdamW decay of >=2-D weights (biases, norms, position tables: 0)")
    layer_decay: float = option(1.0, "BEiT layer-wise LR decay (1.0 = off; 0.55 thorax-MAE fine-tuning)")
    betas: tuple[float, float] = option((0.9, 0.999), "AdamW betas (MAE pretraining uses (0.9, 0.95))")
    eps: float = option(1e-8, "AdamW epsilon")
    precision: str = option("fp32", '"fp32" or "bf16" (autocast on CPU and CUDA; no loss scaling needed)')
    clip_grad: float | None = option(None, "max global gradient norm; None = no clipping")
    max_nonfinite: int = option(0, "tolerated non-finite losses (step skipped); one more raises FloatingPointError")
    seed: int = option(0, "seeds model-side randomness, data order and augmentation")
    num_workers: int = option(0, "DataLoader worker processes")
    device: str = option("auto", '"auto" (cuda if available), "cpu" or "cuda[:i]"')
    output_dir: str = option("", 'run directory (log.csv, checkpoints/, best/); "" = nothing written')
    ckpt_every: int = option(0, "save a resumable checkpoint every N steps (0 = only at the end)")
    keep_last: int = option(2, "resumable checkpoints kept on disk")
    resume: str = option("", '"" = fresh start, "auto" = latest checkpoint in output_dir, or a checkpoint directory')
    eval_every: int = option(0, "evaluate every N steps (0 = at each epoch end)")
    early_stop_patience: int = option(0, "stop after this many evaluations without a better select_metric (0 = off)")
    log_every: int = option(10, "write a log row every N steps")
    progress: bool = option(True, "tqdm progress bar on rank 0")
    ema_decay: float = option(0.0, "exponential moving average of the weights (e.g. 0.999; 0 = off): the average "
                                   "is evaluated, selected and saved (timm --model-ema)")
    sampler: SamplerSpec | None = option(None, "long-tail re-sampling of the training loader, e.g. {name: "
                                                "square_root} (class_balanced | square_root | progressive | power, "
                                                "Kang et al. ICLR 2020); null = shuffled epochs")
    report_to: list[str] = option(default_factory=list, help="trackers beside log.csv: tensorboard (event files in "
                                                             "output_dir/tensorboard), mlflow (local store "
                                                             "output_dir/mlruns); empty = none")

    def __post_init__(self) -> None:
        for k in ("batch_size", "accum_steps", "keep_last", "log_every"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ValueError(f"{k} must be an integer >= 1, got {getattr(self, k)!r}")
        for k in ("steps", "stop_at_step", "ckpt_every", "eval_every", "num_workers", "max_nonfinite",
                  "early_stop_patience"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} must be >= 0, got {getattr(self, k)}")
        if self.steps == 0 and not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise ValueError(f"epochs must be > 0 when steps is 0, got {self.epochs}")
        if not self.blr > 0 and self.lr is None:
            raise ValueError(f"blr must be > 0, got {self.blr}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0 (or null to use blr), got {self.lr}")
        if self.min_lr < 0:
            raise ValueError(f"min_lr must be >= 0, got {self.min_lr}")
        if self.schedule not in ("cosine", "constant", "poly"):
            raise ValueError(f"schedule must be 'cosine', 'constant' or 'poly', got {self.schedule!r}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")
        from medvit.train.tracking import check_report_to

        check_report_to(list(self.report_to))
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"clip_grad must be > 0 or null, got {self.clip_grad}")
