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


DEMO = "pipelines/demo/cxr_phantom_demo.yaml"


@pytest.mark.parametrize("path,override,match", [
    (DEMO, "dataset_args.n=-5", r"dataset_args\.n \(number of phantom images\) must be >= 1, got -5"),
    (DEMO, "dataset_args.image_size=0", r"dataset_args\.image_size must be >= 32 for chest phantoms, got 0"),
    (DEMO, "dataset_args.prevalence=abc", r"dataset_args\.prevalence: expected a number, got 'abc'"),
    (DEMO, "dataset_args.prevalence=2", r"dataset_args\.prevalence \(a probability\) must lie in \[0, 1\], got 2"),
    (DEMO, "dataset_args.n=2.5", r"dataset_args\.n: expected an integer, got 2\.5"),
    (DEMO, "dataset_args.seed=-1", r"dataset_args\.seed must be >= 0"),
    (DEMO, "dataset_args.with_masks=3", r"dataset_args\.with_masks: expected true/false"),
    (RETINA, "dataset_args.stage_probs=[1,0,0,0]", r"stage_probs must be 5 non-negative numbers summing to 1"),
])
def test_dry_run_refuses_what_the_run_refuses(path, override, match):
    """recheck B13 residual: these passed --dry-run (rc 0) and were refused only when the run built the data
    (prevalence=abc as a TypeError from a comparison)."""
    from medvit.config import ConfigError
    from medvit.tasks import build_config

    with pytest.raises(ConfigError, match=match):
        build_config(path, [override])


def test_dataset_args_take_the_values_the_run_uses():
    """n: 1e3 is a float in YAML 1.2 / JSON; the phantom builder takes the int the check converts it to."""
    from medvit.tasks import build_config

    _, cfg = build_config(DEMO, ["dataset_args.n=1e3", "dataset_args.label_noise_splits=[train]"])
    assert cfg.dataset_args["n"] == 1000 and isinstance(cfg.dataset_args["n"], int)
    _, cfg = build_config(DEMO, ["dataset_args.root=/nonexistent", "dataset_args.n=null", "dataset_args.seed=null"]
                          + [f"dataset_args.{k}=null" for k in ("lesion_contrast", "lesion_size", "anatomy")])
    assert cfg.dataset_args["root"] == "/nonexistent"  # a folder is read (and checked) by the run


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


FOLDER = ["dataset_args.root=/nonexistent", "dataset_args.n=null", "dataset_args.seed=null"]


@pytest.mark.parametrize("overrides,match", [
    ([], r"dataset_args\.lesion_contrast: a synth folder \(root=/nonexistent\) is read as it was drawn, so it takes no "
         r"knob 'lesion_contrast'.*manifest\.json 'knobs'.*medvit data synth --knob lesion_contrast="),
    (["dataset_args.lesion_contrast=null", "dataset_args.lesion_size=null", "dataset_args.anatomy=null",
      "dataset_args.label_noise_splits=[train]"], r"dataset_args\.label_noise_splits: a synth folder .* no knob"),
    (["dataset_args.lesion_contrast=null", "dataset_args.lesion_size=null", "dataset_args.anatomy=null",
      "dataset_args.with_masks=true"], r"dataset_args\.with_masks: a synth folder .* takes no 'with_masks', only "
                                      r"\['follow_links', 'image_size', 'in_chans', 'intensity', 'root'\]"),
    (["dataset_args.lesion_contrast=null", "dataset_args.lesion_size=null", "dataset_args.anatomy=null",
      "dataset_args.n=5"], r"give either root=DIR .* not both \(set dataset_args\.n=null dataset_args\.seed=null"),
    (["dataset_args.lesion_contrast=null", "dataset_args.lesion_size=null", "dataset_args.anatomy=null",
      "dataset_args.in_chans=0"], r"dataset_args\.in_chans must be 1 \(grey\) or 3"),
], ids=["demo knobs", "split knob", "with_masks", "n", "in_chans"])
def test_dry_run_refuses_in_memory_args_next_to_a_synth_folder(overrides, match):
    """breaker33 B1: knobs (the demo's lesion_contrast, label_noise, ...) next to root= passed --dry-run; the run
    died with "PhantomFolderDataset.__init__() got an unexpected keyword argument 'lesion_contrast'"."""
    from medvit.config import ConfigError
    from medvit.tasks import build_config

    with pytest.raises(ConfigError, match=match):
        build_config(DEMO, FOLDER + overrides)


def test_in_memory_args_set_to_null_are_dropped_when_reading_a_synth_folder(tmp_path):
    """breaker33 B1: `dataset_args.KNOB=null` (as n=null / seed=null) switches a preset's knob off; the run then
    reads the folder (before: TypeError from PhantomFolderDataset)."""
    from medvit.data import build_dataset
    from medvit.data.synth import write_synth
    from medvit.tasks import build_config

    write_synth("cxr", 6, tmp_path, fmt="png", image_size=32, masks=False)
    nulls = [f"dataset_args.{k}=null" for k in ("lesion_contrast", "lesion_size", "anatomy", "with_masks")]
    _, cfg = build_config(DEMO, [f"dataset_args.root={tmp_path}", "dataset_args.n=null", "dataset_args.seed=null",
                                 "dataset_args.image_size=32"] + nulls)
    ds = build_dataset("cxr_phantom", "all", **cfg.dataset_args)
    assert len(ds) == 6 and ds[0]["image"].shape == (1, 32, 32)


@pytest.mark.parametrize("override,match", [
    ("dataset_args.image_size=1e9", r"dataset_args\.image_size \(pixels a side\) must be <= 4,096 .*got 1,000,000,000"),
    ("dataset_args.n=1e9", r"dataset_args\.n \(number of phantom images\) must be <= 10,000,000"),
    ("dataset_args.fov_mm=-1", r"dataset_args\.fov_mm \(detector field of view in mm.*\) must be a number in "
                               r"\[50, 1000\], got -1"),
    ("dataset_args.fov_mm=.nan", r"dataset_args\.fov_mm\b.* must be a finite number"),
    ("dataset_args.fov_mm=0", r"dataset_args\.fov_mm .* must be a number in \[50, 1000\], got 0"),
    ("dataset_args.fov_mm=1e-300", r"dataset_args\.fov_mm .* must be a number in \[50, 1000\], got 1e-300"),
    ("dataset_args.in_chans=0", r"dataset_args\.in_chans must be 1 \(grey\) or 3 .*got 0"),
    ("dataset_args.in_chans=1e9", r"dataset_args\.in_chans must be 1 \(grey\) or 3"),
    ("dataset_args.transform=foo", r"dataset_args\.transform: the transform is set by the task"),
    ("dataset_args.healthy_fraction=-0.5", r"dataset_args\.healthy_fraction \(a probability\) must lie in \[0, 1\], "
                                           r"got -0\.5"),
    ("dataset_args.prevalence=.nan", r"dataset_args\.prevalence\b.* must be a finite number"),
])
def test_dry_run_refuses_in_memory_values_the_generator_cannot_use(override, match):
    """breaker33 B6 / B18: image_size=1e9 passed --dry-run (the check builds the generator at <= 256 px) and the run
    died with MemoryError; fov_mm -1 / NaN / 0 drew negative PixelSpacing or raised ZeroDivisionError; in_chans 0
    gave 1-channel items; transform=foo passed."""
    from medvit.config import ConfigError
    from medvit.tasks import build_config

    with pytest.raises(ConfigError, match=match):
        build_config(DEMO, [override])
