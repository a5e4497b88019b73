"""`medvit demo` wiring with a stand-in model (the real one is trained by pipelines/demo; too slow for tests)."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _tiny_cxr_model(out: Path) -> Path:
    import torch

    import medvit
    from medvit.data.phantom_cxr import CXR_LABELS
    from medvit.models import WeightContract, save_checkpoint

    torch.manual_seed(0)
    m = medvit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=48, depth=1, num_heads=4,
                            in_chans=1, num_classes=len(CXR_LABELS), global_pool="avg")
    c = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.523,), std=(0.287,), label_names=list(CXR_LABELS),
                       version="stand-in", source="tests/infer/test_demo.py")
    return save_checkpoint(m, out, contract=c)


def test_demo_end_to_end_with_stand_in_model(tmp_path, monkeypatch, capsys):
    from medvit.cli import demo_cmd

    monkeypatch.setattr(demo_cmd, "demo_model", lambda cache, retrain=False: _tiny_cxr_model(tmp_path / "model"))
    rc = demo_cmd.run(argparse.Namespace(out=str(tmp_path / "demo"), n=4, retrain=False, cache=str(tmp_path / "c")))
    text = capsys.readouterr().out
    assert rc == 0
    assert "$ medvit infer -m" in text and "--sr --heatmaps --rules" in text
    assert "research use only" in text.lower() and "per-label agreement" in text
    assert "all-negative baseline" in text and "sensitivity" in text and "specificity" in text
    res = tmp_path / "demo" / "results"
    with open(res / "status.csv", newline="") as f:
        status = {r["file"]: r for r in csv.DictReader(f)}
    assert sum(r["status"] == "predicted" for r in status.values()) == 4
    assert status["extras/CT_small.dcm"]["stage"] == "select"
    assert status["extras/truncated_dx.dcm"]["status"] == "error"
    assert status["extras/DICOMDIR"]["status"] == "skipped"
    assert status["extras/README.txt"]["reason"] == "not a DICOM file"
    assert len(list((res / "sr").glob("*.dcm"))) >= 1
    assert len(list((res / "heatmaps").rglob("*.png"))) == 4


def test_committed_demo_model_checks(tmp_path, monkeypatch):
    from medvit.cli import demo_cmd

    model = _tiny_cxr_model(tmp_path / "model")
    monkeypatch.setattr(demo_cmd, "COMMITTED", model)
    assert not demo_cmd._committed_model_ok("abc")  # no stamp
    (model / "PIPELINE_SHA256").write_text("abc\n")
    assert demo_cmd._committed_model_ok("abc")
    assert not demo_cmd._committed_model_ok("def")  # trained by another version of the YAML
    data = bytearray((model / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (model / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        demo_cmd._committed_model_ok("abc")


def test_demo_model_trains_into_cache_when_yaml_changed(tmp_path, monkeypatch):
    """The (re)training branch: a tiny variant of the demo YAML trains into the cache and is stamped."""
    import yaml

    from medvit.cli import demo_cmd

    doc = yaml.safe_load(demo_cmd.PIPELINE.read_text())
    doc["dataset_args"] = {"n": 60, "seed": 0, "image_size": 32}
    doc["image_size"] = 32
    doc["backbone_args"] = {"patch_size": 16, "embed_dim": 32, "depth": 1, "num_heads": 2}
    doc["train"].update(epochs=1, batch_size=16)
    doc["eval_batch_size"] = 32
    tiny = tmp_path / "tiny_demo.yaml"
    tiny.write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(demo_cmd, "PIPELINE", tiny)  # no committed model matches this YAML
    cache = tmp_path / "cache"
    model = demo_cmd.demo_model(cache)
    assert model == cache / "model" and (model / "model.safetensors").is_file()
    import hashlib

    assert (cache / "PIPELINE_SHA256").read_text().strip() == hashlib.sha256(tiny.read_bytes()).hexdigest()
    mtime = (model / "model.safetensors").stat().st_mtime
    assert demo_cmd.demo_model(cache) == model  # cached: not retrained
    assert (model / "model.safetensors").stat().st_mtime == mtime


def test_committed_demo_model_still_fits_todays_phantoms():
    """Guards the committed weights against phantom-generator changes: fresh held-out phantoms (another seed)
    must still be read (Cardiomegaly clearly, the 7 findings on average better than chance)."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from medvit.cli import demo_cmd
    from medvit.data import build_dataset
    from medvit.data.augment import build_contract_eval_transform
    from medvit.models import load_model

    model = load_model(demo_cmd.COMMITTED).eval()
    c = model.contract
    tf = build_contract_eval_transform(c)  # drawn at the demo's size, resized by the contract as medvit infer does
    ds = build_dataset("cxr_phantom", "test", n=1200, seed=5, image_size=demo_cmd.pipeline_draw_size())
    x = torch.stack([tf(ds[i])["image"] for i in range(len(ds))])
    y = torch.stack([ds[i]["label"] for i in range(len(ds))]).numpy()
    with torch.inference_mode():
        p = torch.sigmoid(model(x)).numpy()
    auc = {k: roc_auc_score(y[:, i], p[:, i]) for i, k in enumerate(c.label_names) if 0 < y[:, i].sum() < len(y)}
    assert auc["Cardiomegaly"] > 0.9, auc
    assert np.mean(list(auc.values())) > 0.6, auc


