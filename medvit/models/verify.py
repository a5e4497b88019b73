"""Model identity and size checks done at load, before a model is trusted or built.

* :func:`read_verified_safetensors` hashes the very bytes it loads (no time-of-check/time-of-use gap) and
  refuses weights whose SHA-256 differs from the one ``config.json`` recorded at save time
  (:class:`WeightsMismatchError` names both hashes). The returned hash is the one to report.
* :func:`safetensors_shapes` reads only the safetensors header (8-byte length + JSON) to learn every
  tensor's shape, without reading the tensors.
* :func:`check_arg_sizes` refuses an integer model argument larger than the weights' element count (a
  ``depth: 1000000000`` from a file), before anything is built.
* :func:`check_args_fit_weights` builds the architecture on PyTorch's ``meta`` device (no memory is
  allocated), stopped as soon as it outgrows the file, and compares its parameter shapes and total size with
  the file's, so a ``config.json`` with huge ``model_args`` is refused before anything is allocated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medvit.models.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

#: the safetensors format caps its JSON header at 100 MB
MAX_HEADER_BYTES = 100_000_000


class WeightsMismatchError(CheckpointError):
    """The weights file is not the one its config.json describes (SHA-256 differs)."""


def read_verified_safetensors(path: str | Path, expected_sha256: str | None) -> tuple[dict[str, Any], str]:
    """(state dict, SHA-256 of the bytes loaded) for a safetensors file.

    Raises :class:`WeightsMismatchError` when ``expected_sha256`` is given and differs, and
    :class:`CheckpointError` for a file that is not safetensors.
    """
    from safetensors.torch import load

    from medvit.models.checkpoint import read_safetensors

    p = Path(path)
    data = p.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if expected_sha256 and sha != str(expected_sha256).lower():
        raise WeightsMismatchError(
            f"{p}: SHA-256 of the weights is {sha} but config.json records {expected_sha256}: the weights file "
            "was replaced or corrupted after the checkpoint was saved. Refusing to load it; restore the "
            "original weights, or re-save the checkpoint if the new weights are intended.")
    if data[:2] == b"PK" or data[:1] == b"\x80":
        read_safetensors(p)  # raises the pickled-checkpoint error with its conversion hint
    try:
        return load(data), sha
    except Exception as e:
        raise CheckpointError(f"{p} is not a readable safetensors file ({e}); it may be truncated or corrupt") from e


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from a safetensors header; :class:`CheckpointError` when the header is invalid."""
    from medvit.models.checkpoint import read_safetensors

    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(8)
        if head[:2] == b"PK" or head[:1] == b"\x80":
            read_safetensors(p)  # raises the pickled-checkpoint error with its conversion hint
        if len(head) != 8:
            raise CheckpointError(f"{p} is not a readable safetensors file (only {len(head)} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{p} is not a readable safetensors file (header claims {n} bytes, "
                                  f"limit {MAX_HEADER_BYTES})")
        raw = f.read(n)
    try:
        header = json.loads(raw)
        return {k: tuple(int(s) for s in v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{p} is not a readable safetensors file (header: {e})") from e


class _TooBig(Exception):
    """Raised by the registration hooks of :func:`_bounded_build` to stop a build that outgrows the file."""


def check_arg_sizes(model_args: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str,
                    slack_elements: int = 1_000_000, prefix: str = "") -> None:
    """Refuse an integer in ``model_args`` (or in a list / tuple value) larger than the number of elements the
    weights hold plus ``slack_elements``: no size, depth or count of a model can exceed the weights it describes,
    and such a value (``depth: 1000000000``, ``embed_dim: 10**12``) would make even a meta-device build run out of
    memory or time. :class:`CheckpointError` names ``source`` (the config file) and ``<prefix>model_args.<key>``."""
    import math

    n_file = sum(math.prod(s) for s in shapes.values())
    for k, v in model_args.items():
        for x in v if isinstance(v, (list, tuple)) else (v,):
            if isinstance(x, int) and not isinstance(x, bool) and abs(x) > n_file + slack_elements:
                raise CheckpointError(
                    f"{source}: {prefix}model_args.{k} is {v!r}, more than the {n_file:,} elements the weights hold: "
                    "model_args do not fit the weights. Nothing was built; use the config.json saved with them.")


def _bounded_build(build: Callable[[], Any], max_modules: int, max_elements: int) -> Any:
    """``build()`` (under the caller's device context), stopped with :class:`_TooBig` as soon as it registers more
    than ``max_modules`` submodules or more than ``max_elements`` parameter / buffer elements (global PyTorch
    registration hooks, counting only this thread's registrations, removed afterwards)."""
    import threading

    from torch.nn.modules import module as tm

    me, count = threading.get_ident(), {"modules": 0, "elements": 0}

    def on_module(mod: Any, name: str, sub: Any) -> None:
        if threading.get_ident() == me:
            count["modules"] += 1
            if count["modules"] > max_modules:
                raise _TooBig(f"more than {max_modules:,} modules")

    def on_tensor(mod: Any, name: str, t: Any) -> None:
        if threading.get_ident() == me and t is not None:
            count["elements"] += t.numel()
            if count["elements"] > max_elements:
                raise _TooBig(f"more than {max_elements:,} elements")

    handles = [tm.register_module_module_registration_hook(on_module),
               tm.register_module_parameter_registration_hook(on_tensor),
               tm.register_module_buffer_registration_hook(on_tensor)]
    try:
        return build()
    finally:
        for h in handles:
            h.remove()


def check_config_fits_weights(model_args: dict[str, Any], build: Callable[[], Any], weights: str | Path,
                              source: str, prefix: str = "", config: str = "model_args in config.json") -> Any:
    """Both checks of a config against a safetensors file, header only: :func:`check_arg_sizes` then
    :func:`check_args_fit_weights` (``source``: the config file named in messages, ``prefix`` before its keys).
    Returns the model built on the meta device (None when it could not be built there); raises
    :class:`CheckpointError` as they do. ``load_model`` and the PEFT adapter's base weights use it."""
    shapes = safetensors_shapes(weights)
    check_arg_sizes(model_args, shapes, source, prefix=prefix)
    return check_args_fit_weights(build, shapes, str(weights), config=config)


def check_args_fit_weights(build: Callable[[], Any], shapes: dict[str, tuple[int, ...]], source: str,
                           slack_elements: int = 1_000_000, config: str = "model_args in config.json") -> Any:
    """Build the model with ``build()`` on the meta device and compare it with the weights' ``shapes``.

    Raises :class:`CheckpointError` when a parameter present in both has another shape, or when the model
    would hold more elements than the file plus ``slack_elements`` (buffers that are not saved); the build is
    stopped as soon as it registers 4 times that many elements, or more than 16 modules per weight tensor (+ 1000),
    so a config describing a far bigger model is refused in milliseconds. A model that cannot be built on the
    meta device is built for real afterwards (the check is then skipped and logged). Returns the model built on
    the meta device (None when it could not be built there).
    """
    import math

    import torch

    n_file = sum(math.prod(s) for s in shapes.values())
    max_modules = 16 * len(shapes) + 1000
    try:
        with torch.device("meta"):
            model = _bounded_build(build, max_modules, 4 * n_file + slack_elements)  # generous: a tensor may be
            # registered twice (tied weights, a table replaced in __init__); the exact count is compared below
    except _TooBig as e:
        raise CheckpointError(
            f"{source}: {config} do not fit the weights: the config builds {e}, the weights hold "
            f"{len(shapes):,} tensors of {n_file:,} elements. The build was stopped; fix model_args or use the "
            "config saved with these weights.") from None
    except Exception as e:  # an architecture whose constructor needs real tensors
        if isinstance(e, CheckpointError):
            raise
        logger.info("%s: size check on the meta device not possible (%s: %s)", source, type(e).__name__, e)
        return None
    target = model.state_dict()
    bad = [f"{k}: config builds {tuple(v.shape)}, weights hold {shapes[k]}"
           for k, v in target.items() if k in shapes and tuple(v.shape) != shapes[k]]
    n_model = sum(v.numel() for v in target.values())
    if bad or n_model > n_file + slack_elements:
        raise CheckpointError(
            f"{source}: {config} do not fit the weights"
            + (f" (shape mismatches {bad[:5]})" if bad else "")
            + f"; the config would build {n_model:,} elements, the weights hold {n_file:,}. "
            "Nothing was allocated; fix model_args or use the config.json saved with these weights.")
    return model
