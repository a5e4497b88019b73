"""Issue 20 part B losses against hand-made batches and hand computations (VICReg + TOV, M3I InfoNCE, LOOK,
UNIP attention KL / NMI, dual-masked MAE); registry-driven forward/backward is in test_loss_registry.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medvit.registry import REGISTRY
from medvit.train.losses import build_loss, loss_step
from medvit.train.ssl_losses import (
    ORDERS,
    attention_kl,
    attention_nmi,
    info_nce,
    look_loss,
    multi_target_info_nce,
    order_permutations,
    vicreg_terms,
)


def test_all_part_b_losses_are_registered():
    assert {"tov_vicreg", "m3i_info_nce", "look", "attention_kl", "dual_masked_mae"} <= set(REGISTRY.names("loss"))


# ---------------------------------------------------------------------------------------------- VICReg / TOV
def test_vicreg_identical_diverse_embeddings_have_zero_invariance():
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)) * 3
    t = vicreg_terms(x, x.clone())
    assert t["invariance"].item() == 0.0
    assert t["variance"].item() == 0.0  # std ~3 > 1 in every dimension


def test_vicreg_collapsed_embeddings_have_variance_one():
    x = torch.ones(16, 5) * 0.3
    t = vicreg_terms(x, x)
    assert t["variance"].item() == pytest.approx(1 - math.sqrt(1e-4), abs=1e-6)  # ½·0.99 + ½·0.99
    assert t["covariance"].item() == 0.0


def test_vicreg_covariance_zero_when_decorrelated_and_hand_value_when_not():
    # orthogonal centred columns (Hadamard rows): off-diagonal covariance exactly 0
    h = torch.tensor([[1., 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    x = h[:, 1:] * 2
    assert vicreg_terms(x, x)["covariance"].item() == pytest.approx(0.0, abs=1e-10)
    # two identical dimensions: C = [[v, v], [v, v]] with v = var -> off-diag² sum = 2v², / D = v² per batch
    a = torch.tensor([[1.0], [-1.0], [2.0], [-2.0]])
    y = torch.cat([a, a], 1)
    v = a.var().item()
    t = vicreg_terms(y, y)
    assert t["covariance"].item() == pytest.approx(2 * v * v, rel=1e-6)  # x and y both contribute v²
    assert t["variance"].item() == pytest.approx(max(0.0, 1 - math.sqrt(v + 1e-4)), abs=1e-7)


def test_tov_vicreg_weights_and_order_bce_hand_computed():
    g = torch.Generator().manual_seed(1)
    za, zb = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    logit, label = torch.randn(8, generator=g), (torch.rand(8, generator=g) > 0.5).float()
    out = build_loss({"name": "tov_vicreg", "args": {}})({"z_a": za, "z_b": zb, "order_logit": logit,
                                                          "order_label": label}, {})
    t = vicreg_terms(za, zb)
    bce = -(label * F.logsigmoid(logit) + (1 - label) * F.logsigmoid(-logit)).mean()
    want = 10 * t["invariance"] + 10 * t["variance"] + 10 * t["covariance"] + 0.1 * bce
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    assert out["temporal"].item() == pytest.approx(bce.item(), rel=1e-6)
    with pytest.raises(KeyError, match="order_logit"):
        build_loss("tov_vicreg")({"z_a": za, "z_b": zb}, {})


def test_order_permutations_labels_and_rates():
    perm, label = order_permutations(6000, torch.Generator().manual_seed(0))
    assert set(map(tuple, perm.tolist())) == set(ORDERS)
    assert torch.equal(label == 0, (perm == torch.tensor([0, 1, 2])).all(1))
    assert label.mean().item() == pytest.approx(5 / 6, abs=0.02)
    _, lab = order_permutations(6000, torch.Generator().manual_seed(0), identity_prob=0.5)
    assert lab.mean().item() == pytest.approx(0.5, abs=0.02)


# ---------------------------------------------------------------------------------------------- M3I
def test_info_nce_with_class_embeddings_is_ce_against_prototypes():
    g = torch.Generator().manual_seed(2)
    q, protos = torch.randn(7, 5, generator=g), torch.randn(3, 5, generator=g)
    y = torch.randint(0, 3, (7,), generator=g)
    want = F.cross_entropy(F.normalize(q, dim=1) @ F.normalize(protos, dim=1).T / 0.2, y)
    assert info_nce(q, protos, y, 0.2).item() == pytest.approx(want.item(), rel=1e-6)
    # by hand for one sample: -log(e^{c_y/τ} / Σ_c e^{c/τ})
    cos = [F.cosine_similarity(q[0], protos[c], dim=0).item() for c in range(3)]
    one = -(cos[int(y[0])] / 0.2 - math.log(sum(math.exp(c / 0.2) for c in cos)))
    assert info_nce(q[:1], protos, y[:1], 0.2).item() == pytest.approx(one, rel=1e-5)


def test_multi_target_info_nce_sums_weighted_sources():
    g = torch.Generator().manual_seed(3)
    q, v, protos = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g), torch.randn(2, 4, generator=g)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    out = build_loss({"name": "m3i_info_nce", "args": {"temperature": 0.5, "weights": {"class": 2.0}}})(
        {"query": q, "targets": {"view": v, "class": protos}}, {"label": y})
    want = info_nce(q, v, torch.arange(6), 0.5) + 2.0 * info_nce(q, protos, y, 0.5)
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(KeyError, match="weights"):
        multi_target_info_nce(q, {"view": (v, torch.arange(6))}, {"text": 1.0})


def test_m3i_loss_falls_on_aligned_pairs():
    torch.manual_seed(0)
    x = torch.randn(32, 10)
    f = torch.nn.Linear(10, 8)
    proj = torch.nn.Linear(10, 8)
    opt = torch.optim.Adam([*f.parameters(), *proj.parameters()], lr=0.05)
    loss_fn = build_loss("m3i_info_nce")
    losses = []
    for _ in range(30):
        out = loss_fn({"query": f(x + 0.05 * torch.randn_like(x)), "targets": {"view": proj(x)}}, {})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------------------------------------- LOOK
def test_look_is_near_zero_for_a_two_cluster_class_where_prototype_ce_is_high():
    g = torch.Generator().manual_seed(4)
    centres = {0: [torch.tensor([1.0, 0, 0]), torch.tensor([-1.0, 0, 0])], 1: [torch.tensor([0, 1.0, 0])]}
    feats, labels = [], []
    for c, cs in centres.items():
        for m in cs:
            feats.append(m + 0.02 * torch.randn(10, 3, generator=g))
            labels += [c] * 10
    z, y = torch.cat(feats), torch.tensor(labels)
    ids = torch.arange(len(y))
    look = look_loss(z, y, z, y, k=5, temperature=0.1, query_ids=ids, bank_ids=ids)["loss"]
    protos = torch.stack([F.normalize(z[y == c].mean(0), dim=0) for c in (0, 1)])  # class A's mean ~ 0
    ce = F.cross_entropy(F.normalize(z, dim=1) @ protos.T / 0.1, y)
    assert look.item() < 1e-3 and ce.item() > 1.0


def test_look_leaves_the_sample_out_and_matches_a_hand_computation():
    q = torch.tensor([[1.0, 0.0]])
    bank = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, -0.6], [-1.0, 0.0]])
    bl = torch.tensor([0, 0, 1, 0])
    ids = torch.tensor([7, 1, 2, 3])
    # id 7 is the query itself: its exact copy (same label, similarity 1) must not count
    out = look_loss(q, torch.tensor([0]), bank, bl, k=2, temperature=0.5, query_ids=torch.tensor([7]), bank_ids=ids)
    e_pos, e_neg = math.exp(0.6 / 0.5), math.exp(0.8 / 0.5)  # kNN = {id 2 (0.8, other class), id 1 (0.6)}
    assert out["loss"].item() == pytest.approx(-math.log(e_pos / (e_pos + e_neg)), rel=1e-6)
    with_self = look_loss(q, torch.tensor([0]), bank, bl, k=2, temperature=0.5)["loss"]
    assert with_self.item() < out["loss"].item()  # counting itself would lower the loss


def test_look_gradient_reaches_only_the_query():
    q = torch.randn(4, 3, requires_grad=True)
    keys = torch.randn(4, 3, requires_grad=True)
    loss = build_loss("look").train()({"query": q, "key": keys}, {"label": torch.tensor([0, 0, 1, 1])})["loss"]
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0 and keys.grad is None


def test_look_memory_bank_fifo_and_no_positive_share():
    fn = build_loss({"name": "look", "args": {"bank_size": 3, "k": 1}}).train()
    q = torch.eye(2)
    out = fn({"query": q, "key": q}, {"label": torch.tensor([0, 1]), "index": torch.tensor([0, 1])})
    assert out["no_positive"].item() == 1.0 and out["loss"].item() == 0.0  # each one's only neighbour: other class
    fn({"query": q, "key": q}, {"label": torch.tensor([0, 1]), "index": torch.tensor([2, 3])})
    assert fn.bank_ids.tolist() == [3, 1, 2] and fn.ptr == 1  # oldest entry (id 0) overwritten


# ---------------------------------------------------------------------------------------------- UNIP
def test_attention_kl_zero_when_equal_and_hand_value():
    g = torch.Generator().manual_seed(5)
    t = torch.randn(2, 3, 4, 4, generator=g)
    assert attention_kl(t, t.clone()).item() == pytest.approx(0.0, abs=1e-7)
    s = torch.randn(2, 3, 4, 4, generator=g)
    p, q = t.softmax(-1), s.softmax(-1)
    want = (p * (p.log() - q.log())).sum(-1).mean()
    assert attention_kl(t, s).item() == pytest.approx(want.item(), rel=1e-5)
    assert build_loss("attention_kl")({"teacher_logits": t, "student_logits": s}, {}).item() == \
        pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(ValueError, match="equal N"):
        attention_kl(t, torch.randn(2, 3, 5, 5))


def test_attention_nmi_identity_one_uniform_zero():
    n = 6
    assert attention_nmi(torch.eye(n)).item() == pytest.approx(1.0, abs=1e-6)
    assert attention_nmi(torch.full((n, n), 1 / n)).item() == pytest.approx(0.0, abs=1e-6)
    local = torch.eye(n) * 0.5 + torch.roll(torch.eye(n), 1, 1) * 0.5  # two neighbours: in between
    assert 0.2 < attention_nmi(local).item() < 0.9


def test_attention_kl_distillation_halves_in_30_steps():
    from medvit.models import create_model

    torch.manual_seed(0)
    kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    teacher, student = create_model("vit_tiny_patch16_224", **kw).eval(), create_model("vit_tiny_patch16_224", **kw)
    x = torch.randn(8, 3, 32, 32)

    def last_logits(m):
        t = m.forward_until(x, len(m.blocks) - 1)
        return m.blocks[-1].attn.attention_logits(m.blocks[-1].norm1(t))

    with torch.no_grad():
        tl = last_logits(teacher) * 4  # a sharper teacher pattern
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = attention_kl(tl, last_logits(student))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------------------------------------- dual-masked MAE
def test_dual_masked_mae_loss_from_the_model_output():
    from medvit.models.videomae import create_dual_mae

    torch.manual_seed(0)
    mae = create_dual_mae(img_size=(4, 8, 8), patch_size=(2, 4, 4), embed_dim=24, depth=1, num_heads=2, in_chans=1,
                          decoder_dim=24, decoder_depth=1, decoder_heads=2, mask_ratio=0.5)
    out = mae(torch.randn(2, 1, 4, 8, 8))
    assert build_loss("dual_masked_mae")(out, {}).item() == pytest.approx(out["loss"].item(), rel=1e-6)
    dec = build_loss({"name": "dual_masked_mae", "args": {"loss_on": "decoded"}})(out, {})
    assert dec.item() == pytest.approx(((out["pred"] - out["target"]) ** 2).mean().item(), rel=1e-6)
    step = loss_step("dual_masked_mae")  # the loop's step_fn: model(batch["image"]) then the loss
    assert torch.isfinite(step(mae, {"image": torch.randn(2, 1, 4, 8, 8)}))
