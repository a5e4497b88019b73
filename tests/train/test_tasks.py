"""Two steps of each task on phantoms; task-level exact resume; bad configs fail before training, naming the key."""

from __future__ import annotations

import json

import pytest
import torch

from medvit.config import ConfigError
from medvit.tasks import build_config, run_task

FT = {
    "task": "finetune_multilabel",
    "dataset": "cxr_phantom",
    "dataset_args": {"n": 80, "seed": 0, "image_size": 32},
    "backbone": "vit_tiny_patch16_224",
    "backbone_args": {"patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2},
    "image_size": 32,
    "randaug": "rand-m6-mstd0.5-inc1",
    "train": {"steps": 2, "batch_size": 8, "lr": 1e-3, "progress": False, "log_every": 1},
}
MAE = {
    "task": "mae_pretrain",
    "dataset": "cxr_phantom",
    "dataset_args": {"n": 80, "seed": 0, "image_size": 32},
    "backbone": "vit_tiny_patch16_224",
    "backbone_args": {"patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 4},
    "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 4,
    "image_size": 32,
    "mask_ratio": 0.75,
    "figure_images": 2,
    "train": {"steps": 2, "batch_size": 8, "blr": 1.5e-4, "progress": False, "log_every": 1},
}


def _with(base, **kw):
    d = json.loads(json.dumps(base))
    for k, v in kw.items():
        node = d
        *path, last = k.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    return d


@pytest.mark.slow
def test_finetune_two_steps_saves_model_with_contract(tmp_path):
    from medvit.models import load_model

    s = run_task(None, data=_with(FT, output_dir=str(tmp_path), modalities=["CR", "DX"], view_positions=["PA"]))
    seed = s["seeds"][0]
    assert seed["steps"] == 2 and 0.0 <= s["test_mean_auroc"] <= 1.0
    assert set(seed["thresholds"]) == set(seed["test"]["per_class"])
    m = load_model(tmp_path / "model")
    c = m.contract
    assert c.research_only and c.in_chans == 1 and c.input_size == (32, 32) and len(c.label_names) == 7
    assert all(0.0 <= t <= 1.0 for t in c.thresholds) and c.mean == (pytest.approx(0.523, abs=0.2),)
    assert c.modalities == ["CR", "DX"] and c.view_positions == ["PA"] and c.body_parts == []
    assert c.name == "cxr_phantom-vit_tiny_patch16_224" and c.version.count(".") == 2
    assert c.crop_mode == "crop" and c.interpolation == "bicubic" and c.intensity["raster"] == "full"
    assert c.ood["target_fpr"] == 0.05 and (tmp_path / "model" / "ood.safetensors").is_file()
    assert m(torch.rand(2, 1, 32, 32)).shape == (2, 7)
    assert "mean AUROC" in (tmp_path / "results.md").read_text()


def test_finetune_stopped_early_is_a_finished_run(tmp_path):
    """Early stopping (train.early_stop_patience) ends the schedule on purpose: thresholds, test and the model are
    written from the restored best weights (an interrupted run, stop_at_step, writes none of them)."""
    s = run_task(None, data=_with(FT, output_dir=str(tmp_path), ood_fpr=0, report=False, randaug="",
                                  **{"train.steps": 8, "train.lr": 1e-12, "train.eval_every": 1,
                                     "train.early_stop_patience": 1}))
    seed = s["seeds"][0]
    assert seed["stopped_early"] and seed["steps"] == 2 < 8  # lr ~0: validation never improves after step 1
    assert seed["best"]["step"] == 1 and "test" in seed and len(seed["thresholds"]) == 7
    assert (tmp_path / "model" / "model.safetensors").is_file() and s["test_mean_auroc"] is not None


@pytest.mark.slow
def test_mae_two_steps_then_finetune_from_it(tmp_path):
    more = [{"name": "cxr_phantom", "args": {"n": 40, "seed": 1, "image_size": 32}, "splits": ["train", "val"]}]
    s = run_task(None, data=_with(MAE, output_dir=str(tmp_path / "mae"), more_datasets=more))
    assert s["n_images"] > 70
    assert s["steps"] == 2 and len(s["losses"]) == 2
    assert (tmp_path / "mae" / "reconstruction.png").is_file()
    assert (tmp_path / "mae" / "encoder" / "config.json").is_file()
    ft = _with(FT, output_dir=str(tmp_path / "ft"), pretrained=str(tmp_path / "mae"),
               backbone_args={"patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 4})
    out = run_task(None, data=ft)
    assert out["seeds"][0]["steps"] == 2
    # continuing pretraining from the MAE folder (decoder included)
    s2 = run_task(None, data=_with(MAE, output_dir=str(tmp_path / "mae2"), pretrained=str(tmp_path / "mae")))
    assert s2["losses"][0] < s["losses"][0] + 1.0


@pytest.mark.slow
def test_mae_pretrain_resume_is_exact(tmp_path):
    full = run_task(None, data=_with(MAE, output_dir=str(tmp_path / "a"), figure_split="", **{"train.steps": 4}))
    cut = _with(MAE, output_dir=str(tmp_path / "b"), figure_split="",
                **{"train.steps": 4, "train.stop_at_step": 2, "train.ckpt_every": 2})
    first = run_task(None, data=cut)
    rest = run_task(None, data=_with(cut, **{"train.stop_at_step": 0, "train.resume": "auto"}))
    assert first["losses"] + rest["losses"] == full["losses"]


@pytest.mark.parametrize(
    "data, key",
    [
        (_with(MAE, mask_ratio=1.0), "mask_ratio"),
        (_with(MAE, mask_ratio=0.99), "mask_ratio"),
        (_with(MAE, image_size=36), "image_size"),
        (_with(MAE, decoder_dpth=2), "decoder_dpth"),
        (_with(MAE, more_datasets=[{"name": "cxr_phantom", "splits": ["test"]}]), "more_datasets"),
        (_with(MAE, **{"train.bacth_size": 2}), "bacth_size"),
        (_with(FT, image_size=40), "image_size"),
        (_with(FT, label_fraction=0.0), "label_fraction"),
        (_with(FT, randaug="rand-q3"), "randaug"),
        (_with(FT, backbone="vit_tinny_patch16_224"), "backbone"),
        (_with(FT, backbone_args={"dept": 2}), "backbone_args"),
        (_with(FT, **{"train.precision": "fp16"}), "precision"),
    ],
)
def test_bad_config_fails_before_training_naming_the_key(data, key, tmp_path):
    data = _with(data, output_dir=str(tmp_path))
    with pytest.raises((ConfigError, ValueError), match=key):
        build_config(None, [], data)
    assert not (tmp_path / "log.csv").exists()


def test_pipeline_presets_validate():
    from pathlib import Path

    presets = sorted((Path(__file__).resolve().parents[2] / "pipelines" / "mae_thorax").glob("*.yaml"))
    assert len(presets) >= 2, "no presets found: the glob must not pass empty"
    for p in presets:
        spec, cfg = build_config(p, [])
        assert spec.name in ("mae_pretrain", "finetune_multilabel"), p


def test_finetune_empty_validation_split_names_split_and_fix(tmp_path):
    """20 images: the patient-level split leaves validation empty; a clear error, before any training."""
    with pytest.raises(ValueError, match=r"the 'val' split of dataset 'cxr_phantom' has no images \(16 in 'train'\)"
                       r".*val_split") as e:
        run_task(None, data=_with(FT, output_dir=str(tmp_path), **{"dataset_args.n": 20}))
    assert "torch.cat" not in str(e.value)
    assert not (tmp_path / "model").exists()
