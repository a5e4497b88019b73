"""Breaker s32 B13: `dataset_args` are checked at config resolution (`--dry-run`), naming the key: an unknown knob
was a Python signature error at run time, out-of-range knobs passed the dry run."""

from __future__ import annotations

import pytest

RETINA = "pipelines/dvpt/retina_tiny_cpu.yaml"


@pytest.mark.parametrize("override,match", [
    ("dataset_args.lesionsize=2", r"dataset_args\.lesionsize: retina_phantom takes no argument 'lesionsize'; "
                                  r"did you mean 'lesion_size'"),
    ("dataset_args.nosuchknob=1", r"dataset_args\.nosuchknob: retina_phantom takes no argument"),
    ("dataset_args.lesion_size=-1", r"dataset_args: phantom knob lesion_size=-1 is outside \(0\.0, 4\.0\]"),
    ("dataset_args.lesion_size=.nan", r"phantom knob lesion_size=nan is outside"),
    ("dataset_args.lesion_size=abc", r"phantom knob lesion_size must be a number, got 'abc'"),
    ("dataset_args.anatomy=-0.5", r"phantom knob anatomy=-0\.5 is outside \[0\.0, 2\.0\]"),
])
def test_dry_run_refuses_bad_dataset_args_naming_the_key(override, match):
    from medvit.config import ConfigError
    from medvit.tasks import build_config

    with pytest.raises(ConfigError, match=match):
        build_config(RETINA, [override])


def test_valid_dataset_args_and_plain_builders():
    from medvit.data.datasets import check_dataset_args
    from medvit.tasks import build_config

    _, cfg = build_config(RETINA, ["dataset_args.lesion_size=4"])
    assert cfg.dataset_args["lesion_size"] == 4
    build_config("pipelines/demo/cxr_phantom_demo.yaml", ["dataset_args.prevalence=0.3"])
    with pytest.raises(ValueError, match=r"dataset_args\.bogus: cxr_phantom takes no argument 'bogus'"):
        check_dataset_args("cxr_phantom", {"root": "/nonexistent", "bogus": 1})


def test_dry_run_cli_names_the_unknown_dataset_arg(capsys):
    from medvit.cli.main import main

    assert main(["run", "--dry-run", RETINA, "dataset_args.lesionsize=2"]) == 2
    assert "dataset_args.lesionsize" in capsys.readouterr().err
