import json
import subprocess
import sys

import pytest
import yaml

from medvit.cli.main import main


def test_list_backbones(capsys):
    assert main(["list", "backbone"]) == 0
    out = capsys.readouterr().out
    assert "vit_small_patch16_224" in out and "backbone (" in out


def test_list_unknown_kind(capsys):
    assert main(["list", "backbonez"]) == 2  # (plural "backbones" is accepted: tests/cli/test_first_run.py)
    assert "unknown kind 'backbonez'; did you mean 'backbone'" in capsys.readouterr().err


def _all_commands() -> list[list[str]]:
    """Every subcommand path of the parser (nested groups included), plus the bare command."""
    import argparse

    from medvit.cli.main import build_parser

    out: list[list[str]] = [[]]

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out.append(prefix + [name])
                    walk(sub, prefix + [name])

    walk(build_parser(), [])
    return out


def test_help_everywhere():
    cmds = _all_commands()
    assert ["list"] in cmds and ["run"] in cmds
    for cmd in cmds:
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0, cmd


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "medvit.cli.main", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: medvit" in r.stdout


def test_run_pipeline_with_overrides(tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "a.npy", np.random.rand(40, 40).astype("float32"))
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    cfg = {"task": "extract_features", "inputs": [str(tmp_path / "a.npy"), str(tmp_path / "bad.npy")],
           "backbone": "vit_tiny_patch16_224", "image_size": 32, "output_dir": str(tmp_path / "out")}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "p.yaml"), "batch_size=2", "precision=bf16"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_images"] == 1 and summary["feature_dim"] == 192
    assert summary["failed"][0]["file"].endswith("bad.npy")
    resolved = yaml.safe_load((tmp_path / "out" / "config.resolved.yaml").read_text())
    assert resolved["batch_size"] == 2 and resolved["precision"] == "bf16"


def test_run_rejects_unknown_key(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("task: extract_features\ninputs: [x]\nbatchsize: 3\n")
    assert main(["run", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert "batchsize" in err and "batch_size" in err


def test_run_unknown_task(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("task: extract_feature\n")
    assert main(["run", str(tmp_path / "p.yaml")]) == 2
    assert "extract_features" in capsys.readouterr().err


def test_a_diverged_run_is_an_error_line_not_a_traceback(monkeypatch, capsys):
    """recheck N6: the training loops stop a diverged run (non-finite loss) with FloatingPointError before anything
    is saved; the CLI reports it as an error (rc 2, one line naming the cause) like any other refused run."""
    import medvit.cli.run_cmd as run_cmd
    from medvit.cli.main import main

    def diverge(args):
        raise FloatingPointError("loss is not finite (nan) at step 3; lower train.lr")

    monkeypatch.setattr(run_cmd, "run", diverge)
    assert main(["run", "pipelines/demo/cxr_phantom_demo.yaml"]) == 2
    err = capsys.readouterr().err
    assert "medvit run: error: loss is not finite (nan) at step 3" in err and "Traceback" not in err
