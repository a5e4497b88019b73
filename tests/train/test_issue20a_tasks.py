"""finetune_multilabel with the issue-20 schemes from YAML keys: TinyViT distillation from a teacher checkpoint
(store written by the teacher pass, then replayed), EWA (saved as the plain backbone), DeiT-LT on the long-tailed
chest split with a MONAI CNN teacher."""

from __future__ import annotations

import json

import pytest
import torch

from medvit.tasks import run_task

BASE = {
    "task": "finetune_multilabel",
    "dataset": "cxr_phantom",
    "dataset_args": {"n": 60, "seed": 0, "image_size": 32},
    "backbone": "vit_tiny_patch16_224",
    "backbone_args": {"patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2},
    "image_size": 32, "randaug": "", "ood_fpr": 0.0, "report": False, "cache_data": False,
    "train": {"steps": 3, "batch_size": 8, "lr": 1e-3, "progress": False, "log_every": 1},
}


def _cfg(out, **kw):
    d = json.loads(json.dumps(BASE))
    d["output_dir"] = str(out)
    d.update(kw)
    return d


@pytest.mark.slow
def test_tinyvit_student_from_teacher_checkpoint(tmp_path):
    run_task(None, data=_cfg(tmp_path / "teacher"))
    s = run_task(None, data=_cfg(tmp_path / "student", backbone_args={"patch_size": 16, "embed_dim": 16, "depth": 1,
                                                                      "num_heads": 1},
                                 loss={"name": "tinyvit_kd", "args": {
                                     "store": str(tmp_path / "logits_{seed}"), "teacher": str(tmp_path / "teacher" /
                                                                                                "model"),
                                     "k": 3, "probs": "sigmoid"}}))
    assert s["seeds"][0]["steps"] == 3
    meta = json.loads((tmp_path / "logits_0" / "meta.json").read_text())
    assert meta["k"] == 3 and meta["num_classes"] == 7 and meta["epochs"] == 1 and meta["failed"] == []
    assert (tmp_path / "logits_0" / "logits.bin").stat().st_size == meta["n"] * (4 + 4 * 3)


@pytest.mark.slow
def test_ewa_run_saves_plain_backbone(tmp_path):
    from medvit.models import load_model

    run_task(None, data=_cfg(tmp_path, ewa={"experts": 2, "share_rate": 0.5}))
    m = load_model(tmp_path / "model")
    assert type(m.blocks[1].mlp).__name__ == "Mlp"
    assert not any("experts" in k for k in m.state_dict())


@pytest.mark.slow
def test_deit_lt_on_long_tailed_split(tmp_path):
    lt = {"dataset": "cxr_phantom_lt", "dataset_args": {"n": 1500, "seed": 0, "image_size": 32}}
    run_task(None, data=_cfg(tmp_path / "t", **lt, backbone="monai_cnn",
                             backbone_args={"net": "DenseNet", "net_args": {"init_features": 8, "growth_rate": 4,
                                                                            "block_config": [1, 1]}}))
    s = run_task(None, data=_cfg(tmp_path / "s", **lt, backbone="deit_tiny_distilled_patch16_224", global_pool="token",
                                 loss={"name": "deit_lt", "args": {"teacher": str(tmp_path / "t" / "model"),
                                                                   "drw_start": 0.5}}))
    assert s["seeds"][0]["steps"] == 3 and 0.0 <= s["test_mean_auroc"] <= 1.0
    from medvit.models import load_model

    m = load_model(tmp_path / "s" / "model").eval()
    assert m(torch.rand(2, 1, 32, 32)).shape == (2, 7)


def test_distill20_presets_validate():
    from pathlib import Path

    from medvit.tasks import build_config

    presets = sorted((Path(__file__).resolve().parents[2] / "pipelines" / "distill20").glob("*.yaml"))
    assert len(presets) >= 8, "no presets found: the glob must not pass empty"
    losses = set()
    for p in presets:
        spec, cfg = build_config(p, [])
        assert spec.name == "finetune_multilabel", p
        losses.add(cfg.loss.name)
    assert {"tinyvit_kd", "deit_lt", "masked_bce"} <= losses
