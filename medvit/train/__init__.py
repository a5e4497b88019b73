"""Training core: config, parameter groups with layer-wise LR decay, pure LR schedules, resumable loop, DDP."""

from medvit.train.config import TrainConfig
from medvit.train.distributed import DistInfo, init_distributed, resolve_device
from medvit.train.loop import Trainer, TrainResult, autocast, fit, move_to
from medvit.train.losses import Loss, LossSpec, build_loss, loss_step, register_loss
from medvit.train.optim import build_optimizer, layer_ids, param_groups
from medvit.train.schedule import constant_lr, scaled_lr, warmup_cosine_lr
from medvit.train.state import latest_checkpoint, load_train_state, save_train_state

__all__ = [
    "DistInfo",
    "Loss",
    "LossSpec",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "autocast",
    "build_loss",
    "build_optimizer",
    "constant_lr",
    "fit",
    "init_distributed",
    "latest_checkpoint",
    "layer_ids",
    "load_train_state",
    "loss_step",
    "move_to",
    "param_groups",
    "register_loss",
    "resolve_device",
    "save_train_state",
    "scaled_lr",
    "warmup_cosine_lr",
]
