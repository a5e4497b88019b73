"""SPT: sensitivity = accumulated squared gradient, budgeted allocation, sparse tuning keeps the rest bit-exact."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvit.peft import apply_peft, load_adapter, save_adapter, trainable_report
from medvit.peft.spt import SparseDeltaLinear, apply_spt, spt_allocate, spt_sensitivity
from tests.peft.conftest import make_base


def _batches(n: int = 3, b: int = 4):
    g = torch.Generator().manual_seed(11)
    return [(torch.rand(b, 1, 32, 32, generator=g), torch.randint(0, 3, (b,), generator=g)) for _ in range(n)]


def test_sensitivity_equals_accumulated_squared_gradient_by_hand():
    """Tiny linear model: ∂L/∂W of a squared-error loss written out by hand, squared, summed over batches."""
    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Module()])
            self.blocks[0].fc = torch.nn.Linear(3, 2, bias=False)

        def forward(self, x):
            return self.blocks[0].fc(x)

    net = Tiny()
    lin = net.blocks[0].fc
    xs = [torch.randn(5, 3) for _ in range(3)]
    ys = [torch.randn(5, 2) for _ in range(3)]

    def loss(out, y):
        return ((out - y) ** 2).sum()

    sens = spt_sensitivity(net, list(zip(xs, ys)), loss_fn=loss, targets=["blocks.0.fc"])
    w = lin.weight.detach()
    ref = torch.zeros(2, 3)
    for x, y in zip(xs, ys):
        g = 2 * (x @ w.T - y).T @ x  # dL/dW for L = ||x Wᵀ - y||²
        ref += g**2
    torch.testing.assert_close(sens["blocks.0.fc"], ref, rtol=1e-5, atol=1e-6)
    assert lin.weight.grad is None and lin.weight.requires_grad  # flags and grads restored


def test_sensitivity_on_vit_matches_autograd_and_leaves_model_unchanged():
    base = make_base()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    flags = {n: p.requires_grad for n, p in base.named_parameters()}
    batches = _batches()
    sens = spt_sensitivity(base, batches)
    assert set(sens) == {f"blocks.{i}.{m}" for i in range(2) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    w = base.blocks[1].mlp.fc1.weight
    ref = torch.zeros_like(w)
    base.eval()
    for x, y in batches:
        (g,) = torch.autograd.grad(F.cross_entropy(base(x), y), [w])
        ref += g**2
    torch.testing.assert_close(sens["blocks.1.mlp.fc1"], ref, rtol=1e-5, atol=0)
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
    assert flags == {n: p.requires_grad for n, p in base.named_parameters()}
    assert all(p.grad is None for p in base.parameters())


def _fake_sensitivity(planted: str = "blocks.1.mlp.fc1"):
    g = torch.Generator().manual_seed(3)
    base = make_base()
    sens = {n: torch.rand(base.get_submodule(n).weight.shape, generator=g) * 1e-3
            for n in ("blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.1.mlp.fc1")}
    sens[planted] = sens[planted] + 1.0  # every entry of this matrix outranks every other
    return sens


def test_allocation_budget_monotone_and_planted_matrix_gets_lora():
    sens = _fake_sensitivity()
    r, a = 2, 10.0
    lora_cost = r * (48 + 192)  # blocks.1.mlp.fc1: (192, 48)
    totals = []
    for budget in (20, 100, 400, 1000, 3000):
        plan = spt_allocate(sens, budget, r=r, structured_alpha=a)
        assert plan.trainable <= budget
        totals.append(plan.trainable)
        base = make_base()
        model = apply_peft(base, "spt", plan.config)
        rep = trainable_report(model)
        head = sum(p.numel() for p in model.head.parameters())
        assert rep["trainable_params"] - head == plan.trainable
    assert totals == sorted(totals)
    small = spt_allocate(sens, 20, r=r, structured_alpha=a)  # 20 < cost/α = 48: unstructured on the planted matrix
    assert small.config.lora_targets == [] and small.config.sparse == {"blocks.1.mlp.fc1": 20}
    big = spt_allocate(sens, 1000, r=r, structured_alpha=a)
    assert "blocks.1.mlp.fc1" in big.config.lora_targets
    assert big.trainable >= lora_cost and big.trainable >= 0.95 * 1000 - lora_cost / a


def _train(model, batches, steps=3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2, weight_decay=0.1)
    model.train()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()


def test_unselected_weights_bit_exact_after_adamw_steps_and_adapter_round_trip(tmp_path):
    batches = _batches()
    base = make_base()
    w0 = {n: m.weight.detach().clone() for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)}
    model = apply_spt(base, batches, {"budget": 300, "r": 2, "structured_alpha": 10.0})
    sparse = {n: m for n, m in model.named_modules() if isinstance(m, SparseDeltaLinear)}
    assert sparse, model.peft_info.config
    idx0 = {n: m.spt_index.clone() for n, m in sparse.items()}
    assert any(not torch.equal(i, torch.arange(i.numel())) for i in idx0.values()), "indices not from the plan"
    _train(model, batches)
    for n, m in sparse.items():
        w = m.effective_weight().detach().flatten()
        ref = w0[n].flatten()
        keep = torch.ones_like(ref, dtype=torch.bool)
        keep[m.spt_index] = False
        assert torch.equal(w[keep], ref[keep]), f"{n}: an unselected weight moved"
        assert not torch.equal(w[~keep], ref[~keep]), f"{n}: selected weights did not train"
        assert torch.equal(m.base_layer.weight, w0[n])
        assert torch.equal(m.spt_index, idx0[n])
    x = batches[0][0]
    with torch.no_grad():
        ref_out = model(x)
    save_adapter(model, tmp_path / "ad")
    loaded = load_adapter(tmp_path / "ad", base_model=make_base())
    with torch.no_grad():
        assert torch.equal(loaded(x), ref_out)
    for n, m in sparse.items():
        assert torch.equal(loaded.get_submodule(n).spt_index, m.spt_index)


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({}, "no budget is set"),
        ({"budget": 100}, "needs training data"),
        ({"sparse": {"blocks.0.mlp.fc1": 0}}, "positive integer"),
        ({"lora_targets": ["blocks.0.mlp.fc1"], "sparse": {"blocks.0.mlp.fc1": 3}}, "LoRA or unstructured"),
        ({"sparse": {"blocks.0.mlp": 3}}, "not nn.Linear"),
        ({"sparse": {"blocks.0.mlp.fc1": 10**6}}, r"k=1000000 must be in \[1, 9216\]"),
    ],
)
def test_spt_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        apply_peft(make_base(), "spt", cfg)


def test_allocate_errors():
    with pytest.raises(ValueError, match="budget must be >= 1"):
        spt_allocate(_fake_sensitivity(), 0)
    with pytest.raises(ValueError, match="empty"):
        spt_sensitivity(make_base(), [])


def test_prompt_tune_task_allocates_spt_from_training_gradients(tmp_path):
    """``method=spt`` with only a budget: the task runs the sensitivity pass, the adapter records the plan."""
    import json

    from medvit.tasks import run_task
    from tests.peft.test_prompt_tune import TINY

    cfg = dict(task="prompt_tune", output_dir=str(tmp_path / "run"), dataset="cxr_phantom",
               dataset_args=dict(n=40, image_size=32, seed=0), method="spt",
               method_config=dict(budget=2000, r=2, sensitivity_batches=2), seeds=[0],
               train=dict(epochs=1, batch_size=16, lr=1e-2, progress=False), **TINY)
    s = run_task(None, [], data=cfg)
    seed = s["seeds"][0]
    head = 48 * 7 + 7
    assert head < seed["trainable_params"] <= 2000 + head
    ad = json.loads((tmp_path / "run" / "seed_0" / "adapter" / "adapter_config.json").read_text())
    mc = ad["method_config"]
    assert mc["budget"] == 2000 and (mc["lora_targets"] or mc["sparse"])
    assert any(k.endswith("spt_index") for k in ad["tensors"]) == bool(mc["sparse"])
