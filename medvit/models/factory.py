"""Create backbones by registered name; every model remembers how it was built."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from medvit.models.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    label_count_problem,
    load_state_dict_checked,
    load_weights_into,
    read_config,
)
from medvit.models.contract import WeightContract
from medvit.registry import REGISTRY, did_you_mean

logger = logging.getLogger(__name__)


def register_backbone(name: str, cls: type[nn.Module], description: str = "", interface: str = "vit",
                      **defaults: Any) -> None:
    """Register ``name`` as ``cls(**defaults)``; ``create_model`` may override any default.

    ``interface``: "vit" (the uniform ViT interface of :mod:`medvit.models.vit`: tokens, blocks, attention maps) or
    "classifier" (only ``forward`` -> logits, ``reset_classifier``, ``in_chans``/``num_classes``; e.g. a MONAI CNN
    teacher). Kept in the entry's meta (``interface``)."""
    if interface not in ("vit", "classifier"):
        raise ValueError(f"backbone {name!r}: interface must be 'vit' or 'classifier', got {interface!r}")
    sig = inspect.signature(cls.__init__)
    bad = [k for k in defaults if k not in sig.parameters]
    if bad:
        raise TypeError(f"backbone {name!r}: {cls.__name__} has no arguments {bad}")
    REGISTRY.add("backbone", name, cls, defaults=dict(defaults), description=description, interface=interface)


#: Standard ViT shapes: Ti/S from DeiT (Touvron et al., ICML 2021, Table 1), B/L from ViT (Dosovitskiy et al.,
#: ICLR 2021, Table 1): width (embed_dim), depth, heads
VIT_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
}


def register_sizes(pattern: str, cls: type[nn.Module], description: str,
                   sizes: Sequence[str] | Mapping[str, Mapping[str, Any]] = ("tiny", "small", "base"),
                   **defaults: Any) -> list[str]:
    """Register one backbone a size of a family: ``pattern.format(size=s)`` as ``cls(**defaults, **shape)``.

    ``sizes``: names in :data:`VIT_SIZES`, or a mapping ``size -> shape`` for a family with its own shapes (e.g.
    ConViT's square head counts). ``description`` may hold ``{size}`` and ``{S}`` (the size's capital initial:
    "ViT-{S}/16" -> "ViT-B/16"). Returns the registered names in order; errors as :func:`register_backbone`.
    """
    shapes = dict(sizes) if isinstance(sizes, Mapping) else {s: VIT_SIZES[s] for s in sizes}
    names = []
    for size, shape in shapes.items():
        name = pattern.format(size=size)
        register_backbone(name, cls, description=description.format(size=size, S=size[0].upper()),
                          **defaults, **shape)
        names.append(name)
    return names


def _model_kind(name: str) -> str:
    """``segmentation`` for a registered segmentation model (:mod:`medvit.models.segmentation`), else ``backbone``."""
    return "segmentation" if ("backbone", name) not in REGISTRY and ("segmentation", name) in REGISTRY \
        else "backbone"


def backbone_args(name: str, **overrides: Any) -> dict[str, Any]:
    """Resolved constructor arguments for a registered backbone (or segmentation model) plus overrides."""
    entry = REGISTRY.entry(_model_kind(name), name)
    cls = entry.obj
    sig = inspect.signature(cls.__init__)
    bad = sorted(k for k in overrides if k not in sig.parameters)
    if bad:
        valid = [p for p in sig.parameters if p != "self"]
        hints = {b: did_you_mean(b, valid, n=1) for b in bad}
        msg = ", ".join(f"{b!r}" + (f" ({h})" if h else "") for b, h in hints.items())
        raise TypeError(f"backbone {name!r} does not accept {msg}; accepted: {', '.join(valid)}")
    args = dict(entry.meta["defaults"])
    args.update(overrides)
    return args


