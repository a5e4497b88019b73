"""Tasks ptq and nvit_prune on a saved checkpoint with a contract and a registered dataset."""

from __future__ import annotations

import json

import pytest
import torch

import medvit
from medvit.data.phantom_cxr import CXR_LABELS
from medvit.models import WeightContract, load_model, save_checkpoint
from medvit.tasks import run_task


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = medvit.create_model("vit_small_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                            in_chans=1, num_classes=len(CXR_LABELS))
    c = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.524,), std=(0.290,), label_names=list(CXR_LABELS),
                       thresholds=[0.5] * len(CXR_LABELS), version="t")
    return save_checkpoint(m, tmp_path_factory.mktemp("ck") / "m", contract=c)


COMMON = ["dataset=cxr_phantom", "dataset_args={n: 60, seed: 0, image_size: 32}", "batch_size=16"]


def test_ptq_task_writes_a_checkpoint_infer_can_use(ckpt, tmp_path):
    from medvit.infer.predictor import load_for_inference

    s = run_task(None, [f"checkpoint={ckpt}", f"output_dir={tmp_path}", "calibration_images=32", "recon_iters=5",
                        *COMMON], data={"task": "ptq"})
    assert s["calibration_images"] == 32 and s["max_abs_prob_diff"] < 0.05
    assert abs(s["int8"]["mean_auroc"] - s["fp32"]["mean_auroc"]) < 0.05
    model, contract, _ = load_for_inference(tmp_path / "model")
    assert model.int8_qparams and contract.label_names == list(CXR_LABELS)
    assert json.loads((tmp_path / "summary.json").read_text())["eval_images"] > 0


def test_nvit_task_writes_a_smaller_checkpoint(ckpt, tmp_path):
    s = run_task(None, [f"checkpoint={ckpt}", f"output_dir={tmp_path}", "saliency_images=32", "mac_ratio=0.6",
                        *COMMON], data={"task": "nvit_prune"})
    assert s["mac_ratio"] <= 0.6 and s["params_pruned"] < s["params_dense"]
    back = load_model(tmp_path / "model")
    assert back.arch_name == "vit_pruned" and back.contract.label_names == list(CXR_LABELS)


def test_nvit_bad_mac_ratio_refused_before_writing(ckpt, tmp_path):
    with pytest.raises(ValueError, match="mac_ratio must be in"):
        run_task(None, [f"checkpoint={ckpt}", f"output_dir={tmp_path / 'o'}", "mac_ratio=1.5", *COMMON],
                 data={"task": "nvit_prune"})
    assert not (tmp_path / "o").exists()


def test_same_split_refused(ckpt, tmp_path):
    with pytest.raises(ValueError, match="must differ"):
        run_task(None, [f"checkpoint={ckpt}", f"output_dir={tmp_path}", "eval_split=train", *COMMON],
                 data={"task": "ptq"})


def test_safetensors_whose_header_length_starts_like_a_pickle_is_read(tmp_path):
    """A safetensors header of 0x0380 bytes starts the file with 80 03 (pickle protocol 3's magic): still read."""
    from safetensors.torch import save

    from medvit.models.checkpoint import read_safetensors

    t = {"w": torch.ones(2)}
    for pad in range(2000):
        data = save(t, metadata={"p": "x" * pad})
        if data[:2] == b"\x80\x03":
            break
    else:
        pytest.skip("no padding gave the header length 0x..0380")
    (tmp_path / "m.safetensors").write_bytes(data)
    assert torch.equal(read_safetensors(tmp_path / "m.safetensors")["w"], torch.ones(2))


def test_ptq_keeps_and_nvit_drops_the_ood_reference(ckpt, tmp_path):
    import dataclasses

    from medvit.data import build_dataset
    from medvit.data.augment import build_contract_eval_transform
    from medvit.eval.ood import fit_for_model, save_reference
    from medvit.eval.predict import cache_dataset
    from medvit.infer.predictor import load_for_inference

    model = load_model(ckpt).eval()
    tf = build_contract_eval_transform(model.contract)
    tr, va = (cache_dataset(build_dataset("cxr_phantom", s, n=60, seed=0, image_size=32), tf, keys=("image", "label"))
              for s in ("train", "val"))
    src = save_checkpoint(model, tmp_path / "src", contract=model.contract)
    info = save_reference(fit_for_model(model, tr, va, None, 0.1, 16, "cpu"), src)
    src = save_checkpoint(model, src, contract=dataclasses.replace(model.contract, ood=info))
    run_task(None, [f"checkpoint={src}", f"output_dir={tmp_path / 'q'}", "calibration_images=16", "recon_iters=0",
                    *COMMON], data={"task": "ptq"})
    m, c, _ = load_for_inference(tmp_path / "q" / "model")  # was refused: ood.safetensors missing
    assert c.ood is not None and m.ood_reference is not None
    run_task(None, [f"checkpoint={src}", f"output_dir={tmp_path / 'p'}", "saliency_images=16", "mac_ratio=0.7",
                    *COMMON], data={"task": "nvit_prune"})
    _, c, _ = load_for_inference(tmp_path / "p" / "model")
    assert c.ood is None  # a reference fitted on the dense model's features would be stale
