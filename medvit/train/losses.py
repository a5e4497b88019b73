"""Training losses by name: registry kind ``loss``, built from YAML, used by the training loop.

A loss is an :class:`Loss` (an ``nn.Module``) called as ``loss(output, batch)``:

- ``output`` is what the model returned for ``batch["image"]`` (logits ``(B, K)``, a tuple such as DeiT's
  ``(cls_logits, dist_logits)``, or a dict for self-supervised models);
- ``batch`` is the collated batch dict on the device (the loss reads the keys it lists in ``inputs``);
- it returns a scalar tensor, or ``{"loss": scalar, other scalars logged beside it}``.

Register with :func:`register_loss` (a class; its ``__init__`` keyword arguments are the YAML ``args``), giving an
``example(generator) -> (output, batch)`` so the registry-driven test can run forward/backward on every entry.
Tasks hold a :class:`LossSpec` (``loss: {name: cross_entropy, args: {label_smoothing: 0.1}}``), build it with
:func:`build_loss` and train with :func:`loss_step` (its ``on_train_step`` hooks reach the loop as the model's do).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvit.config import option
from medvit.registry import REGISTRY, did_you_mean

Example = Callable[[torch.Generator], tuple[Any, ...]]


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits averaged over known labels: (B, K), (B, K), (B, K) bool -> scalar.

    Unknown labels (``mask`` False, e.g. CheXpert's blanks) contribute nothing; a batch without any known label
    gives 0 (the denominator is clamped to 1).
    """
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    m = mask.float()
    return (loss * m).sum() / m.sum().clamp(min=1.0)


@dataclass
class TrainContext:
    """What :meth:`Loss.setup` sees: the training set as the loop indexes it, the per-sample train transform
    (``transform(item, generator) -> item``), the training config, the device, and the task's label kind."""

    train_set: Any
    transform: Any = None
    train: Any = None  # medvit.train.TrainConfig
    device: Any = "cpu"
    multilabel: bool = True
    output_dir: str = ""
    source_set: Any = None  # the training set before caching wrappers (label tables such as label_counts())
    model: Any = None  # the model being trained (a loss may switch a training output on, e.g. DeiT's (cls, dist))
    contract: Any = None  # the run's preprocessing (WeightContract: in_chans, input_size, mean, std) to check teachers
    label_names: list[str] | None = None  # the run's output names (a teacher's contract labels are compared)


class Loss(nn.Module):
    """Base of registered losses: ``forward(output, batch) -> scalar | {"loss": scalar, ...}``.

    ``inputs`` names the batch keys read (checked by :meth:`require`, so a missing key names the loss and key).
    Losses that follow training progress define ``on_train_step(step, total_steps)`` (called by the loop before
    each optimizer step, as for model modules).
    """

    inputs: tuple[str, ...] = ()
    #: batch key the loop fills with each sample's augmentation seed (:mod:`medvit.train.sampler`); None = none
    seed_key: str | None = None
    #: what ``batch["label"]`` must hold: "multilabel" ((B, K) in {0, 1}), "classes" ((B,) indices), None = any/unread
    label_kind: str | None = None
    #: arguments holding one value per model output (label or class), checked against the run's output count
    per_output: tuple[str, ...] = ()

    @classmethod
    def reads(cls, args: dict[str, Any]) -> tuple[tuple[str, ...], str | None]:
        """(batch keys read, label kind) of the loss built with ``args``, without building it (config-time
        check against what a task feeds, :class:`LossFeed`). Default: the class's ``inputs`` / ``label_kind``."""
        return tuple(cls.inputs), cls.label_kind

    @classmethod
    def check_args(cls, args: dict[str, Any], label_names: list[str] | None = None) -> None:
        """Config-time check of the argument *values* (``--dry-run`` runs it through :meth:`LossSpec.check`):
        raise ``ValueError`` for values the loss would refuse. ``label_names``: the run's outputs when the
        dataset registry knows them (None otherwise). Default: build the loss once and drop it — registered
        constructors take plain values and read no files; a loss whose constructor does I/O (a teacher checkpoint)
        overrides this with its value checks alone."""
        cls(**args)

    def setup(self, ctx: TrainContext) -> None:
        """Called by a task once before training with what the loss may need from the run (class counts for
        long-tail weights, a teacher pass over the training set). Default: nothing."""

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Batch-level augmentation before the model sees ``batch`` (e.g. Mixup/CutMix). Default: unchanged.
        Random draws use torch's global generator, which the loop seeds per run and restores on resume."""
        return batch

    def require(self, batch: dict[str, Any]) -> None:
        """Raise ``KeyError`` naming the loss and the batch keys it needs but the batch lacks."""
        missing = [k for k in self.inputs if k not in batch]
        if missing:
            raise KeyError(f"loss {type(self).__name__} needs batch keys {missing}; the batch has {sorted(batch)}")