def create_model(name: str, pretrained: str | None = None, **overrides: Any) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: registered backbone name (``medvit list backbone``) or weight tag ``arch.tag``.
        pretrained: a checkpoint directory / ``.safetensors`` file, or a registered weight tag; its
            weights are loaded (converted, position embeddings resized, channels adapted as needed).
        **overrides: constructor arguments replacing the registered defaults (e.g. ``in_chans=1``,
            ``num_classes=14``, ``drop_path_rate=0.2``).
    Returns:
        the model, with ``arch_name`` and ``model_args`` attributes recording how it was built.
    """
    if "." in name and ("weight", name) in REGISTRY:
        pretrained = pretrained or name
        name = name.split(".", 1)[0]
    args = backbone_args(name, **overrides)
    cls = REGISTRY.get(_model_kind(name), name)
    model = cls(**args)
    model.arch_name = name
    model.model_args = args
    if pretrained:
        load_weights_into(model, pretrained)
    return model


def _checked_model_args(arch: str, model_args: Mapping[str, Any], where: str, arch_key: str,
                        error: type[ValueError], source: str) -> dict[str, Any]:
    """``model_args`` of registered model ``arch`` (read from file ``source``: keys ``where`` and, for ``arch``,
    ``arch_key``) checked before
    anything is built: unknown argument names (``backbone_args``' TypeError), then each value against the
    constructor's annotations (the ones of its base classes too: the ViT variants forward ``**kwargs``) by the config
    rule (:func:`medvit.config.check_arg_types`); a wrapper's ``backbone_args`` against the backbone it names, one
    level down. Returns the converted arguments; ``error`` names ``source`` and the key."""
    from medvit.config import ConfigError, check_arg_types

    name = arch.split(".", 1)[0] if ("weight", arch) in REGISTRY else arch
    try:
        defaults = backbone_args(name, **model_args)
    except (KeyError, TypeError) as e:
        raise error(f"{source}: {where if isinstance(e, TypeError) else arch_key}: {e.args[0] if e.args else e}"
                    ) from None
    cls = REGISTRY.get(_model_kind(name), name)
    inits = [c.__init__ for c in cls.__mro__ if issubclass(c, nn.Module) and c is not nn.Module]
    try:
        args = check_arg_types(model_args, inits, prefix=where)
    except ConfigError as e:
        raise error(f"{source}: {e}") from None
    if args.get("backbone_pretrained") is not None:  # a wrapper's backbone weights: a path read from a file
        raise error(f"{source}: {where}.backbone_pretrained: {args['backbone_pretrained']!r} is a weights path read "
                    "from the file (refused: the checkpoint holds every weight); set it to null")
    nested = defaults.get("backbone_args") if "backbone" in defaults else None
    if isinstance(defaults.get("backbone"), str) and isinstance(nested or {}, Mapping):
        # a wrapper (segmenter): its backbone's name and own arguments, one level down
        checked = _checked_model_args(defaults["backbone"], nested or {}, f"{where}.backbone_args",
                                      f"{where}.backbone", error, source)
        if "backbone_args" in args:
            args["backbone_args"] = checked
    return args


def model_builder(arch: str, model_args: Mapping[str, Any], source: str, prefix: str = "",
                  overrides: Mapping[str, Any] | None = None, error: type[ValueError] = CheckpointError,
                  ) -> Callable[[], nn.Module]:
    """``create_model(arch, **model_args, **overrides)`` as a callable, for an architecture and arguments read from
    file ``source`` (keys ``<prefix>architecture`` / ``<prefix>model_args``). ``error`` names the file and the key
    at once (before anything is read or built) for an unknown architecture or argument and for a value of the wrong
    type (``<source>: model_args.img_size: expected an integer, got 'abc'``; a wrapper's ``backbone_args`` are
    checked against its backbone, ``model_args.backbone_args.depth``); when called, for a value the constructor
    refuses (``<source>: model_args.depth must be a positive int, got 0``). A refusal of one of the caller's
    ``overrides`` is raised as the constructor raised it (not the file's value)."""
    overrides = dict(overrides or {})
    args = {**_checked_model_args(arch, model_args, f"{prefix}model_args", f"{prefix}architecture", error, source),
            **overrides}

    def build() -> nn.Module:
        try:
            return create_model(arch, **args)
        except (TypeError, ValueError) as e:  # a constructor's refusal starts with the argument it is about
            msg = str(e)
            key = msg.split(" ", 1)[0].strip(":'\"")
            if key in overrides or isinstance(e, error):  # the caller's value / already names a file
                raise
            where = f"{prefix}model_args.{msg}" if key in args else f"{prefix}model_args: {msg}"
            raise error(f"{source}: {where}") from e

    return build


def load_model(path: str | Path, **overrides: Any) -> nn.Module:
    """Rebuild a model from a medvit checkpoint directory; ``model.contract`` holds its contract.

    ``overrides`` replace saved architecture arguments that do not change weight shapes (e.g.
    ``drop_path_rate``). Raises :class:`CheckpointError` naming ``config.json`` and the key for a config the
    reader or the architecture refuses (``format``, ``architecture``, ``model_args.<arg>``, ``contract``), a
    classifier contract whose ``label_names`` do not name each output once (none for a model without a
    classification head: :func:`medvit.models.checkpoint.label_count_problem`, the rule save_checkpoint applies
    too), or weights that do not fit it.
    """
    from medvit.models.verify import check_config_fits_weights, read_verified_safetensors

    p = Path(path)
    cfg = read_config(p)
    cfg_file = p / CONFIG_NAME if p.is_dir() else p.with_name(CONFIG_NAME)
    contract = WeightContract.from_dict(cfg["contract"], source=str(cfg_file)) if cfg.get("contract") else None
    args = dict(cfg["model_args"])
    args.update(overrides)
    f = p / WEIGHTS_NAME if p.is_dir() else p
    if not f.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {f}")
    build = model_builder(cfg["architecture"], cfg["model_args"], str(cfg_file), overrides=overrides)
    # sizes first (header only, model on the meta device), then the weights, hashed as they are read
    meta_model = check_config_fits_weights(cfg["model_args"], build, f, str(cfg_file))
    if problem := label_count_problem(contract, meta_model):  # one name per classifier output, none for none
        raise CheckpointError(f"{cfg_file}: contract.label_names {problem}")
    sd, sha = read_verified_safetensors(f, cfg.get("sha256"))
    if not cfg.get("sha256"):
        logger.warning("%s: config.json records no sha256; the weights' computed hash %s is reported", f, sha)
    model = build()
    load_state_dict_checked(model, sd, str(f))
    model.contract = contract
    model.checkpoint_sha256 = sha  # computed from the bytes loaded, never copied from config.json
    model.checkpoint_config = cfg
    return model
