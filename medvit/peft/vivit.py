"""Frozen-spatial factorised ViViT training (arXiv 2306.04822; general-vision notes, entry 5).

``clip (B, T, C, H, W) → frozen spatial ViT per frame → compact adapter → temporal transformer → head``:

- the image-pretrained spatial ViT runs under ``torch.no_grad`` (no backpropagation through it: the
  paper's training-time and memory saving);
- the **compact adapter** turns each frame's tokens into one vector: the frame's CLS token plus a
  bottleneck (D → ``adapter_dim`` → D, up-projection zero-initialised) of an attention-pooled summary of
  the patch tokens (a learned per-token score, softmax over the frame), so it "focuses on regions";
- the **temporal transformer** (``temporal_depth`` blocks) is initialised from the image ViT's last
  blocks (``temporal_init="last_blocks"``, copied bit-exactly, then trained) or at random; it gets
  learned temporal positions (zeros at start) and its own CLS token (the spatial CLS token at start).

A 2D image (B, C, H, W) is a one-frame clip, so the method also runs wherever an image PEFT method does.
The paper's code is not public: the exact temporal initialisation source and the adapter form are the
notes' ``[verify]`` readings (an option here, not the paper's verified recipe).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from medvit.config import option
from medvit.peft.base import MethodConfig, register_method
from medvit.peft.prompted import WrappedBackbone


@dataclass
class ViViTConfig(MethodConfig):
    """Temporal transformer depth and initialisation, adapter width, longest clip."""

    temporal_depth: int = option(2, "blocks of the temporal transformer")
    temporal_init: Literal["last_blocks", "random"] = option(
        "last_blocks", '"last_blocks": copies of the image ViT\'s last temporal_depth blocks; "random": fresh')
    adapter_dim: int = option(32, "bottleneck width of the compact adapter")
    max_frames: int = option(64, "longest clip (rows of the temporal position table)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for k in ("temporal_depth", "adapter_dim", "max_frames"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.temporal_init not in ("last_blocks", "random"):
            raise ValueError(f"temporal_init must be 'last_blocks' or 'random', got {self.temporal_init!r}")


class FrozenSpatialViViT(WrappedBackbone):
    """Factorised-encoder video model around a frozen medvit ViT. ``forward``: (B, T, C, H, W) or (B, C, H, W)
    → logits (B, K).

    Raises:
        ValueError: more blocks requested than the ViT has (``last_blocks``), a clip longer than
        ``max_frames``, or an input of the wrong rank.
    """

    image_grad = False  # the spatial ViT runs without autograd (Hint-Aug cannot perturb its input)
    still_frames = 1  # frames of the clip an image (B, C, H, W) stands for

    def __init__(self, backbone: nn.Module, cfg: ViViTConfig) -> None:
        super().__init__()
        depth, d = len(backbone.blocks), backbone.embed_dim
        self.backbone = backbone
        if cfg.temporal_init == "last_blocks":
            if cfg.temporal_depth > depth:
                raise ValueError(f"temporal_depth={cfg.temporal_depth} > the image ViT's {depth} blocks "
                                 "(temporal_init='last_blocks' copies them)")
            self.temporal = nn.ModuleList(copy.deepcopy(b) for b in backbone.blocks[depth - cfg.temporal_depth:])
        else:
            from medvit.nn.block import Block

            heads = backbone.blocks[0].attn.num_heads
            self.temporal = nn.ModuleList(Block(d, heads) for _ in range(cfg.temporal_depth))
        for p in self.temporal.parameters():
            p.requires_grad_(True)
        self.temporal_pos = nn.Parameter(torch.zeros(cfg.max_frames, d))
        cls = getattr(backbone, "cls_token", None)
        self.temporal_cls = nn.Parameter(cls.detach().clone().reshape(1, 1, d) if cls is not None
                                         else torch.zeros(1, 1, d))
        self.pool_score = nn.Linear(d, 1)
        self.adapter_down = nn.Linear(d, cfg.adapter_dim)
        self.adapter_up = nn.Linear(cfg.adapter_dim, d)
        nn.init.zeros_(self.adapter_up.weight)
        nn.init.zeros_(self.adapter_up.bias)
        self.temporal_norm = nn.LayerNorm(d)

    def spatial_tokens(self, clip: torch.Tensor) -> torch.Tensor:
        """Spatial pass per frame: (B, T, C, H, W) → (B, T, P + N, D); without autograd unless ``image_grad``."""
        b, t = clip.shape[:2]
        with torch.set_grad_enabled(self.image_grad and torch.is_grad_enabled()):
            tok = self.backbone.forward_features(clip.flatten(0, 1))
        return tok.view(b, t, *tok.shape[1:])

    def frame_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """Compact adapter: (B, T, P + N, D) → (B, T, D) = CLS + up(GELU(down(attention-pooled patches)))."""
        p = self.backbone.num_prefix_tokens
        patches = tokens[:, :, p:]
        w = self.pool_score(patches).softmax(dim=2)  # (B, T, N, 1)
        pooled = (w * patches).sum(dim=2)
        base = tokens[:, :, 0] if p > 0 else patches.mean(dim=2)
        return base + self.adapter_up(nn.functional.gelu(self.adapter_down(pooled)))

    def temporal_forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Temporal transformer over frame vectors: (B, T, D) → clip feature (B, D) (normalised CLS)."""
        f = frames + self.temporal_pos[: frames.shape[1]]
        z = torch.cat([self.temporal_cls.expand(frames.shape[0], -1, -1).to(f.dtype), f], dim=1)
        for blk in self.temporal:
            z = blk(z)
        return self.temporal_norm(z[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) clip, or (B, C, H, W) image = a clip of ``still_frames`` identical frames (its spatial
        pass runs once) → logits (B, K)."""
        still = x.dim() == 4
        if still:
            x = x[:, None]
        if x.dim() != 5:
            raise ValueError(f"expected a clip (B, T, C, H, W) or an image (B, C, H, W), got shape {tuple(x.shape)}")
        frames = self.still_frames if still else x.shape[1]
        if frames > self.temporal_pos.shape[0]:
            raise ValueError(f"clip of {frames} frames is longer than max_frames={self.temporal_pos.shape[0]}")
        tok = self.spatial_tokens(x)
        if still and frames > 1:
            tok = tok.expand(-1, frames, -1, -1)
        feat = self.temporal_forward(self.frame_vectors(tok))
        return self.backbone.head(self.backbone.head_drop(feat))


@register_method("vivit", ViViTConfig,
                 "ViViT frozen spatial ViT + compact adapter + temporal transformer (2D+t clips; images = 1 frame)")
def inject(model: nn.Module, cfg: ViViTConfig) -> nn.Module:
    """Wrap the frozen image ViT as the spatial encoder of a factorised video model."""
    return FrozenSpatialViViT(model, cfg)
