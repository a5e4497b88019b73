"""HST: hierarchical side-tuning of a frozen plain ViT (general-vision notes, entry 26; ``AFeng-x/HST``).

A trainable side network runs next to the frozen backbone and turns it into a 4-stage feature pyramid
(strides 4, 8, 16, 32 of the input) that classification, segmentation or detection heads can use:

- **meta tokens**: one learnable token per ViT block, appended to that block's input; its output is
  routed to the side network (gradients therefore pass through the frozen blocks, as in HST);
- **side stages**: a conv stem (stride 4) then stride-2 downsampling convs; stage ``s`` adds the ViT's
  patch tokens after block ``taps[s]`` through an adaptive bridge (LayerNorm + Linear D → C_s, resized
  to the stage's grid) and the bridged meta-token output, then a residual depthwise-conv block;
- **outputs**: each stage normalised (GroupNorm(1, C), no affine; HST: BN without affine);
- **head**: mean of the last stage → LayerNorm → Linear C_3 → D → the backbone's task ``head``.

Deviation: HST's side stages are small transformers (``m_embed_dims`` [32, 48, 64, 72], depths 3);
here each stage is one depthwise-separable conv block (a ConvNeXt-style residual). 2D backbones only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medvit.config import option
from medvit.peft.base import MethodConfig, register_method
from medvit.peft.prompted import WrappedBackbone, block_index


@dataclass
class HSTConfig(MethodConfig):
    """Side-network widths, which ViT blocks feed each stage, meta tokens on/off."""

    side_dims: list[int] = option(default_factory=lambda: [32, 48, 64, 72],
                                  help="channels C_s of the 4 side stages (HST m_embed_dims)")
    taps: list[int] | None = option(None, "ViT block feeding each stage (negative from the end); None = the "
                                          "ends of the 4 quarters of the depth (ViT-B: 2, 5, 8, 11)")
    meta_tokens: bool = option(True, "one learnable meta token per ViT block routed to the side network")

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.side_dims) != 4 or any(int(c) < 1 for c in self.side_dims):
            raise ValueError(f"side_dims must be 4 positive channel counts, got {self.side_dims}")
        if self.taps is not None and len(self.taps) != 4:
            raise ValueError(f"taps must name 4 blocks (one per side stage), got {self.taps}")


class _SideBlock(nn.Module):
    """Residual depthwise 7×7 conv → GroupNorm → 1×1 (×4) → GELU → 1×1: (B, C, H, W) → same."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.GroupNorm(1, c)
        self.pw1 = nn.Conv2d(c, 4 * c, 1)
        self.pw2 = nn.Conv2d(4 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw2(F.gelu(self.pw1(self.norm(self.dw(x)))))


class HSTViT(WrappedBackbone):
    """Frozen ViT + hierarchical side network. ``forward(x)`` (B, C, H, W) → logits (B, K).

    ``forward_pyramid(x)`` → 4 maps (B, C_s, H/2^(s+2), W/2^(s+2)) for dense heads.
    Raises:
        ValueError: a non-2D backbone or a tap index out of range.
    """

    def __init__(self, backbone: nn.Module, cfg: HSTConfig) -> None:
        super().__init__()
        if len(getattr(backbone, "patch_size", ())) != 2:
            raise ValueError("hst: only 2D backbones are supported (patch_size must be (h, w))")
        depth, d = len(backbone.blocks), backbone.embed_dim
        taps = cfg.taps if cfg.taps is not None else [max(0, (q * depth) // 4 - 1) for q in (1, 2, 3, 4)]
        self.taps = [block_index(int(t), depth) for t in taps]
        self.backbone = backbone
        c = [int(v) for v in cfg.side_dims]
        self.pyramid_channels = list(c)  # channels of forward_pyramid's maps (dense heads: UperNetPyramid)
        self.meta_tokens = nn.Parameter(torch.randn(depth, d) * 0.02) if cfg.meta_tokens else None
        self.stem = nn.Sequential(nn.Conv2d(backbone.in_chans, c[0], 3, stride=2, padding=1), nn.GELU(),
                                  nn.Conv2d(c[0], c[0], 3, stride=2, padding=1))
        self.down = nn.ModuleList(nn.Conv2d(c[s - 1], c[s], 3, stride=2, padding=1) for s in range(1, 4))
        self.bridges = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, c[s])) for s in range(4))
        self.stages = nn.ModuleList(_SideBlock(c[s]) for s in range(4))
        self.out_norms = nn.ModuleList(nn.GroupNorm(1, c[s], affine=False) for s in range(4))  # HST: BN(affine=False)
        self.neck = nn.Sequential(nn.LayerNorm(c[3]), nn.Linear(c[3], d))

    def _vit_taps(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(patch tokens (B, L, D), meta-token output (B, D) or None) after each tap block."""
        bb = self.backbone
        t = bb.embed(x)
        p = bb.num_prefix_tokens
        out: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for i, blk in enumerate(bb.blocks):
            meta = None
            if self.meta_tokens is not None:
                t = blk(torch.cat([t, self.meta_tokens[i].to(t.dtype).expand(t.shape[0], 1, -1)], dim=1))
                t, meta = t[:, :-1], t[:, -1]
            else:
                t = blk(t)
            if i in self.taps:
                out[i] = (t[:, p:], meta)
            if i >= max(self.taps):
                break
        return [out[i] for i in self.taps]

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) → [(B, C_s, H/2^(s+2), W/2^(s+2)) for s = 0..3]."""
        gh, gw = (x.shape[-2] // self.backbone.patch_size[0], x.shape[-1] // self.backbone.patch_size[1])
        h = self.stem(x)
        outs = []
        for s, (tokens, meta) in enumerate(self._vit_taps(x)):
            if s > 0:
                h = self.down[s - 1](h)
            f = self.bridges[s](tokens).transpose(1, 2).reshape(x.shape[0], -1, gh, gw)
            h = h + F.interpolate(f, size=h.shape[-2:], mode="bilinear", align_corners=False)
            if meta is not None:
                h = h + self.bridges[s](meta)[:, :, None, None]
            h = self.stages[s](h)
            outs.append(self.out_norms[s](h))
        return outs

    def patch_token_slice(self, n_tokens: int) -> slice:
        """Block inputs are ``[prefix | patches | meta token]``: the patches follow the prefix."""
        p = self.backbone.num_prefix_tokens
        return slice(p, p + math.prod(self.backbone.grid_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.neck(self.forward_pyramid(x)[-1].mean(dim=(-2, -1)))
        return self.backbone.head(self.backbone.head_drop(pooled))


@register_method("hst", HSTConfig, "HST hierarchical side-tuning: side network + meta tokens on a frozen ViT")
def inject(model: nn.Module, cfg: HSTConfig) -> nn.Module:
    """Wrap the frozen backbone with a trainable side network (everything new trains)."""
    return HSTViT(model, cfg)
