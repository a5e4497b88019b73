"""Shared machinery for methods backed by the huggingface ``peft`` library (LoRA, LoHa, LoKr, ...).

medvit resolves the target ``nn.Linear`` layers itself (:mod:`medvit.peft.targets`) and hands peft
the exact module names, so nothing matches silently by suffix. peft's tuner class injects its layers
*in place*: the returned model is still the medvit backbone (same ``forward_features`` /
``forward_head``), with e.g. ``blocks.0.attn.qkv`` replaced by a peft layer whose ``base_layer`` is
the original (frozen) ``nn.Linear``. ``peft`` is imported lazily here, never by ``import medvit``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medvit.config import option
from medvit.peft.base import MethodConfig, get_method
from medvit.peft.targets import resolve_targets

logger = logging.getLogger(__name__)

ADAPTER_NAME = "default"


@dataclass
class TargetedConfig(MethodConfig):
    """Config fields of every method that adapts named ``nn.Linear`` layers."""

    targets: list[str] = option(default_factory=lambda: ["attention"],
                                help='"attention" | "mlp" | "all-linear" | names')
    layers: list[int] | None = option(None, "block indices to adapt (negative from the end); None = all blocks")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if not self.targets:
            raise ValueError("targets is empty; use 'attention', 'mlp', 'all-linear' or module names")



@dataclass
class LycorisConfig(TargetedConfig):
    """Fields shared by the LyCORIS-family methods (LoHa, LoKr)."""

    r: int = option(8, "rank of the low-rank factors; must not exceed any targeted layer's min(in, out)")
    alpha: float = option(8.0, "scaling numerator (update × alpha / r)")
    rank_dropout: float = option(0.0, "dropout over ranks during training")
    module_dropout: float = option(0.0, "probability of skipping the whole update during training")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        for k in ("rank_dropout", "module_dropout"):
            if not 0.0 <= getattr(self, k) < 1.0:
                raise ValueError(f"{k} must be in [0, 1), got {getattr(self, k)}")

def inject_hf(model: nn.Module, peft_config: Any, names: Sequence[str]) -> nn.Module:
    """Inject a peft tuner (LoRA, ...) into ``model`` in place at modules ``names``; returns ``model``.

    The tuner object is kept on ``model._medvit_tuner`` (not a submodule) for methods whose training
    needs it (AdaLoRA's rank budget).
    """
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    peft_config.target_modules = list(names)
    tuner_cls = PEFT_TYPE_TO_TUNER_MAPPING[peft_config.peft_type]
    tuner = tuner_cls(model, peft_config, ADAPTER_NAME)
    if tuner.model is not model:  # pragma: no cover - peft contract
        raise RuntimeError(f"peft {tuner_cls.__name__} did not modify the model in place")
    object.__setattr__(model, "_medvit_tuner", tuner)
    injected = adapter_layers(model)
    missing = [n for n in names if n not in injected]
    if missing:
        raise RuntimeError(f"peft did not adapt {missing}; check the targets")
    return model


def adapter_layers(model: nn.Module) -> dict[str, nn.Module]:
    """peft adapter layers of ``model`` by module name."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}


def resolve(model: nn.Module, cfg: TargetedConfig) -> list[str]:
    return resolve_targets(model, cfg.targets, cfg.layers)


@torch.no_grad()
def merge_adapter(model: nn.Module) -> nn.Module:
    """Fold library adapters (LoRA family, IA3, OFT, VeRA) into the base ``nn.Linear`` layers, in place.

    Returns the same model with every peft layer replaced by its merged base ``nn.Linear``: a plain
    medvit backbone with no peft dependency, for deployment (``save_checkpoint``).
    """
    info = getattr(model, "peft_info", None)
    if info is None:
        raise ValueError("merge_adapter: model has no peft_info; apply a method with apply_peft first")
    if not get_method(info.method).mergeable:
        raise ValueError(f"PEFT method {info.method!r} cannot be merged into the base weights; "
                         "mergeable methods are the peft-library ones (lora, loha, lokr, ia3, adalora, oft, vera)")
    layers = adapter_layers(model)
    for name, layer in layers.items():
        layer.merge(safe_merge=True, adapter_names=[ADAPTER_NAME])
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    if "_medvit_tuner" in model.__dict__:
        del model.__dict__["_medvit_tuner"]
    model.peft_info = None
    logger.info("merged %d %s layers into the base", len(layers), info.method)
    return model


def tuner(model: nn.Module) -> Any:
    t = model.__dict__.get("_medvit_tuner")
    if t is None:
        raise ValueError("model has no peft tuner attached (was it built by apply_peft with a peft-library method?)")
    return t
