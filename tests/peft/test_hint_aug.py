"""Hint-Aug: AOD patch selection, patch-restricted bounded perturbation, CFI raises the confused class."""

from __future__ import annotations

import copy

import pytest
import torch

from medvit.peft import apply_peft
from medvit.peft.hint_aug import (
    HintAug,
    confusion_targets,
    patch_attention,
    patch_mask,
    patch_perturbation,
    select_patches,
)
from tests.peft.conftest import make_base


def _pair():
    fvit = make_base(patch_size=8).eval()  # 32 px / 8 = 16 patches
    return fvit, copy.deepcopy(fvit)


def test_identical_models_take_the_no_overfit_branch(images):
    fvit, student = _pair()
    a_s, a_f = patch_attention(student, images, 1), patch_attention(fvit, images, 1)
    assert a_s.shape == (4, 16) and torch.equal(a_s, a_f)
    idx, overfit = select_patches(a_s, a_f, 3)
    assert not overfit.any()
    assert torch.equal(idx, a_s.topk(3, dim=1).indices)


def test_drifted_attention_selects_topk_of_the_drift(images):
    fvit, student = _pair()
    with torch.no_grad():
        student.blocks[1].attn.qkv.weight[:96].mul_(25.0)  # sharpen q and k: the attention drifts
    a_s, a_f = patch_attention(student, images, 1), patch_attention(fvit, images, 1)
    idx, overfit = select_patches(a_s, a_f, 3, threshold=0.05)
    assert overfit.all()
    assert torch.equal(idx, (a_f - a_s).topk(3, dim=1).indices)


def test_perturbation_only_inside_patches_and_bounded(images):
    fvit, student = _pair()
    idx = torch.tensor([[0, 5], [3, 15], [7, 8], [1, 2]])
    mask = patch_mask(idx, (4, 4), (8, 8))
    assert mask.shape == (4, 1, 32, 32) and mask.sum() == 4 * 2 * 64
    target = torch.full((4, 3), 1 / 3)
    delta = patch_perturbation(student, images, mask, target, eps=0.05, steps=3)
    assert delta.abs().max() <= 0.05 + 1e-7 and (delta.abs() > 0).any()
    assert torch.equal(delta * (1 - mask), torch.zeros_like(delta))
    assert all(p.grad is None for p in student.parameters())


def test_cfi_steps_raise_the_confused_class(images):
    _, student = _pair()
    labels = torch.zeros(4, dtype=torch.long)
    conf = torch.zeros(3, 3)
    conf[0, 2] = 10.0  # class 0 is confused with class 2
    target = confusion_targets(conf, labels)
    assert torch.allclose(target[:, 2], torch.full((4,), 1.0), atol=1e-3)
    mask = torch.ones(4, 1, 32, 32)
    with torch.no_grad():
        before = student(images).softmax(-1)[:, 2]
        after = student(images + patch_perturbation(student, images, mask, target, eps=0.2, steps=5)).softmax(-1)[:, 2]
    assert (after > before).all()


def test_hint_aug_with_lora_student(images):
    fvit = make_base(patch_size=8)
    student = apply_peft(make_base(patch_size=8), "lora", {"r": 2})
    aug = HintAug(fvit, num_classes=3, layer=1, num_patch=2, eps=0.05, steps=2)
    labels = torch.tensor([0, 1, 2, 0])
    aug.update_confusion(student(images), labels)
    out = aug.augment(student, images, labels)
    changed = (out != images).flatten(2).any(dim=1).view(4, 4, 8, 4, 8).any(dim=(2, 4))  # (B, gh, gw)
    assert out.shape == images.shape and (changed.flatten(1).sum(1) <= 2).all() and changed.any()
    with pytest.raises(ValueError, match="without autograd"):
        patch_attention(apply_peft(make_base(patch_size=8), "vivit", {"temporal_depth": 1}), images, 0)


