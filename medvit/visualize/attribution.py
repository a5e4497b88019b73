"""Heatmaps for ViT predictions: attention rollout and token Grad-CAM (colours: :mod:`medvit.visualize.overlay`).

Written against the uniform backbone interface (``embed``, ``blocks``, ``norm``, ``forward_head``,
``attention_maps``, ``num_prefix_tokens``, ``patch_embed.grid_size``), so any medvit ViT works. Used by
batch inference (``medvit infer --heatmaps``) and the viewer.

* :func:`attention_rollout` (Abnar & Zuidema 2020): class-agnostic; per block the head-fused attention plus
  identity (residual), row-normalised, multiplied through the depth; the CLS row (or, without a CLS token,
  the mean over patch queries) read off the patch columns.
* :func:`grad_cam` (Selvaraju et al. 2017 applied to the patch tokens entering the last block, where they still
  reach a CLS-token head): class-specific;
  channel weights = mean gradient of the target logit over patch tokens, map = ReLU(sum_d w_d * token_d)
  (where no token has positive evidence, the un-rectified map shifted to start at 0).

Maps are (B, gh, gw) on the patch grid; :func:`explain` upsamples to the input size and scales each map to
[0, 1]. Explanations are approximate attributions for research use, not evidence of a finding.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Method = Literal["gradcam", "rollout"]
METHODS = ("gradcam", "rollout")


def _grid(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    p = model.patch_embed.patch_size
    return x.shape[-2] // p[0], x.shape[-1] // p[1]


def attention_rollout(model: nn.Module, x: torch.Tensor, head_fusion: str = "mean",
                      discard_ratio: float = 0.0) -> torch.Tensor:
    """(B, C, H, W) -> (B, gh, gw) attention rollout, each map scaled to [0, 1].

    ``head_fusion``: "mean" | "max" | "min" over heads; ``discard_ratio`` zeroes that fraction of the
    lowest fused attentions per row (never the diagonal) before rollout.
    """
    if head_fusion not in ("mean", "max", "min"):
        raise ValueError(f"head_fusion must be mean, max or min, got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    maps = model.attention_maps(x)  # depth x (B, heads, T, T)
    P = model.num_prefix_tokens
    B, _, T, _ = maps[0].shape
    eye = torch.eye(T, device=x.device, dtype=torch.float32).expand(B, T, T)
    rollout = eye.clone()
    for a in maps:
        a = a.float()
        fused = {"mean": a.mean(1), "max": a.amax(1), "min": a.amin(1)}[head_fusion]
        if discard_ratio > 0:
            k = int(T * discard_ratio)
            low = fused.topk(k, dim=-1, largest=False).indices
            keep = torch.ones_like(fused).scatter_(-1, low, 0.0)
            fused = fused * torch.maximum(keep, eye)
        step = 0.5 * fused + 0.5 * eye
        step = step / step.sum(-1, keepdim=True)
        rollout = step @ rollout
    row = rollout[:, 0, P:] if P > 0 else rollout[:, P:, P:].mean(1)
    gh, gw = _grid(model, x)
    return _unit(row.reshape(B, gh, gw))


def grad_cam(model: nn.Module, x: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, gh, gw) Grad-CAM on the patch tokens entering the last block, each map scaled to [0, 1].

    ``target``: class index (int, or (B,) tensor); default: each image's highest logit.
    """
    P = model.num_prefix_tokens
    with torch.enable_grad():
        t = model.embed(x.detach())
        for blk in model.blocks[:-1]:
            t = blk(t)
        # tokens entering the last block: after it, patch tokens no longer reach a CLS-token head
        logits = model.forward_head(model.norm(model.blocks[-1](t)))
        if target is None:
            target = logits.argmax(-1)
        idx = torch.as_tensor(target, device=logits.device).reshape(-1).expand(x.shape[0])
        score = logits.gather(1, idx[:, None]).sum()
        (g,) = torch.autograd.grad(score, t)
    tok, g = t.detach()[:, P:].float(), g[:, P:].float()  # (B, N, D)
    weights = g.mean(1, keepdim=True)  # (B, 1, D)
    raw = (weights * tok).sum(-1)  # (B, N)
    cam = F.relu(raw)
    empty = cam.amax(1, keepdim=True) <= 0  # no positive evidence anywhere: show the least negative instead
    cam = torch.where(empty, raw - raw.amin(1, keepdim=True), cam)
    gh, gw = _grid(model, x)
    return _unit(cam.reshape(x.shape[0], gh, gw))


def explain(model: nn.Module, x: torch.Tensor, method: Method = "gradcam",
            target: int | torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W) heatmap in [0, 1] at input resolution (bilinear upsampling)."""
    if method == "gradcam":
        m = grad_cam(model, x, target)
    elif method == "rollout":
        m = attention_rollout(model, x)
    else:
        raise ValueError(f"unknown heatmap method {method!r}; choose one of {METHODS}")
    up = F.interpolate(m[:, None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    return _unit(up)


def _unit(m: torch.Tensor) -> torch.Tensor:
    """Scale each map of (B, ...) to [0, 1]; (numerically) constant maps become 0."""
    flat = m.reshape(m.shape[0], -1)
    lo = flat.min(1, keepdim=True).values
    hi = flat.max(1, keepdim=True).values
    span = hi - lo
    flat_maps = span <= 1e-5 * hi.abs().clamp_min(1e-12)
    scaled = (flat - lo) / span.clamp_min(1e-12)
    return torch.where(flat_maps, torch.zeros_like(scaled), scaled).reshape(m.shape)
