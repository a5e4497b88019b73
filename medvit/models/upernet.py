"""UperNet on a plain ViT: multi-level neck + UPerHead (BenchX's MMSeg ``upernet_vit`` configuration, restated).

BenchX segments with MMSeg's UperNet on ViT-B/16 (medical-notes §3.4): four block outputs (``out_indices``
[3, 5, 7, 11]) as (B, D, H/16, W/16) maps; a ``MultiLevelNeck`` (1×1 lateral conv per level, bilinear rescale by
``scales`` [4, 2, 1, 0.5] to strides 4, 8, 16, 32, then a 3×3 conv); a ``UPerHead`` (Xiao et al., ECCV 2018:
pyramid pooling on the coarsest level with bins 1, 2, 3, 6; top-down FPN; every level upsampled to stride 4,
concatenated, fused by a 3×3 conv, 1×1 classifier). Logits are upsampled to the input size.

:class:`UperNetSegmenter` registers it in the segmentation model kind (``create_model("upernet_vit", ...)``), so a
model trained by the BenchX protocol is saved, loaded and served like every segmentation model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: BenchX / MMSeg defaults for ViT-B/16 (12 blocks)
BENCHX_OUT_INDICES: tuple[int, ...] = (3, 5, 7, 11)
BENCHX_NECK_SCALES: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)


def scaled_out_indices(depth: int, reference: Sequence[int] = BENCHX_OUT_INDICES, ref_depth: int = 12) -> list[int]:
    """``reference`` block indices of a ``ref_depth``-block ViT mapped to a ``depth``-block one (same relative
    depth, rounded down; [3, 5, 7, 11] for 12 blocks, [0, 0, 1, 2] for 3)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return [min(depth - 1, max(0, (i + 1) * depth // ref_depth - 1)) for i in reference]


class ConvNormAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU, MMSeg's ``ConvModule`` default."""

    def __init__(self, cin: int, cout: int, k: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class MultiLevelNeck(nn.Module):
    """Per level: 1×1 conv to ``out_channels``, bilinear resize by its scale, 3×3 conv. (B, C_i, h, w) ×L ->
    (B, out, h·s_i, w·s_i) ×L."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, scales: Sequence[float]):
        super().__init__()
        if len(in_channels) != len(scales):
            raise ValueError(f"{len(in_channels)} levels but {len(scales)} neck scales")
        self.scales = [float(s) for s in scales]
        self.lateral = nn.ModuleList(ConvNormAct(c, out_channels, 1) for c in in_channels)
        self.convs = nn.ModuleList(ConvNormAct(out_channels, out_channels, 3) for _ in in_channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for x, lat, conv, s in zip(feats, self.lateral, self.convs, self.scales):
            x = lat(x)
            if s != 1.0:
                x = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
            out.append(conv(x))
        return out


class UPerHead(nn.Module):
    """Pyramid pooling on the last level + FPN; (B, C, h_i, w_i) ×L (finest first) -> (B, num_classes, h_0, w_0)."""

    def __init__(self, in_channels: int, channels: int, num_levels: int, num_classes: int,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1):
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.ppm = nn.ModuleList(ConvNormAct(in_channels, channels, 1) for _ in pool_scales)
        self.bottleneck = ConvNormAct(in_channels + len(pool_scales) * channels, channels, 3)
        self.lateral = nn.ModuleList(ConvNormAct(in_channels, channels, 1) for _ in range(num_levels - 1))
        self.fpn = nn.ModuleList(ConvNormAct(channels, channels, 3) for _ in range(num_levels - 1))
        self.fuse = ConvNormAct(num_levels * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        top = feats[-1]
        pooled = [top] + [F.interpolate(conv(F.adaptive_avg_pool2d(top, s)), size=top.shape[-2:], mode="bilinear",
                                        align_corners=False) for s, conv in zip(self.pool_scales, self.ppm)]
        lat = [conv(f) for conv, f in zip(self.lateral, feats[:-1])] + [self.bottleneck(torch.cat(pooled, 1))]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="bilinear",
                                                    align_corners=False)
        outs = [conv(x) for conv, x in zip(self.fpn, lat[:-1])] + [lat[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]]
        return self.classifier(self.dropout(self.fuse(torch.cat(outs, 1))))


class UperNetViT(nn.Module):
    """A medvit ViT backbone (``forward_intermediates``) + :class:`MultiLevelNeck` + :class:`UPerHead`.

    Args:
        backbone: any medvit backbone with ``forward_intermediates(x, indices, output_fmt="NCHW")`` and
            ``embed_dim`` (its classifier head is unused).
        num_classes: segmentation classes (2 = background + foreground, as BenchX).
        out_indices: blocks read (default: :data:`BENCHX_OUT_INDICES` scaled to the backbone depth).
        scales: neck rescale factors per level (default [4, 2, 1, 0.5]).
        neck_channels / channels: widths (MMSeg ViT-B: 768 / 512; default: the backbone width).
    Input (B, C, H, W) -> logits (B, num_classes, H, W).
    """

    def __init__(self, backbone: nn.Module, num_classes: int = 2, out_indices: Sequence[int] | None = None,
                 scales: Sequence[float] = BENCHX_NECK_SCALES, neck_channels: int | None = None,
                 channels: int | None = None):
        super().__init__()
        depth = len(getattr(backbone, "blocks", []))
        self.out_indices = list(out_indices) if out_indices is not None else scaled_out_indices(max(depth, 1))
        if depth and max(self.out_indices) >= depth:
            raise ValueError(f"out_indices {self.out_indices} exceed the backbone's {depth} blocks")
        if len(self.out_indices) != len(scales):
            raise ValueError(f"{len(self.out_indices)} out_indices but {len(scales)} neck scales")
        d = int(backbone.embed_dim)
        nc, ch = neck_channels or d, channels or d
        self.backbone = backbone
        self.neck = MultiLevelNeck([d] * len(self.out_indices), nc, scales)
        self.decode_head = UPerHead(nc, ch, len(self.out_indices), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unique = sorted(set(self.out_indices))
        maps = dict(zip(unique, self.backbone.forward_intermediates(x, indices=unique, output_fmt="NCHW")))
        logits = self.decode_head(self.neck([maps[i] for i in self.out_indices]))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class UperNetPyramid(nn.Module):
    """:class:`UPerHead` on a backbone's own feature pyramid, e.g. HST's side network (:mod:`medvit.peft.hst`).

    Args:
        backbone: a module with ``forward_pyramid(x)`` → maps (B, C_i, H/s_i, W/s_i), finest first, and
            ``pyramid_channels`` (the C_i).
        num_classes: output maps; channels: head width (default: the widest level).
    Input (B, C, H, W) -> logits (B, num_classes, H, W). Each level is projected (1×1 conv + BN + ReLU) to the head
    width first (UPerHead's laterals take one width).
    """

    def __init__(self, backbone: nn.Module, num_classes: int = 1, channels: int | None = None):
        super().__init__()
        chans = [int(c) for c in getattr(backbone, "pyramid_channels", [])]
        if not chans or not hasattr(backbone, "forward_pyramid"):
            raise ValueError(f"{type(backbone).__name__} has no forward_pyramid / pyramid_channels")
        ch = channels or max(chans)
        self.backbone = backbone
        self.proj = nn.ModuleList(ConvNormAct(c, ch, 1) for c in chans)
        self.decode_head = UPerHead(ch, ch, len(chans), num_classes)
        self.num_classes = self.num_labels = int(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [p(f) for p, f in zip(self.proj, self.backbone.forward_pyramid(x))]
        return F.interpolate(self.decode_head(feats), size=x.shape[-2:], mode="bilinear", align_corners=False)


class UperNetSegmenter(UperNetViT):
    """UperNet as a model of the registry kind ``segmentation`` (:mod:`medvit.models.segmentation`): built by
    ``create_model("upernet_vit", backbone=NAME, backbone_args={...}, num_labels=K)``, per-label logits
    (B, K, H, W) at the input resolution (sigmoid per label, the kind's convention), ``num_classes = K``; so it is
    saved, loaded and served (DICOM SEG in ``medvit infer``) like every segmentation model."""

    def __init__(self, backbone: str = "vit_tiny_patch16_224", backbone_args: dict | None = None, num_labels: int = 1,
                 out_indices: Sequence[int] | None = None, scales: Sequence[float] = BENCHX_NECK_SCALES,
                 neck_channels: int | None = None, channels: int | None = None,
                 backbone_pretrained: str | None = None):
        from medvit.models.factory import create_model

        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        net = create_model(backbone, pretrained=backbone_pretrained, **{**dict(backbone_args or {}), "num_classes": 0})
        super().__init__(net, num_labels, None if out_indices is None else list(out_indices), scales, neck_channels,
                         channels)
        self.num_classes = self.num_labels = int(num_labels)
        self.spatial_dims = 2

    @property
    def embed_dim(self) -> int:
        return int(self.backbone.embed_dim)


def _register() -> None:
    from medvit.models.segmentation import register_segmenter

    register_segmenter("upernet_vit", UperNetSegmenter,
                       "UperNet (multi-level neck + UPerHead) on a plain ViT, BenchX/MMSeg upernet_vit: "
                       "(B,C,H,W) -> (B,K,H,W)", backbone="vit_tiny_patch16_224", backbone_args={}, num_labels=1,
                       out_indices=None, scales=list(BENCHX_NECK_SCALES), neck_channels=None, channels=None,
                       backbone_pretrained=None)


_register()
