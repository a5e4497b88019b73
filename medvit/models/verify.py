"""Model identity and size checks done at load, before a model is trusted or built.

* :func:`read_verified_safetensors` hashes the very bytes it loads (no time-of-check/time-of-use gap) and
  refuses weights whose SHA-256 differs from the one ``config.json`` recorded at save time
  (:class:`WeightsMismatchError` names both hashes). The returned hash is the one to report.
* :func:`safetensors_shapes` reads only the safetensors header (8-byte length + JSON) to learn every
  tensor's shape, without reading the tensors.
* :func:`check_args_fit_weights` builds the architecture on PyTorch's ``meta`` device (no memory is
  allocated) and compares its parameter shapes and total size with the file's, so a ``config.json`` with
  huge ``model_args`` is refused before anything is allocated.
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


def check_args_fit_weights(build: Callable[[], Any], shapes: dict[str, tuple[int, ...]], source: str,
                           slack_elements: int = 1_000_000) -> None:
    """Build the model with ``build()`` on the meta device and compare it with the weights' ``shapes``.

    Raises :class:`CheckpointError` when a parameter present in both has another shape, or when the model
    would hold more elements than the file plus ``slack_elements`` (buffers that are not saved). A model
    that cannot be built on the meta device is built for real afterwards (the check is then skipped and
    logged).
    """
    import math

    import torch

    try:
        with torch.device("meta"):
            model = build()
    except Exception as e:  # an architecture whose constructor needs real tensors
        logger.info("%s: size check on the meta device not possible (%s: %s)", source, type(e).__name__, e)
        return
    target = model.state_dict()
    bad = [f"{k}: config builds {tuple(v.shape)}, weights hold {shapes[k]}"
           for k, v in target.items() if k in shapes and tuple(v.shape) != shapes[k]]
    n_model = sum(v.numel() for v in target.values())
    n_file = sum(math.prod(s) for s in shapes.values())
    if bad or n_model > n_file + slack_elements:
        raise CheckpointError(
            f"{source}: model_args in config.json do not fit the weights"
            + (f" (shape mismatches {bad[:5]})" if bad else "")
            + f"; the config would build {n_model:,} elements, the weights hold {n_file:,}. "
            "Nothing was allocated; fix model_args or use the config.json saved with these weights.")
