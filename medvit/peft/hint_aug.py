"""Hint-Aug: few-shot augmentation hints from the foundation ViT (Yu et al., CVPR'23; notes entry 1).

Two parts, usable with any PEFT method that tunes the backbone in place (LoRA family, SPT, full, linear —
the student must expose ``forward_until`` and ``blocks``):

- **Attentive over-fitting detector (AOD)** — :func:`patch_attention` gives the attention each patch
  receives at block ``layer`` (mean over heads and queries, prefix tokens dropped, L2-normalised over
  patches); :func:`select_patches` compares the tuned model with the frozen foundation ViT:
  ``d = a_FViT − a_tuned``; a sample with ``max|d| > threshold`` (paper: 0.7) is judged over-fitted and its
  ``num_patch`` patches of largest ``d`` are chosen, otherwise its most-attended patches.
- **Confusion-based feature infusion (CFI)** — :func:`confusion_targets` turns a running class-confusion
  matrix into soft targets ``softmax(C[y])``; :func:`patch_perturbation` optimises a perturbation δ,
  non-zero only inside the chosen patches and ``‖δ‖∞ ≤ eps``, with Adam to pull the student's prediction
  towards those targets (infusing features of the classes confused with y).

:class:`HintAug` ties them together for the training loop (a second optimizer step on the augmented
batch with the true labels, after ``start_epoch``). Not implemented: the Patch-Fool attention loss on the
first half of the layers and its PCGrad combination with the CE loss (only the CE/CFI term is used),
the optional ℓ2 bound and ``switch_bn``; the exact ``normalize`` of the official code is ``[verify]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def patch_attention(model: nn.Module, x: torch.Tensor, layer: int) -> torch.Tensor:
    """Attention each patch receives at block ``layer``: (B, C, H, W) → (B, N), L2-normalised over N.

    Raises:
        ValueError: the model lacks ``forward_until`` / ``blocks`` (wrapper methods), or ``layer`` out of range.
    """
    if not hasattr(model, "forward_until") or not hasattr(model, "blocks"):
        raise ValueError(f"{type(model).__name__} does not expose forward_until / blocks; Hint-Aug needs a "
                         "backbone tuned in place (lora, spt, full, ...)")
    if not 0 <= layer < len(model.blocks):
        raise ValueError(f"layer must be in [0, {len(model.blocks)}), got {layer}")
    t = model.forward_until(x, layer)
    blk = model.blocks[layer]
    _, probs = blk.attn(blk.norm1(t), return_attention=True)  # (B, H, T, T)
    received = probs.mean(dim=1).mean(dim=1)[:, model.num_prefix_tokens:]
    return F.normalize(received, dim=-1)


def select_patches(a_tuned: torch.Tensor, a_fvit: torch.Tensor, num_patch: int,
                   threshold: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """AOD selection: (patch indices (B, num_patch), over-fitted flags (B,)) from (B, N) attention maps."""
    if a_tuned.shape != a_fvit.shape:
        raise ValueError(f"attention maps differ in shape: {tuple(a_tuned.shape)} vs {tuple(a_fvit.shape)}")
    if not 1 <= num_patch <= a_tuned.shape[1]:
        raise ValueError(f"num_patch must be in [1, {a_tuned.shape[1]}], got {num_patch}")
    d = a_fvit - a_tuned
    overfit = d.abs().amax(dim=1) > threshold
    score = torch.where(overfit[:, None], d, a_tuned)
    return score.topk(num_patch, dim=1).indices, overfit


def patch_mask(indices: torch.Tensor, grid: tuple[int, int], patch: tuple[int, int]) -> torch.Tensor:
    """Pixel mask (B, 1, gh·ph, gw·pw) that is 1 inside the patches ``indices`` (B, k) (row-major grid)."""
    gh, gw = grid
    m = torch.zeros(indices.shape[0], gh * gw, device=indices.device)
    m.scatter_(1, indices, 1.0)
    m = m.view(-1, 1, gh, gw)
    return m.repeat_interleave(patch[0], dim=2).repeat_interleave(patch[1], dim=3)


def confusion_targets(confusion: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CFI soft targets ``softmax(C[y])``: (K, K) confusion statistics, (B,) labels → (B, K)."""
    if confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be (K, K), got {tuple(confusion.shape)}")
    return confusion[labels].float().softmax(dim=-1)


def patch_perturbation(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
                       eps: float, steps: int = 5, lr: float | None = None) -> torch.Tensor:
    """δ (same shape as ``x``) with ``δ = 0`` outside ``mask`` and ``‖δ‖∞ ≤ eps`` that lowers CE(model(x+δ), target).

    ``target`` (B, K) soft labels. Adam on δ, ``lr`` default eps / 2. The model's parameters get no gradient.
    """
    if eps <= 0 or steps < 1:
        raise ValueError(f"eps must be > 0 and steps >= 1, got eps={eps}, steps={steps}")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():  # callers may sit under no_grad; δ needs its gradient
            delta = torch.zeros_like(x, requires_grad=True)
            opt = torch.optim.Adam([delta], lr=lr if lr is not None else eps / 2)
            for _ in range(steps):
                loss = torch.sum(-target * F.log_softmax(model(x + delta * mask), dim=-1), dim=-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    delta.clamp_(-eps, eps)
        return (delta * mask).detach()
    finally:
        for p, f in flags:
            p.requires_grad_(f)


class HintAug:
    """Hint-Aug augmentation stage for a few-shot PEFT run.

    Args:
        fvit: the frozen foundation ViT (the untuned base), same patch grid as the student.
        num_classes: K (for the confusion statistics).
        layer: block whose attention the AOD compares (``atten_select``).
        num_patch: patches perturbed per image; eps: ℓ∞ bound (paper scripts: 0.001 in normalised units —
            raise it for visible effect); steps: attack iterations; threshold: AOD threshold (0.7).
    """

    def __init__(self, fvit: nn.Module, num_classes: int, layer: int = 0, num_patch: int = 1,
                 eps: float = 1e-3, steps: int = 5, threshold: float = 0.7) -> None:
        self.fvit = fvit.eval()
        for p in self.fvit.parameters():
            p.requires_grad_(False)
        self.layer, self.num_patch, self.eps, self.steps, self.threshold = layer, num_patch, eps, steps, threshold
        self.confusion = torch.zeros(num_classes, num_classes)

    @torch.no_grad()
    def update_confusion(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Accumulate predicted-class probabilities per true class (the CFI statistics)."""
        self.confusion.index_add_(0, labels.cpu(), logits.detach().float().softmax(-1).cpu())

    def augment(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Augmented images (B, C, H, W) for the second optimizer step (labels unchanged)."""
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                idx, _ = select_patches(patch_attention(model, images, self.layer),
                                        patch_attention(self.fvit, images, self.layer), self.num_patch, self.threshold)
            ph, pw = model.patch_size
            mask = patch_mask(idx, (images.shape[-2] // ph, images.shape[-1] // pw), (ph, pw)).to(images.dtype)
            target = confusion_targets(self.confusion, labels.cpu()).to(images.device)
            return images + patch_perturbation(model, images, mask, target, self.eps, self.steps)
        finally:
            model.train(was)
