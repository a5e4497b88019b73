"""Segmentation models and the segmentation contract.

**Kind.** The registry kind ``segmentation`` holds segmentation *model classes* (``medvit list segmentation``).
Every entry is built as ``cls(backbone=NAME, backbone_args={...}, num_labels=K, **kw)`` around a registered
``backbone`` and maps images (B, C, H, W) to per-label logits (B, K, H, W) at the input resolution. They are
made with :func:`medvit.models.create_model` like backbones (so :func:`~medvit.models.save_checkpoint` and
:func:`~medvit.models.load_model` handle them) and carry ``num_classes = K``. Register new decoders with
:func:`register_segmenter` (e.g. a UperNet decoder over ``forward_intermediates`` levels).

**Contract.** A segmentation checkpoint's :class:`~medvit.models.contract.WeightContract` carries
``segmentation`` (the JSON form of :class:`SegmentationContract`): one :class:`SegmentLabel` per output
channel, in channel order, with its display colour and its coded concepts (segmented property category and
type, SNOMED CT codes as DICOM PS3.16 CID 7150 / CID 7151 use them), the per-pixel activation (sigmoid: labels
may overlap) and how results are stored in DICOM SEG (``BINARY`` at the contract's per-label thresholds, or
``FRACTIONAL`` probabilities). ``WeightContract.label_names`` are the segment names and
``WeightContract.thresholds`` the per-pixel probability thresholds.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from medvit.models.seg_contract import (  # noqa: F401  (re-exported: the contract is part of the kind's API)
    CATEGORY_ANATOMY,
    CATEGORY_MORPHOLOGY,
    KNOWN_CONCEPTS,
    SEG_TYPES,
    SegmentationContract,
    SegmentLabel,
    phantom_segment_labels,
)
from medvit.registry import REGISTRY

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ models
def register_segmenter(name: str, cls: type[nn.Module], description: str = "", **defaults: Any) -> None:
    """Register a segmentation model class under kind ``segmentation`` (built by ``create_model(name, ...)``)."""
    REGISTRY.add("segmentation", name, cls, defaults=dict(defaults), description=description)


class LinearSegmenter(nn.Module):
    """ViT encoder + a linear patch decoder (the "naive" SETR / Segmenter-linear baseline).

    Each patch token of the last block (after the final norm) is mapped by one linear layer to
    ``K * p * p`` logits, rearranged into a (p x p) patch of K maps (pixel shuffle), so the output has the input
    resolution. Optionally ``upsample="bilinear"`` instead predicts K logits per token and upsamples them.

    Input (B, C, H, W) with H, W multiples of the patch size; output (B, K, H, W) logits.
    Source: Zheng et al., SETR (CVPR 2021) naive decoder; Strudel et al., Segmenter (ICCV 2021) linear decoder.
    """

    def __init__(self, backbone: str = "vit_tiny_patch16_224", backbone_args: dict[str, Any] | None = None,
                 num_labels: int = 1, upsample: str = "shuffle", backbone_pretrained: str | None = None) -> None:
        super().__init__()
        from medvit.models.factory import create_model

        if upsample not in ("shuffle", "bilinear"):
            raise ValueError(f"upsample must be 'shuffle' or 'bilinear', got {upsample!r}")
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        args = dict(backbone_args or {})
        args["num_classes"] = 0
        self.backbone = create_model(backbone, pretrained=backbone_pretrained, **args)
        if not hasattr(self.backbone, "forward_features") or not hasattr(self.backbone, "patch_embed"):
            raise ValueError(f"backbone {backbone!r} has no forward_features / patch_embed (a ViT is needed)")
        p = self.backbone.patch_embed.patch_size
        self.patch = int(p[0] if isinstance(p, tuple | list) else p)
        self.upsample = upsample
        self.num_classes = self.num_labels = int(num_labels)
        d = int(self.backbone.embed_dim)
        out = num_labels * self.patch * self.patch if upsample == "shuffle" else num_labels
        self.decoder = nn.Linear(d, out)
        self.spatial_dims = 2

    @property
    def embed_dim(self) -> int:
        return int(self.backbone.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, K, H, W) logits."""
        b, _, h, w = x.shape
        if h % self.patch or w % self.patch:
            raise ValueError(f"input {h}x{w} is not a multiple of the patch size {self.patch}")
        gh, gw = h // self.patch, w // self.patch
        tokens = self.backbone.forward_features(x)[:, self.backbone.num_prefix_tokens:]  # (B, N, D)
        z = self.decoder(tokens).transpose(1, 2).reshape(b, -1, gh, gw)
        if self.upsample == "shuffle":
            return nn.functional.pixel_shuffle(z, self.patch)
        return nn.functional.interpolate(z, size=(h, w), mode="bilinear", align_corners=False)


register_segmenter("vit_linear_seg", LinearSegmenter,
                   "ViT encoder + linear patch decoder (SETR naive / Segmenter linear): (B,C,H,W) -> (B,K,H,W)",
                   backbone="vit_tiny_patch16_224", backbone_args={}, num_labels=1, upsample="shuffle",
                   backbone_pretrained=None)


def is_segmentation_model(model: nn.Module) -> bool:
    """True for models built from the ``segmentation`` kind."""
    return ("segmentation", getattr(model, "arch_name", "")) in REGISTRY


def dice_per_label(prob: torch.Tensor, target: torch.Tensor, threshold: float | torch.Tensor = 0.5,
                   eps: float = 1e-6) -> torch.Tensor:
    """Dice coefficient per image and label of thresholded ``prob`` vs boolean ``target``, both (B, K, H, W);
    returns (B, K). Both empty -> 1. Source: Dice (1945); the usual segmentation overlap metric."""
    thr = torch.as_tensor(threshold, dtype=prob.dtype, device=prob.device).reshape(1, -1, 1, 1) \
        if not isinstance(threshold, float) else threshold
    pred = (prob >= thr).float()
    t = target.float()
    inter = (pred * t).sum((2, 3))
    denom = pred.sum((2, 3)) + t.sum((2, 3))
    return torch.where(denom > 0, 2 * inter / (denom + eps), torch.ones_like(denom))
