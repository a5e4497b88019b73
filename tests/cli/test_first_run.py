"""Rough edges of a first run (issue 12): list kinds, closed pipes, summaries printed once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medvit.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind, shown", [("backbones", "backbone ("), ("backbone", "backbone ("),
                                         ("weight", "weights ("), ("weights", "weights ("), ("PEFT", "peft (")])
def test_list_accepts_singular_and_plural(capsys, kind, shown):
    assert main(["list", kind]) == 0
    assert capsys.readouterr().out.startswith(shown)


def test_list_unknown_kind_suggests_and_weights_say_presence(capsys, tmp_path, monkeypatch):
    assert main(["list", "bakbone"]) == 2
    assert "did you mean 'backbone'" in capsys.readouterr().err
    monkeypatch.setenv("MEDVIT_WEIGHTS", str(tmp_path))
    tag = "vit_small_patch16_224.cxr_mae"
    (tmp_path / tag).mkdir()
    (tmp_path / tag / "model.safetensors").write_bytes(b"x")
    assert main(["list", "weights"]) == 0
    lines = {x.split()[0]: x for x in capsys.readouterr().out.splitlines()[1:]}
    assert "[present:" in lines[tag]
    assert all("[not on this machine" in v for k, v in lines.items() if k != tag)


@pytest.mark.parametrize("argv", [["list"], ["dicom", "info", "CT_small.dcm"]])
def test_closed_pipe_ends_quietly(argv):
    """`medvit dicom info FILE | head`: the reader has gone; no BrokenPipeError traceback, exit as a shell would."""
    from pydicom.data import get_testdata_file

    argv = [get_testdata_file(a) if a.endswith(".dcm") else a for a in argv]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write: every write fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "medvit.cli.main", *argv], stdout=w, stderr=subprocess.PIPE,
                              env=env, timeout=120)
    finally:
        os.close(w)
    err = proc.stderr.decode()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 141


def test_data_synth_summary_printed_once(tmp_path, capfd):
    assert main(["data", "synth", "--kind", "cxr", "--n", "2", "--out", str(tmp_path / "p"), "--size", "64"]) == 0
    out, err = capfd.readouterr()
    assert (out + err).count("phantoms") == 1
