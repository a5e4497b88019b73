"""`medvit infer --precision int8` with a PTQ checkpoint runs at any `--batch-size` (issue 24): its stored int8
parameters are calibrated once, offline, so nothing depends on the first batch; a plain checkpoint still needs a
calibration batch of >= 8 images."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from medvit.infer import InferConfig, run_inference
from tests.infer.helpers import LABELS, make_model, make_studies

pytest.importorskip("torchao")


def probabilities(out) -> np.ndarray:
    with open(out / "predictions.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["sop_instance_uid"])
    return np.array([[float(r[f"p_{k}"]) for k in LABELS] for r in rows])


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    from medvit.compress.ptq import PTQConfig, ptq_calibrate, save_ptq_checkpoint
    from medvit.models import load_model

    root = tmp_path_factory.mktemp("ptqbatch")
    plain = make_model(root / "plain")
    model = load_model(plain).eval()
    g = torch.Generator().manual_seed(3)
    cal = [torch.randn(8, 1, 32, 32, generator=g) for _ in range(2)]
    qm, res = ptq_calibrate(model, cal, PTQConfig(recon_iters=0, search_rows=512))
    ptq = save_ptq_checkpoint(qm, res, root / "ptq", contract=model.contract)
    make_studies(root / "in", n_studies=2, per_study=2)
    return {"root": root, "plain": plain, "ptq": ptq, "input": root / "in"}


def test_ptq_checkpoint_runs_int8_below_batch_8(material, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVIT_COMPILE_CACHE", str(tmp_path / "cache"))
    probs = {}
    for bs in (1, 3):  # batch 3 over 4 images: the last chunk is padded to the compiled shape
        out = tmp_path / f"b{bs}"
        r = run_inference(InferConfig(str(material["ptq"]), str(material["input"]), str(out), batch_size=bs,
                                      workers=0, precision="int8", progress=False))
        assert r.counts["predicted"] == 4
        ex = json.loads((out / "run.json").read_text())["execution"]
        assert ex["precision"] == "int8" and ex["int8_calibration"]["run_independent"] is True
        assert ex["compile_cache"]["shape"][0] == bs
        probs[bs] = probabilities(out)
    # stored parameters, not the run's images: the batch size changes nothing but rounding in the int8 kernels
    np.testing.assert_allclose(probs[1], probs[3], atol=1e-4)


def test_plain_checkpoint_int8_still_needs_a_calibration_batch(material, tmp_path):
    with pytest.raises(ValueError, match=r"--batch-size >= 8 .*PTQ checkpoint"):
        InferConfig(str(material["plain"]), str(material["input"]), str(tmp_path / "o"), batch_size=4,
                    precision="int8", progress=False)
    InferConfig(str(material["plain"]), str(material["input"]), str(tmp_path / "o"), batch_size=8,
                precision="int8", progress=False)  # accepted
    with pytest.raises(ValueError, match="int8_rest"):
        InferConfig(str(material["plain"]), str(material["input"]), str(tmp_path / "o"), precision="bf16",
                    int8_rest="fp32", progress=False)


def test_plain_checkpoint_int8_refuses_to_calibrate_on_fewer_than_8_images(material, tmp_path, monkeypatch):
    """--batch-size 8 over an input of 4 images: the first batch (the calibration) holds 4, so the run is refused
    naming the count, and no package calibrated on them is cached for later runs (breaker B15)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDVIT_COMPILE_CACHE", str(cache))
    with pytest.raises(ValueError, match=r"first batch, which holds 4 image\(s\).*>= 8 images.*PTQ checkpoint"):
        run_inference(InferConfig(str(material["plain"]), str(material["input"]), str(tmp_path / "o"),
                                  batch_size=8, workers=0, precision="int8", progress=False))
    assert not list(cache.rglob("*.pt2"))


def test_int8_refusal_counts_decodable_images_not_files(material, tmp_path, monkeypatch):
    """recheck wording: 8 files of which 3 undecodable were refused as "the input has fewer than the batch size";
    the message now says how many decodable images the calibrating batch had."""
    import shutil

    monkeypatch.setenv("MEDVIT_COMPILE_CACHE", str(tmp_path / "cache"))
    inbox = tmp_path / "in"
    shutil.copytree(material["input"], inbox)
    good = sorted(p for p in inbox.rglob("*") if p.is_file())
    for i in range(4):  # 4 truncated copies: the first 128-byte preamble and "DICM", no data set
        (inbox / f"broken{i}.dcm").write_bytes(good[0].read_bytes()[:140])
    with pytest.raises(ValueError, match=r"which holds 4 image\(s\) \(the input had only 4 decodable image\(s\) "
                                         r"for a batch of 8; files that could not be decoded"):
        run_inference(InferConfig(str(material["plain"]), str(inbox), str(tmp_path / "o"), batch_size=8,
                                  workers=0, precision="int8", progress=False))
