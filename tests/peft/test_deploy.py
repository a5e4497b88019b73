"""Every checkpoint a tuning task writes is deployable: tune -> `medvit infer` -> viewer, for full fine-tuning,
LoRA (adapter and merged) and DVPT (adapter on its recorded base), with tiny configs."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from medvit.tasks import run_task

pytestmark = pytest.mark.slow

TINY = dict(backbone="vit_tiny_patch16_224", backbone_args=dict(embed_dim=48, depth=2, num_heads=4), image_size=32,
            eval_batch_size=64, dataset="cxr_phantom", dataset_args=dict(n=80, image_size=32, seed=0),
            modalities=["CR", "DX"], view_positions=["PA", "AP"], ood_fpr=0.1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny base checkpoint; full FT, LoRA (+ merged) and DVPT runs from it; a DICOM inbox of phantoms."""
    from medvit.data.synth import write_synth
    from medvit.models import create_model, save_checkpoint

    root = tmp_path_factory.mktemp("deploy")
    torch.manual_seed(3)
    enc = create_model("vit_tiny_patch16_224", img_size=32, in_chans=1, num_classes=0, **TINY["backbone_args"])
    base = save_checkpoint(enc, root / "base")
    train = dict(epochs=1, batch_size=16, lr=1e-2, progress=False)
    run_task(None, [], data=dict(task="finetune_multilabel", output_dir=str(root / "ft"), pretrained=str(base),
                                 randaug="", train=dict(steps=2, batch_size=8, lr=1e-3, progress=False), **TINY))
    for method, mc, merged in (("lora", dict(r=2), True), ("dvpt", dict(rank=4, num_prompts=3), False)):
        run_task(None, [], data=dict(task="prompt_tune", output_dir=str(root / method), pretrained=str(base),
                                     method=method, method_config=mc, save_merged=merged, seeds=[0], train=train,
                                     **TINY))
    write_synth("cxr", 4, root / "inbox", fmt="dicom", seed=9, image_size=48, masks=False)
    return root


def _infer(model_dir, inbox, out, *extra):
    from medvit.cli.main import main

    # fp32 pinned by default: these tests compare tuning paths (adapter vs merged) to 1e-4, and the default
    # --precision auto picks bf16 on CPUs with native bf16 (AVX512-BF16/AMX), which moves probabilities ~1e-3
    rc = main(["infer", "-m", str(model_dir), "-i", str(inbox), "-o", str(out), "--workers", "0", "--sr",
               *(extra or ("--precision", "fp32"))])
    with open(out / "predictions.csv", newline="") as f:
        return rc, {r["file"]: r for r in csv.DictReader(f)}


@pytest.mark.parametrize("kind", ["ft/model", "lora/seed_0/adapter", "lora/seed_0/merged", "dvpt/seed_0/adapter"])
def test_tuned_checkpoint_runs_in_infer_and_viewer(runs, kind, tmp_path):
    from apps.viewer import cache
    from medvit.infer.predictor import load_for_inference

    model_dir = runs / kind
    model, contract, info = load_for_inference(model_dir)
    assert contract.modalities == ["CR", "DX"] and len(contract.label_names) == 7 and contract.ood
    assert contract.crop_mode == "crop" and contract.interpolation == "bicubic"
    # infer at its default precision, one image a batch: the viewer runs the same predictor on one image
    rc, rows = _infer(model_dir, runs / "inbox", tmp_path / "out", "--batch-size", "1")
    assert rc == 0 and len(rows) == 4
    assert {r["model_name"] for r in rows.values()} == {info.name} and info.name.startswith("cxr_phantom-")
    assert all(r["ood_flag"] in ("True", "False") for r in rows.values())
    assert len(list((tmp_path / "out" / "sr").glob("*.dcm"))) >= 1
    # the viewer's path gives the same probabilities
    lm = cache.load_model(str(model_dir))
    for rel, r in rows.items():
        p = str(runs / "inbox" / rel)
        got = cache.predict(str(model_dir), lm.info.sha256, p, cache.mtime(p), None)["probabilities"]
        want = [float(r[f"p_{k}"]) for k in contract.label_names]
        np.testing.assert_allclose(got, want, atol=2e-6)


def test_lora_adapter_and_merged_agree_and_dvpt_cannot_merge(runs, tmp_path):
    _, a = _infer(runs / "lora/seed_0/adapter", runs / "inbox", tmp_path / "a")
    _, m = _infer(runs / "lora/seed_0/merged", runs / "inbox", tmp_path / "m")
    labels = json.loads((runs / "lora/seed_0/adapter/adapter_config.json").read_text())["contract"]["label_names"]
    for rel in a:
        np.testing.assert_allclose([float(a[rel][f"p_{k}"]) for k in labels],
                                   [float(m[rel][f"p_{k}"]) for k in labels], atol=1e-4)
    assert not (runs / "dvpt/seed_0/merged").exists()


def test_adapter_refused_when_its_base_changed(runs, tmp_path):
    from medvit.infer.predictor import load_for_inference

    ad = tmp_path / "adapter"
    shutil.copytree(runs / "dvpt/seed_0/adapter", ad)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    other = tmp_path / "other_base"
    shutil.copytree(cfg["base"]["weights"], other)
    data = bytearray((other / "model.safetensors").read_bytes())
    data[-8] ^= 0x01  # one bit in the last tensor
    (other / "model.safetensors").write_bytes(bytes(data))
    cfg["base"]["weights"] = str(other)
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="changed since the adapter was trained|SHA-256|sha256"):
        load_for_inference(ad)
