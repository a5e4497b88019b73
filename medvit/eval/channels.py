"""Missing-channel evaluation: run a model as if only some input channels had been acquired.

Multi-sequence MRI, multi-window CT and multi-stain microscopy often lack a channel at test time. A model
with per-channel tokens (ChannelViT, Bao et al., ICLR 2024; general-vision notes entry 4) takes the present
channels and their indices; any other model gets the absent channels zero-filled, the usual baseline.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn


def accepts_channels(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes a ``channels`` argument (per-channel-token models such as ChannelViT)."""
    try:
        return "channels" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


class ChannelSubset(nn.Module):
    """Wrap ``model`` so that only the input channels ``present`` reach it.

    Args:
        model: the trained model; called as ``model(x[:, present], channels=present)`` when it accepts
            ``channels`` (ChannelViT), else as ``model(x')`` with the absent channels of x' set to 0.
        present: 0-based indices of the channels kept, a non-empty subset of ``range(in_chans)``.
        in_chans: the model's number of input channels C.

    Input (B, C, *S) with C = ``in_chans``; output whatever ``model`` returns (e.g. logits (B, K)).

    Raises:
        ValueError: ``present`` empty, repeated, or outside ``range(in_chans)``; at call time an input whose
            channel count is not ``in_chans``.
    """

    def __init__(self, model: nn.Module, present: Sequence[int], in_chans: int) -> None:
        super().__init__()
        idx = [int(c) for c in present]
        if not idx or len(set(idx)) != len(idx) or any(not 0 <= c < in_chans for c in idx):
            raise ValueError(f"channels_present {list(present)!r} must be distinct channel indices in "
                             f"[0, {in_chans}) and not empty")
        self.model, self.in_chans = model, int(in_chans)
        self.register_buffer("present", torch.tensor(sorted(idx)), persistent=False)
        self.per_channel_tokens = accepts_channels(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_chans:
            raise ValueError(f"input has {x.shape[1]} channels, the model expects {self.in_chans}")
        present = self.present.to(x.device)
        if self.per_channel_tokens:
            return self.model(x.index_select(1, present), channels=present)
        keep = torch.zeros(self.in_chans, dtype=x.dtype, device=x.device)
        keep[present] = 1
        return self.model(x * keep.view(1, -1, *([1] * (x.ndim - 2))))
