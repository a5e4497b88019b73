"""The training loop: exact resume, non-finite guard, best-on-validation selection, bf16, accumulation."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import torch.nn.functional as F

from medvit.models import create_model
from medvit.train import TrainConfig, Trainer
from medvit.train.state import latest_checkpoint
from tests.train.synthetic import SyntheticCXR


def _model():
    torch.manual_seed(0)
    return create_model("vit_small_patch16_224", embed_dim=32, depth=2, num_heads=4, img_size=32, patch_size=8,
                        in_chans=1, num_classes=3, global_pool="avg", drop_path_rate=0.1)


def _step(model, batch):
    logits = model(batch["image"])
    loss = F.binary_cross_entropy_with_logits(logits, batch["label"], reduction="none")
    m = batch["label_mask"].float()
    return {"loss": (loss * m).sum() / m.sum().clamp(min=1), "pos_frac": batch["label"].mean()}


def _flip(item, g):
    if torch.rand((), generator=g) < 0.5:
        item["image"] = item["image"].flip(-1)
    return item


def _cfg(tmp_path, **kw):
    base = dict(steps=6, batch_size=4, lr=1e-3, warmup_steps=2, output_dir=str(tmp_path), progress=False,
                log_every=1, layer_decay=0.75, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_kill_and_resume_reproduces_losses_exactly(tmp_path):
    ds = SyntheticCXR(n=20)  # 5 batches per epoch: the run crosses an epoch boundary
    full = Trainer(_model(), _cfg(tmp_path / "a"), ds, _step, transform=_flip).fit()
    assert len(full.losses) == 6
    first = Trainer(_model(), _cfg(tmp_path / "b", stop_at_step=3, ckpt_every=3), ds, _step, transform=_flip).fit()
    assert first.steps == 3 and first.losses == full.losses[:3]
    assert latest_checkpoint(tmp_path / "b").name == "step_000003"
    # a fresh process would rebuild the model from scratch: different init must not matter
    torch.manual_seed(123)
    rest = Trainer(_model(), _cfg(tmp_path / "b", resume="auto"), ds, _step, transform=_flip).fit()
    assert rest.losses == full.losses[3:]  # exactly, not approximately
    a = _model()
    from safetensors.torch import load_file

    wa = load_file(str(latest_checkpoint(tmp_path / "a") / "model.safetensors"))
    wb = load_file(str(latest_checkpoint(tmp_path / "b") / "model.safetensors"))
    assert wa.keys() == wb.keys() == a.state_dict().keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = list(csv.DictReader(open(tmp_path / "b" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"lr", "loss", "pos_frac", "samples_per_s"} <= set(rows[0])


def test_lr_schedule_applied_with_layer_scales(tmp_path):
    ds = SyntheticCXR(n=16)
    t = Trainer(_model(), _cfg(tmp_path, output_dir=""), ds, _step)
    res = t.fit()
    assert res.lrs[0] == 0.0 and res.lrs[2] == pytest.approx(1e-3)
    assert res.lrs[-1] < res.lrs[2]


def test_nonfinite_loss_guard(tmp_path):
    ds = SyntheticCXR(n=16)
    calls = {"n": 0}

    def bad_step(model, batch):
        calls["n"] += 1
        out = _step(model, batch)["loss"]
        return out * float("nan") if calls["n"] == 2 else out

    res = Trainer(_model(), _cfg(tmp_path, output_dir="", steps=3, max_nonfinite=1), ds, bad_step).fit()
    assert res.skipped_steps == 1 and math.isnan(res.losses[1]) and math.isfinite(res.losses[2])
    calls["n"] = 0
    with pytest.raises(FloatingPointError, match="step 1"):
        Trainer(_model(), _cfg(tmp_path, output_dir="", steps=3), ds, bad_step).fit()


def test_best_selected_on_validation_and_restored(tmp_path):
    ds = SyntheticCXR(n=16)
    scores = iter([0.3, 0.9, 0.5])
    snapshots = {}

    def evaluate(model):
        v = next(scores)
        snapshots[v] = {k: x.clone() for k, x in model.state_dict().items()}
        return {"val_auroc": v}

    model = _model()
    res = Trainer(model, _cfg(tmp_path, steps=3, eval_every=1), ds, _step, evaluate=evaluate,
                  select_metric="val_auroc").fit()
    assert res.best["step"] == 2.0 and res.best["val_auroc"] == 0.9
    assert (tmp_path / "best" / "model.safetensors").is_file()
    assert all(torch.equal(model.state_dict()[k], snapshots[0.9][k]) for k in snapshots[0.9])
    assert [h["val_auroc"] for h in res.history] == [0.3, 0.9, 0.5]


def test_bf16_and_accumulation_and_clipping_run(tmp_path):
    ds = SyntheticCXR(n=16)
    res = Trainer(_model(), _cfg(tmp_path, output_dir="", steps=2, precision="bf16", accum_steps=2, clip_grad=1.0),
                  ds, _step).fit()
    assert len(res.losses) == 2 and all(math.isfinite(v) for v in res.losses)
    assert res.samples_per_s > 0


def test_too_small_dataset_is_explained(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(_model(), _cfg(tmp_path, batch_size=64), SyntheticCXR(n=8), _step)


def test_fresh_run_in_used_folder_starts_a_new_log(tmp_path):
    ds = SyntheticCXR(n=16)
    Trainer(_model(), _cfg(tmp_path, steps=3), ds, _step).fit()
    Trainer(_model(), _cfg(tmp_path, steps=2), ds, _step).fit()
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]


@pytest.mark.slow
def test_worker_processes_do_not_change_the_run(tmp_path):
    ds = SyntheticCXR(n=20)
    a = Trainer(_model(), _cfg(tmp_path / "a", steps=3), ds, _step, transform=_flip).fit()
    b = Trainer(_model(), _cfg(tmp_path / "b", steps=3, num_workers=2), ds, _step, transform=_flip).fit()
    assert a.losses == b.losses


def test_resuming_an_early_stopped_run_trains_no_more(tmp_path):
    """Breaker s32 B17: resume='auto' on a finished early-stopped run trained two more steps and stopped again (new
    checkpoint, summary steps changed). It is finished: nothing to train, best weights restored, no new
    checkpoint."""
    from safetensors.torch import load_file

    ds = SyntheticCXR(n=16)

    def evaluate_from(scores):
        it = iter(scores)
        return lambda model: {"val_auroc": next(it)}

    cfg = dict(steps=8, eval_every=1, early_stop_patience=2)
    first = Trainer(_model(), _cfg(tmp_path, **cfg), ds, _step, evaluate=evaluate_from([0.5, 0.9, 0.4, 0.3]),
                    select_metric="val_auroc").fit()
    assert first.stopped_early and first.steps == 4 and first.finished
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    model = _model()
    again = Trainer(model, _cfg(tmp_path, resume="auto", **cfg), ds, _step, evaluate=evaluate_from([]),
                    select_metric="val_auroc").fit()  # an evaluation would raise StopIteration
    assert again.stopped_early and again.finished and again.steps == 4 and again.losses == []
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ckpts
    best = load_file(str(tmp_path / "best" / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[k], best[k]) for k in best)
