"""apps/batch: Holoscan-style environment variables map onto `medvit infer` arguments."""

from __future__ import annotations

from apps.batch.__main__ import build_argv


def test_environment_supplies_missing_paths_and_sr_default():
    env = {"HOLOSCAN_MODEL_PATH": "/m", "HOLOSCAN_INPUT_PATH": "/in", "HOLOSCAN_OUTPUT_PATH": "/out"}
    assert build_argv([], env) == ["infer", "-m", "/m", "-i", "/in", "-o", "/out", "--sr"]
    argv = build_argv(["-o", "/mine", "--heatmaps", "--no-sr"], env)
    assert argv == ["infer", "-m", "/m", "-i", "/in", "-o", "/mine", "--heatmaps"]
    assert build_argv(["--model", "x"], {})[:3] == ["infer", "--model", "x"]


def test_runs_medvit_infer(tmp_path, monkeypatch):
    from apps.batch.__main__ import main
    from tests.infer.helpers import make_model, make_studies

    model = make_model(tmp_path / "model")
    make_studies(tmp_path / "in", n_studies=1, per_study=1)
    monkeypatch.setenv("HOLOSCAN_MODEL_PATH", str(model))
    monkeypatch.setenv("HOLOSCAN_INPUT_PATH", str(tmp_path / "in"))
    monkeypatch.setenv("HOLOSCAN_OUTPUT_PATH", str(tmp_path / "out"))
    assert main(["--workers", "0", "--quiet"]) == 0
    assert len(list((tmp_path / "out" / "sr").glob("*.dcm"))) == 1
