"""The one interface every parameter-efficient method implements.

A method is a config dataclass (subclass of :class:`MethodConfig`) plus ``inject(model, cfg)``,
registered under registry kind ``"peft"``. :func:`apply_peft` is the only entry point callers use:

1. every parameter of the backbone is frozen;
2. the method's ``inject`` adds (and leaves trainable) what it trains; it may modify the model in
   place (library adapters) or wrap it (prompt methods) and returns the model to train;
3. the classifier ``head`` (``train_head``) and any ``extra_trainable`` parameters are unfrozen;
4. the result carries ``model.peft_info`` (:class:`PeftInfo`): method, config, and references to the
   base tensors that stay frozen, so adapters can be saved alone and checked against their base.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medvit.config import option
from medvit.registry import REGISTRY

logger = logging.getLogger(__name__)


@dataclass
class MethodConfig:
    """Fields shared by every method's config."""

    train_head: bool = option(True, "train the classifier ``head`` (a fresh task head) alongside the method")
    extra_trainable: list[str] = option(default_factory=list, help="regexes of further backbone params to train")

    def __post_init__(self) -> None:
        for pat in self.extra_trainable:
            try:
                re.compile(pat)
            except re.error as e:
                raise ValueError(f"extra_trainable: {pat!r} is not a valid regex ({e})") from e


@dataclass
class PeftMethod:
    """A registered method: its config class, ``inject`` and optional hooks."""

    name: str
    config_cls: type[MethodConfig]
    inject: Callable[[nn.Module, Any], nn.Module]  # (frozen backbone, config) -> model to train
    description: str = ""
    mergeable: bool = False  # ``merge_adapter`` folds the trained weights into the base layers
    on_step: Callable[[nn.Module, int], None] | None = None  # after optimizer.step() (AdaLoRA budget)
    regularizer: Callable[[nn.Module], torch.Tensor | None] | None = None  # added to the loss


@dataclass
class PeftInfo:
    """What :func:`apply_peft` records on the returned model (``model.peft_info``)."""

    method: str
    config: MethodConfig
    frozen_base: list[tuple[str, torch.Tensor]]  # (pre-injection name, tensor) of every frozen base tensor
    backbone_params: int  # parameters of the backbone without its head (denominator of trainable %)
    base_arch: str | None = None
    base_model_args: dict[str, Any] | None = None
    base_weights: str | None = None  # where the base weights came from (path or weight tag), if known
    base_weights_sha256: str | None = None  # checksum of that file, if known
    #: frozen tensors the method builds deterministically from the base and its config at inject (e.g. Still-Moving's
    #: frozen temporal model): not saved in adapters, rebuilt at load and checked by :meth:`derived_sha256`
    derived: list[tuple[str, torch.Tensor]] = field(default_factory=list)

    def base_state_sha256(self) -> str:
        """sha256 over the frozen base tensors (names, dtypes, shapes, bytes), order-independent."""
        return tensors_sha256(self.frozen_base)

    def derived_sha256(self) -> str | None:
        """sha256 over the method-derived frozen tensors; None when the method derives none."""
        return tensors_sha256(self.derived) if self.derived else None


