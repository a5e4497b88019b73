"""ElasticViT supernet training and SN-Netv2 stitching-layer training: loops and their tasks (tiny configs)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F

import medvit
from medvit.compress.elastic import ElasticViT, SubnetSpec, extract_subnet, train_supernet
from medvit.compress.stitch import StitchedViT, load_stitched, train_stitches
from medvit.data.phantom_cxr import CXR_LABELS
from medvit.models import WeightContract, load_model, save_checkpoint
from medvit.tasks import run_task

K = len(CXR_LABELS)


def tiny(embed_dim=32, depth=4, heads=4, size=16, patch=4):
    return medvit.create_model("vit_small_patch16_224", img_size=size, patch_size=patch, embed_dim=embed_dim,
                               depth=depth, num_heads=heads, in_chans=1, num_classes=3)


def fixed_batches(x, y):
    return itertools.repeat((x, y))


def test_supernet_training_lowers_losses_keeps_levels_adjacent_and_subnet_reloads(tmp_path):
    torch.manual_seed(0)
    el = ElasticViT(tiny())
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 3, (16,))
    spec = SubnetSpec(2, (2, 1), (64, 32))
    with torch.no_grad():
        before_max, before_sub = F.cross_entropy(el(x), y), F.cross_entropy(el(x, spec), y)
    frozen = el.net.patch_embed.proj.weight
    frozen.requires_grad_(False)
    w0 = frozen.clone()
    rec = train_supernet(el, fixed_batches(x, y), 30, F.cross_entropy, lr=3e-3, bound=1, seed=0)
    assert all(abs(a - b) <= 1 for a, b in itertools.pairwise(rec.levels)) and len(set(rec.levels)) >= 2
    with torch.no_grad():
        assert F.cross_entropy(el(x), y) < 0.5 * before_max
        assert F.cross_entropy(el(x, spec), y) < before_sub  # an unsampled-by-name subnet improved through sharing
    assert torch.equal(frozen, w0)  # a parameter outside the optimiser's set is untouched
    sub = extract_subnet(el, spec).eval()
    save_checkpoint(sub, tmp_path / "sub")
    back = load_model(tmp_path / "sub").eval()
    with torch.no_grad():
        assert torch.equal(back(x), sub(x)) and torch.allclose(sub(x), el(x, spec), atol=1e-5)


def test_stitch_training_changes_only_the_stitching_layers(tmp_path):
    torch.manual_seed(0)
    s, l_ = tiny(32, 2, 2).eval(), tiny(64, 4, 4).eval()
    m = StitchedViT(s, l_, rank=4)
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 3, (16,))
    m.init_stitches(x)
    anchors0 = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("stitches.")}
    stitches0 = {k: v.clone() for k, v in m.state_dict().items() if k.startswith("stitches.")}
    with torch.no_grad():
        before = [float(F.cross_entropy(m.forward_config(x, c), y)) for c in m.configs[2:]]
    rec = train_stitches(m, fixed_batches(x, y), 40, F.cross_entropy, lr=1e-2, seed=0)
    assert set(rec.config_ids) == set(range(2, len(m.configs)))  # every stitch drawn, the anchors never
    sd = m.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in anchors0.items())
    assert all(not torch.equal(sd[k], v) for k, v in stitches0.items() if "lora_a" not in k)
    assert all(p.requires_grad for p in s.parameters())  # flags restored
    with torch.no_grad():
        after = [float(F.cross_entropy(m.forward_config(x, c), y)) for c in m.configs[2:]]
    assert all(a < b for a, b in zip(after, before, strict=True))


def contract(size):
    return WeightContract(in_chans=1, input_size=(size, size), mean=(0.524,), std=(0.290,),
                          label_names=list(CXR_LABELS), thresholds=[0.5] * K, version="t")


COMMON = ["dataset=cxr_phantom", "dataset_args={n: 60, seed: 0, image_size: 32}", "batch_size=16"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ck")
    kw = dict(img_size=32, patch_size=8, in_chans=1, num_classes=K)
    s = medvit.create_model("vit_small_patch16_224", embed_dim=32, depth=2, num_heads=2, **kw)
    l_ = medvit.create_model("vit_small_patch16_224", embed_dim=48, depth=4, num_heads=4, **kw)
    return save_checkpoint(s, d / "s", contract=contract(32)), save_checkpoint(l_, d / "l", contract=contract(32))


def test_elastic_task_extracts_subnets_that_reload_and_match_the_supernet(ckpts, tmp_path):
    s = run_task(None, [f"checkpoint={ckpts[1]}", f"output_dir={tmp_path}", "steps=3", "mac_ratios=[0.6]",
                        "search_candidates=20", *COMMON], data={"task": "elastic_train"})
    (row,) = s["subnets"]
    assert row["mac_ratio"] <= 0.6 and "mean_auroc" in row["val"]
    sup = ElasticViT(load_model(tmp_path / "supernet").eval())
    sub = load_model(tmp_path / "subnet_0.6").eval()
    assert sub.arch_name == "vit_pruned" and sub.contract.label_names == list(CXR_LABELS)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        ref = sup(x, SubnetSpec(row["depth"], tuple(row["heads"]), tuple(row["mlp"])))
        assert torch.allclose(sub(x), ref, atol=1e-5)
    assert not torch.equal(load_model(tmp_path / "supernet").blocks[0].mlp.fc1.weight,
                           load_model(ckpts[1]).blocks[0].mlp.fc1.weight)  # the supernet was trained
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 3


def test_snnet_task_one_checkpoint_serves_every_configuration(ckpts, tmp_path):
    s = run_task(None, [f"checkpoint={ckpts[0]}", f"large_checkpoint={ckpts[1]}", f"output_dir={tmp_path}",
                        "steps=4", "rank=2", "calibration_images=32", *COMMON], data={"task": "snnet_train"})
    rows = s["configs"]
    assert [r["key"] for r in rows[:2]] == ["S", "L"] and len(rows) == 2 + 2 * 1
    x = torch.randn(2, 1, 32, 32)
    small = load_model(ckpts[0]).eval()
    with torch.no_grad():
        assert torch.equal(load_stitched(tmp_path / "model", 0)(x), small(x))  # anchors frozen
        outs = [load_stitched(tmp_path / "model", i)(x) for i in range(len(rows))]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == len(rows)
    assert rows[2]["macs"] != rows[3]["macs"]


def test_snnet_task_refuses_anchors_with_different_contracts(ckpts, tmp_path):
    other = load_model(ckpts[1])
    c = contract(32)
    c.mean = (0.4,)
    d = save_checkpoint(other, tmp_path / "o", contract=c)
    with pytest.raises(ValueError, match="input contracts differ"):
        run_task(None, [f"checkpoint={ckpts[0]}", f"large_checkpoint={d}", f"output_dir={tmp_path / 'r'}",
                        "steps=1", *COMMON], data={"task": "snnet_train"})
