"""Task ``prompt_tune``: multi-label AUROC and ordinal QWK runs, reports, adapters that reload exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medvit.config import ConfigError
from medvit.registry import REGISTRY
from medvit.tasks import build_config, run_task

TINY = dict(backbone="vit_tiny_patch16_224", backbone_args=dict(embed_dim=48, depth=2, num_heads=4), image_size=32,
            eval_batch_size=64)


class _ToyGrades(torch.utils.data.Dataset):
    """5 ordinal grades; the grade sets the brightness of a centred disc (learnable in a few steps)."""

    class_names = ["none", "mild", "moderate", "severe", "proliferative"]
    label_names = ["grade"]

    def __init__(self, split: str, n: int = 60, image_size: int = 32):
        off = {"train": 0, "val": 10_000, "test": 20_000}[split]
        self.n, self.size, self.off = n, image_size, off

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.off + i)
        grade = (self.off + i) % 5
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, self.size), torch.linspace(-1, 1, self.size), indexing="ij")
        disc = ((yy**2 + xx**2) < 0.5).float() * (0.15 + 0.18 * grade)
        img = (disc + 0.05 * torch.rand(self.size, self.size, generator=g)).clamp(0, 1)
        return {"image": img[None], "label": torch.tensor(grade, dtype=torch.long), "id": str(i), "patient_id": str(i)}


@pytest.fixture
def toy_grades():
    REGISTRY.add("dataset", "_toy_grades", lambda split="train", **kw: _ToyGrades(split, **kw), mean=(0.3,), std=(0.3,))
    yield "_toy_grades"
    REGISTRY.remove("dataset", "_toy_grades")


@pytest.mark.slow
def test_multilabel_run_reports_and_adapter_reloads(tmp_path):
    cfg = dict(task="prompt_tune", output_dir=str(tmp_path / "run"), dataset="cxr_phantom",
               dataset_args=dict(n=80, image_size=32, seed=0), method="dvpt",
               method_config=dict(rank=4, num_prompts=3), seeds=[0],
               train=dict(epochs=1, batch_size=16, lr=1e-2, progress=False), **TINY)
    s = run_task(None, [], data=cfg)
    assert s["problem"] == "multilabel" and s["metric"] == "mean_auroc"
    for k in ("trainable_params", "trainable_pct", "adapter_mb", "step_time_ms", "test_mean_auroc"):
        assert s[k] == s[k] and s[k] > 0, k  # present, not NaN, positive
    seed = s["seeds"][0]
    assert seed["trainable_params"] < seed["backbone_params"]
    results = (tmp_path / "run" / "results.md").read_text()
    assert results.count("| 0 |") == 1
    # a frozen random backbone is labelled loudly; the headline agreement sits next to the all-negative baseline
    assert s["smoke_test"].startswith("pretrained is null") and "**SMOKE TEST**" in results
    assert "all-negative baseline" in results and 0 <= s["test_all_negative_agreement"] <= 1
    op = seed["test_operating"]
    assert sum(v["tp"] + v["fn"] + v["tn"] + v["fp"] for v in op["findings"].values()) == op["total"]
    assert len(op["findings"]) == 7 and op["agree"] <= op["total"]
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["trainable_params"] == s["trainable_params"]
    assert s["reading"] == saved["reading"] == seed["reading"] == "abstract"  # which DVPT reading ran
    # the adapter on a fresh copy of the same base reproduces the validation score exactly
    from medvit.data import build_dataset
    from medvit.eval.predict import cache_dataset, predict
    from medvit.peft import load_adapter
    from medvit.tasks.prompt_tune import build_base, score

    _, tcfg = build_config(None, [], data=cfg)
    torch.manual_seed(0)
    base, _, _ = build_base(tcfg, 7)
    model = load_adapter(tmp_path / "run" / "seed_0" / "adapter", base_model=base)
    from medvit.data.augment import build_eval_transform

    val = cache_dataset(build_dataset("cxr_phantom", "val", n=80, image_size=32, seed=0),
                        build_eval_transform(32, (0.523,), (0.287,), 1.0, in_chans=1))
    res = score("multilabel", *predict(model, val, 64, torch.device("cpu")), 7)
    assert res["score"] == seed["val"]["score"]


@pytest.mark.slow
def test_ordinal_run_uses_qwk(tmp_path, toy_grades):
    s = run_task(None, [], data=dict(task="prompt_tune", output_dir=str(tmp_path / "run"), dataset=toy_grades,
                                     method="lora", method_config=dict(r=2), seeds=[0],
                                     train=dict(epochs=2, batch_size=20, lr=2e-2, progress=False), **TINY))
    assert s["problem"] == "ordinal" and s["metric"] == "qwk"
    assert -1.0 <= s["test_qwk"] <= 1.0
    assert 0 <= s["seeds"][0]["test"]["accuracy"] <= 1


def test_score_qwk_matches_sklearn():
    from sklearn.metrics import cohen_kappa_score

    from medvit.tasks.prompt_tune import score

    rng = np.random.default_rng(0)
    labels = torch.as_tensor(rng.integers(0, 5, 200))
    logits = torch.as_tensor(rng.normal(size=(200, 5))) + 2.0 * torch.nn.functional.one_hot(labels, 5)
    res = score("ordinal", logits, labels, None, 5)
    ref = cohen_kappa_score(labels.numpy(), logits.argmax(1).numpy(), weights="quadratic")
    assert res["score"] == pytest.approx(ref, abs=1e-12)


def test_score_referable_auroc_by_hand():
    """referable_auroc: AUROC of the softmax mass on grades >= r against truth >= r, here 4 images by hand."""
    import math

    from medvit.tasks.prompt_tune import PromptTuneConfig, score

    labels = torch.tensor([0, 1, 3, 4])
    # P(grade >= 3) = 0.1, 0.6, 0.5, 0.9: positives (0.5, 0.9) vs negatives (0.1, 0.6) -> 3 of 4 pairs ordered
    probs = torch.tensor([[0.6, 0.2, 0.1, 0.05, 0.05], [0.1, 0.1, 0.2, 0.3, 0.3],
                          [0.2, 0.2, 0.1, 0.4, 0.1], [0.0, 0.05, 0.05, 0.4, 0.5]]).clamp_min(1e-9)
    res = score("ordinal", probs.log(), labels, None, 5, referable_grade=3)
    assert res["referable_auroc"] == pytest.approx(0.75, abs=1e-6)
    assert "referable_auroc" not in score("ordinal", probs.log(), labels, None, 5)
    assert math.isnan(score("ordinal", probs.log(), torch.tensor([0, 1, 2, 2]), None, 5, 3)["referable_auroc"])
    with pytest.raises(ValueError, match="referable_grade"):
        PromptTuneConfig(problem="multilabel", referable_grade=3)


def test_adalora_total_step_filled_from_the_run(tmp_path):
    from medvit.peft import make_config
    from medvit.tasks.prompt_tune import _total_steps
    from medvit.train import TrainConfig

    assert _total_steps(TrainConfig(epochs=3, batch_size=16), 100) == 18
    assert make_config("adalora", {"init_r": 4, "target_r": 2}).total_step is None


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(method="lorra"), "method: unknown peft 'lorra'"),
        (dict(method="lora", method_config={"rank": 3}), "method_config: unknown config key 'peft.lora.rank'"),
        (dict(problem="regression"), "problem must be one of"),
        (dict(method="dvpt", save_merged=True), "save_merged: method 'dvpt' cannot be merged"),
    ],
)
def test_bad_config_named(over, match):
    with pytest.raises(ConfigError, match=match):
        build_config(None, [], data=dict(task="prompt_tune", **over))


def test_dvpt_presets_validate():
    from pathlib import Path

    presets = sorted((Path(__file__).parents[2] / "pipelines" / "dvpt").glob("*.yaml"))
    assert len(presets) >= 4
    for p in presets:
        spec, cfg = build_config(p, [])
        assert spec.name == "prompt_tune" and cfg.method == "dvpt", p
        assert REGISTRY.entry("dataset", cfg.dataset)


@pytest.mark.slow
def test_from_pretrained_checkpoint_adapter_rebuilds_its_base(tmp_path):
    """pretrained= a medvit checkpoint with another head; the adapter names it and reloads without a base."""
    from medvit.eval.predict import cache_dataset, predict
    from medvit.models import create_model, save_checkpoint
    from medvit.peft import load_adapter
    from medvit.tasks.prompt_tune import score

    torch.manual_seed(3)
    enc = create_model("vit_tiny_patch16_224", img_size=32, in_chans=1, num_classes=0, **TINY["backbone_args"])
    ckpt = save_checkpoint(enc, tmp_path / "enc")
    s = run_task(None, [], data=dict(task="prompt_tune", output_dir=str(tmp_path / "run"), dataset="cxr_phantom",
                                     dataset_args=dict(n=60, image_size=32, seed=0), method="lora",
                                     method_config=dict(r=2), pretrained=str(ckpt), seeds=[1], test_split="",
                                     train=dict(epochs=1, batch_size=16, lr=1e-2, progress=False), **TINY))
    cfg = json.loads((tmp_path / "run" / "seed_1" / "adapter" / "adapter_config.json").read_text())
    assert cfg["base"]["weights"] == str(ckpt) and len(cfg["base"]["weights_sha256"]) == 64
    model = load_adapter(tmp_path / "run" / "seed_1" / "adapter")  # base rebuilt from the checkpoint
    from medvit.data import build_dataset
    from medvit.data.augment import build_eval_transform

    val = cache_dataset(build_dataset("cxr_phantom", "val", n=60, image_size=32, seed=0),
                        build_eval_transform(32, (0.523,), (0.287,), 1.0, in_chans=1))
    res = score("multilabel", *predict(model, val, 64, torch.device("cpu")), 7)
    assert res["score"] == s["seeds"][0]["val"]["score"]


def test_smoke_test_label_only_for_frozen_random_backbones():
    from medvit.tasks.prompt_tune import smoke_test_reason

    base = dict(task="prompt_tune", dataset="cxr_phantom", method="lora")
    assert "frozen *random* backbone" in smoke_test_reason(build_config(None, [], data=base)[1])
    assert smoke_test_reason(build_config(None, [], data={**base, "pretrained": "runs/mae_tiny_cpu"})[1]) == ""
    assert smoke_test_reason(build_config(None, [], data={**base, "method": "full"})[1]) == ""


def test_few_shot_indices_per_class_and_per_finding():
    from medvit.data.fraction import few_shot_indices

    grades = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 0])
    idx = few_shot_indices(grades, 2, seed=0)
    assert np.bincount(grades[idx]).tolist() == [2, 2, 2]
    assert idx == few_shot_indices(grades, 2, seed=0)  # seeded
    multi = np.zeros((40, 3))
    multi[:10, 0] = 1
    multi[5:15, 1] = 1
    multi[20:30, 2] = 1  # 15..19 and 30..39 have no finding
    for seed in range(4):
        idx = few_shot_indices(multi, 3, seed)
        y = multi[idx]
        assert (y.sum(0) >= 3).all() and ((y.sum(1) == 0).sum() >= 3)
        assert len(idx) <= 3 * 4 and idx == sorted(set(idx))
    with pytest.raises(ValueError, match="shots_per_class must be >= 1"):
        few_shot_indices(grades, 0, 0)


def test_few_shot_request_larger_than_a_class_is_refused_naming_it(tmp_path):
    """shots_per_class above what a class / finding / "no finding" has used to train on everything it had while the
    summary said k-shot; now a ValueError naming shots_per_class, the short classes with their counts and the
    largest k the split allows — also through the prompt_tune task (breaker F10)."""
    from medvit.data.fraction import few_shot_indices

    grades = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 0])  # class 0: 6, classes 1 and 2: 3 images
    assert len(few_shot_indices(grades, 3, 0)) == 9  # exactly enough: fine
    with pytest.raises(ValueError, match=r"shots_per_class=4: .*2 class\(es\): mild 3, moderate 3.*"
                                         r"shots_per_class=3"):
        few_shot_indices(grades, 4, 0, names=["none", "mild", "moderate"])
    multi = np.zeros((20, 2))
    multi[:5, 0] = 1
    multi[5:7, 1] = 1  # finding 1: 2 positives; 13 images without a finding
    with pytest.raises(ValueError, match=r"finding 1 2.*shots_per_class=2"):
        few_shot_indices(multi, 3, 0)
    with pytest.raises(ValueError, match=r"shots_per_class=10000: .*no finding"):
        run_task(None, [], data=dict(task="prompt_tune", output_dir=str(tmp_path / "run"), dataset="cxr_phantom",
                                     dataset_args=dict(n=40, image_size=32, seed=0), method="lora",
                                     method_config=dict(r=2, targets=["attention"]), seeds=[0],
                                     shots_per_class=10000, ood_fpr=0, train=dict(steps=1, batch_size=8,
                                                                                  progress=False), **TINY))
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.slow
def test_hint_aug_stage_from_yaml_few_shot_with_lora(tmp_path):
    """Hint-Aug configured in a YAML file, on a 2-shot multi-label phantom run with LoRA: every optimizer step
    adds the augmented batch, the few-shot subset is what trains, the adapter reloads exactly."""
    import yaml

    cfg = dict(task="prompt_tune", output_dir=str(tmp_path / "run"), dataset="cxr_phantom",
               dataset_args=dict(n=80, image_size=32, seed=0), method="lora",
               method_config=dict(r=2, targets=["attention"]), seeds=[0], shots_per_class=2, ood_fpr=0,
               hint_aug=dict(enabled=True, layer=1, num_patch=2, eps=0.05, steps=2),
               backbone_args=dict(embed_dim=48, depth=2, num_heads=4, patch_size=8),
               train=dict(steps=3, batch_size=8, lr=1e-2, progress=False),
               **{k: v for k, v in TINY.items() if k != "backbone_args"})
    path = tmp_path / "hint.yaml"
    path.write_text(yaml.safe_dump(cfg))
    s = run_task(path)
    seed = s["seeds"][0]
    assert seed["shots_per_class"] == 2 and seed["n_train"] <= 2 * 8
    assert seed["hint_aug"]["augmented_batches"] == 3  # one augmented batch per optimizer step
    assert 0.0 <= seed["hint_aug"]["aod_overfit_share"] <= 1.0
    from medvit.data import build_dataset
    from medvit.data.fraction import few_shot_indices, label_table

    train = build_dataset("cxr_phantom", "train", n=80, image_size=32, seed=0)
    assert seed["n_train"] == len(few_shot_indices(label_table(train), 2, 0))
    with pytest.raises(ConfigError, match="hint_aug"):
        build_config(None, [], data={**cfg, "hint_aug": {"enabled": True, "eps": 0}})


def test_hint_aug_refused_for_an_encoder_without_autograd():
    from medvit.peft import apply_peft
    from medvit.tasks.prompt_tune import hint_check
    from tests.peft.conftest import make_base

    with pytest.raises(ValueError, match="hint_aug: .*without autograd"):
        hint_check(apply_peft(make_base(), "vivit", {"temporal_depth": 1}), 0)
    with pytest.raises(ValueError, match="hint_aug.layer=5"):
        hint_check(apply_peft(make_base(), "lora", {"r": 2}), 5)
