"""Weight EMA (``TrainConfig.ema_decay``, ``--model-ema``) and the trackers of ``report_to``."""

from __future__ import annotations

import pytest
import torch

from medvit.train import TrainConfig
from medvit.train.loop import Trainer
from medvit.train.losses import masked_bce
from tests.train.synthetic import SyntheticCXR


def _run(ema: float, seen: list[torch.Tensor] | None = None, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 3))

    def step(m: torch.nn.Module, batch: dict) -> torch.Tensor:
        if seen is not None:
            seen.append(model[1].weight.detach().clone())  # the weights this step starts from
        return masked_bce(m(batch["image"]), batch["label"], batch["label_mask"])

    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, weight_decay=0.0, progress=False, ema_decay=ema, **kw)
    Trainer(model, cfg, SyntheticCXR(n=40, size=16), step).fit()
    return model


def test_ema_is_the_exponential_average_of_the_step_weights():
    d = 0.5
    plain_seen: list[torch.Tensor] = []
    final = _run(0.0, plain_seen)[1].weight.detach()
    weights = [*plain_seen[1:], final]  # w_1 .. w_n: the weights after each optimizer step
    assert len(weights) == 5
    expected = weights[0]
    for w in weights[1:]:
        expected = d * expected + (1 - d) * w
    got = _run(d)[1].weight.detach()
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, final, atol=1e-4)  # the average is not the last weights


def test_report_to_validated():
    with pytest.raises(ValueError, match="unknown tracker 'wandb'"):
        TrainConfig(report_to=["wandb"])
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_mlflow_local_store(tmp_path):
    mlflow = pytest.importorskip("mlflow")  # the optional `tracking` extra
    _run(0.0, output_dir=str(tmp_path), report_to=["mlflow"], log_every=1)
    mlflow.set_tracking_uri((tmp_path / "mlruns").resolve().as_uri())
    runs = mlflow.search_runs(experiment_names=[tmp_path.name])
    assert len(runs) == 1 and "metrics.train_loss" in runs.columns
