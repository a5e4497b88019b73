"""Safe checkpoints: ``model.safetensors`` + ``config.json`` (architecture, arguments, contract).

Nothing is unpickled: weights are read with safetensors. Foreign PyTorch ``.pth`` files (the released
chest-X-ray MAE weights) are read only through ``torch.load(weights_only=True)``, torch's restricted
unpickler that refuses arbitrary objects, with an explicit allow-list of plain-data globals
(:mod:`medvit.models.safe_pickle`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvit.io.errors import SPECIAL_FILE_PROBLEMS, file_problem
from medvit.io.hashing import sha256_file  # re-exported: checkpoint users import it from here
from medvit.io.jsonfile import json_type_name, read_json
from medvit.io.safe_write import atomic_write
from medvit.models.contract import WeightContract
from medvit.models.convert import to_medvit

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
#: checkpoint files are created readable as the umask allows (shared model folders), not private like run outputs
FILE_MODE = 0o666
CONFIG_NAME = "config.json"
FORMAT = "medvit-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names file and reason."""


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its ``__metadata__`` map written in sorted key order.

    safetensors serialises that map from a hash map whose order changes from process to process, so the same
    tensors and metadata gave files with different SHA-256 (a retrained demo model with bit-identical weights did
    not match its committed checksum). The map is rewritten in place: same characters, same header length, same
    tensor offsets. Returned unchanged when there is no map of two or more keys or its text is not the compact JSON
    this rewrite reproduces.
    """
    n = int.from_bytes(data[:8], "little")
    head = data[8:8 + n].decode("utf-8")
    key = '"__metadata__":'
    i = head.find(key)
    if i < 0:
        return data
    start = i + len(key)
    meta, end = json.JSONDecoder().raw_decode(head, start)
    if not isinstance(meta, dict) or len(meta) < 2:
        return data
    if json.dumps(meta, separators=(",", ":"), ensure_ascii=False) != head[start:end]:
        return data
    ordered = json.dumps(dict(sorted(meta.items())), separators=(",", ":"), ensure_ascii=False)
    return data[:8] + (head[:start] + ordered + head[end:]).encode("utf-8") + data[8 + n:]


def write_safetensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
    mode: int = FILE_MODE,
) -> Path:
    """Write ``tensors`` (made contiguous, on CPU) as a safetensors file, atomically
    (:func:`medvit.io.safe_write.atomic_write`: a reader never sees half a file) and byte-reproducibly (the same
    tensors and metadata give the same bytes: :func:`canonical_safetensors`). Returns ``path``."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    return atomic_write(path, canonical_safetensors(data), mode=mode)


