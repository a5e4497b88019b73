"""Breaker s32 B7/B7b/B7c/B8/B10: loss configs a task cannot run are refused at config resolution (`--dry-run`)
naming the key and the reason; a non-finite loss never ends in a saved model."""

from __future__ import annotations

import pytest

from medvit.config import ConfigError

SEG = {"task": "finetune_segmentation", "dataset_args": {"n": 60, "seed": 0, "image_size": 32}, "image_size": 32,
       "backbone_args": {"patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2}, "epochs": 1,
       "batch_size": 8, "labels": ["lung_right"]}


def _build(data, overrides=()):
    from medvit.tasks import build_config

    return build_config(None, list(overrides), dict(data))


@pytest.mark.parametrize("loss,match", [
    ({"name": "bce_dice", "args": {"dice_weight": float("nan")}}, r"loss\.args\.dice_weight must be a finite"),
    ({"name": "bce_dice", "args": {"eps": float("inf")}}, r"loss\.args\.eps must be a finite"),
    ({"name": "masked_bce", "args": {"pos_weight": [1.0, float("nan")]}}, r"loss\.args\.pos_weight\[1\] must be a "
                                                                          r"finite"),
])
def test_non_finite_loss_args_are_refused_naming_the_key(loss, match):
    """B10: NaN passed `dice_weight < 0 or eps <= 0` and trained an all-NaN model (rc 0)."""
    with pytest.raises(ConfigError, match=match):
        _build({**SEG, "loss": loss} if loss["name"] == "bce_dice" else {"task": "finetune_multilabel",
                                                                         "loss": loss})


@pytest.mark.parametrize("args,match", [
    ({"pos_weight": [1.0] * 6 + [-5.0]}, r"loss\.args\.pos_weight\[6\] must be a finite number >= 0, got -5"),
])
def test_negative_per_label_weights_are_refused(args, match):
    """B7b: a negative pos_weight trained to the end (rc 0): it rewards calling positives negative."""
    with pytest.raises(ValueError, match=match):
        _build({"task": "finetune_multilabel", "loss": {"name": "masked_bce", "args": args}})
    with pytest.raises(ValueError, match=r"loss\.args\.weight\[0\] must be a finite number >= 0"):
        _build({"task": "prompt_tune", "loss": {"name": "cross_entropy", "args": {"weight": [-1.0, 1.0]}}})


def test_segmentation_stops_on_a_non_finite_loss_and_saves_nothing(tmp_path, monkeypatch):
    """B10: finetune_segmentation had no non-finite guard (the Trainer has max_nonfinite): NaN weights were saved."""
    import medvit.tasks.finetune_segmentation as seg
    from medvit.tasks import run_task

    real = seg.direct_loss

    def nan_loss(spec, default, where="loss"):
        fn = real(spec, default, where)
        return lambda out, batch: fn(out, batch) * float("nan")

    monkeypatch.setattr(seg, "direct_loss", nan_loss)
    with pytest.raises(FloatingPointError, match=r"loss is not finite \(nan\) at epoch 1, step 1; nothing saved"):
        run_task(None, data={**SEG, "output_dir": str(tmp_path / "run")})
    assert not (tmp_path / "run" / "model").exists() and not (tmp_path / "run" / "summary.json").exists()
