"""Numerical precision for running a module: one ``autocast`` for training, evaluation and inference, and one
resolution of the precision a model is run at for every caller that shows a model's outputs.

``medvit infer`` (:class:`medvit.infer.predictor.Predictor`, which adds int8 and compiled paths in
:mod:`medvit.infer.fastpath`), the viewer and the VLM CXR expert (:class:`medvit.vlm.experts.CXRExpert`) resolve a
requested precision with :func:`resolve_precision` and run fp32 or bf16 through :func:`model_at_precision`, so one
image gets the same probabilities and OOD score from each of them (``infer`` and ``vlm`` are rooms of one layer that
may not import each other: the resolution lives here, below both). ``auto`` means bf16 where the hardware multiplies
bf16 natively (CPU with AVX512-BF16 or AMX, or CUDA), fp32 elsewhere (on a CPU without them oneDNN emulates bf16 and
is slower than fp32; measured in ``benchmarks/results/infer_fastpaths.md``).
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA for ``precision="bf16"``; a no-op context for ``"fp32"``.

    Args:
        device: the device the forward pass runs on (its type picks the autocast backend).
        precision: ``"bf16"`` or ``"fp32"``.
    """
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


#: precisions ``medvit infer`` accepts (int8 is infer's PT2E path; :func:`model_at_precision` runs fp32 and bf16)
PRECISIONS = ("auto", "fp32", "bf16", "int8")
#: the precision ``medvit infer``, the viewer and the VLM CXR expert run a model at unless told otherwise (resolved
#: by :func:`resolve_precision`, so all show the same probabilities for the same image)
DEFAULT_PRECISION = "auto"


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX tiles), as torch's cpuinfo reports."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(requested: str, device: str) -> tuple[str, str]:
    """(precision, reason) for a requested precision on a device ("cpu", "cuda", "cuda:N").

    ``auto`` → ``bf16`` on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else ``fp32``. Any other
    value is returned as given. Raises ``ValueError`` for an unknown precision.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested != "auto":
        return requested, "requested"
    if device.startswith("cuda"):
        return "bf16", "auto: CUDA device (bf16 tensor cores)"
    if cpu_has_native_bf16():
        return "bf16", "auto: CPU has native bf16 (AVX512-BF16/AMX)"
    return "fp32", "auto: CPU has no native bf16 (no AVX512-BF16/AMX), bf16 would be emulated"


def model_at_precision(model: nn.Module, precision: str, device: str | torch.device = "cpu"
                       ) -> tuple[nn.Module, torch.dtype]:
    """(module to call, dtype to cast its (B, C, H, W) input to) for an eager run at a resolved ``precision``.

    ``"bf16"``: a bf16 copy of the weights on ``device`` (inputs cast to bf16: no per-call weight casts as under
    autocast; ``model`` itself stays fp32, e.g. for gradient-based explanations); ``"fp32"``: ``model`` on
    ``device``. Call ``.float()`` on the outputs. Raises ``ValueError`` for another precision (resolve ``auto``
    first; int8 is :mod:`medvit.infer.fastpath`'s compiled path).
    """
    if precision == "bf16":
        return copy.deepcopy(model).to(device, torch.bfloat16).eval(), torch.bfloat16
    if precision == "fp32":
        return model.to(device), torch.float32
    raise ValueError(f"an eager run is fp32 or bf16, got precision {precision!r}")