def num_outputs(model: nn.Module | None) -> int | None:
    """The classifier outputs of ``model`` (its ``num_classes``: 0 for an encoder without a classification head);
    None when it records none (a segmentation network, an unknown module, None)."""
    n = getattr(model, "num_classes", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None


def label_count_problem(contract: WeightContract | None, model: nn.Module | None) -> str | None:
    """Why ``contract.label_names`` do not name each classifier output of ``model`` once, or None when they do:
    one name per output (``num_classes`` > 0) and none for an encoder without a classification head
    (``num_classes`` 0: a name there labels nothing). Not checked for a segmentation contract (its names are the
    segments) or a model that records no ``num_classes``. The one rule of :func:`save_checkpoint` and
    :func:`medvit.peft.save_adapter` (refused before writing), :func:`medvit.models.load_model` (refused on load) and
    :func:`medvit.infer.predictor.load_for_inference` (adapters, weight tags); the text follows
    ``contract.label_names``. (``compress.stitch.save_stitched`` writes no contract.)"""
    if contract is None or contract.segmentation is not None:
        return None
    n_out, n_names = num_outputs(model), len(contract.label_names)
    if n_out is None or n_out == n_names:
        return None
    if n_out == 0:
        return (f"names {n_names} labels but the model has no classification head (model_args.num_classes 0): "
                "an encoder's contract names no labels; drop them or save the classifier")
    named = (f"names {n_names} labels" if n_names else
             "is empty (for an encoder without a classification head, num_classes 0)")
    return (f"{named} but the model has {n_out} outputs (model_args.num_classes): one name per output; fix the "
            "contract or use the config.json saved with these weights")


def save_checkpoint(
    model: nn.Module,
    out_dir: str | Path,
    contract: WeightContract | None = None,
    extra: dict[str, Any] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``out_dir/model.safetensors`` and ``out_dir/config.json``; returns ``out_dir``.

    The model must come from :func:`medvit.models.create_model` (it records ``arch_name`` and
    ``model_args``). ``extra`` is stored under ``"extra"`` in the config (e.g. training metadata).

    Raises:
        ValueError: no ``arch_name`` recorded; :class:`CheckpointError` (naming ``out_dir`` and
            ``contract.label_names``) for a contract :func:`medvit.models.load_model` would refuse
            (:func:`label_count_problem`). Nothing is written then.
    """
    arch = getattr(model, "arch_name", None)
    if arch is None:
        raise ValueError("save_checkpoint needs a model made by medvit.create_model (no arch_name recorded)")
    contract = contract or getattr(model, "contract", None)
    if problem := label_count_problem(contract, model):
        raise CheckpointError(f"refusing to save checkpoint {out_dir}: contract.label_names {problem}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else model.state_dict()
    sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    write_safetensors(out / WEIGHTS_NAME, sd, metadata={"format": FORMAT, "architecture": arch})
    cfg = {
        "format": FORMAT,
        "architecture": arch,
        "model_args": _jsonable(model.model_args),
        "contract": contract.to_dict() if contract else None,
        "sha256": sha256_file(out / WEIGHTS_NAME),
        "medvit_version": _version(),
        "extra": extra or {},
    }
    atomic_write(out / CONFIG_NAME, json.dumps(cfg, indent=2), mode=FILE_MODE)
    logger.info("saved checkpoint %s (%s)", out, arch)
    return out


def _version() -> str:
    from medvit.version import __version__

    return __version__


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; any problem becomes a :class:`CheckpointError` naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {p}")
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        # only a file safetensors refuses is checked for pickle magic: a valid safetensors header length can begin
        # with the bytes b"PK" or 0x80 (e.g. a 0x0380-byte header) and must not be taken for a pickle
        with open(p, "rb") as f:
            head = f.read(8)
        if head[:2] == b"PK" or head[:1] == b"\x80":
            raise CheckpointError(
                f"{p} is a pickled PyTorch checkpoint, not safetensors; medvit never unpickles checkpoints "
                f"implicitly. Convert it once with `medvit convert {p} OUT_DIR --arch ARCH`."
            ) from None
        raise CheckpointError(f"{p} is not a readable safetensors file ({e}); it may be truncated or corrupt") from e


def read_pickled_weights(path: str | Path) -> dict[str, Any]:
    """Read a PyTorch ``.pth`` with torch's restricted unpickler (tensors, plain containers and the plain-data
    globals of :data:`medvit.models.safe_pickle.ALLOWED_GLOBALS`, e.g. the ``argparse.Namespace`` of MAE/DeiT
    training checkpoints). Raises :class:`CheckpointError` naming the file and any refused global."""
    from medvit.models.safe_pickle import UnsafeCheckpointError, load_training_checkpoint

    try:
        return load_training_checkpoint(path)
    except UnsafeCheckpointError as e:
        raise CheckpointError(str(e)) from None


def read_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint directory (or of the directory holding a weights file). Raises
    :class:`CheckpointError` naming the file and key: ``format`` not :data:`FORMAT`, ``architecture`` not a string,
    ``model_args`` not an object."""
    p = Path(path)
    cfg_path = p / CONFIG_NAME if p.is_dir() else p.with_name(CONFIG_NAME)
    cfg = read_json(cfg_path, error=CheckpointError, nonfinite_ok=("extra",),  # extra: metrics that can be NaN
                    format_id=FORMAT,  # a format this reader does not know (5, medvit-checkpoint/2): refused
                    missing=f"{p} is not a medvit checkpoint (a directory with {WEIGHTS_NAME} and {CONFIG_NAME})")
    for key in ("architecture", "model_args"):
        if key not in cfg:
            raise CheckpointError(f"{cfg_path} lacks required key {key!r}")
    if not isinstance(cfg["architecture"], str) or not cfg["architecture"]:
        raise CheckpointError(f"{cfg_path}: 'architecture' must be a registered architecture name (a string), got "
                              f"{json_type_name(cfg['architecture'])}")
    if not isinstance(cfg["model_args"], dict):
        raise CheckpointError(f"{cfg_path}: 'model_args' must be an object {{argument: value}}, got "
                              f"{json_type_name(cfg['model_args'])}")
    return cfg


def load_state_dict_checked(
    model: nn.Module,
    sd: dict[str, torch.Tensor],
    source: str,
    allow_missing: tuple[str, ...] = (),
    allow_unexpected: tuple[str, ...] = (),
) -> None:
    """Load ``sd`` into ``model``; raise :class:`CheckpointError` naming missing/unexpected/mis-shaped keys.

    Keys starting with an ``allow_missing`` / ``allow_unexpected`` prefix are tolerated and logged.
    """
    target = model.state_dict()
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    shape = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}"
             for k in sd if k in target and sd[k].shape != target[k].shape]
    bad_missing = [k for k in missing if not k.startswith(allow_missing)]
    bad_unexp = [k for k in unexpected if not k.startswith(allow_unexpected)]
    if bad_missing or bad_unexp or shape:
        parts = []
        if bad_missing:
            parts.append(f"missing keys {_few(bad_missing)}")
        if bad_unexp:
            parts.append(f"unexpected keys {_few(bad_unexp)}")
        if shape:
            parts.append(f"shape mismatches {shape[:5]}")
        raise CheckpointError(
            f"{source} does not fit {getattr(model, 'arch_name', type(model).__name__)}: " + "; ".join(parts)
            + ". Check the architecture arguments (embed_dim, depth, qkv_bias, global_pool) match the weights."
        )
    if missing:
        logger.info("%s: left freshly initialised: %s", source, missing)
    if unexpected:
        logger.info("%s: ignored keys: %s", source, unexpected)
    model.load_state_dict(sd, strict=False)