def register_loss(name: str, *, example: Example, description: str = "") -> Callable[[type], type]:
    """Decorator registering a :class:`Loss` subclass as ``loss`` ``name``.

    ``example(generator) -> (output, batch)`` or ``(output, batch, args)`` builds a small valid input (and the
    constructor arguments it needs); the registry-driven test sets ``requires_grad`` on the floating tensors of
    ``output`` and checks a finite loss with gradients.
    """

    def deco(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Loss)):
            raise TypeError(f"loss {name!r}: register a medvit.train.losses.Loss subclass, got {cls!r}")
        REGISTRY.add("loss", name, cls, example=example, description=description or (cls.__doc__ or ""))
        return cls

    return deco


LABEL_KINDS = {"multilabel": "multi-hot labels (B, K)", "classes": "class indices (B,)"}


@dataclass(frozen=True)
class LossFeed:
    """What a task hands its loss, known at config time: the batch keys it carries, the kind of ``batch["label"]``
    (a :data:`LABEL_KINDS` key; None = unknown or no labels), the model's output count K (None = unknown), and the
    task's default loss (used when ``loss.name`` is not given; None = it depends on the data)."""

    keys: tuple[str, ...]
    labels: str | None = None
    outputs: int | None = None
    default: LossSpec | None = None
    where: str = "this task"


@dataclass
class LossSpec:
    """A loss by registered name plus its constructor arguments (YAML ``loss: {name: ..., args: {...}}``).

    ``name`` "" (``loss.args`` given without ``loss.name``) means the task's default loss with these arguments
    (:meth:`or_default`); its arguments are checked once the task resolves it."""

    name: str = option("", "registered loss (`medvit list loss`); empty = the task's default loss")
    args: dict[str, Any] = option(default_factory=dict, help="keyword arguments of the loss, e.g. {label_smoothing: "
                                                             "0.1}")

    def __post_init__(self) -> None:
        if self.name:  # checked and coerced here, once: build_loss takes these args as they are
            self.args = coerce_loss_args(self.name, self.args)

    def or_default(self, default: LossSpec) -> LossSpec:
        """This spec, or when it names no loss, ``default`` with these arguments over its own (checked now)."""
        if self.name:
            return self
        try:
            return LossSpec(default.name, {**default.args, **self.args})
        except ValueError as e:
            raise type(e)(f"{e} (loss.name not given: this task's default loss is {default.name!r})") from None

    def check(self, label_names: list[str] | None = None, feed: LossFeed | None = None) -> None:
        """The argument values checked as the loss will check them (:meth:`Loss.check_args`), for config
        resolution / ``--dry-run``; ``ConfigError`` naming ``loss.args`` and the loss on a refused value.
        ``label_names``: the run's outputs when known before the data is read (e.g. TinyViT's top-k <= labels).
        ``feed``: what the task hands the loss — batch keys it reads but the task's batch lacks, a label kind
        other than the task's, and per-output arguments (``pos_weight``, ``weight``) of another length than the
        task's outputs are refused naming ``loss.name`` / ``loss.args.<key>``."""
        from medvit.config import ConfigError

        if not self.name:
            return
        cls = check_loss(self.name, self.args)
        try:
            cls.check_args(self.args, label_names)
        except (TypeError, ValueError) as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith("loss.") else f"loss.args ({self.name}): {msg}") from None
        if feed is None:
            return
        keys, kind = cls.reads(self.args)
        missing = [k for k in keys if k not in feed.keys and k != cls.seed_key]
        if missing:
            raise ConfigError(f"loss.name: loss {self.name!r} reads batch {missing}, which {feed.where} does not "
                              f"feed (its batch: {list(feed.keys)})")
        if kind and feed.labels and kind != feed.labels:
            raise ConfigError(f"loss.name: loss {self.name!r} takes {LABEL_KINDS[kind]}; {feed.where} feeds "
                              f"{LABEL_KINDS[feed.labels]}")
        n = feed.outputs or (len(label_names) if label_names else None)
        for a in cls.per_output:
            v = self.args.get(a)
            if n is not None and v is not None and len(v) != n:
                raise ConfigError(f"loss.args.{a}: {len(v)} values for a run with {n} outputs (loss "
                                  f"{self.name!r}: one per output)")


