"""DeiT distilled ViT: a DIST token beside CLS, its own head (Touvron et al., ICML 2021, §5; the student of DeiT-LT,
Rangwani et al., CVPR 2024).

Tokens ``[CLS, DIST, patches]``; in training the model returns ``(head(CLS), head_dist(DIST))`` for a
distillation loss (``loss: {name: deit_lt}``), in eval the mean of the two logits (DeiT-LT: CLS acts as the
head-class expert, DIST as the tail-class expert). A plain :class:`~medvit.models.vit.VisionTransformer`
otherwise: checkpoints, layer decay, PEFT and probes work unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medvit.models.factory import register_sizes
from medvit.models.family import vit_signature
from medvit.models.vit import VisionTransformer
from medvit.nn import sincos_pos_embed


class DistilledVisionTransformer(VisionTransformer):
    """ViT with CLS and DIST tokens (``num_prefix_tokens`` = 2) and two heads; ``global_pool`` must be "token".

    forward: (B, C, *S) -> ``(cls_logits, dist_logits)`` each (B, K) in training mode when ``distilled_training``
    (set by the constructor or :meth:`set_distilled_training`; the ``deit_lt`` loss switches it on), else their
    mean (B, K).
    ``forward_head(tokens, pre_logits=True)`` -> the mean of the two normalised token features (B, D).
    """

    @vit_signature
    def __init__(self, *, distilled_training: bool = False, **kwargs: Any):
        if kwargs.get("global_pool", "token") in ("avg", ""):
            raise ValueError("a distilled ViT pools its CLS and DIST tokens: set global_pool='token'")
        super().__init__(**kwargs)
        self.distilled_training = bool(distilled_training)
        d = self.embed_dim
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.num_prefix_tokens = 2
        if self.pos_embed is not None:
            self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 2, d),
                                          requires_grad=self.pos_embed.requires_grad)
        self.head_dist = nn.Linear(d, self.num_classes) if self.num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        if getattr(self, "dist_token", None) is not None:
            nn.init.normal_(self.dist_token, std=0.02)
            if self.pos_embed is not None:
                with torch.no_grad():
                    self.pos_embed.copy_(sincos_pos_embed(self.embed_dim, self.patch_embed.grid_size, 2)[None])

    def prefix_tokens(self, batch_size: int) -> torch.Tensor:
        """CLS and DIST tokens with their position embeddings: -> (B, 2, D)."""
        t = torch.cat([self.cls_token, self.dist_token], dim=1)
        if self.pos_embed is not None:
            t = t + self.pos_embed[:, :2]
        return t.expand(batch_size, -1, -1)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> Any:
        """(B, 2 + N, D) -> (cls, dist) logits in training, their mean in eval; pre_logits: mean feature (B, D)."""
        c, d = self.head_drop(self.fc_norm(tokens[:, 0])), self.head_drop(self.fc_norm(tokens[:, 1]))
        if pre_logits:
            return (c + d) / 2
        a, b = self.head(c), self.head_dist(d)
        if self.training and self.distilled_training:
            return a, b
        return (a + b) / 2

    def set_distilled_training(self, enable: bool = True) -> None:
        """Return ``(cls, dist)`` logits in training mode (for a distillation loss) instead of their mean."""
        self.distilled_training = bool(enable)

    def reset_classifier(self, num_classes: int, global_pool: Any = None) -> None:
        """Fresh CLS and DIST heads of ``num_classes`` outputs (trunc-normal std 2e-5, as the base head)."""
        if global_pool not in (None, "token"):
            raise ValueError("a distilled ViT pools its CLS and DIST tokens; global_pool must stay 'token'")
        super().reset_classifier(num_classes)
        dev = self.patch_embed.proj.weight.device
        self.head_dist = nn.Linear(self.embed_dim, num_classes, device=dev) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.head_dist.weight, std=2e-5)
            nn.init.zeros_(self.head_dist.bias)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        g = super().group_matcher(coarse)
        return {**g, "stem": g["stem"] + r"|^dist_token"}

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"dist_token"}


register_sizes("deit_{size}_distilled_patch16_224", DistilledVisionTransformer,
               "DeiT-{S}/16 distilled: CLS + DIST tokens and heads (DeiT / DeiT-LT student)",
               img_size=224, patch_size=16, global_pool="token")
