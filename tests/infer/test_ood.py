"""Out-of-distribution warning: reference of the training features, flag on clearly different inputs (a CT slice),
false-positive rate on held-out phantoms; infer columns, SR and viewer carry it."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch


def _phantom_model(out: Path, tmp: Path) -> tuple[Path, dict]:
    """A tiny ViT (random weights: its pooled features are still image statistics) with an OOD reference fitted
    on in-memory chest phantoms, threshold at 5 % FPR on their validation split."""
    import medvit
    from medvit.data import build_dataset
    from medvit.data.augment import build_contract_eval_transform
    from medvit.data.phantom_cxr import CXR_LABELS
    from medvit.eval.predict import cache_dataset
    from medvit.models import WeightContract, save_checkpoint
    from medvit.tasks.finetune_multilabel import fit_ood

    torch.manual_seed(0)
    m = medvit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4,
                            in_chans=1, num_classes=len(CXR_LABELS), global_pool="avg").eval()
    c = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.52,), std=(0.29,), label_names=list(CXR_LABELS),
                       modalities=["CR", "DX"], name="ood-test", version="1")
    tf = build_contract_eval_transform(c)
    args = {"n": 700, "seed": 0, "image_size": 32}
    train = build_dataset("cxr_phantom", "train", **args)
    val = cache_dataset(build_dataset("cxr_phantom", "val", **args), tf, keys=("image",))
    test = cache_dataset(build_dataset("cxr_phantom", "test", **args), tf, keys=("image",))
    info = fit_ood(m, train, val, test, tf, 0.05, 10_000, 64, "cpu", out)
    c.ood = info
    return save_checkpoint(m, out, contract=c), info


@pytest.fixture(scope="module")
def ood_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("ood")
    return _phantom_model(d / "model", d)


def test_fpr_on_held_out_phantoms_and_ct_flagged(ood_model, tmp_path):
    from pydicom.data import get_testdata_file

    from medvit.data import build_dataset
    from medvit.data.augment import build_contract_eval_transform
    from medvit.infer.predictor import Predictor, load_for_inference
    from medvit.infer.preprocess import Preprocessor
    from medvit.io import read_image

    model_dir, info = ood_model
    assert info["val_fpr"] == pytest.approx(0.05, abs=0.03)
    assert info["test_fpr"] <= 0.15  # the test split of the fitting run
    model, contract, _ = load_for_inference(model_dir)
    pred = Predictor(model, multilabel=True)
    # held-out phantoms of another seed: the flag rate stays near the stated 5 %
    tf = build_contract_eval_transform(contract)
    held = build_dataset("cxr_phantom", "all", n=300, seed=11, image_size=32)
    x = torch.stack([tf(held[i])["image"] for i in range(len(held))]).numpy()
    _, scores = pred.predict_with_ood(x)
    fpr = float(np.mean(scores >= contract.ood["threshold"]))
    assert fpr <= 0.12, fpr
    # clearly different inputs: a CT slice and an MR slice from pydicom's test files
    pre = Preprocessor.from_contract(contract)
    for name in ("CT_small.dcm", "MR_small.dcm"):
        xi, _, _ = pre(read_image(get_testdata_file(name)))
        _, s = pred.predict_with_ood(xi[None])
        assert s[0] >= contract.ood["threshold"], (name, s[0], contract.ood["threshold"])
    # a changed reference file is refused
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    data = bytearray((bad / "ood.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "ood.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_for_inference(bad)


def test_infer_columns_sr_and_viewer_carry_the_flag(ood_model, tmp_path):
    from pydicom.data import get_testdata_file

    from apps.viewer import cache
    from medvit.data.synth import write_synth
    from medvit.infer import InferConfig, run_inference
    from medvit.io.sr import read_findings

    model_dir, _ = ood_model
    inbox = tmp_path / "in"
    write_synth("cxr", 6, inbox / "phantoms", fmt="dicom", seed=21, image_size=48, masks=False)
    (inbox / "ct").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), inbox / "ct" / "ct.dcm")
    res = run_inference(InferConfig(str(model_dir), str(inbox), str(tmp_path / "out"), workers=0, sr=True,
                                    any_modality=True, progress=False, batch_size=1))  # as the viewer runs it
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert rows["ct/ct.dcm"]["ood_flag"] == "True" and float(rows["ct/ct.dcm"]["ood_score"]) > 0
    phantom_flags = [r["ood_flag"] for k, r in rows.items() if k.startswith("phantoms/")]
    assert len(phantom_flags) == 6 and phantom_flags.count("True") <= 2
    assert res.counts["ood_flagged"] >= 1
    from medvit.cli.infer_cmd import format_summary

    assert "flagged out of distribution" in format_summary(res)
    ct_sr = [p for p in (tmp_path / "out" / "sr").glob("*.dcm")
             if any(g.get("code") == ("ood", "99MEDVIT") and g.get("present") for g in read_findings(p))]
    assert len(ct_sr) == 1
    groups = [g for g in read_findings(ct_sr[0]) if g.get("code") == ("ood", "99MEDVIT")]
    assert groups[0]["ood_score"] == pytest.approx(float(rows["ct/ct.dcm"]["ood_score"]), abs=1e-3)
    # the viewer's prediction path reports the same score and flag
    path = str(inbox / "ct" / "ct.dcm")
    lm = cache.load_model(str(model_dir))
    got = cache.predict(str(model_dir), lm.info.sha256, path, cache.mtime(path), None)
    assert got["ood"]["flag"] is True
    assert got["ood"]["score"] == pytest.approx(float(rows["ct/ct.dcm"]["ood_score"]), abs=1e-3)
