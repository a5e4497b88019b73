"""Issue 19, item 3: EViT / LookupViT / ChannelViT runnable from pipelines/general_vision on phantoms; the EViT
keep-rate warm-up driven by the training loop; missing-channel evaluation (ChannelViT gets the present channels,
other models the absent ones zero-filled)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from medvit.eval.channels import ChannelSubset, accepts_channels
from medvit.models import create_model
from medvit.nn.token_reorganize import keep_rate_schedule

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines" / "general_vision"
TINY = {"patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2, "img_size": 32}


def test_evit_keep_rate_warmup_follows_the_schedule_and_validates():
    m = create_model("evit_tiny_patch16_224", num_classes=2, keep_rate=0.5, keep_rate_warmup=(0.2, 0.6), **TINY)
    seen = []
    for step in range(10):
        m.on_train_step(step, 10)
        seen.append(m.keep_rate)
    assert seen == [keep_rate_schedule(s, 0.5, 2, 6) for s in range(10)]
    assert seen[0] == 1.0 and seen[-1] == 0.5 and 0.5 < seen[4] < 1.0
    fixed = create_model("evit_tiny_patch16_224", num_classes=2, keep_rate=0.5, **TINY)
    fixed.on_train_step(0, 10)
    assert fixed.keep_rate == 0.5  # no warm-up configured: r fixed
    with pytest.raises(ValueError, match="keep_rate_warmup"):
        create_model("evit_tiny_patch16_224", keep_rate_warmup=(0.7, 0.2), **TINY)


def test_training_loop_calls_the_progress_hook_every_step(tmp_path):
    from medvit.train import TrainConfig, fit

    m = create_model("evit_tiny_patch16_224", num_classes=2, keep_rate=0.5, keep_rate_warmup=(0.0, 1.0), **TINY)
    rates: list[float] = []
    data = [{"image": torch.randn(3, 32, 32), "label": torch.tensor([1.0, 0.0])} for _ in range(8)]

    def step_fn(model, batch):
        rates.append(model.keep_rate)
        return torch.nn.functional.binary_cross_entropy_with_logits(model(batch["image"]), batch["label"])

    cfg = TrainConfig(output_dir=str(tmp_path), steps=4, batch_size=2, warmup_epochs=0, ckpt_every=0, progress=False)
    fit(m, cfg, data, step_fn)
    assert rates == [keep_rate_schedule(s, 0.5, 0, 4) for s in range(4)]


def test_channel_subset_gives_channelvit_the_present_channels_and_zero_fills_others():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    cv = create_model("channelvit_tiny_patch16_224", num_classes=3, in_chans=3, **TINY).eval()
    vit = create_model("vit_tiny_patch16_224", num_classes=3, in_chans=3, **TINY).eval()
    assert accepts_channels(cv) and not accepts_channels(vit)
    with torch.no_grad():
        got = ChannelSubset(cv, [2, 0], 3)(x)
        want = cv(x[:, [0, 2]], channels=torch.tensor([0, 2]))
        assert torch.equal(got, want)
        zeroed = x.clone()
        zeroed[:, 1] = 0
        assert torch.equal(ChannelSubset(vit, [0, 2], 3)(x), vit(zeroed))
    for bad in ([], [0, 0], [3], [-1]):
        with pytest.raises(ValueError, match="channels_present"):
            ChannelSubset(cv, bad, 3)
    with pytest.raises(ValueError, match="channels"):
        ChannelSubset(cv, [0], 3)(torch.randn(1, 2, 32, 32))


def _tiny(name: str, tmp_path: Path, **over) -> dict:
    cfg = yaml.safe_load((PIPELINES / name).read_text())
    cfg["output_dir"] = str(tmp_path / cfg["output_dir"])
    cfg["dataset_args"] = {**cfg["dataset_args"], "n": 80, "image_size": 32}
    cfg["image_size"] = 32
    cfg["report"] = False
    cfg["train"] = {**cfg["train"], "steps": 2, "batch_size": 8, "warmup_epochs": 0}
    cfg.update(over)
    return cfg


@pytest.mark.slow
def test_evit_chain_from_the_vit_preset_and_lookupvit_run(tmp_path):
    from medvit.models import load_model
    from medvit.tasks import run_task

    run_task(None, data=_tiny("cxr_vit_tiny_cpu.yaml", tmp_path))
    vit_dir = tmp_path / "runs/gv_cxr_vit/model"
    out = run_task(None, data=_tiny("cxr_evit_tiny_cpu.yaml", tmp_path, pretrained=str(vit_dir)))
    assert out["seeds"][0]["steps"] == 2
    evit = load_model(tmp_path / "runs/gv_cxr_evit/model")
    assert type(evit).__name__ == "EViT" and evit.keep_rate == 0.7  # served at the target rate
    vit = load_model(vit_dir)
    same = [k for k, v in vit.state_dict().items() if k.startswith("blocks.0.")]
    assert same and all(k in evit.state_dict() for k in same)  # same parameter names: the ViT loads into EViT
    out = run_task(None, data=_tiny("cxr_lookupvit_tiny_cpu.yaml", tmp_path))
    assert math.isfinite(out["seeds"][0]["test"]["mean_auroc"])


@pytest.mark.slow
def test_channelvit_preset_and_missing_channel_evaluation(tmp_path):
    from medvit.tasks import run_task

    run_task(None, data=_tiny("multiwindow_channelvit_tiny_cpu.yaml", tmp_path))
    ev = yaml.safe_load((PIPELINES / "multiwindow_channelvit_eval_missing.yaml").read_text())
    ev.update(model=str(tmp_path / "runs/gv_mw_channelvit/model"), output_dir=str(tmp_path / "ev"),
              dataset_args={"n": 80, "seed": 0, "image_size": 32}, channels_present=[0])
    summary = run_task(None, data=ev)
    assert summary["channels_present"] == [0]
    assert json.loads((tmp_path / "ev/summary.json").read_text())["n"] > 0
    assert math.isfinite(summary["mean_auroc"])