def coerce_loss_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` checked (and converted, e.g. int -> float) against the type annotations of loss ``name``'s
    constructor, so a wrong-typed value fails at config time (``--dry-run``) with ``ConfigError`` naming
    ``loss.args.<key>``. Arguments without an annotation (or hints that cannot be resolved) pass unchanged."""
    from medvit.config import ConfigError, check_arg_types

    cls = check_loss(name, args)
    try:
        out = check_arg_types(args, [cls.__init__], prefix="loss.args")
    except ConfigError as e:
        raise ConfigError(f"{e} (loss {name!r})") from None
    for k, v in out.items():
        _check_finite(v, f"loss.args.{k}", name)
    return out


def _check_finite(value: Any, where: str, name: str) -> None:
    """``ConfigError`` naming ``where`` when a number in ``value`` (a number, or a list / mapping of them) is NaN
    or infinite: no loss argument means anything at NaN/inf, and NaN passes every ``<``/``>`` range check."""
    from medvit.config import ConfigError

    if isinstance(value, dict):
        items = [(f"{where}.{k}", x) for k, x in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(f"{where}[{i}]", x) for i, x in enumerate(value)]
    else:
        items = [(where, value)]
    for at, x in items:
        if isinstance(x, float) and not math.isfinite(x):
            raise ConfigError(f"{at} must be a finite number, got {x} (loss {name!r})")


def check_loss(name: str, args: dict[str, Any]) -> type:
    """The registered class of ``name``; ``ValueError`` naming ``loss.name`` / ``loss.args.<key>`` when the name is
    unknown or an argument is not one the loss takes (missing required arguments are named too)."""
    try:
        cls = REGISTRY.get("loss", name)
    except KeyError as e:
        raise ValueError(f"loss.name: {e.args[0]}") from None
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items()
              if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    for k in args:
        if k not in params:
            hint = did_you_mean(k, params)
            raise ValueError(f"loss.args.{k}: loss {name!r} takes no argument {k!r}"
                             f"{'; ' + hint if hint else ''} (it takes {sorted(params) or 'none'})")
    missing = [k for k, p in params.items() if p.default is p.empty and k not in args]
    if missing:
        raise ValueError(f"loss.args: loss {name!r} needs {missing}")
    return cls


def describe_loss(name: str) -> str:
    """Text of ``medvit list loss NAME``: the loss's description and docstring (its value ranges), its arguments
    (YAML ``loss.args``) with types and defaults, the batch keys and label kind it reads, and which arguments hold
    one value per output. ``ValueError`` naming ``loss.name`` for an unknown loss."""
    import typing

    try:
        entry = REGISTRY.entry("loss", name)
    except KeyError as e:
        raise ValueError(f"loss.name: {e.args[0]}") from None
    cls = entry.obj
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable annotations: show the raw ones
        hints = {}
    lines = [f"loss {name}: {entry.description.strip()}", "", inspect.cleandoc(cls.__doc__ or ""), "",
             "args (YAML loss.args):"]
    params = [p for k, p in inspect.signature(cls.__init__).parameters.items()
              if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for p in params:
        tp = hints.get(p.name, p.annotation)
        tp = getattr(tp, "__name__", None) if isinstance(tp, type) else str(tp).replace("typing.", "")
        default = "required" if p.default is p.empty else f"default {p.default!r}"
        lines.append(f"  {p.name}: {tp} ({default})")
    if not params:
        lines.append("  none")
    keys, kind = cls.reads({})
    lines.append(f"reads batch: {list(keys) or 'only the model output'}"
                 + (f"; label: {LABEL_KINDS[kind]}" if kind else ""))
    if cls.per_output:
        lines.append(f"one value per model output: {', '.join(cls.per_output)}")
    return "\n".join(lines)


def build_loss(spec: LossSpec | dict[str, Any] | str) -> Loss:
    """Instantiate a registered loss from a :class:`LossSpec`, a ``{name, args}`` mapping or a bare name. Every path
    goes through a :class:`LossSpec`, whose construction checked and coerced the arguments
    (:func:`coerce_loss_args`); they are passed to the constructor as they are."""
    if isinstance(spec, str):
        spec = LossSpec(spec)
    elif isinstance(spec, dict):
        unknown = set(spec) - {"name", "args"}
        if unknown or "name" not in spec:
            raise ValueError(f"loss: expected {{name: ..., args: {{...}}}}, got keys {sorted(spec)}")
        spec = LossSpec(spec["name"], dict(spec.get("args") or {}))
    if not spec.name:
        raise ValueError("loss.name: not given (loss.args alone means the task's default loss, which this caller "
                         "does not resolve); give loss.name")
    cls = check_loss(spec.name, spec.args)
    try:
        return cls(**spec.args)
    except (TypeError, ValueError) as e:
        raise ValueError(f"loss.args ({spec.name}): {e}") from e


class LossStep(nn.Module):
    """The loop's ``step_fn`` for a loss: ``loss(model(batch[input_key]), batch)``.

    An ``nn.Module`` so the loop moves the loss's own modules (e.g. a distillation teacher) to the device and
    calls their ``on_train_step`` hooks.
    """

    def __init__(self, loss: Loss, input_key: str = "image"):
        super().__init__()
        self.loss, self.input_key = loss, input_key
        self.seed_key = loss.seed_key  # read by the loop: put each sample's augmentation seed into the batch

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor | dict[str, torch.Tensor]:
        self.loss.require(batch)
        batch = self.loss.prepare(batch)
        return self.loss(model(batch[self.input_key]), batch)


def direct_loss(spec: LossSpec | None, default: LossSpec, where: str = "loss") -> Loss:
    """The loss of a task that calls ``loss(output, batch)`` in its own step (prompt_tune, BenchX protocols,
    finetune_segmentation): ``spec``, or ``default`` when None. Such tasks run no :meth:`Loss.setup`, batch
    :meth:`Loss.prepare` or per-sample seeds, so a loss that needs them (a teacher pass, Mixup/CutMix) is refused
    with ``ValueError`` naming ``where`` (:func:`check_direct_loss`, also called at config time)."""
    spec = default if spec is None else spec.or_default(default)
    check_direct_loss(spec.name, where)
    return build_loss(spec)


def check_direct_loss(name: str, where: str = "loss") -> None:
    """``ValueError`` naming ``where`` when registered loss ``name`` needs the training loop's hooks (its own
    ``setup`` / ``prepare`` / ``on_train_step`` or a ``seed_key``), which a task calling the loss directly does not
    run. An empty ``name`` (the task's default loss, a direct one) passes."""
    if not name:
        return
    try:
        cls = REGISTRY.get("loss", name)
    except KeyError as e:
        raise ValueError(f"{where}.name: {e.args[0]}") from None
    needs = [h for h in ("setup", "prepare") if getattr(cls, h) is not getattr(Loss, h)]
    if cls.seed_key:
        needs.append("per-sample seeds")
    if hasattr(cls, "on_train_step"):
        needs.append("on_train_step hook")
    if needs:
        raise ValueError(f"{where}.name: loss {name!r} needs the training loop's {' / '.join(needs)}, which this "
                         "task does not run (finetune_multilabel does); give a loss computed from the output and "
                         "batch alone, e.g. masked_bce, bce, cross_entropy")


def loss_step(loss: Loss | LossSpec | dict[str, Any] | str, input_key: str = "image") -> LossStep:
    """``step_fn`` for :class:`medvit.train.Trainer` from a loss or its spec."""
    return LossStep(loss if isinstance(loss, Loss) else build_loss(loss), input_key)


def logits_of(output: Any) -> torch.Tensor:
    """The classification logits in a model output: the tensor itself, or the mean of a ``(cls, dist)`` pair
    (DeiT inference), or ``output["logits"]``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return torch.stack([o.float() for o in output]).mean(0)
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")


# ---------------------------------------------------------------------------------------------------- entries
def _ex_multilabel(g: torch.Generator) -> tuple[Any, dict[str, Any]]:
    logits = torch.randn(4, 3, generator=g)
    y = (torch.rand(4, 3, generator=g) > 0.5).float()
    mask = torch.rand(4, 3, generator=g) > 0.2
    mask[0] = True
    return logits, {"label": y, "label_mask": mask}


def _ex_multiclass(g: torch.Generator) -> tuple[Any, dict[str, Any]]:
    return torch.randn(4, 5, generator=g), {"label": torch.randint(0, 5, (4,), generator=g)}


def _check_weights(weights: list[float] | None, name: str) -> None:
    """``ValueError`` naming ``loss.args.<name>`` unless ``weights`` is None or finite numbers >= 0 (a negative
    weight rewards the wrong answer; NaN/inf poison every step)."""
    for i, w in enumerate(weights or []):
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"loss.args.{name}[{i}] must be a finite number >= 0, got {w}")
        if not math.isfinite(float(torch.tensor(w, dtype=torch.float32))):  # checked in the dtype the loss uses
            raise ValueError(f"loss.args.{name}[{i}] is {w}, beyond float32's range (±3.4e38): the loss would "
                             "use an infinite weight")


@register_loss("masked_bce", example=_ex_multilabel,
               description="multi-label BCE-with-logits over known labels (label_mask; CheXpert blanks excluded)")
class MaskedBCE(Loss):
    """Multi-label BCE-with-logits, averaged over known labels.

    Output ``(B, K)`` logits (a ``(cls, dist)`` pair is averaged); batch ``label`` ``(B, K)`` in {0, 1} and
    optional ``label_mask`` ``(B, K)`` bool (absent = all known). ``pos_weight``: per-label positive weight
    (``torch.nn.BCEWithLogitsLoss``), a list of K finite numbers >= 0 or None.
    """

    inputs = ("label",)
    label_kind = "multilabel"
    per_output = ("pos_weight",)

    def __init__(self, pos_weight: list[float] | None = None):
        super().__init__()
        _check_weights(pos_weight, "pos_weight")
        self.register_buffer("pos_weight", None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float))

    def forward(self, output: Any, batch: dict[str, Any]) -> torch.Tensor:
        logits, y = logits_of(output).float(), batch["label"].float()
        mask = batch.get("label_mask")
        mask = torch.ones_like(y, dtype=torch.bool) if mask is None else mask
        if self.pos_weight is not None and self.pos_weight.numel() != logits.shape[-1]:
            raise ValueError(f"masked_bce: pos_weight has {self.pos_weight.numel()} values, logits have "
                             f"{logits.shape[-1]} labels")
        loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none", pos_weight=self.pos_weight)
        m = mask.float()
        return (loss * m).sum() / m.sum().clamp(min=1.0)


@register_loss("cross_entropy", example=_ex_multiclass,
               description="single-label softmax cross-entropy (class weights, label smoothing)")
class CrossEntropy(Loss):
    """Softmax cross-entropy (``torch.nn.functional.cross_entropy``).

    Output ``(B, K)`` logits (a ``(cls, dist)`` pair is averaged); batch ``label`` ``(B,)`` class indices.
    ``label_smoothing`` in [0, 1); ``weight``: per-class weights (K finite numbers >= 0, not all 0) or None.
    Raises ``ValueError`` naming ``loss.args.<key>`` for a value out of range.
    """

    inputs = ("label",)
    label_kind = "classes"
    per_output = ("weight",)

    def __init__(self, label_smoothing: float = 0.0, weight: list[float] | None = None):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        _check_weights(weight, "weight")
        w32 = None if weight is None else torch.tensor(weight, dtype=torch.float)  # the dtype the loss uses
        if w32 is not None and len(weight) and not bool(w32.any()):
            # the weighted mean is sum(w[y] * loss) / sum(w[y]): 0/0 on every batch
            raise ValueError(f"loss.args.weight: every class weight is 0 in float32 ({list(weight)}); the "
                             "weighted mean cross-entropy divides by the batch's summed class weights (0/0 = NaN "
                             "on every step): give at least one weight > 0 (and >= 1.2e-38, float32's smallest "
                             "normal number)")
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", w32)
        # only a class weight of 0 can make a batch's summed weight 0: without one, forward skips that check (a
        # device-to-host sync on every step)
        self._has_zero_weight = w32 is not None and bool((w32 == 0).any())

    def forward(self, output: Any, batch: dict[str, Any]) -> torch.Tensor:
        """Weighted mean over the batch; a batch whose labels all have class weight 0 gives loss 0 (no gradient),
        not 0/0 = NaN (``weight`` with a 0 for an "ignored" class and a batch holding only that class)."""
        logits, y = logits_of(output).float(), batch["label"].long()
        if self._has_zero_weight and y.numel() and not bool(self.weight.to(y.device)[y].sum() > 0):
            return logits.sum() * 0.0  # connected to the graph: every rank of a DDP step still reduces
        return F.cross_entropy(logits, y, weight=self.weight, label_smoothing=self.label_smoothing)


def _ex_masks(g: torch.Generator) -> tuple[Any, dict[str, Any]]:
    return torch.randn(2, 3, 8, 8, generator=g), {"mask": (torch.rand(2, 3, 8, 8, generator=g) > 0.5).float()}


@register_loss("bce", example=_ex_multilabel,
               description="BCE-with-logits averaged over every element (labels or mask pixels; no label mask)")
class BCE(Loss):
    """``F.binary_cross_entropy_with_logits(output, batch[target]).mean()`` over every element.

    Output ``(B, K)`` logits or ``(B, K, H, W)`` mask logits (a ``(cls, dist)`` pair is averaged); ``target`` names
    the batch key holding the {0, 1} targets of the same shape ("label" for findings, "mask" for segmentation).
    Unlike ``masked_bce`` no label is left out (BenchX's classification and segmentation protocols).
    """

    @classmethod
    def reads(cls, args: dict[str, Any]) -> tuple[tuple[str, ...], str | None]:
        target = args.get("target", "label")
        return (target,), "multilabel" if target == "label" else None

    def __init__(self, target: str = "label"):
        super().__init__()
        if not target:
            raise ValueError("target must name a batch key, e.g. 'label' or 'mask'")
        self.target = target
        self.inputs = (target,)

    def forward(self, output: Any, batch: dict[str, Any]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits_of(output).float(), batch[self.target].float())


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image and label, averaged: logits/target (B, K, H, W) -> scalar (Milletari et al., V-Net,
    3DV 2016, with ``eps`` added to numerator and denominator)."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum((2, 3))
    return (1 - (2 * inter + eps) / (p.sum((2, 3)) + target.sum((2, 3)) + eps)).mean()


@register_loss("bce_dice", example=_ex_masks,
               description="segmentation: per-pixel BCE-with-logits + soft Dice (V-Net) on batch 'mask'")
class BCEDice(Loss):
    """``BCE(logits, mask) + dice_weight · (1 − soft Dice)`` for ``(B, K, H, W)`` mask logits and {0, 1} targets in
    ``batch[target]`` (default "mask"); :func:`soft_dice_loss` with ``eps``. Ranges: ``dice_weight`` >= 0, ``eps`` > 0
    (finite numbers)."""

    @classmethod
    def reads(cls, args: dict[str, Any]) -> tuple[tuple[str, ...], str | None]:
        return (args.get("target", "mask"),), None

    def __init__(self, target: str = "mask", dice_weight: float = 1.0, eps: float = 1.0):
        super().__init__()
        if not (math.isfinite(dice_weight) and math.isfinite(eps) and dice_weight >= 0 and eps > 0):
            raise ValueError(f"dice_weight must be >= 0 and eps > 0, got {dice_weight}, {eps}")
        self.target, self.dice_weight, self.eps = target, float(dice_weight), float(eps)
        self.inputs = (target,)

    def forward(self, output: Any, batch: dict[str, Any]) -> torch.Tensor:
        logits, y = logits_of(output), batch[self.target].float()
        return F.binary_cross_entropy_with_logits(logits, y) + self.dice_weight * soft_dice_loss(logits, y, self.eps)
