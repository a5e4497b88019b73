"""ElasticViT: adjacent-step FLOPs sampling, preference sampling, weight sharing, extraction that reloads."""

from __future__ import annotations

import pytest
import torch

import medvit
from medvit.compress.elastic import (
    AdjacentFlopsSampler,
    ElasticViT,
    PreferenceSampler,
    SubnetSpec,
    extract_subnet,
    search_subnet,
)
from medvit.models import load_model, save_checkpoint


@pytest.fixture(scope="module")
def elastic():
    torch.manual_seed(0)
    net = medvit.create_model("vit_small_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=4,
                              num_heads=4, in_chans=1, num_classes=3).eval()
    return ElasticViT(net)


def test_adjacent_sampler_stays_within_bound_and_visits_every_level(elastic):
    sp = AdjacentFlopsSampler(elastic, n_levels=5, bound=1, seed=0)
    prev, seen = None, set()
    for _ in range(1000):
        lv, spec = sp.sample()
        assert spec in sp.levels[lv]
        if prev is not None:
            assert abs(lv - prev) <= 1
        prev = lv
        seen.add(lv)
    assert seen == set(range(len(sp.levels))) and len(sp.levels) >= 4


def test_preference_sampling_prefers_lower_loss(elastic):
    g = torch.Generator().manual_seed(1)
    bank = [elastic.random_spec(g) for _ in range(4)]
    ps = PreferenceSampler([bank], temperature=0.5, seed=0)
    for s, loss in zip(bank, (0.2, 1.0, 1.5, 2.0), strict=True):
        ps.update(s, loss)
    draws = [ps.sample(0) for _ in range(2000)]
    assert draws.count(bank[0]) / 2000 > 0.5  # uniform would give 0.25
    assert draws.count(bank[0]) > draws.count(bank[1]) > draws.count(bank[3])


def test_subnets_share_the_supernet_weights(elastic):
    spec = SubnetSpec(2, (2, 1), (40, 64))
    x = torch.randn(2, 1, 16, 16)
    elastic.net.zero_grad()
    elastic(x, spec).sum().backward()
    qkv = elastic.net.blocks[0].attn.qkv.weight.grad.view(3, 4, 8, -1)
    assert qkv[:, :2].abs().sum() > 0 and qkv[:, 2:].abs().sum() == 0  # only the kept heads' rows
    fc1 = elastic.net.blocks[1].mlp.fc1.weight.grad
    assert fc1[:64].abs().sum() > 0 and fc1[64:].abs().sum() == 0
    assert elastic.net.blocks[2].mlp.fc1.weight.grad is None  # dropped blocks get nothing
    elastic.net.zero_grad()
    with torch.no_grad():  # the full spec is the supernet
        torch.testing.assert_close(elastic(x), elastic.net(x), atol=1e-5, rtol=1e-5)


def test_extracted_subnet_reloads_and_matches(elastic, tmp_path):
    spec = SubnetSpec(3, (1, 3, 2), (32, 96, 128))
    sub = extract_subnet(elastic, spec)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(sub(x), elastic(x, spec), atol=1e-5, rtol=1e-5)
    assert sub.model_args["depth"] == 3 and sub.model_args["block_mlp"] == [32, 96, 128]
    back = load_model(save_checkpoint(sub, tmp_path / "sub")).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x), sub(x), atol=0, rtol=0)
    from medvit.nn.flops import measured_macs

    assert measured_macs(sub, x[:1]) == elastic.macs(spec)


def test_search_under_a_mac_budget(elastic):
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 3, (8,))
    budget = elastic.macs(elastic.max_spec) // 2
    spec, loss = search_subnet(elastic, budget, lambda f: float(torch.nn.functional.cross_entropy(f(x), y)), n=20)
    assert elastic.macs(spec) <= budget and loss > 0
    with pytest.raises(ValueError, match="does not fit"):
        elastic(x, SubnetSpec(2, (5, 1), (8, 8)))