def _few(keys: list[str], n: int = 10) -> str:
    return f"{keys[:n]}" + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def special_file_problem(p: Path) -> str | None:
    """Why ``p``, which exists, cannot be a weights file without opening it: a device, FIFO or socket (reading one
    may block or never end), or a ``/proc`` / ``/sys`` pseudo-file (process or kernel state, never weights); None
    otherwise, and when ``p`` does not exist. Links are followed. The file kinds are
    :func:`medvit.io.errors.file_problem`'s (one rule)."""
    why = file_problem(p)
    if why in SPECIAL_FILE_PROBLEMS:
        return f"{why}, not a weights file"
    if why not in (None, "is a directory"):  # missing (or a dangling link / loop): the callers' own messages
        return None
    try:
        top = p.resolve().parts[1:2]
    except (OSError, RuntimeError):
        return None
    return f"a /{top[0]} pseudo-file, not a weights file" if top in (("proc",), ("sys",)) else None


def _resolve_source(src: str | Path) -> tuple[Path, bool]:
    """(weights file, is_medvit_dir) for a directory, file, or registered weight tag."""
    p = Path(src)
    if why := special_file_problem(p):  # not opened, and not a weight tag either
        raise ValueError(f"{p}: {why}")
    if p.is_dir():
        if why := special_file_problem(p / WEIGHTS_NAME):
            raise ValueError(f"{p / WEIGHTS_NAME}: {why}")
        return p / WEIGHTS_NAME, (p / CONFIG_NAME).is_file()
    if p.is_file():
        return p, False
    from medvit.registry import REGISTRY

    if isinstance(src, str) and ("weight", src) in REGISTRY:
        from medvit.models.pretrained import resolve_weight_file

        f = resolve_weight_file(src)
        return f, f.name == WEIGHTS_NAME and (f.parent / CONFIG_NAME).is_file()
    from medvit.registry import did_you_mean

    hint = did_you_mean(str(src), REGISTRY.names("weight")) if isinstance(src, str) else ""
    raise FileNotFoundError(f"{src}: not found (no such file or folder; nor is it a registered weight tag"
                            + (f", {hint}" if hint else "; see `medvit list weight`") + ")")


def load_weights_into(model: nn.Module, src: str | Path) -> nn.Module:
    """Load weights from a medvit checkpoint, a timm/MAE or HF file, or a weight tag into ``model``.

    medvit checkpoints load strictly. Foreign layouts are converted; a missing head / fc_norm
    (fine-tuning from a pretrained encoder) and an unused final ``norm`` are tolerated and logged.

    Raises:
        FileNotFoundError: ``src`` is no file, folder or registered weight tag.
        ValueError: ``src`` is a device, FIFO or socket (not opened).
    """
    f, native = _resolve_source(src)
    raw = read_pickled_weights(f) if f.suffix in (".pth", ".pt", ".bin") else read_safetensors(f)
    if native:
        load_state_dict_checked(model, raw, str(f))
    else:
        sd = to_medvit(raw, model)
        load_state_dict_checked(model, sd, str(f), allow_missing=("head.", "fc_norm.", "norm."),
                                allow_unexpected=("norm.", "fc_norm."))
    return model
