"""EWA: partition, equal experts == dense FFN, averaging rate, exact conversion to a plain registered backbone."""

from __future__ import annotations

import pytest
import torch

from medvit.models import create_model, load_model, save_checkpoint
from medvit.nn.ewa import EWAMoE, apply_ewa, convert_ewa, random_partition
from medvit.nn.mlp import Mlp


def _tiny(**kw):
    torch.manual_seed(0)
    return create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2,
                        num_classes=3, **kw)


def test_partition_disjoint_covering_equal():
    parts = random_partition(2 * 17, 4, torch.Generator().manual_seed(0))
    allidx = torch.cat(parts)
    assert sorted(allidx.tolist()) == list(range(34))
    assert sorted(len(p) for p in parts) == [8, 8, 9, 9]


def test_equal_experts_equal_dense_ffn_in_training():
    torch.manual_seed(0)
    mlp = Mlp(16, 32)
    moe = EWAMoE(mlp, 4).train()
    x = torch.randn(3, 7, 16)
    assert torch.allclose(moe(x), mlp(x), atol=1e-6, rtol=0)
    # unequal experts: each token is processed by exactly one expert
    with torch.no_grad():
        for j, e in enumerate(moe.experts):
            e.fc2.bias.add_(float(j))
    torch.manual_seed(5)
    out = moe(x) - mlp(x)
    offs = out[..., 0].round()
    assert torch.allclose(out, offs[..., None].expand_as(out), atol=1e-5)
    assert sorted(torch.bincount(offs.flatten().long(), minlength=4).tolist()) == [5, 5, 5, 6]


def test_averaging_shrinks_distances_at_rate():
    torch.manual_seed(0)
    moe = EWAMoE(Mlp(8, 8), 3, share_rate=0.3)
    with torch.no_grad():
        for e in moe.experts:
            for p in e.parameters():
                p.add_(torch.randn_like(p))
    d0 = (moe.experts[0].fc1.weight - moe.experts[1].fc1.weight).norm()
    mean0 = moe.mean_state()
    moe.average_experts()
    d1 = (moe.experts[0].fc1.weight - moe.experts[1].fc1.weight).norm()
    # W_i - W_j scales by (1 - β - β/(n-1)) = 1 - 0.3 - 0.15
    assert float((d1 / d0).detach()) == pytest.approx(0.55, rel=1e-5)
    assert all(torch.allclose(mean0[k], v, atol=1e-6) for k, v in moe.mean_state().items())


def test_conversion_exact_and_loads_as_plain_backbone(tmp_path):
    model = _tiny()
    plain_keys = set(model.state_dict())
    assert apply_ewa(model, experts=3, share_rate=0.5) == [1, 3]
    with torch.no_grad():  # make the experts differ, as training would
        for m in model.modules():
            if isinstance(m, EWAMoE):
                for e in m.experts:
                    for p in e.parameters():
                        p.add_(0.01 * torch.randn_like(p))
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        moe_eval = model(x)
        want_fc1 = torch.stack([e.fc1.weight for e in model.blocks[1].mlp.experts]).mean(0)
    n_moe = sum(p.numel() for p in model.parameters())
    assert convert_ewa(model) == 2
    assert set(model.state_dict()) == plain_keys
    assert torch.equal(model.blocks[1].mlp.fc1.weight, want_fc1)
    assert sum(p.numel() for p in model.parameters()) < n_moe
    with torch.no_grad():
        assert torch.allclose(model(x), moe_eval, atol=1e-6, rtol=0)
    save_checkpoint(model, tmp_path / "ck")
    back = load_model(tmp_path / "ck").eval()
    ref = _tiny()
    ref.load_state_dict(model.state_dict())  # the base ViT class takes the converted weights
    with torch.no_grad():
        assert torch.equal(back(x), model(x)) and torch.equal(ref.eval()(x), model(x))


def test_loop_hook_averages_after_each_step():
    from medvit.train import TrainConfig, Trainer

    model = _tiny()
    apply_ewa(model, experts=2, share_rate=1.0, layers=[0])  # β = 1 with n = 2 swaps the experts each step
    data = [{"image": torch.randn(3, 32, 32), "label": torch.tensor(i % 3)} for i in range(8)]
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-3, progress=False, weight_decay=0.0)
    seen = []
    moe = model.blocks[0].mlp
    orig = moe.average_experts

    def spy():
        seen.append(1)
        orig()

    moe.average_experts = spy
    Trainer(model, cfg, data, lambda m, b: torch.nn.functional.cross_entropy(m(b["image"]), b["label"])).fit()
    assert len(seen) == 2  # before steps 1 and 2 = after optimizer steps 0 and 1
    with pytest.raises(ValueError, match="outside the model's blocks"):
        apply_ewa(_tiny(), layers=[9])
