"""Adapter-only checkpoints: the trained tensors of a PEFT model, checked against their base.

A directory with ``adapter.safetensors`` (only what the method trained or added: adapter weights,
prompts, the task head, frozen tensors the method created such as VeRA's shared projections) and
``adapter_config.json`` (method, its config, the base architecture and arguments, the base weights'
source and sha256, and a sha256 of the frozen base tensors). Loading rebuilds the base, re-applies the
method, checks the base checksum and copies the tensors in: outputs are reproduced bit for bit.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvit.io.jsonfile import json_type_name, read_json
from medvit.peft.base import PeftInfo, apply_peft, config_dict, trainable_report

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
FORMAT = "medvit-adapter/1"


class AdapterError(ValueError):
    """An adapter checkpoint that cannot be read or does not fit its base; the message says which and why."""


def _info(model: nn.Module) -> PeftInfo:
    info = getattr(model, "peft_info", None)
    if info is None:
        raise ValueError("model has no peft_info; build it with medvit.peft.apply_peft")
    return info


def adapter_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors to save by state-dict name, aliases {name: saved name} for tensors shared between modules).

    Saved: every state-dict tensor that is not a frozen base tensor (trained parameters plus tensors
    the method added, trained or not).
    """
    info = _info(model)
    base_ids = {id(t) for _, t in info.frozen_base} | {id(t) for _, t in info.derived}
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    first: dict[int, str] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in base_ids:
            continue
        if id(t) in first:
            tied[name] = first[id(t)]
            continue
        first[id(t)] = name
        tensors[name] = t
    return tensors, tied