def test_committed_demo_model_declares_scope_and_flags_foreign_images():
    """The committed contract: name/version, CR/DX chest PA/AP scope, an OOD reference (SHA-256 checked) that
    flags CT/MR slices and about 5 % of fresh phantoms (a seed it never saw)."""
    import numpy as np
    import torch
    from pydicom.data import get_testdata_file

    from medvit.cli import demo_cmd
    from medvit.data import build_dataset
    from medvit.data.augment import build_contract_eval_transform
    from medvit.infer.predictor import Predictor, load_for_inference
    from medvit.infer.preprocess import Preprocessor
    from medvit.io import read_image

    model, c, info = load_for_inference(demo_cmd.COMMITTED)
    assert (info.name, info.version) == ("medvit-demo-cxr-phantom", "3")
    assert c.modalities == ["CR", "DX"] and c.view_positions == ["PA", "AP"] and c.body_parts == ["CHEST"]
    assert c.ood["target_fpr"] == 0.05 and c.ood["val_fpr"] <= 0.08 and c.ood["test_fpr"] <= 0.08
    pred = Predictor(model)
    tf = build_contract_eval_transform(c)
    ds = build_dataset("cxr_phantom", "all", n=300, seed=5, image_size=demo_cmd.pipeline_draw_size(),
                       **demo_cmd.pipeline_knobs())  # the phantoms' distribution the model was trained on
    _, s = pred.predict_with_ood(torch.stack([tf(ds[i])["image"] for i in range(len(ds))]).numpy())
    assert float(np.mean(s >= c.ood["threshold"])) <= 0.12
    pre = Preprocessor.from_contract(c)
    from pathlib import Path

    import pynetdicom

    portal = Path(pynetdicom.__file__).parent / "tests" / "dicom_files" / "RTImageStorage.dcm"  # a projection image
    for f in (get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm"), portal):
        x, _, _ = pre(read_image(f))
        assert pred.predict_with_ood(x[None])[1][0] >= c.ood["threshold"], f


@pytest.mark.parametrize("sub", ["", "x"])
def test_demo_out_that_is_a_file_is_a_one_line_error(tmp_path, monkeypatch, capsys, sub):
    """Breaker F12: `medvit demo --out FILE` (or a path under a file) ends with exit 2 and an error naming --out,
    no traceback, before the model is loaded or anything is written."""
    from medvit.cli import demo_cmd
    from medvit.cli.main import main

    f = tmp_path / "f"
    f.write_text("not a folder")
    monkeypatch.setattr(demo_cmd, "demo_model", lambda *a, **k: pytest.fail("--out must be checked first"))
    rc = main(["demo", "--out", str(f / sub if sub else f), "--cache", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--out" in err and "not a folder" in err and "Traceback" not in err
    assert f.read_text() == "not a folder"
