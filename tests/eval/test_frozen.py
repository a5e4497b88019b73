"""TWLV-I frozen-embedding evaluation: kNN (k=200, τ=0.1) and linear probe on synthetic clusters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvit.eval.frozen import embed_dataset, frozen_eval, knn_scores, linear_probe, score_report


def clusters(n=500, c=5, d=32, spread=0.3, seed=0):
    centres = np.random.default_rng(123).normal(size=(c, d)) * 3  # the same clusters for every draw
    g = np.random.default_rng(seed)
    y = np.arange(n) % c
    return centres[y] + spread * g.normal(size=(n, d)), y


def test_knn_and_probe_exact_on_separated_clusters():
    x, y = clusters()
    x2, y2 = clusters(seed=2)  # disjoint draw of the same centres
    rep = frozen_eval(x, y, x2, y2)
    assert rep["knn"]["accuracy"] == 1.0 and rep["knn"]["k"] == 200 and rep["knn"]["tau"] == 0.1
    assert rep["linear_probe"]["accuracy"] == 1.0
    assert set(rep["knn"]["per_class"]) == {"0", "1", "2", "3", "4"}
    assert all(v["recall"] == 1.0 and v["support"] == 100 for v in rep["knn"]["per_class"].values())


def test_shuffled_labels_give_chance():
    x, y = clusters(n=1000, spread=3.0)  # overlapping clusters; labels shuffled on both sides
    x2, y2 = clusters(n=1000, spread=3.0, seed=2)
    g = np.random.default_rng(5)
    rep = frozen_eval(x, g.permutation(y), x2, g.permutation(y2))
    assert abs(rep["knn"]["accuracy"] - 0.2) < 0.08
    assert abs(rep["linear_probe"]["accuracy"] - 0.2) < 0.08


def test_knn_weights_by_hand():
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    lab = np.array([0, 1, 1])
    q = np.array([[2.0, 0.5]])
    s = (bank / np.linalg.norm(bank, axis=1, keepdims=True)) @ (q[0] / np.linalg.norm(q[0]))
    got = knn_scores(bank, lab, q, k=2, tau=0.1)
    top = np.argsort(-s)[:2]  # items 0 (class 0) and 2 (class 1)
    want = np.zeros(2)
    for i in top:
        want[lab[i]] += np.exp(s[i] / 0.1)
    np.testing.assert_allclose(got[0], want, rtol=1e-5)


def test_clips_equal_video_level():
    x, y = clusters(n=200)
    x2, _ = clusters(n=50, seed=3)
    video = knn_scores(x, y, x2)
    clips = knn_scores(x, y, np.repeat(x2, 4, axis=0), query_groups=np.repeat(np.arange(50), 4))
    np.testing.assert_allclose(clips, 4 * video, rtol=1e-5)  # summed over 4 identical clips
    p_video = linear_probe(x, y, x2)
    p_clips = linear_probe(x, y, np.repeat(x2, 3, axis=0), query_groups=np.repeat(np.arange(50), 3))
    np.testing.assert_allclose(p_clips, p_video, rtol=1e-6)
    assert (p_clips.argmax(1) == video.argmax(1)).all()


def test_multilabel_per_label_auroc():
    g = np.random.default_rng(0)
    y = (g.random((400, 3)) < 0.4).astype(int)
    x = np.concatenate([y * 3.0 + 0.2 * g.normal(size=y.shape), g.normal(size=(400, 5))], 1)
    rep = frozen_eval(x[:300], y[:300], x[300:], y[300:], class_names=["a", "b", "c"])
    assert rep["knn"]["mean_auroc"] == 1.0 and rep["linear_probe"]["mean_auroc"] == 1.0
    assert set(rep["knn"]["per_class"]) == {"a", "b", "c"}


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="bank labels"):
        knn_scores(np.zeros((3, 2)), np.zeros(2, int), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="tau"):
        knn_scores(np.ones((3, 2)), np.zeros(3, int), np.ones((1, 2)), tau=0)
    with pytest.raises(ValueError, match="query must be"):
        knn_scores(np.ones((3, 2)), np.zeros(3, int), np.ones(2))
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(np.ones((3, 2)), np.zeros(3, int), np.ones((1, 2)))
    assert score_report(np.eye(2), np.array([0, 1]))["accuracy"] == 1.0


def test_embed_dataset_any_registered_backbone():
    from medvit.eval.predict import ListDataset
    from medvit.models import create_model

    m = create_model("vit_small_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                     in_chans=1, num_classes=3)
    items = [{"image": torch.randn(1, 32, 32), "label": i % 3} for i in range(5)]
    f, lab = embed_dataset(m, ListDataset(items), batch_size=2)
    assert f.shape == (5, 32) and lab.tolist() == [0, 1, 2, 0, 1]


@pytest.mark.parametrize("dataset,metric", [("retina_phantom", "accuracy"), ("cxr_phantom", "mean_auroc")])
def test_frozen_eval_task_on_registered_dataset(tmp_path, dataset, metric):
    import json

    from medvit.tasks import run_task

    over = [f"output_dir={tmp_path}", f"dataset={dataset}", "dataset_args={n: 60, seed: 0, image_size: 32}",
            "image_size=32", "backbone_args={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}", "k=10"]
    summary = run_task(None, over, data={"task": "frozen_eval"})
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["knn"]["k"] == 10 and saved["knn"]["tau"] == 0.1
    assert saved["knn"][metric] is not None and saved["linear_probe"][metric] is not None
    assert len(saved["knn"]["per_class"]) >= 3
    assert summary["dataset"] == dataset
