"""Linear probing: the backbone is frozen and only the classifier head trains."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medvit.peft.base import MethodConfig, register_method


@dataclass
class LinearConfig(MethodConfig):
    """No extra fields: the head (``train_head``, must stay True) is the only trained module."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.train_head:
            raise ValueError("linear probing trains the head; train_head=False would train nothing")


@register_method("linear", LinearConfig, "linear probe: frozen backbone, trained classifier head")
def inject(model: nn.Module, cfg: LinearConfig) -> nn.Module:
    """Nothing to add: :func:`medvit.peft.apply_peft` froze the backbone and unfreezes the head."""
    if not isinstance(getattr(model, "head", None), nn.Linear):
        raise ValueError("linear probing needs a classifier head; build the backbone with num_classes > 0")
    return model
