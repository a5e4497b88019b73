"""breaker33 B15: `medvit data synth` option errors name the option and the value (they were Python's / numpy's
words: "RetinaPhantomGenerator.__init__() got an unexpected keyword argument 'prevalence'", "expected non-negative
integer", "prevalence and healthy_fraction must lie in [0, 1]"), and nothing is written."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("extra, msg", [
    (["--kind", "retina", "--knob", "prevalence=0.3"], "--knob prevalence: 'prevalence' is a chest-only knob; retina "
                                                       "phantoms take ['lesion_contrast'"),
    (["--kind", "cxr", "--knob", "prevalence=nan"], "--knob prevalence must be a finite number, got nan"),
    (["--kind", "cxr", "--knob", "healthy_fraction=2"], "--knob healthy_fraction (a probability) must lie in [0, 1], "
                                                        "got 2.0"),
    (["--kind", "cxr", "--seed", "-1"], "--seed must be >= 0 (a random seed), got -1"),
    (["--kind", "cxr", "--size", "100000"], "--size (pixels a side) must be <= 4,096"),
    (["--kind", "cxr", "--knob", "lesion_size=9"], "medvit data synth: phantom knob lesion_size=9.0 is outside"),
], ids=["retina prevalence", "nan", "healthy_fraction", "seed", "size", "lesion_size"])
def test_synth_names_the_bad_option_and_writes_nothing(tmp_path, capsys, extra, msg):
    from medvit.cli.main import main

    out = tmp_path / "out"
    rc = main(["data", "synth", "--n", "3", "--size", "32", "--format", "png", "--no-masks", "--out", str(out), *extra])
    assert rc == 2 and msg in capsys.readouterr().err
    assert not out.exists()