def tensors_sha256(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 over (name, dtype, shape, bytes) of named tensors, order-independent."""
    h = hashlib.sha256()
    for name, t in sorted(named, key=lambda kv: kv[0]):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def register_method(
    name: str,
    config_cls: type[MethodConfig],
    description: str = "",
    mergeable: bool = False,
    on_step: Callable[[nn.Module, int], None] | None = None,
    regularizer: Callable[[nn.Module], torch.Tensor | None] | None = None,
) -> Callable[[Callable[[nn.Module, Any], nn.Module]], Callable[[nn.Module, Any], nn.Module]]:
    """Decorator registering ``inject(model, cfg) -> model`` as PEFT method ``name``."""

    def deco(fn: Callable[[nn.Module, Any], nn.Module]) -> Callable[[nn.Module, Any], nn.Module]:
        spec = PeftMethod(name, config_cls, fn, description, mergeable, on_step, regularizer)
        REGISTRY.add("peft", name, spec, description=description)
        return fn

    return deco


def get_method(name: str) -> PeftMethod:
    """The registered method ``name``; unknown names raise ``KeyError`` listing the close matches."""
    if not isinstance(name, str):
        raise KeyError(f"PEFT method name must be a string, got {name!r}")
    return REGISTRY.get("peft", name)


def list_methods() -> list[str]:
    return REGISTRY.names("peft")


def make_config(name: str, config: MethodConfig | dict[str, Any] | None = None) -> MethodConfig:
    """Method ``name``'s config from a dataclass instance, a mapping (strict keys) or None (defaults)."""
    spec = get_method(name)
    if config is None:
        return spec.config_cls()
    if isinstance(config, spec.config_cls):
        return config
    if isinstance(config, MethodConfig):
        raise TypeError(f"method {name!r} takes {spec.config_cls.__name__}, got {type(config).__name__}")
    from medvit.config import from_dict

    return from_dict(spec.config_cls, dict(config), prefix=f"peft.{name}")


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def backbone_param_count(model: nn.Module) -> int:
    """Parameters of ``model`` without its classifier head."""
    head = getattr(model, "head", None)
    return count_params(model) - (count_params(head) if isinstance(head, nn.Module) else 0)


def _weights_sha256(base_weights: str | None) -> str | None:
    """SHA-256 of the file ``base_weights`` names (run folder, checkpoint dir or file); None for a weight tag or
    nothing. Recorded so :func:`medvit.peft.checkpoint.load_adapter` follows the path only to the same bytes."""
    if not base_weights:
        return None
    from medvit.io.hashing import cached_sha256_file
    from medvit.models.mae_convert import resolve_encoder_file

    try:
        f = resolve_encoder_file(base_weights)
    except FileNotFoundError:
        return None
    return cached_sha256_file(f) if f is not None else None


def apply_peft(
    model: nn.Module,
    method: str,
    config: MethodConfig | dict[str, Any] | None = None,
    base_weights: str | None = None,
    base_weights_sha256: str | None = None,
) -> nn.Module:
    """Freeze ``model`` and apply PEFT method ``method``; returns the model to train.

    Args:
        model: a medvit backbone (``create_model``), with the task head already sized.
        method: registered method name (``medvit list peft``).
        config: the method's config (dataclass or mapping); None takes the defaults.
        base_weights / base_weights_sha256: provenance recorded in adapter checkpoints (the SHA-256 of the file
            ``base_weights`` names is computed when not given).
    Returns:
        the model with exactly the method's parameters (plus head / ``extra_trainable``) requiring
        grad, and ``peft_info`` set.
    """
    spec = get_method(method)
    cfg = make_config(method, config)
    if getattr(model, "peft_info", None) is not None:
        raise ValueError(f"model already has PEFT method {model.peft_info.method!r}; apply one method to a fresh base")
    before = dict(model.state_dict(keep_vars=True))
    names_before = dict(model.named_parameters())
    backbone_params = backbone_param_count(model)
    head = getattr(model, "head", None)
    for p in model.parameters():
        p.requires_grad_(False)
    out = spec.inject(model, cfg)
    if cfg.train_head and isinstance(head, nn.Module):
        for p in head.parameters():
            p.requires_grad_(True)
    for pat in cfg.extra_trainable:
        hits = [n for n in names_before if re.search(pat, n)]
        if not hits:
            raise ValueError(f"extra_trainable: {pat!r} matches no backbone parameter (e.g. 'fc_norm', 'norm\\.')")
        for n in hits:
            names_before[n].requires_grad_(True)
    trainable_ids = {id(p) for p in out.parameters() if p.requires_grad}
    frozen = [(n, t) for n, t in before.items() if id(t) not in trainable_ids]
    derived_fn = getattr(out, "peft_derived_state", None)
    derived = list(derived_fn()) if callable(derived_fn) else []
    if any(id(t) in trainable_ids for _, t in derived):
        raise RuntimeError(f"PEFT method {method!r}: a derived (rebuilt-at-load) tensor is trainable")
    sha = base_weights_sha256 or getattr(model, "checkpoint_sha256", None) or _weights_sha256(base_weights)
    out.peft_info = PeftInfo(
        method=method,
        config=cfg,
        frozen_base=frozen,
        backbone_params=backbone_params,
        base_arch=getattr(model, "arch_name", None),
        base_model_args=dict(getattr(model, "model_args", {}) or {}) or None,
        base_weights=base_weights,
        base_weights_sha256=sha,
        derived=derived,
    )
    rep = trainable_report(out)
    logger.info("PEFT %s: %d trainable parameters (%.3f%% of the %d-parameter backbone)",
                method, rep["trainable_params"], rep["trainable_pct"], rep["backbone_params"])
    return out


def trainable_report(model: nn.Module) -> dict[str, Any]:
    """Trainable parameter count and percentage of the backbone (head excluded from the denominator)."""
    info: PeftInfo | None = getattr(model, "peft_info", None)
    seen: set[int] = set()
    trainable = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            trainable += p.numel()
    backbone = info.backbone_params if info else backbone_param_count(model)
    return {
        "method": info.method if info else None,
        "trainable_params": trainable,
        "backbone_params": backbone,
        "trainable_pct": 100.0 * trainable / max(backbone, 1),
    }


def config_dict(cfg: MethodConfig) -> dict[str, Any]:
    """A method config as plain JSON-able data."""
    from medvit.config import to_dict

    return to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
