"""DeiT-LT: effective-number weights vs the formula, the loss vs DeiT hard distillation, tail gradients, DRW, the
distilled ViT, the MONAI CNN teacher as a medvit checkpoint, and the long-tailed chest phantom split."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvit.models import create_model, load_model, save_checkpoint
from medvit.train.distill import DeiTLTLoss, effective_number_weights, mix_batch


def test_effective_number_weights_match_formula():
    counts, beta = [1000, 100, 10], 0.9999
    w = effective_number_weights(counts, beta)
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    want = [r / sum(raw) * 3 for r in raw]
    assert w.tolist() == pytest.approx(want, rel=1e-6)
    assert float(w.sum()) == pytest.approx(3.0, rel=1e-6)
    assert w[2] > w[1] > w[0]
    assert effective_number_weights([5, 50], 0.0).tolist() == [1.0, 1.0]  # β = 0: no re-weighting


class _Teacher(torch.nn.Module):
    def __init__(self, k=3):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(16, k)

    def forward(self, x):
        return self.lin(x.flatten(1))


def _batch(multilabel=False):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 4, 4, generator=g)
    y = (torch.rand(6, 3, generator=g) > 0.5).float() if multilabel else torch.tensor([0, 1, 2, 0, 1, 2])
    return {"image": x, "label": y}


def test_uniform_weights_equal_deit_hard_distillation():
    teacher = _Teacher()
    loss = DeiTLTLoss(teacher, alpha=0.5, beta=0.0, mixup=0.0, cutmix=0.0, class_counts=[10, 10, 10])
    b = _batch()
    cls, dist = torch.randn(6, 3), torch.randn(6, 3)
    got = loss((cls, dist), loss.prepare(b))
    t = teacher(b["image"]).argmax(-1)
    want = 0.5 * F.cross_entropy(cls, b["label"]) + 0.5 * F.cross_entropy(dist, t)
    assert float(got["loss"]) == pytest.approx(float(want), rel=1e-6)


def test_weights_raise_tail_gradient_and_follow_drw():
    teacher = _Teacher()
    b = _batch()
    t = teacher(b["image"]).argmax(-1)
    tail = int(t[0])  # make class `tail` the rare one
    counts = [1000, 1000, 1000]
    counts[tail] = 5
    grads = []
    for drw_start in (1.0, 0.0):  # 1.0: weights off for the whole run; 0.0: on from the start
        loss = DeiTLTLoss(teacher, alpha=1.0, mixup=0.0, cutmix=0.0, class_counts=counts, drw_start=drw_start)
        loss.on_train_step(0, 10)
        dist = torch.zeros(6, 3, requires_grad=True)
        loss((torch.zeros(6, 3), dist), loss.prepare(b))["loss"].backward()
        grads.append(float(dist.grad[t == tail].norm()))
    assert grads[1] > grads[0]
    loss = DeiTLTLoss(teacher, class_counts=counts, drw_start=0.5)
    loss.on_train_step(4, 10)
    assert not loss.weights_on
    loss.on_train_step(5, 10)
    assert loss.weights_on


def test_multilabel_variant_and_mixing():
    teacher = _Teacher()
    loss = DeiTLTLoss(teacher, alpha=0.3, mixup=0.0, cutmix=0.0, class_counts=[50, 5, 1], beta=0.99)
    b = _batch(multilabel=True)
    cls, dist = torch.randn(6, 3), torch.randn(6, 3)
    got = loss((cls, dist), loss.prepare(b))
    hard = (torch.sigmoid(teacher(b["image"])) > 0.5).float()
    want = 0.7 * F.binary_cross_entropy_with_logits(cls, b["label"]) + 0.3 * F.binary_cross_entropy_with_logits(
        dist, hard, pos_weight=effective_number_weights([50, 5, 1], 0.99))
    assert float(got["loss"]) == pytest.approx(float(want), rel=1e-6)
    torch.manual_seed(0)
    x, soft = mix_batch(b["image"], b["label"], 3, mixup=0.8, cutmix=1.0, multilabel=True)
    assert x.shape == b["image"].shape and soft.shape == (6, 3)
    assert torch.all((soft >= 0) & (soft <= 1)) and not torch.equal(x, b["image"])
    with pytest.raises(TypeError, match="cls_logits, dist_logits"):
        loss(cls, b)


def test_distilled_vit_returns_pair_in_training_and_mean_in_eval(tmp_path):
    torch.manual_seed(0)
    m = create_model("deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2,
                     num_heads=2, num_classes=4, in_chans=1)
    x = torch.randn(2, 1, 32, 32)
    m.reset_classifier(4)
    with torch.no_grad():
        m.head_dist.weight.normal_()
    mean_train = m.train()(x)
    m.set_distilled_training(True)
    c, d = m(x)
    assert torch.allclose(mean_train, (c + d) / 2, atol=1e-6)
    assert c.shape == d.shape == (2, 4) and not torch.equal(c, d)
    m.eval()
    with torch.no_grad():
        assert torch.allclose(m(x), (c + d) / 2, atol=1e-6)
    assert m.forward_features(x).shape == (2, 2 + 16, 32)
    save_checkpoint(m, tmp_path / "ck")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "ck").eval()(x), m(x))
    with pytest.raises(ValueError, match="global_pool"):
        create_model("deit_tiny_distilled_patch16_224", global_pool="avg")


def test_monai_cnn_teacher_is_a_medvit_checkpoint(tmp_path):
    net = create_model("monai_cnn", net="DenseNet", net_args={"init_features": 8, "growth_rate": 4,
                                                              "block_config": [1, 1]},
                       in_chans=1, num_classes=3, img_size=32)
    x = torch.randn(2, 1, 32, 32)
    assert net.eval()(x).shape == (2, 3)
    save_checkpoint(net, tmp_path / "t")
    loss = DeiTLTLoss(str(tmp_path / "t"), class_counts=[3, 2, 1], mixup=0.0, cutmix=0.0)
    with torch.no_grad():
        assert torch.equal(loss.teacher(x), net(x))
    assert not any(p.requires_grad for p in loss.teacher.parameters())
    with pytest.raises(ValueError, match="not a class in monai.networks.nets"):
        create_model("monai_cnn", net="NoSuchNet")


def test_long_tailed_chest_split():
    from medvit.data import build_dataset
    from medvit.data.long_tail import long_tail_targets

    assert long_tail_targets(200, 7, 100) == [200, 93, 43, 20, 9, 4, 2]
    tr = build_dataset("cxr_phantom_lt", "train", n=5000, seed=0, image_size=32, imbalance=100)
    counts = tr.label_counts()
    assert counts[0] >= 100 * counts[-1] and counts[-1] >= 1
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert torch.stack([tr[i]["label"] for i in range(len(tr))]).sum(0).long().tolist() == counts
    full = build_dataset("cxr_phantom", "train", n=5000, seed=0, image_size=32)
    assert len(tr) < len(full) and set(tr.patient_ids()) <= set(full.patient_ids())
    val = build_dataset("cxr_phantom_lt", "val", n=1500, seed=0, image_size=32)
    assert len(val) == len(build_dataset("cxr_phantom", "val", n=1500, seed=0, image_size=32))
    with pytest.raises(ValueError, match="order must list every finding"):
        build_dataset("cxr_phantom_lt", "train", n=100, seed=0, image_size=32, order=["Mass"])


def test_teacher_that_does_not_fit_the_run_is_refused_naming_loss_args_teacher(tmp_path):
    """Breaker F6: a segmentation / wrong-task teacher gave a bare 'Target size ... must be the same as input size'
    shape error mid-step, and a teacher trained at another input size or normalisation was used silently."""
    from medvit.models import WeightContract
    from medvit.train.losses import TrainContext

    names = [f"f{i}" for i in range(3)]
    run = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.5,), std=(0.25,))

    def teacher(name, **contract):
        torch.manual_seed(0)
        m = create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=2,
                         in_chans=1, num_classes=contract.pop("classes", 3))
        c = {"in_chans": 1, "input_size": (32, 32), "mean": (0.5,), "std": (0.25,), "label_names": names, **contract}
        return str(save_checkpoint(m, tmp_path / name, contract=WeightContract(**c)))

    ds = [{"image": torch.rand(1, 32, 32), "label": torch.tensor([1.0, 0.0, 0.0])}]

    def setup(t):
        DeiTLTLoss(t, class_counts=[10, 5, 1]).setup(TrainContext(train_set=ds, contract=run, label_names=names))

    setup(teacher("ok"))  # fits: accepted
    with pytest.raises(ValueError, match=r"loss\.args\.teacher .*input_size \(48, 48\) vs the run's \(32, 32\)"):
        setup(teacher("size", input_size=(48, 48)))
    with pytest.raises(ValueError, match=r"loss\.args\.teacher .*mean \[0\.4\] vs the run's \[0\.5\]"):
        setup(teacher("norm", mean=(0.4,)))
    with pytest.raises(ValueError, match=r"loss\.args\.teacher .*teacher labels \['a', 'b', 'c'\] differ"):
        setup(teacher("labels", label_names=["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"loss\.args\.teacher .*outputs shape \[1, 5\].*\(B, 3\) logits"):
        setup(create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=2,
                           in_chans=1, num_classes=5))  # no contract (one with no label names is refused on load)
    seg = torch.nn.Conv2d(1, 3, 1)  # dense (B, 3, H, W) output, like a segmentation checkpoint
    with pytest.raises(ValueError, match=r"loss\.args\.teacher \(Conv2d\): outputs shape \[1, 3, 32, 32\]"):
        setup(seg)
