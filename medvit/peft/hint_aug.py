"""Hint-Aug: few-shot augmentation hints from the foundation ViT (Yu et al., CVPR'23; notes entry 1).

Two parts, usable with every image PEFT method (in-place adapters — LoRA family, SPT, full, linear — and
wrappers — VPT, DVPT, HST): the attention is read with a pre-hook on the attention module of the
*backbone's* block ``layer``, and wrappers say where the patch tokens sit (:meth:`WrappedBackbone.patch_token_slice`).
Methods whose image encoder runs without autograd (``vivit``) cannot be augmented (δ would get no gradient).

- **Attentive over-fitting detector (AOD)** — :func:`patch_attention` gives the attention each patch
  receives at block ``layer`` (mean over heads and queries, prefix/prompt/meta tokens dropped, L2-normalised
  over patches); :func:`select_patches` compares the tuned model with the frozen foundation ViT:
  ``d = a_FViT − a_tuned``; a sample with ``max|d| > threshold`` (paper: 0.7) is judged over-fitted and its
  ``num_patch`` patches of largest ``d`` are chosen, otherwise its most-attended patches.
- **Confusion-based feature infusion (CFI)** — :func:`confusion_targets` turns a running class-confusion
  matrix into soft targets ``softmax(C[y])``; :func:`patch_perturbation` optimises a perturbation δ,
  non-zero only inside the chosen patches and ``‖δ‖∞ ≤ eps``, with Adam to pull the student's prediction
  towards those targets (infusing features of the classes confused with y).
- **Multi-label findings** (medvit's reading; the paper is single-label): the statistics are the mean predicted
  finding probabilities (sigmoid) over the images positive for each finding, plus a "no finding" row; a sample's
  target is the mean of its findings' rows (the "no finding" row when it has none) and δ minimises BCE towards it.

:class:`HintAug` ties them together for the training loop; the ``prompt_tune`` task runs it as a stage from
``hint_aug:`` in its YAML (:class:`HintAugConfig`). Not implemented: the Patch-Fool attention loss on the
first half of the layers and its PCGrad combination with the CE loss (only the CE/CFI term is used),
the optional ℓ2 bound and ``switch_bn``; the exact ``normalize`` of the official code is ``[verify]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medvit.config import option


class _Reached(Exception):
    """Raised by the capture hook to stop a forward pass once block ``layer``'s attention input is seen."""


def vit_of(model: nn.Module) -> nn.Module:
    """The ViT whose blocks Hint-Aug reads: the model itself or a wrapper's ``backbone``.

    Raises:
        ValueError: no ViT blocks, or an image encoder that runs without autograd (``vivit``).
    """
    from medvit.peft.prompted import WrappedBackbone

    vit = model.backbone if isinstance(model, WrappedBackbone) else model
    if not hasattr(vit, "blocks") or not hasattr(vit, "patch_size"):
        raise ValueError(f"{type(model).__name__} exposes no ViT blocks; Hint-Aug needs a medvit ViT or a PEFT "
                         "wrapper around one")
    if getattr(model, "image_grad", True) is False:
        raise ValueError(f"{type(model).__name__} runs its image encoder without autograd; Hint-Aug cannot "
                         "perturb its input (use an image PEFT method: lora, spt, dvpt, hst, ...)")
    return vit


def patch_attention(model: nn.Module, x: torch.Tensor, layer: int) -> torch.Tensor:
    """Attention each patch receives at block ``layer`` of the (backbone's) ViT: (B, C, H, W) → (B, N),
    L2-normalised over the N patches.

    The forward pass stops at that block (a pre-hook captures the attention input); wrappers place their
    extra tokens as they like and report the patch positions via ``patch_token_slice``.

    Raises:
        ValueError: the model has no ViT blocks, runs its encoder without autograd, or ``layer`` is out of range.
    """
    vit = vit_of(model)
    if not 0 <= layer < len(vit.blocks):
        raise ValueError(f"layer must be in [0, {len(vit.blocks)}), got {layer}")
    attn = vit.blocks[layer].attn
    seen: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple) -> None:
        seen.append(args[0])
        raise _Reached

    h = attn.register_forward_pre_hook(hook)
    try:
        model(x)
    except _Reached:
        pass
    finally:
        h.remove()
    if not seen:
        raise ValueError(f"{type(model).__name__} never ran block {layer} of its ViT")
    _, probs = attn(seen[0], return_attention=True)  # (B, H, T, T)
    received = probs.mean(dim=1).mean(dim=1)  # (B, T)
    t = received.shape[1]
    sl = model.patch_token_slice(t) if hasattr(model, "patch_token_slice") else slice(vit.num_prefix_tokens, t)
    return F.normalize(received[:, sl], dim=-1)


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
                       eps: float, steps: int = 5, lr: float | None = None, multilabel: bool = False) -> torch.Tensor:
    """δ (same shape as ``x``) with ``δ = 0`` outside ``mask`` and ``‖δ‖∞ ≤ eps`` that lowers the loss of
    ``model(x + δ)`` towards ``target`` (B, K): soft cross-entropy, or BCE per finding when ``multilabel``.

    Adam on δ, ``lr`` default eps / 2. The model's parameters get no gradient.
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
                logits = model(x + delta * mask).float()
                if multilabel:
                    loss = F.binary_cross_entropy_with_logits(logits, target)
                else:
                    loss = torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    delta.clamp_(-eps, eps)
        return (delta * mask).detach()
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def multilabel_targets(stats: torch.Tensor, counts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label CFI targets (B, K): mean of the rows ``stats[j] / counts[j]`` (K + 1, K) over the sample's
    findings j (row K, "no finding", when it has none). A row never seen falls back to the sample's labels."""
    k = labels.shape[1]
    if stats.shape != (k + 1, k) or counts.shape != (k + 1,):
        raise ValueError(f"stats must be ({k + 1}, {k}) and counts ({k + 1},), got {tuple(stats.shape)}, "
                         f"{tuple(counts.shape)}")
    pos = (labels > 0.5).float()
    member = torch.cat([pos, (pos.sum(1, keepdim=True) == 0).float()], dim=1)  # (B, K + 1)
    rows = stats / counts.clamp(min=1)[:, None]
    known = (counts > 0).float()
    w = member * known[None]
    mixed = (w @ rows) / w.sum(1, keepdim=True).clamp(min=1)
    return torch.where(w.sum(1, keepdim=True) > 0, mixed, pos).clamp(0.0, 1.0)


