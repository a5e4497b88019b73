"""LGViT early exits (ACM MM'23): general-vision notes, entry 14."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvit.models import create_model
from medvit.nn.early_exit import exit_distillation_loss, exit_scores, should_exit
from medvit.nn.flops import measured_macs

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=6, num_heads=4, num_classes=3, exit_layers=(1, 2, 3, 4))


def _model():
    return create_model("lgvit_small_patch16_224", **TINY).eval()


def test_heterogeneous_exits_and_shapes():
    m = _model()
    assert [type(e).__name__ for e in m.exits] == ["LocalPerceptionHead"] * 2 + ["GlobalAggregationHead"] * 2
    outs = m.forward_exits(torch.randn(2, 3, 32, 32))
    assert len(outs) == 5 and all(o.shape == (2, 3) for o in outs)


def test_threshold_zero_leaves_at_the_first_exit_and_above_one_never_early():
    m = _model()
    x = torch.randn(4, 3, 32, 32)
    first = m.forward_early_exit(x, threshold=0.0)
    assert first.exit_index.tolist() == [0] * 4 and first.exit_block.tolist() == [1] * 4
    torch.testing.assert_close(first.logits, m.forward_exits(x)[0])
    none = m.forward_early_exit(x, threshold=1.01)
    assert none.exit_index.tolist() == [4] * 4 and none.exit_block.tolist() == [5] * 4
    torch.testing.assert_close(none.logits, m(x))
    assert (none.macs > first.macs).all()


def test_per_sample_macs_match_the_layer_of_exit():
    m = _model()
    x = torch.randn(1, 3, 32, 32)
    # exit 0 (after block 1): embed + 2 blocks + local head, measured by running exactly that
    def until_exit0(inp):
        t = m.forward_until(inp, 2)
        return m.exits[0](t[:, 1:], m.grid_size)

    assert m.forward_early_exit(x, 0.0).macs.item() == measured_macs(until_exit0, x)
    # final head: every block, every exit tried, plus the classifier
    def all_the_way(inp):
        m.forward_exits(inp)

    assert m.forward_early_exit(x, 2.0).macs.item() == measured_macs(all_the_way, x)


def test_mixed_batch_exits_per_sample():
    m = _model()
    x = torch.randn(6, 3, 32, 32)
    outs = m.forward_exits(x)
    tau = exit_scores(outs[0]).median().item()
    res = m.forward_early_exit(x, tau)
    left0 = should_exit(outs[0], tau)
    assert (res.exit_index[left0] == 0).all() and (res.exit_index[~left0] > 0).all()
    torch.testing.assert_close(res.logits[left0], outs[0][left0])
    for b in torch.nonzero(~left0).flatten().tolist():
        torch.testing.assert_close(res.logits[b], outs[res.exit_index[b]][b], atol=1e-5, rtol=1e-5)


def test_stage_two_trains_only_the_exit_heads():
    m = create_model("lgvit_small_patch16_224", **TINY).train()
    assert not any(p.requires_grad for n, p in m.named_parameters() if n.startswith("exits."))
    m.set_training_stage(2)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    outs = m.forward_exits(x)
    loss = sum(F.cross_entropy(o, y) + exit_distillation_loss(o, outs[-1]) for o in outs[:-1])
    loss.backward()
    for name, p in m.named_parameters():
        if name.startswith("exits."):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_distillation_loss_is_zero_when_the_exit_equals_the_final_head():
    z = torch.randn(5, 4)
    f = torch.randn(5, 8)
    assert exit_distillation_loss(z, z.clone(), temperature=2.0, exit_features=f, final_features=f).item() == 0.0
    assert exit_distillation_loss(torch.randn(5, 4), z).item() > 0


def test_entropy_policy():
    confident, flat = torch.tensor([[10.0, 0, 0]]), torch.zeros(1, 3)
    assert should_exit(confident, 0.1, "entropy").item() and not should_exit(flat, 0.9, "entropy").item()
    assert exit_scores(flat, "entropy").item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        exit_scores(flat, "margin")


def test_multilabel_criterion_and_distillation():
    z = torch.tensor([[4.0, -4.0, 3.0], [4.0, 0.1, -3.0]])
    s = exit_scores(z, "sigmoid")
    assert s[0].item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item()) and s[1].item() < 0.53
    assert should_exit(z, 0.9, "sigmoid").tolist() == [True, False]
    assert exit_distillation_loss(z, z.clone(), 2.0, multilabel=True).abs().item() < 1e-6
    ref = torch.distributions.kl_divergence(torch.distributions.Bernoulli(logits=z), torch.distributions.Bernoulli(
        logits=torch.zeros_like(z))).sum(-1).mean()
    torch.testing.assert_close(exit_distillation_loss(torch.zeros_like(z), z, multilabel=True), ref)
