"""Read foreign PyTorch training checkpoints (``.pth``) without full unpickling.

Training scripts of MAE (facebookresearch/mae, the thorax-MAE release), DeiT and timm save
``{"model", "optimizer", "epoch", "scaler", "args"}`` where ``args`` is an ``argparse.Namespace`` and
numbers may be numpy scalars. torch's restricted unpickler (``torch.load(weights_only=True)``) refuses
these globals. :func:`load_training_checkpoint` runs that same restricted unpickler with an explicit
allow-list (:data:`ALLOWED_GLOBALS`) of plain-data types that execute nothing when rebuilt; every other
global (``os.system``, user classes, ...) is still refused, with a message naming it and no terminal
escape codes. medvit never offers ``weights_only=False``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class UnsafeCheckpointError(ValueError):
    """A pickled checkpoint that needs globals outside :data:`ALLOWED_GLOBALS` (or cannot be read at all)."""


def _numpy_globals() -> list[Any]:
    """numpy scalars as pickled by numpy 1.x and 2.x: ``multiarray.scalar`` + ``dtype`` (+ dtype classes)."""
    out: list[Any] = [np.dtype]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            m = __import__(mod, fromlist=["scalar"])
        except ImportError:
            continue
        out.append((m.scalar, f"{mod}.scalar"))
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType", "UInt8DType"):
        cls = getattr(getattr(np, "dtypes", None), name, None)
        if cls is not None:
            out.append(cls)
    return out


#: globals a training checkpoint may reference besides tensors and builtin containers; all plain data
ALLOWED_GLOBALS: list[Any] = [argparse.Namespace, *_numpy_globals()]


def clean_message(text: str) -> str:
    """``text`` without ANSI terminal escape sequences (torch colours parts of its unpickler errors)."""
    return _ANSI.sub("", text)


def _unsafe_globals(path: Path) -> list[str]:
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - legacy (non-zip) files cannot be scanned; the load error then speaks
        return []
    allowed = {(g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}") for g in ALLOWED_GLOBALS}
    return sorted(set(found) - allowed)


def load_training_checkpoint(path: str | Path) -> Any:
    """Unpickle ``path`` with torch's weights-only unpickler plus :data:`ALLOWED_GLOBALS`; tensors go to CPU.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        UnsafeCheckpointError: the file references a global outside the allow-list (named in the message),
            or is not a readable PyTorch checkpoint (truncated, not a pickle).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {p}")
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        bad = _unsafe_globals(p)
        if bad or "Unsupported global" in str(e) or "Unsupported operand" in str(e):
            names = ", ".join(bad) if bad else _global_from_message(str(e))
            raise UnsafeCheckpointError(
                f"{p} references Python objects that medvit will not unpickle ({names}); only tensors, plain "
                "containers, numbers, strings, argparse.Namespace and numpy scalars are accepted. Re-save the "
                "weights alone (e.g. torch.save(ckpt['model'], 'weights.pth')) or as safetensors."
            ) from None
        raise UnsafeCheckpointError(
            f"{p} could not be read as a PyTorch checkpoint ({type(e).__name__}: {clean_message(str(e))[:300]})"
        ) from None


def _global_from_message(msg: str) -> str:
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", clean_message(msg))
    return m.group(1) if m else "an unsupported global"
