"""The BenchX grid harness: config validation, cached/resumable cells, aggregation, reports and plots; one tiny
end-to-end grid over the four protocols on phantoms; the loop hooks it relies on (early stopping, poly LR)."""

from __future__ import annotations

import json

import pytest
import torch

from medvit.config import ConfigError
from medvit.tasks import benchx_grid as bg
from medvit.tasks.base import build_config
from medvit.tasks.benchx_protocols import PROTOCOLS

TINY = {"backbone": "vit_tiny_patch16_224",
        "backbone_args": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}


def _grid(tmp_path, **kw):
    data = {"task": "benchx_grid", "output_dir": str(tmp_path / "g"),
            "methods": [{"name": "a", **TINY}, {"name": "b", **TINY}],
            "datasets": [{"name": "cxr_phantom_benchx", "args": {"n": 40, "seed": 0, "image_size": 32},
                          "image_size": 32, "tasks": ["classification"]}],
            "fractions": [0.5, 1.0], "seeds": [0, 1], "plots": False, **kw}
    return build_config(None, [], data)


def test_config_validation_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="protocols.classification.*lrr"):
        _grid(tmp_path, protocols={"classification": {"lrr": 1}})
    with pytest.raises(ConfigError, match="unknown task 'detection'"):
        _grid(tmp_path, protocols={"detection": {}})
    with pytest.raises(ConfigError, match="names must be unique"):
        _grid(tmp_path, methods=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ConfigError, match="method 'a'"):
        _grid(tmp_path, methods=[{"name": "a", "overrides": {"classification": {"epochs": -1}}}])
    with pytest.raises(ConfigError, match="unknown task 'caption'"):
        _grid(tmp_path, datasets=[{"name": "cxr_phantom_benchx", "tasks": ["caption"]}])
    with pytest.raises(ConfigError, match="text_metrics: unknown 'spice'"):
        _grid(tmp_path, protocols={"report_generation": {"text_metrics": ["spice"]}})
    (tmp_path / "x").mkdir()
    (tmp_path / "other").mkdir()
    _, cfg = _grid(tmp_path, data_root=str(tmp_path / "x"), datasets=[
        {"name": "covidx_cxr4"}, {"name": "tbx11k", "args": {"root": str(tmp_path / "other")}}])
    assert cfg.datasets[0].args["root"] == str(tmp_path / "x") and cfg.datasets[1].args["root"] == str(
        tmp_path / "other")
    _, cfg = _grid(tmp_path, methods=[{"name": "a", "overrides": {"classification": {"lr": 0.03}}}])
    assert cfg.protocol("classification", cfg.methods[0]).lr == 0.03  # per-method LR as data
    assert cfg.protocol("classification", None).encoder_lr_mult == 0.1  # BenchX default
    assert cfg.protocol("segmentation", None).schedule == "poly"


def test_cells_cached_resumed_and_aggregated(tmp_path, monkeypatch):
    calls = []

    def fake(method, data, proto, seed, out):
        calls.append((method.name, len(data.train), seed))
        v = {"a": 0.6, "b": 0.8}[method.name] + 0.01 * seed
        return {"test": {"auroc": v, "per_class_auroc": {"x": v}}, "val": {"auroc": v}}

    monkeypatch.setitem(PROTOCOLS, "classification", fake)
    spec, cfg = _grid(tmp_path)
    summary = spec.run(cfg)
    assert summary["finished"] == 8 and len(calls) == 8
    assert {n for _, n, _ in calls} == {14, 29}  # 50 % and 100 % of the 29 training phantoms (patient split)
    calls.clear()
    spec.run(cfg)
    assert calls == []  # every cell cached
    # a cell killed mid-run (run/ left, no metrics.json) is the only one run again
    cell = next(c for c in bg.grid_cells(cfg) if c.method == "b" and c.seed == 1 and c.fraction == 1.0)
    (tmp_path / "g" / cell.rel / "metrics.json").unlink()
    (tmp_path / "g" / cell.rel / "run").mkdir()
    spec.run(cfg)
    assert calls == [("b", 29, 1)]
    rows = json.loads((tmp_path / "g" / "summary.json").read_text())["rows"]
    b = next(r for r in rows if r["method"] == "b" and r["fraction"] == 1.0)
    assert b["auroc_mean"] == pytest.approx(0.805) and b["auroc_sd"] == pytest.approx(0.00707107, abs=1e-6)
    md = (tmp_path / "g" / "leaderboard.md").read_text()
    assert "| b | 0.8050 ± 0.0071 | 0.8050 ± 0.0071 | 0, 1 |" in md