@pytest.mark.parametrize("method, cfg", [("vpt_deep", {"num_prompts": 2}), ("dvpt", {"rank": 4, "num_prompts": 3}),
                                         ("hst", {"side_dims": [4, 6, 8, 8]})])
def test_wrapper_methods_read_the_attention_of_their_patch_tokens(method, cfg, images):
    """Wrappers add prompt / meta tokens; the detector reads the columns of the backbone's patch tokens at the
    block's attention input (checked by hand for VPT-deep), and the augmentation stays inside the chosen patches."""
    base = make_base(patch_size=8)
    fvit = make_base(patch_size=8)
    student = apply_peft(base, method, cfg)
    a = patch_attention(student, images, 1)
    assert a.shape == (4, 16) and torch.isfinite(a).all()
    assert torch.allclose(a.norm(dim=1), torch.ones(4))
    # the captured tokens are the backbone's block-1 attention input: recompute it by hand for VPT-deep
    if method == "vpt_deep":
        t = student.backbone.embed(images)
        p = student.num_prefix_tokens
        t = torch.cat([t[:, :p], student.initial_prompts(4), t[:, p:]], dim=1)
        t = student.block_forward(0, student.backbone.blocks[0], t)
        t = torch.cat([t[:, :p], student.prompts[1].expand(4, -1, -1), t[:, p + 2:]], dim=1)  # block-1 prompts
        blk = student.backbone.blocks[1]
        _, probs = blk.attn(blk.norm1(t), return_attention=True)
        ref = torch.nn.functional.normalize(probs.mean(1).mean(1)[:, -16:], dim=-1)
        assert torch.equal(a, ref)
    aug = HintAug(fvit, num_classes=3, layer=1, num_patch=2, eps=0.05, steps=2)
    out = aug.augment(student, images, torch.tensor([0, 1, 2, 0]))
    changed = (out != images).flatten(2).any(dim=1).view(4, 4, 8, 4, 8).any(dim=(2, 4))
    assert (changed.flatten(1).sum(1) <= 2).all() and changed.any()


def test_multilabel_targets_and_cfi_raise_the_co_predicted_finding(images):
    """Multi-label CFI: the target of a finding-0 image is the mean prediction over finding-0 images; 5 steps
    move the prediction towards it (here: the co-predicted finding 2 goes up)."""
    from medvit.peft.hint_aug import multilabel_targets

    stats, counts = torch.zeros(4, 3), torch.zeros(4)
    aug = HintAug(make_base(patch_size=8), num_classes=3, multilabel=True)
    logits = torch.tensor([[2.0, -2.0, 1.0], [0.0, 0.0, 0.0], [-3.0, -3.0, -3.0]])
    labels = torch.tensor([[1.0, 0, 0], [1.0, 1.0, 0], [0.0, 0, 0]])
    aug.update_confusion(logits, labels)
    sig = logits.sigmoid()
    assert torch.allclose(aug.counts, torch.tensor([2.0, 1.0, 0.0, 1.0]))
    assert torch.allclose(aug.confusion[0], sig[0] + sig[1]) and torch.allclose(aug.confusion[3], sig[2])
    t = aug.targets(torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 0, 0]]))
    assert torch.allclose(t[0], (sig[0] + sig[1]) / 2)
    assert torch.equal(t[1], torch.tensor([0.0, 0.0, 1.0]))  # finding 2 never seen: its own labels
    assert torch.allclose(t[2], sig[2])
    with pytest.raises(ValueError, match="stats must be"):
        multilabel_targets(stats[:3], counts, labels)
    _, student = _pair()
    target = torch.tensor([[0.1, 0.1, 0.95]]).expand(4, 3)
    mask = torch.ones(4, 1, 32, 32)
    with torch.no_grad():
        before = student(images).sigmoid()[:, 2]
        delta = patch_perturbation(student, images, mask, target, eps=0.2, steps=5, multilabel=True)
        after = student(images + delta).sigmoid()[:, 2]
    assert (after > before).all()
