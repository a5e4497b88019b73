"""TinyViT sparse-logit store: record size, exact top-K round trip, seed replay bit-exact, loss vs hand-computed,
and a student trained from the store through the loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medvit.train.distill import TinyViTDistill, soft_target_ce
from medvit.train.logit_store import LogitStore, dense_from_topk, record_dtype, save_teacher_logits, topk_probs
from medvit.train.losses import TrainContext, loss_step
from medvit.train.sampler import SeededTransformDataset, sample_seed


def test_record_is_4_plus_4k_bytes():
    assert record_dtype(10).itemsize == 44
    assert record_dtype(5).itemsize == 24


class _Data(torch.utils.data.Dataset):
    def __init__(self, n=12):
        g = torch.Generator().manual_seed(3)
        self.x = torch.rand(n, 1, 12, 12, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": torch.tensor(i % 5)}


def _aug(item, g):  # random crop-and-noise: any draw from g shows up in the output
    x = item["image"]
    dy, dx = (int(v) for v in torch.randint(0, 5, (2,), generator=g))
    x = torch.nn.functional.pad(x, (2, 2, 2, 2))[:, dy:dy + 12, dx:dx + 12]
    return {**item, "image": x + 0.1 * torch.randn(x.shape, generator=g)}


def _teacher(c=20):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, c))


def test_store_reconstructs_stored_topk_exactly(tmp_path):
    ds, teacher = _Data(), _teacher()
    store = save_teacher_logits(teacher, ds, _aug, tmp_path / "s", k=5, epochs=2, seed=7, batch_size=5)
    assert (tmp_path / "s" / "logits.bin").stat().st_size == 2 * len(ds) * (4 + 4 * 5)
    for e in range(2):
        for i in range(len(ds)):
            s = sample_seed(7, e, i)
            x = _aug(ds[i], torch.Generator().manual_seed(s))["image"]
            idx, val = topk_probs(teacher(x[None]), 5)
            stored_seed, sidx, sval = store.lookup(torch.tensor([s]))
            assert int(stored_seed) == s & 0x7FFFFFFF
            assert torch.equal(sidx, idx)  # indices exact
            assert torch.equal(sval, val.half().float())  # values exact at the stored fp16
    reopened = LogitStore.open(tmp_path / "s")
    assert reopened.meta.k == 5 and reopened.meta.num_classes == 20 and reopened.meta.n == len(ds)


def test_seed_replay_regenerates_augmentation_bit_exact():
    """The loop's per-sample seed drives the train transform: two runs (teacher pass and student) see identical
    tensors, and another seed gives another augmentation."""
    from medvit.data.augment import build_train_transform
    from medvit.train.sampler import SeededTransformDataset

    base = _Data()
    tf = build_train_transform(12, (0.5,), (0.25,), scale=(0.3, 1.0), randaug="rand-m9-mstd0.5-inc1")
    a = SeededTransformDataset(base, tf, "aug_seed")
    b = SeededTransformDataset(base, tf)
    s = sample_seed(1, 3, 4)
    x1, x2 = a[(4, s)], b[(4, s)]
    assert torch.equal(x1["image"], x2["image"]) and x1["aug_seed"] == s
    assert not torch.equal(x1["image"], b[(4, sample_seed(1, 4, 4))]["image"])


def test_dense_rebuild_and_kl_properties():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(3, 20, generator=g) * 2, -1)
    kls = []
    for k in (1, 5, 10, 19, 20):
        val, idx = p.topk(k, -1)
        d = dense_from_topk(idx, val, 20)
        assert torch.allclose(d.sum(-1), torch.ones(3), atol=1e-6)
        assert torch.equal(d.gather(1, idx), val)
        kls.append(float((p * (p.log() - d.log())).sum(-1).mean()))
    assert all(a >= b - 1e-7 for a, b in zip(kls, kls[1:])) and kls[-1] == pytest.approx(0.0, abs=1e-6)
    bad = dense_from_topk(torch.full((1, 2), -1), torch.zeros(1, 2), 4)
    assert torch.equal(bad, torch.zeros(1, 4))


def test_loss_value_hand_computed(tmp_path):
    from medvit.train.logit_store import StoreMeta

    store = LogitStore.create(tmp_path / "s", StoreMeta(k=2, num_classes=4, n=2, epochs=1, seed=0))
    seeds = [sample_seed(0, 0, i) for i in range(2)]
    store.write(np.arange(2), np.array(seeds), torch.tensor([[2, 0], [1, 3]]), torch.tensor([[0.5, 0.25],
                                                                                          [0.75, 0.125]]))
    store.flush()
    z = torch.tensor([[1.0, 0.0, 2.0, -1.0], [0.0, 0.5, 0.0, 0.0]])
    loss = TinyViTDistill(str(tmp_path / "s"), k=2)(z, {"aug_seed": torch.tensor(seeds)})
    # row 0: p = [.25, .125, .5, .125]; row 1: p = [.0625, .75, .0625, .125]
    want = []
    for zi, p in zip(z.tolist(), ([.25, .125, .5, .125], [.0625, .75, .0625, .125])):
        lse = math.log(sum(math.exp(v) for v in zi))
        want.append(-sum(pc * (v - lse) for pc, v in zip(p, zi)))
    assert float(loss) == pytest.approx(sum(want) / 2, rel=1e-6)
    assert float(soft_target_ce(z, torch.eye(4)[[2, 1]]).mean()) == pytest.approx(
        float(torch.nn.functional.cross_entropy(z, torch.tensor([2, 1]))), rel=1e-6)
    with pytest.raises(KeyError, match="train.seed=0"):  # a seed the store was not written for
        TinyViTDistill(str(tmp_path / "s"), k=2)(z, {"aug_seed": torch.tensor([1, 2])})


def test_student_trains_from_store_through_the_loop(tmp_path):
    """setup() runs the teacher pass with the run's seed/transform; the student lowers its KL to the teacher."""
    from medvit.train import TrainConfig, Trainer

    ds, teacher = _Data(16), _teacher(6)
    with torch.no_grad():
        teacher[1].weight.mul_(20)  # a confident teacher: soft CE far above its entropy at the start
    cfg = TrainConfig(steps=40, batch_size=8, lr=0.05, weight_decay=0.0, progress=False, schedule="constant", seed=2)
    loss = TinyViTDistill(str(tmp_path / "logits_{seed}"), teacher=teacher, k=3)
    loss.setup(TrainContext(train_set=ds, transform=_aug, train=cfg))
    assert loss.store.meta.epochs == 40 * 8 // 16 and (tmp_path / "logits_2" / "meta.json").is_file()
    torch.manual_seed(1)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 6))
    res = Trainer(student, cfg, ds, loss_step(loss), transform=_aug).fit()
    assert sum(res.losses[-5:]) / 5 < 0.8 * sum(res.losses[:5]) / 5
    with pytest.raises(ValueError, match="one store per training set and seed"):
        TinyViTDistill(str(tmp_path / "logits_2"), k=3).setup(TrainContext(train_set=_Data(10), train=cfg))