def test_failing_cell_is_reported_and_grid_continues(tmp_path, monkeypatch):
    def fake(method, data, proto, seed, out):
        if method.name == "a":
            raise RuntimeError("boom")
        return {"test": {"auroc": 0.7}, "val": {}}

    monkeypatch.setitem(PROTOCOLS, "classification", fake)
    spec, cfg = _grid(tmp_path, fractions=[1.0], seeds=[0])
    s = spec.run(cfg)
    assert s["failed"] == 1 and s["finished"] == 1
    assert "RuntimeError: boom" in (tmp_path / "g" / "failures.csv").read_text()


@pytest.mark.slow
def test_tiny_grid_end_to_end_all_protocols(tmp_path):
    torch.set_num_threads(1)
    small = {"epochs": 2, "batch_size": 16, "warmup_steps": 1, "patience": 3}
    spec, cfg = _grid(
        tmp_path, methods=[{"name": "random", **TINY}, {"name": "lora", **TINY, "peft": "lora",
                                                         "peft_config": {"r": 2}}],
        datasets=[{"name": "cxr_phantom_benchx", "args": {"n": 40, "seed": 0, "image_size": 32}, "image_size": 32,
                   "tasks": ["classification", "segmentation", "report_generation", "retrieval"]}],
        fractions=[1.0], seeds=[0], plots=True,
        protocols={"classification": small, "segmentation": small,
                   "report_generation": {**small, "epochs": 1, "d_model": 32, "heads": 4, "max_len": 20,
                                         "min_count": 1},
                   "retrieval": {**small, "embed_dim": 16}})
    s = spec.run(cfg)
    assert s["failed"] == 0 and s["finished"] == 8
    rows = {(r["method"], r["task"]): r for r in s["rows"]}
    assert 0.0 <= rows[("random", "segmentation")]["dice_mean"] <= 1.0
    assert rows[("random", "segmentation")]["empty_mask_dice_mean"] == 0.0
    assert {"BLEU_1_mean", "ROUGE_L_mean", "CIDEr_mean"} <= set(rows[("lora", "report_generation")])
    assert "hits@1_mean" in rows[("lora", "retrieval")] and "zeroshot_auroc_mean" in rows[("lora", "retrieval")]
    assert (tmp_path / "g" / "plots" / "cxr_phantom_benchx_segmentation.png").stat().st_size > 1000
    lc = json.loads((tmp_path / "g" / bg.Cell("lora", "cxr_phantom_benchx", "classification", 1.0, 0).rel
                     / "cell.json").read_text())
    assert lc["method_spec"]["peft"] == "lora" and lc["protocol"]["encoder_lr_mult"] == 0.1


def test_trainer_early_stopping_restores_best(tmp_path):
    from medvit.train import Trainer
    from medvit.train.config import TrainConfig

    model = torch.nn.Linear(2, 1)
    data = [{"x": torch.ones(2)} for _ in range(4)]
    scores = iter([0.5, 0.9, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0])
    cfg = TrainConfig(steps=8, batch_size=2, lr=0.1, eval_every=1, early_stop_patience=2, progress=False)
    tr = Trainer(model, cfg, data, lambda m, b: m(b["x"]).pow(2).mean(),
                 evaluate=lambda m: {"v": next(scores)}, select_metric="v")
    res = tr.fit()
    assert tr.stopped_early and res.steps == 4 and res.best["step"] == 2.0


def test_poly_schedule():
    from medvit.train.schedule import poly_lr

    assert poly_lr(5, 1.0, 100, 10) == 0.5  # warmup
    assert poly_lr(10, 1.0, 100, 10) == 1.0
    assert poly_lr(55, 1.0, 100, 10) == pytest.approx(0.5)
    assert poly_lr(100, 1.0, 100, 10) == 0.0


