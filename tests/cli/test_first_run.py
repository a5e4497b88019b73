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
                                         ("weight", "weight ("), ("weights", "weight ("), ("PEFT", "peft (")])
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


def test_extract_features_demo_embeds_its_two_images_and_missing_inputs_fail(tmp_path, capsys):
    import json

    demo = ROOT / "pipelines" / "extract_features" / "demo.yaml"
    small = ["backbone_args={patch_size: 16, embed_dim: 32, depth: 1, num_heads: 2}"] \
        if "backbone_args" in demo.read_text() else []
    rc = main(["run", str(demo), f"output_dir={tmp_path / 'out'}", "image_size=32", "precision=fp32", *small])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_images"] == 2 and not summary["failed"]
    rc = main(["run", str(demo), f"output_dir={tmp_path / 'o2'}", f"inputs=[{tmp_path / 'nope.dcm'}]"])
    assert rc != 0 and "not found" in capsys.readouterr().err and "nope.dcm" not in json.dumps(summary)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    rc = main(["run", str(demo), f"output_dir={tmp_path / 'o3'}", f"inputs=[{tmp_path / 'junk.png'}]",
               "image_size=32"])
    assert rc != 0 and "none of the 1 input(s)" in capsys.readouterr().err


def test_run_prints_a_short_readable_summary_and_where_results_are(tmp_path, capsys):
    """Fine-tuning via `medvit run`: the AUROC table as text (not an escaped JSON string), long loss lists as one
    line, results.md's path; the whole summary stays available with --json (and in summary.json)."""
    import json

    import yaml

    cfg = {"task": "finetune_multilabel", "dataset": "cxr_phantom", "dataset_args": {"n": 80, "seed": 0,
           "image_size": 32}, "backbone": "vit_tiny_patch16_224",
           "backbone_args": {"patch_size": 16, "embed_dim": 32, "depth": 1, "num_heads": 2}, "image_size": 32,
           "output_dir": str(tmp_path / "ft"), "train": {"steps": 3, "batch_size": 8, "progress": False}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "p.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("medvit run: done") and len(out.splitlines()) < 60
    assert "\\n" not in out and "test_mean_auroc: " in out and "seeds: 1 entries" in out
    assert f"results.md: {tmp_path / 'ft' / 'results.md'}" in out
    assert main(["run", str(tmp_path / "p.yaml"), f"output_dir={tmp_path / 'ft2'}", "--json"]) == 0
    assert "seeds" in json.loads(capsys.readouterr().out)
