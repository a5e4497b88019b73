"""Registry-driven acceptance tests: every registered PEFT method is covered."""

from __future__ import annotations

import re

import pytest
import torch

from medvit.peft import (
    AdapterError,
    apply_peft,
    get_method,
    list_methods,
    load_adapter,
    merge_adapter,
    save_adapter,
    trainable_report,
)
from tests.peft.conftest import EXPECTED_TRAINABLE, MERGEABLE, TINY_CONFIGS, make_base

METHODS = list_methods()


def _train(model, images, steps: int = 4, lr: float = 1e-2) -> None:
    """A few AdamW steps on a multi-label loss, with the method's hooks (AdaLoRA budget, regulariser)."""
    spec = get_method(model.peft_info.method)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    target = (torch.arange(images.shape[0])[:, None] + torch.arange(3)[None]) % 2
    model.train()
    for step in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), target.float())
        if spec.regularizer is not None and (reg := spec.regularizer(model)) is not None:
            loss = loss + reg
        loss.backward()
        opt.step()
        if spec.on_step is not None:
            spec.on_step(model, step)
        opt.zero_grad(set_to_none=True)
    model.eval()


def test_every_registered_method_is_covered():
    assert set(METHODS) == set(TINY_CONFIGS) == set(EXPECTED_TRAINABLE)
    assert {"full", "linear", "vpt_shallow", "vpt_deep", "dvpt", "lora"} <= set(METHODS)
    for m in MERGEABLE:
        assert get_method(m).mergeable, m


@pytest.mark.parametrize("method", METHODS)
def test_exactly_the_intended_parameters_train(method, images):
    model = apply_peft(make_base(), method, TINY_CONFIGS[method])
    names = [n for n, _ in model.named_parameters()]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n in names if re.fullmatch(EXPECTED_TRAINABLE[method], n)}
    if method == "full":
        expected = set(names)
    assert trainable, f"{method}: nothing trains"
    assert trainable == expected, f"{method}: unexpected {trainable - expected}, missing {expected - trainable}"
    rep = trainable_report(model)
    assert rep["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < rep["trainable_pct"]
    # forward / backward: every trainable parameter receives a finite gradient
    model.train()
    model(images).sum().backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{method}: {n} got no gradient"
            assert torch.isfinite(p.grad).all(), n
        else:
            assert p.grad is None, f"{method}: frozen {n} got a gradient"


@pytest.mark.parametrize("method", METHODS)
def test_frozen_tensors_bit_identical_after_training(method, images):
    base = make_base()
    before = {k: v.detach().clone() for k, v in base.state_dict().items()}
    model = apply_peft(base, method, TINY_CONFIGS[method])
    frozen_names = [n for n, t in model.peft_info.frozen_base]
    trained_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    _train(model, images)
    frozen_now = dict(model.peft_info.frozen_base)
    for n in frozen_names:
        assert torch.equal(frozen_now[n], before[n]), f"{method}: frozen tensor {n} changed"
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trained_before[n])]
    assert changed, f"{method}: training changed no trainable parameter"
    if method != "full":
        assert frozen_names, f"{method}: nothing frozen"


@pytest.mark.parametrize("method", METHODS)
def test_adapter_save_load_reproduces_outputs(method, images, tmp_path):
    model = apply_peft(make_base(), method, TINY_CONFIGS[method])
    _train(model, images)
    with torch.no_grad():
        ref = model(images)
    save_adapter(model, tmp_path / "ad", extra={"note": "test"})
    saved = {k for k in (tmp_path / "ad").iterdir()}
    assert {p.name for p in saved} == {"adapter.safetensors", "adapter_config.json"}
    loaded = load_adapter(tmp_path / "ad", base_model=make_base())
    with torch.no_grad():
        out = loaded(images)
    assert torch.equal(out, ref), f"{method}: reloaded outputs differ by {(out - ref).abs().max()}"
    # the checkpoint holds only what was trained or added (no frozen base weights), except for full tuning
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "ad" / "adapter.safetensors")))
    n_saved = sum(t.numel() for t in load_file(str(tmp_path / "ad" / "adapter.safetensors")).values())
    n_base = sum(t.numel() for t in make_base().state_dict().values())
    if method != "full":
        assert n_saved < n_base
        assert not any("base_layer" in k for k in keys)
    if method == "full":  # the "adapter" is the whole model: any base of the same shape gives the same outputs
        return
    # a different base is refused with a message naming the checksum
    with pytest.raises(AdapterError, match="differs from the one this adapter was trained on"):
        load_adapter(tmp_path / "ad", base_model=make_base(seed=999))


@pytest.mark.parametrize("method", sorted(MERGEABLE))
def test_merged_equals_unmerged(method, images):
    model = apply_peft(make_base(), method, TINY_CONFIGS[method])
    _train(model, images, steps=3, lr=5e-2)
    with torch.no_grad():
        ref = model(images)
        merged = merge_adapter(model)
        out = merged(images)
    assert not any("base_layer" in n for n, _ in merged.named_parameters())
    assert type(merged.blocks[0].attn.qkv) is torch.nn.Linear
    assert (out - ref).abs().max().item() <= 1e-5, f"{method}: merged differs by {(out - ref).abs().max()}"
    assert (ref - make_base()(images)).abs().max() > 1e-4, "adapter had no effect; the merge test is vacuous"


def test_merge_refused_for_prompt_methods():
    model = apply_peft(make_base(), "dvpt", TINY_CONFIGS["dvpt"])
    with pytest.raises(ValueError, match="cannot be merged"):
        merge_adapter(model)


def test_load_adapter_rebuilds_base_from_checkpoint(images, tmp_path):
    from medvit.models import save_checkpoint

    base_dir = save_checkpoint(make_base(), tmp_path / "base")
    from medvit.models import create_model

    base = create_model("vit_tiny_patch16_224", pretrained=str(base_dir), embed_dim=48, depth=2, num_heads=4,
                        img_size=32, in_chans=1, num_classes=3)
    model = apply_peft(base, "lora", TINY_CONFIGS["lora"], base_weights=str(base_dir))
    _train(model, images)
    with torch.no_grad():
        ref = model(images)
    save_adapter(model, tmp_path / "ad")
    loaded = load_adapter(tmp_path / "ad")  # base rebuilt from the architecture + weights named in the config
    with torch.no_grad():
        assert torch.equal(loaded(images), ref)


def test_apply_twice_refused():
    model = apply_peft(make_base(), "lora", TINY_CONFIGS["lora"])
    with pytest.raises(ValueError, match="already has PEFT method 'lora'"):
        apply_peft(model, "lora", TINY_CONFIGS["lora"])


@pytest.mark.parametrize("method", ["vpt_deep", "dvpt", "lora"])
def test_volumes_3d(method, tmp_path):
    """Prompt and library methods work on the 3D backbone too (tokens from a volume)."""
    kw = dict(img_size=32, patch_size=16, embed_dim=48, depth=2, num_heads=4, in_chans=1, num_classes=2)

    def base3d():
        from medvit.models import create_model

        torch.manual_seed(5)
        return create_model("vit_small_patch16_96_3d", **kw)

    x = torch.rand(2, 1, 32, 32, 32)
    model = apply_peft(base3d(), method, TINY_CONFIGS[method])
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.eval()
    save_adapter(model, tmp_path / "ad")
    with torch.no_grad():
        assert torch.equal(load_adapter(tmp_path / "ad", base_model=base3d())(x), model(x))


def test_medvit_peft_imports_no_peft_library():
    import subprocess
    import sys

    code = "import sys, medvit.peft; medvit.peft.list_methods(); print('peft' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