@dataclass
class HintAugConfig:
    """Hint-Aug as a few-shot augmentation stage of a tuning task (``hint_aug:`` in the YAML)."""

    enabled: bool = option(False, "run Hint-Aug: a second loss on AOD/CFI-augmented images each step")
    layer: int = option(0, "block whose attention the AOD compares (paper: atten_select)")
    num_patch: int = option(1, "patches perturbed per image")
    eps: float = option(0.03, "ℓ∞ bound of δ in normalised pixel units (paper scripts 0.001 on ViT-B at 224 px)")
    steps: int = option(5, "attack iterations (Adam on δ)")
    threshold: float = option(0.7, "AOD over-fitting threshold on max|a_FViT − a_tuned|")
    start_step: int = option(0, "optimizer steps on clean images before the augmentation starts (paper: start_adv "
                                "epochs)")
    weight: float = option(1.0, "weight of the augmented-batch loss added to the clean loss")

    def __post_init__(self) -> None:
        if self.num_patch < 1 or self.steps < 1 or self.layer < 0 or self.start_step < 0:
            raise ValueError("hint_aug: num_patch and steps must be >= 1, layer and start_step >= 0")
        if self.eps <= 0 or self.weight <= 0:
            raise ValueError(f"hint_aug: eps and weight must be > 0, got eps={self.eps}, weight={self.weight}")
        if not 0.0 < self.threshold:
            raise ValueError(f"hint_aug: threshold must be > 0, got {self.threshold}")


class HintAug:
    """Hint-Aug augmentation stage for a few-shot PEFT run.

    Args:
        fvit: the frozen foundation ViT (the untuned base), same patch grid as the student.
        num_classes: K (classes, or findings when ``multilabel``) for the confusion statistics.
        layer: block whose attention the AOD compares (``atten_select``).
        num_patch: patches perturbed per image; eps: ℓ∞ bound (paper scripts: 0.001 in normalised units —
            raise it for visible effect); steps: attack iterations; threshold: AOD threshold (0.7).
        multilabel: labels are (B, K) multi-hot findings (see the module docstring), else (B,) class indices.
    """

    def __init__(self, fvit: nn.Module, num_classes: int, layer: int = 0, num_patch: int = 1,
                 eps: float = 1e-3, steps: int = 5, threshold: float = 0.7, multilabel: bool = False) -> None:
        self.fvit = fvit.eval()
        for p in self.fvit.parameters():
            p.requires_grad_(False)
        self.layer, self.num_patch, self.eps, self.steps, self.threshold = layer, num_patch, eps, steps, threshold
        self.multilabel = multilabel
        k = num_classes
        self.confusion = torch.zeros(k + 1, k) if multilabel else torch.zeros(k, k)
        self.counts = torch.zeros(k + 1)
        self.overfit_rate: list[float] = []  # share of AOD "over-fitted" samples per augmented batch

    @classmethod
    def from_config(cls, cfg: HintAugConfig, fvit: nn.Module, num_classes: int, multilabel: bool) -> HintAug:
        return cls(fvit, num_classes, cfg.layer, cfg.num_patch, cfg.eps, cfg.steps, cfg.threshold, multilabel)

    @torch.no_grad()
    def update_confusion(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Accumulate the CFI statistics: predicted-class probabilities per true class (single-label) or predicted
        finding probabilities per present finding and for "no finding" (multi-label)."""
        logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
        if not self.multilabel:
            self.confusion.index_add_(0, labels.long(), logits.softmax(-1))
            return
        pos = (labels > 0.5).float()
        member = torch.cat([pos, (pos.sum(1, keepdim=True) == 0).float()], dim=1)
        self.confusion += member.T @ logits.sigmoid()
        self.counts += member.sum(0)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Soft CFI targets (B, K) for ``labels``."""
        if self.multilabel:
            return multilabel_targets(self.confusion, self.counts, labels.detach().float().cpu())
        return confusion_targets(self.confusion, labels.cpu().long())

    def augment(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Augmented images (B, C, H, W) for the second loss (labels unchanged)."""
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                idx, overfit = select_patches(patch_attention(model, images, self.layer),
                                              patch_attention(self.fvit, images, self.layer), self.num_patch,
                                              self.threshold)
            self.overfit_rate.append(float(overfit.float().mean()))
            ph, pw = vit_of(model).patch_size
            mask = patch_mask(idx, (images.shape[-2] // ph, images.shape[-1] // pw), (ph, pw)).to(images.dtype)
            target = self.targets(labels).to(images.device)
            return images + patch_perturbation(model, images, mask, target, self.eps, self.steps,
                                               multilabel=self.multilabel)
        finally:
            model.train(was)
