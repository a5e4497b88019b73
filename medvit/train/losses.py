"""Training losses shared by the task kinds."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits averaged over known labels: (B, K), (B, K), (B, K) bool -> scalar.

    Unknown labels (``mask`` False, e.g. CheXpert's blanks) contribute nothing; a batch without any known label
    gives 0 (the denominator is clamped to 1).
    """
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    m = mask.float()
    return (loss * m).sum() / m.sum().clamp(min=1.0)