def _edited_store(tmp_path, name, edit_records=None, edit_meta=None):
    import json

    root = tmp_path / name
    save_teacher_logits(_teacher(7), _Data(6), _aug, root, k=3, epochs=1, seed=0, batch_size=6)
    if edit_records is not None:
        rec = np.memmap(root / "logits.bin", dtype=record_dtype(3), mode="r+", shape=(6,))
        edit_records(rec)
        rec.flush()
        del rec
    if edit_meta is not None:
        meta = json.loads((root / "meta.json").read_text())
        edit_meta(meta)
        (root / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("what,edit,match", [
    ("index_99", lambda r: r["index"].__setitem__((2, 0), 99), r"logits\.bin: record 2 .*\[0, 7\)"),
    ("index_neg5", lambda r: r["index"].__setitem__((4, 1), -5), r"logits\.bin: record 4 .*\[0, 7\)"),
    ("partial_failed", lambda r: r["index"].__setitem__((1, 2), -1), r"logits\.bin: record 1 .*all -1"),
    ("nan", lambda r: r["value"].__setitem__((0, 0), np.nan), r"logits\.bin: record 0 .*finite and in \[0, 1\]"),
    ("above_one", lambda r: r["value"].__setitem__((3, 1), 2.0), r"logits\.bin: record 3 .*finite"),
])
def test_corrupt_records_are_refused_at_open_naming_the_file(tmp_path, what, edit, match):
    """Breaker F3: an index out of range used to crash the loss (99) or wrap silently (-5), NaN values blamed the
    learning rate; every record is now checked once at open."""
    root = _edited_store(tmp_path, what, edit_records=edit)
    with pytest.raises(ValueError, match=match):
        LogitStore.open(root)


@pytest.mark.parametrize("what,edit,match", [
    ("k_string", lambda m: m.__setitem__("k", "3"), r"meta\.json: key 'k' must be an integer"),
    ("n_string", lambda m: m.__setitem__("n", "6"), r"meta\.json: key 'n' must be an integer"),
    ("extra_key", lambda m: m.__setitem__("evil", 1), r"meta\.json: unknown key\(s\) \['evil'\]"),
    ("failed_out_of_range", lambda m: m.__setitem__("failed", [99]), r"meta\.json: key 'failed'"),
])
def test_bad_meta_is_refused_naming_the_key(tmp_path, what, edit, match):
    root = _edited_store(tmp_path, what, edit_meta=edit)
    with pytest.raises(ValueError, match=match):
        LogitStore.open(root)


def test_store_path_with_other_format_fields_is_used_literally(tmp_path):
    """Breaker F4: '{0}' in loss.args.store crashed with IndexError; only '{seed}' is replaced."""
    loss = TinyViTDistill(store=str(tmp_path / "s{seed}{0}"))
    with pytest.raises(FileNotFoundError, match=r"loss\.args\.store: .*s3\{0\} holds no teacher-logit store"):
        loss.setup(TrainContext(train_set=_Data(4), transform=_aug, train=type("T", (), {"seed": 3})()))


def test_reused_store_is_checked_against_teacher_k_and_input(tmp_path):
    """Breaker F2: a store was reused whatever the teacher (even a missing path), k or input size/normalisation; now
    meta.json carries the teacher's weights SHA-256 and a probe of the input the teacher saw, and a run whose teacher,
    k or input differ is refused naming the key."""
    from medvit.models import create_model, save_checkpoint
    from medvit.train import TrainConfig

    for name, seed in (("teacher_a", 0), ("teacher_b", 1)):
        torch.manual_seed(seed)
        save_checkpoint(create_model("vit_tiny_patch16_224", img_size=12, patch_size=4, embed_dim=16, depth=1,
                                     num_heads=2, in_chans=1, num_classes=7), tmp_path / name)
    ds, cfg = _Data(8), TrainConfig(steps=2, batch_size=4, progress=False, seed=0)
    store, a = str(tmp_path / "store"), str(tmp_path / "teacher_a")

    def setup(transform=_aug, **args):
        TinyViTDistill(store, **{"teacher": a, "k": 3, **args}).setup(
            TrainContext(train_set=ds, transform=transform, train=cfg))

    setup()  # teacher pass
    meta = LogitStore.open(store).meta
    assert len(meta.teacher_sha256) == 64 and meta.input_shape == (1, 12, 12) and len(meta.input_probe) == 16
    setup()  # same teacher, k and input: reused
    setup(teacher="")  # store alone: the input is still checked (and matches)
    with pytest.raises(ValueError, match=r"loss\.args\.teacher: .*teacher_b .*is not the teacher"):
        setup(teacher=str(tmp_path / "teacher_b"))
    with pytest.raises(FileNotFoundError, match=r"loss\.args\.teacher: /nonexistent does not exist"):
        setup(teacher="/nonexistent")
    with pytest.raises(ValueError, match=r"loss\.args\.k: 5, but .* top-3"):
        setup(k=5)
    with pytest.raises(ValueError, match=r"teacher saw inputs of shape \[1, 12, 12\].* \[1, 8, 8\]"):
        setup(transform=lambda item, g: {**_aug(item, g), "image": _aug(item, g)["image"][:, :8, :8]})
    with pytest.raises(ValueError, match=r"input differs from the one the teacher saw"):
        setup(transform=lambda item, g: {**item, "image": (_aug(item, g)["image"] - 0.5) / 0.25})


def test_k_above_the_label_count_is_refused_before_the_teacher_pass(tmp_path):
    """Breaker F5: loss.args.k=1000 failed only after the teacher pass had started and left an empty store folder."""
    loss = TinyViTDistill(str(tmp_path / "store"), teacher=_teacher(7), k=1000)
    with pytest.raises(ValueError, match=r"loss\.args\.k: top-1000 of a run with 7 labels"):
        loss.setup(TrainContext(train_set=_Data(4), transform=_aug, label_names=[f"l{i}" for i in range(7)]))
    assert not (tmp_path / "store").exists()
    with pytest.raises(ValueError, match=r"top-K 1000 must be in \[1, num_classes=7\]"):  # no label names given
        save_teacher_logits(_teacher(7), _Data(4), _aug, tmp_path / "s2", k=1000, epochs=1, seed=0)
    assert not (tmp_path / "s2").exists()


class _RecordingTeacher(torch.nn.Module):
    """A linear teacher that keeps every batch it is shown."""

    def __init__(self, c=6):
        super().__init__()
        self.net, self.seen = _teacher(c), []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.net(x)


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 1.0), (0.0, 1.0), (0.8, 0.0)])
def test_mixup_cutmix_replayed_bit_exact_from_the_samples_seeds(tmp_path, mixup, cutmix):
    """The teacher pass forms the loop's batches and mixes them from batch_mix_seed(per-sample seeds); the student
    run (Trainer + loss.prepare) rebuilds exactly the teacher's mixed images, and the stored top-K are the
    teacher's top-K on them."""
    from medvit.train import TrainConfig, Trainer

    seen_student: list[tuple[torch.Tensor, torch.Tensor]] = []

    class _Rec(TinyViTDistill):
        def forward(self, output, batch):
            seen_student.append((batch["aug_seed"].clone(), batch["image"].detach().clone()))
            return super().forward(output, batch)

    ds, teacher = _Data(20), _RecordingTeacher(6)
    cfg = TrainConfig(steps=6, batch_size=6, lr=0.01, progress=False, schedule="constant", seed=4)
    loss = _Rec(str(tmp_path / "mix"), teacher=teacher, k=3, mixup=mixup, cutmix=cutmix)
    loss.setup(TrainContext(train_set=ds, transform=_aug, train=cfg))
    assert (loss.store.meta.mixup, loss.store.meta.cutmix, loss.store.meta.mix_batch_size) == (mixup, cutmix, 6)
    torch.manual_seed(0)
    Trainer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 6)), cfg, ds, loss_step(loss),
            transform=_aug).fit()
    assert len(seen_student) == 6 and len(teacher.seen) >= 6  # 3 batches per epoch, 2 epochs
    plain = SeededTransformDataset(ds, _aug)
    n_mixed = 0
    for (seeds, x_student), x_teacher in zip(seen_student, teacher.seen):
        assert torch.equal(x_student, x_teacher)  # bit-exact: same partner, λ and box
        idx_t, val_t = topk_probs(teacher.net(x_student), 3)
        _, idx, val = loss.store.lookup(seeds)
        assert torch.equal(idx, idx_t) and torch.equal(val, val_t.half().float())
        rows = [loss.store.row_of_seed(int(s)) for s in seeds]
        unmixed = torch.stack([plain[(r % 20, int(s))]["image"] for r, s in zip(rows, seeds)])
        n_mixed += not torch.equal(unmixed, x_student)
    assert n_mixed >= 3  # mixing really happened (a CutMix box can be empty on a 12-px image)
    # the tail the loop never batches (20 = 3*6 + 2 per epoch) is left as index -1, not reported as failed
    assert (loss.store.records["index"][:, 0] == -1).sum() == 2 * loss.store.meta.epochs
    assert loss.store.meta.failed == ()
    # a run without mixing (or another batch size) must not reuse the mixed store
    with pytest.raises(ValueError, match="mixup"):
        TinyViTDistill(str(tmp_path / "mix"), k=3).setup(TrainContext(train_set=ds, transform=_aug, train=cfg))


def test_batch_mix_seed_depends_on_members_and_order():
    from medvit.train.mixing import batch_mix_seed

    a = [sample_seed(0, 0, i) for i in range(4)]
    assert batch_mix_seed(a) == batch_mix_seed(torch.tensor(a)) and 0 <= batch_mix_seed(a) < 2 ** 63
    assert batch_mix_seed(a) != batch_mix_seed(a[::-1]) and batch_mix_seed(a) != batch_mix_seed(a[:3])