def save_adapter(model: nn.Module, out_dir: str | Path, extra: dict[str, Any] | None = None,
                 contract: Any = None) -> Path:
    """Write ``adapter.safetensors`` + ``adapter_config.json`` into ``out_dir``; returns the directory.

    ``contract`` (a :class:`medvit.models.WeightContract`) makes the adapter deployable: ``medvit infer`` and the
    viewer load it onto its recorded base (checksums verified) and preprocess as the contract says.

    Raises:
        AdapterError: naming ``out_dir``, for a contract whose ``label_names`` do not name each output of the tuned
            model once (:func:`medvit.models.checkpoint.label_count_problem`, the rule of ``save_checkpoint`` and
            ``medvit infer``). Nothing is written then.
    """
    from medvit.io.safe_write import atomic_write
    from medvit.models.checkpoint import FILE_MODE, label_count_problem, sha256_file, write_safetensors
    from medvit.version import __version__

    info = _info(model)
    if problem := label_count_problem(contract, model):
        raise AdapterError(f"refusing to save adapter {out_dir}: contract.label_names {problem}")
    tensors, tied = adapter_state(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    write_safetensors(out / ADAPTER_WEIGHTS, sd, metadata={"format": FORMAT, "method": info.method})
    rep = trainable_report(model)
    cfg = {
        "format": FORMAT,
        "method": info.method,
        "method_config": config_dict(info.config),
        "base": {
            "architecture": info.base_arch,
            "model_args": {k: list(v) if isinstance(v, tuple) else v for k, v in (info.base_model_args or {}).items()},
            "weights": info.base_weights,
            "weights_sha256": info.base_weights_sha256,
            "state_sha256": info.base_state_sha256(),
            "derived_sha256": info.derived_sha256(),
        },
        "tensors": {k: list(v.shape) for k, v in sd.items()},
        "tied": tied,
        "trainable_params": rep["trainable_params"],
        "backbone_params": rep["backbone_params"],
        "trainable_pct": rep["trainable_pct"],
        "sha256": sha256_file(out / ADAPTER_WEIGHTS),
        "size_bytes": (out / ADAPTER_WEIGHTS).stat().st_size,
        "medvit_version": __version__,
        "contract": contract.to_dict() if contract is not None else None,
        "extra": extra or {},
    }
    atomic_write(out / ADAPTER_CONFIG, json.dumps(cfg, indent=2), mode=FILE_MODE)
    logger.info("saved %s adapter (%d tensors, %.3f MB) to %s", info.method, len(sd), cfg["size_bytes"] / 1e6, out)
    return out


def read_adapter_config(path: str | Path) -> dict[str, Any]:
    p = Path(path) / ADAPTER_CONFIG
    cfg = read_json(p, error=AdapterError, format_id=FORMAT, nonfinite_ok=("extra",),
                    missing=f"an adapter checkpoint is a directory with {ADAPTER_WEIGHTS} and {ADAPTER_CONFIG} "
                    "(written by save_adapter)")
    for key in ("method", "method_config", "base", "tensors"):
        if key not in cfg:
            raise AdapterError(f"{p} lacks required key {key!r}")
    for key, tp in (("method", str), ("method_config", dict), ("base", dict), ("tensors", dict)):
        if not isinstance(cfg[key], tp):
            raise AdapterError(f"{p}: {key!r} must be {'a string' if tp is str else 'an object'}, got "
                               f"{json_type_name(cfg[key])}")
    base = cfg["base"]
    for key, tp in (("architecture", str), ("weights", str), ("weights_sha256", str), ("model_args", dict)):
        if base.get(key) is not None and not isinstance(base[key], tp):
            raise AdapterError(f"{p}: 'base.{key}' must be {'a string' if tp is str else 'an object'} or null, got "
                               f"{json_type_name(base[key])}")
    return cfg


def load_adapter(path: str | Path, base_model: nn.Module | None = None, check_base: bool = True) -> nn.Module:
    """Apply a saved adapter to its base; returns the tuned model (in eval mode).

    Args:
        path: adapter directory written by :func:`save_adapter`.
        base_model: the untouched base (with a head of the right size); None rebuilds it from the
            architecture and the encoder weights named in the adapter config (a registered weight tag, or a path
            followed only when ``base.weights_sha256`` is recorded and matches: the file is hashed before it is
            parsed).
        check_base: verify the frozen base tensors' sha256 against the one saved (recommended).
    Raises:
        AdapterError: the base differs from the one the adapter was trained on, its weights path has no recorded
            checksum, the config has a wrong-typed value (file and key named), or tensors are missing / unexpected /
            mis-shaped.
    """
    from medvit.models.checkpoint import read_safetensors

    p = Path(path)
    cfg = read_adapter_config(p)
    base = cfg["base"]
    if base_model is None:
        if not base.get("architecture"):
            raise AdapterError(f"{p}: the adapter does not name its base architecture; pass base_model")
        if not base.get("weights"):
            raise AdapterError(f"{p}: the adapter does not name its base weights (random-init base); pass base_model")
        from medvit.models.checkpoint import sha256_file
        from medvit.models.factory import model_builder
        from medvit.models.mae_convert import load_pretrained_encoder, resolve_encoder_file
        from medvit.registry import REGISTRY

        # an unknown architecture / argument is refused naming the file and key before any weights file is read
        build_base = model_builder(base["architecture"], base.get("model_args") or {}, str(p / ADAPTER_CONFIG),
                                   prefix="base.", error=AdapterError)
        try:
            wfile = resolve_encoder_file(base["weights"])
        except FileNotFoundError as e:
            raise AdapterError(f"{p}: the base weights {base['weights']!r} recorded by the adapter are not found "
                               f"({e}); put them back or pass base_model") from e
        except ValueError as e:  # it exists but is a device, FIFO or socket (not opened)
            raise AdapterError(f"{p / ADAPTER_CONFIG}: key 'base.weights': {e}; pass base_model (the base you "
                               "trust)") from e
        if wfile is None and ("weight", str(base["weights"])) not in REGISTRY:
            raise AdapterError(f"{p / ADAPTER_CONFIG}: key 'base.weights': {base['weights']!r} is no file or folder "
                               f"(a relative path is read from the current directory, {Path.cwd()}) nor a "
                               "registered weight tag (`medvit list weight`); pass base_model (the base you trust)")
        if wfile is not None and not base.get("weights_sha256"):  # a path read from the config: followed only
            # to the bytes it was trained on (the file is hashed before any reader parses it)
            raise AdapterError(f"{p / ADAPTER_CONFIG}: key 'base.weights' names the file {wfile}, but "
                               "'base.weights_sha256' is not recorded: a weights path read from an adapter config "
                               "is followed only with its checksum; pass base_model (the base you trust)")
        if wfile is not None and sha256_file(wfile) != base["weights_sha256"]:
            raise AdapterError(f"{p}: the base weights file {wfile} has changed since the adapter was trained "
                               f"(sha256 {sha256_file(wfile)[:12]}… vs recorded {base['weights_sha256'][:12]}…)")
        if wfile is not None and wfile.suffix == ".safetensors":  # model_args sized against the verified file
            from medvit.models.checkpoint import CheckpointError
            from medvit.models.verify import check_config_fits_weights

            try:
                check_config_fits_weights(base.get("model_args") or {}, build_base, wfile, str(p / ADAPTER_CONFIG),
                                          prefix="base.", config="base.model_args in adapter_config.json")
            except CheckpointError as e:
                raise AdapterError(str(e)) from None
        # encoder weights only (an MAE run folder, a checkpoint with another head...): the head is in the adapter
        base_model = build_base()
        load_pretrained_encoder(base_model, base["weights"])
    model = apply_peft(base_model, cfg["method"], cfg["method_config"], base_weights=base.get("weights"),
                       base_weights_sha256=base.get("weights_sha256"))
    if check_base:
        got = model.peft_info.base_state_sha256()
        if got != base.get("state_sha256"):
            raise AdapterError(
                f"{p}: the base model differs from the one this adapter was trained on (frozen-tensor sha256 "
                f"{got[:12]}… vs saved {str(base.get('state_sha256'))[:12]}…; base weights "
                f"{base.get('weights')!r}); load the same base or pass check_base=False"
            )
        if model.peft_info.derived_sha256() != base.get("derived_sha256"):
            raise AdapterError(
                f"{p}: the frozen tensors method {cfg['method']!r} rebuilds from its base and config (e.g. a temporal "
                "model) differ from those the adapter was trained with; the files they came from have changed"
            )
    saved = read_safetensors(p / ADAPTER_WEIGHTS)
    expected, tied = adapter_state(model)
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    shapes = [f"{k}: {tuple(saved[k].shape)} vs {tuple(expected[k].shape)}"
              for k in saved if k in expected and saved[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise AdapterError(f"{p / ADAPTER_WEIGHTS} does not fit method {cfg['method']!r} on this base: "
                           f"missing {missing[:8]}, unexpected {unexpected[:8]}, shape mismatches {shapes[:5]}")
    with torch.no_grad():
        for k, t in expected.items():
            t.copy_(saved[k].to(dtype=t.dtype, device=t.device))
    return model.eval()
