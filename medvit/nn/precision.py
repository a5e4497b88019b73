"""Numerical precision for running a module: one ``autocast`` for training, evaluation and inference."""

from __future__ import annotations

import contextlib

import torch


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA for ``precision="bf16"``; a no-op context for ``"fp32"``.

    Args:
        device: the device the forward pass runs on (its type picks the autocast backend).
        precision: ``"bf16"`` or ``"fp32"``.
    """
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
