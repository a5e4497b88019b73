"""Long-tail re-sampling of the training loader (train.sampler; Kang et al. ICLR 2020, Wu et al. ECCV 2020)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medvit.data.fraction import label_table
from medvit.train.sampler import (
    ResumableBatchSampler,
    SamplerSpec,
    class_aware_probabilities,
    expected_class_frequency,
)

COUNTS = [400, 120, 40, 12, 4]  # a long-tailed single-label table, head:tail = 100:1


def _single_label():
    return np.repeat(np.arange(len(COUNTS)), COUNTS)


def _draws(spec, labels, epochs, seed=0, total_epochs=None):
    s = ResumableBatchSampler(len(labels), 8, seed=seed,
                              probabilities=lambda e: spec.probabilities(labels, e, total_epochs or epochs))
    out = []
    for e in range(epochs):
        s.set_epoch(e)
        out += [i for b in s for i, _ in b]
    return np.array(out)


@pytest.mark.parametrize("spec,q", [(SamplerSpec("class_balanced"), 0.0), (SamplerSpec("square_root"), 0.5),
                                    (SamplerSpec("power", q=0.25), 0.25), (SamplerSpec("power", q=1.0), 1.0)])
def test_class_frequencies_match_kang_formula(spec, q):
    """p_j = n_j^q / Σ n_i^q: exactly for the probabilities, within 3·sd (+0.004) over 40 epochs of draws."""
    labels = _single_label()
    n = np.array(COUNTS, dtype=float)
    want = n ** q / np.sum(n ** q)
    np.testing.assert_allclose(expected_class_frequency(labels, spec.probabilities(labels)), want, rtol=1e-12)
    drawn = _draws(spec, labels, epochs=40)
    freq = np.bincount(labels[drawn], minlength=len(COUNTS)) / len(drawn)
    tol = 3 * np.sqrt(want * (1 - want) / len(drawn)) + 0.004
    assert np.all(np.abs(freq - want) <= tol), (freq, want)
    if q == 0.0:  # class-balanced: the 4-image tail class is drawn as often as the 400-image head class
        assert abs(freq[-1] - 0.2) < 0.02


def test_multilabel_class_aware_probabilities_by_hand():
    """Wu et al. 2020 eq. 2: P(i) = Σ_{c∈pos(i)} n_c^{q-1} / Σ n^q, "no finding" as its own class."""
    y = np.array([[1, 0], [1, 0], [1, 1], [0, 0]], dtype=np.float32)
    # q = 0: classes A (n 3), B (n 1), none (n 1) -> per class 1/(3 n_c): A 1/9, B 1/3, none 1/3
    np.testing.assert_allclose(class_aware_probabilities(y, 0.0), [1 / 9, 1 / 9, 4 / 9, 3 / 9])
    # without the no-finding class the normal image is never drawn: A 1/6, B 1/2
    np.testing.assert_allclose(class_aware_probabilities(y, 0.0, no_finding_class=False), [1 / 6, 1 / 6, 4 / 6, 0])
    y[0, 1] = np.nan  # unknown = not positive
    np.testing.assert_allclose(class_aware_probabilities(y, 0.0), [1 / 9, 1 / 9, 4 / 9, 3 / 9])


def test_multilabel_draw_frequencies_and_tail_boost():
    g = np.random.default_rng(0)
    prev = np.array([0.3, 0.1, 0.03, 0.005])  # finding prevalence 60:1
    y = (g.random((2000, 4)) < prev).astype(np.float32)
    spec = SamplerSpec("square_root")
    p = spec.probabilities(y)
    want = expected_class_frequency(y, p)
    drawn = _draws(spec, y, epochs=10)
    m = np.concatenate([y > 0.5, ~(y > 0.5).any(1, keepdims=True)], 1)
    freq = m[drawn].mean(0)
    assert np.all(np.abs(freq - want) <= 3 * np.sqrt(want * (1 - want) / len(drawn)) + 0.004), (freq, want)
    assert freq[3] > 3 * m[:, 3].mean()  # the rarest finding is drawn far more often than its prevalence


def test_progressive_moves_from_instance_to_class_balanced():
    labels = _single_label()
    spec = SamplerSpec("progressive")
    p0, cb = spec.probabilities(labels, 0, 4), SamplerSpec("class_balanced").probabilities(labels)
    np.testing.assert_allclose(p0, np.full(len(labels), 1 / len(labels)))
    np.testing.assert_allclose(spec.probabilities(labels, 2, 4), 0.5 * p0 + 0.5 * cb)
    np.testing.assert_allclose(spec.probabilities(labels, 4, 4), cb)


def test_same_seed_same_sequence_other_seed_other_and_repeats_get_their_own_seed():
    labels, spec = _single_label(), SamplerSpec("class_balanced")
    a, b = _draws(spec, labels, 2, seed=5), _draws(spec, labels, 2, seed=5)
    assert np.array_equal(a, b) and not np.array_equal(a, _draws(spec, labels, 2, seed=6))
    s = ResumableBatchSampler(len(labels), 8, seed=5, probabilities=lambda e: spec.probabilities(labels))
    pairs = [p for batch in s for p in batch]
    tail = [sd for i, sd in pairs if labels[i] == 4]  # 4 tail images drawn ~115 times in the epoch
    assert len(tail) > 50 and len(set(tail)) == len(tail)  # each draw augmented with its own seed


def test_resume_mid_epoch_gives_the_same_batches():
    labels, spec = _single_label(), SamplerSpec("square_root")
    s = ResumableBatchSampler(len(labels), 8, seed=1, probabilities=lambda e: spec.probabilities(labels))
    s.set_epoch(3)
    full = list(s)
    s2 = ResumableBatchSampler(len(labels), 8, seed=1, probabilities=lambda e: spec.probabilities(labels))
    s2.set_epoch(3, start_batch=17)
    assert list(s2) == full[17:]


def test_trainer_resume_with_sampler_reproduces_the_run(tmp_path):
    """Through the loop: train.sampler from the config, kill at step 3, resume == uninterrupted (same batches)."""
    from medvit.train import TrainConfig, Trainer
    from tests.train.synthetic import SyntheticCXR

    def run(out, **kw):
        seen = []

        def step(model, batch):
            seen.append(batch["label"].clone())
            return F.binary_cross_entropy_with_logits(model(batch["image"].flatten(1)), batch["label"])

        torch.manual_seed(0)
        cfg = TrainConfig(steps=6, batch_size=4, lr=1e-2, progress=False, seed=3, output_dir=str(out),
                          sampler=SamplerSpec("class_balanced"), **kw)
        t = Trainer(torch.nn.Linear(32 * 32, 3), cfg, ds, step)
        assert t.sampler.probabilities is not None
        return t.fit(), seen

    ds = SyntheticCXR(n=20)
    assert label_table(ds).shape == (20, 3)
    full, seen_full = run(tmp_path / "a")
    first, _ = run(tmp_path / "b", stop_at_step=3, ckpt_every=3)
    rest, seen_rest = run(tmp_path / "b", resume="auto")
    assert rest.losses == full.losses[3:]
    assert all(torch.equal(x, y) for x, y in zip(seen_rest, seen_full[3:]))


def test_sampler_from_yaml_and_unknown_name_refused():
    from medvit.config import ConfigError
    from medvit.tasks.base import build_config

    base = {"task": "finetune_multilabel", "dataset": "cxr_phantom"}
    _, cfg = build_config(None, [], {**base, "train": {"sampler": {"name": "progressive"}}})
    assert cfg.train.sampler == SamplerSpec("progressive")
    _, cfg = build_config(None, [], base)
    assert cfg.train.sampler is None
    with pytest.raises(ConfigError, match=r"train.sampler.name: unknown sampler 'sqrt'.*square_root"):
        build_config(None, [], {**base, "train": {"sampler": {"name": "sqrt"}}})
    with pytest.raises(ConfigError, match="train.sampler.q"):
        build_config(None, [], {**base, "train": {"sampler": {"name": "power", "q": 2}}})


def test_tinyvit_store_with_a_sampler_is_refused(tmp_path):
    from medvit.train import TrainConfig
    from medvit.train.distill import TinyViTDistill
    from medvit.train.losses import TrainContext
    from tests.train.synthetic import SyntheticCXR

    cfg = TrainConfig(steps=2, batch_size=4, sampler=SamplerSpec("square_root"))
    with pytest.raises(ValueError, match="train.sampler"):
        TinyViTDistill(str(tmp_path / "s"), teacher=torch.nn.Linear(4, 3), k=2).setup(
            TrainContext(train_set=SyntheticCXR(n=8), train=cfg))
