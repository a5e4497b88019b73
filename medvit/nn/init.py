"""Weight initialisation shared by the backbone and the MAE decoder (facebookresearch-MAE rule)."""

from __future__ import annotations

from torch import nn


def mae_init_(module: nn.Module) -> None:
    """Initialise one module in place: xavier-uniform Linear weights with zero bias, unit LayerNorm.

    Not recursive; apply it over ``model.modules()``. Other module types are left unchanged.
    """
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