def test_preset_on_a_native_layout_folder_one_command(tmp_path):
    """pipelines/benchx/object_cxr.yaml + data_root on an Object-CXR folder (as published) runs classification and
    segmentation cells; splits are drawn and saved under the folder."""
    from PIL import Image

    from medvit.tasks.base import run_task

    torch.set_num_threads(1)
    root = tmp_path / "object-cxr"
    rows = {"train": [], "dev": []}
    rng = torch.Generator().manual_seed(0)
    for k in range(40):
        part = "train" if k < 32 else "dev"
        (root / part).mkdir(parents=True, exist_ok=True)
        img = (torch.rand(32, 32, generator=rng) * 80).to(torch.uint8)
        ann = ""
        if k % 2:
            img[8:16, 8:16] = 250
            ann = "0 8 8 15 15"
        Image.fromarray(img.numpy()).save(root / part / f"{k}.png")
        rows[part].append(f"{k}.png,{ann}")
    for part, rs in rows.items():
        (root / f"{part}.csv").write_text("image_name,annotation\n" + "\n".join(rs) + "\n")
    method = ("methods=[{name: tiny, backbone: vit_tiny_patch16_224, backbone_args: {patch_size: 8, embed_dim: 32, "
              "depth: 2, num_heads: 2}}]")
    s = run_task("pipelines/benchx/object_cxr.yaml", [
        f"data_root={root}", f"output_dir={tmp_path / 'out'}", method, "fractions=[1.0]", "seeds=[0]",
        "datasets=[{name: object_cxr, image_size: 32, tasks: [classification, segmentation]}]", "plots=false",
        "protocols.classification={steps: 4, batch_size: 8, warmup_steps: 1, eval_every: 2}",
        "protocols.segmentation={steps: 4, batch_size: 8, warmup_steps: 1, eval_every: 2}"])
    assert s["finished"] == 2 and s["failed"] == 0
    assert sorted(p.name for p in (root / "benchx_splits").iterdir())[0] == "test.txt"
    assert {r["task"] for r in s["rows"]} == {"classification", "segmentation"}


def test_missing_data_root_fails_before_the_grid_and_failed_cells_set_the_exit_code(tmp_path, monkeypatch, capsys):
    """breaker F5: a data_root that does not exist made every cell fail, yet `medvit run` (and --dry-run) exited 0."""
    import yaml

    from medvit.cli.main import main

    pipe = tmp_path / "grid.yaml"
    data = {"task": "benchx_grid", "output_dir": str(tmp_path / "g"), "methods": [{"name": "a", **TINY},
                                                                                  {"name": "b", **TINY}],
            "datasets": [{"name": "cxr_phantom_benchx", "args": {"n": 40, "seed": 0, "image_size": 32},
                          "image_size": 32, "tasks": ["classification"]}],
            "fractions": [1.0], "seeds": [0], "plots": False}
    pipe.write_text(yaml.safe_dump(data))
    for argv in (["--dry-run"], []):
        assert main(["run", str(pipe), "data_root=/nonexistent_dir", *argv]) == 2
        assert "data_root '/nonexistent_dir': no such folder" in capsys.readouterr().err
    assert main(["run", str(pipe), "--dry-run", "datasets=[{name: covidx_cxr4, args: {root: /nonexistent_dir}}]"]) == 2
    assert "datasets[0].args.root '/nonexistent_dir'" in capsys.readouterr().err

    def fake(method, data, proto, seed, out):
        if method.name == "a":
            raise RuntimeError("boom")
        return {"test": {"auroc": 0.7}, "val": {}}

    monkeypatch.setitem(PROTOCOLS, "classification", fake)
    assert main(["run", str(pipe)]) == 3  # a failed, b finished
    assert "1 of 2 failed" in capsys.readouterr().err
    assert main(["run", str(pipe), f"output_dir={tmp_path / 'g2'}", "methods=[{name: a}]"]) == 4  # nothing finished
    assert "nothing finished" in capsys.readouterr().err
