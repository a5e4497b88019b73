"""Task dta_audit: the attack crafted on the pre-trained backbone alone raises a tuned copy's loss on phantoms more
than same-norm noise, and the summary reports the drops."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

import medvit
from medvit.data import build_dataset
from medvit.data.augment import build_contract_eval_transform
from medvit.data.phantom_cxr import CXR_LABELS
from medvit.models import WeightContract, save_checkpoint
from medvit.tasks import run_task

K = len(CXR_LABELS)
DATA = {"n": 160, "seed": 0, "image_size": 32, "lesion_contrast": 3.0, "lesion_size": 2.0, "anatomy": 0.5}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("dta")
    c = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.524,), std=(0.290,), label_names=list(CXR_LABELS),
                       thresholds=[0.3] * K, version="t")
    backbone = medvit.create_model("vit_small_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=3,
                                   num_heads=4, in_chans=1, num_classes=K)
    tuned = copy.deepcopy(backbone)
    tf = build_contract_eval_transform(c)
    ds = build_dataset("cxr_phantom", "train", **DATA)
    items = [tf(ds[i]) for i in range(len(ds))]
    x = torch.stack([it["image"] for it in items])
    y = torch.stack([torch.as_tensor(it["label"]) for it in items]).float()
    opt = torch.optim.AdamW(tuned.parameters(), lr=1e-3)
    tuned.train()
    for _ in range(10):  # a brief full fine-tune of the downstream copy
        for i in range(0, len(x), 16):
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(tuned(x[i:i + 16]), y[i:i + 16]).backward()
            opt.step()
    return save_checkpoint(backbone, d / "backbone", contract=c), save_checkpoint(tuned.eval(), d / "tuned", contract=c)


def test_dta_audit_raises_the_tuned_models_loss_more_than_noise(pair, tmp_path):
    bb, tuned = pair
    s = run_task(None, [f"checkpoint={tuned}", f"backbone_checkpoint={bb}", f"output_dir={tmp_path}",
                        "dataset=cxr_phantom", f"dataset_args={json.dumps(DATA)}", "split=val", "eps=0.0627",
                        "steps=10", "search_images=8", "batch_size=16"], data={"task": "dta_audit"})
    assert s["layer"] in (0, 1, 2) and set(s["layer_search_cosine"]) == {0, 1, 2}
    assert s["backbone_token_cosine"] < 0.9
    assert s["dta"]["loss"] > s["clean"]["loss"] and s["dta"]["loss"] > s["noise"]["loss"]
    assert s["drop"]["mean_auroc_dta"] == pytest.approx(s["clean"]["mean_auroc"] - s["dta"]["mean_auroc"])
    assert 0 <= s["dta"]["label_accuracy"] <= 1 and s["images"] > 0
    assert json.loads((tmp_path / "summary.json").read_text())["eps_input"] == pytest.approx(0.0627 / 0.29)


def test_dta_audit_bad_config(pair, tmp_path):
    bb, tuned = pair
    with pytest.raises(ValueError, match="eps"):
        run_task(None, [f"checkpoint={tuned}", f"backbone_checkpoint={bb}", "eps=0"], data={"task": "dta_audit"})
    with pytest.raises(ValueError, match="layer 7"):
        run_task(None, [f"checkpoint={tuned}", f"backbone_checkpoint={bb}", f"output_dir={tmp_path}", "layer=7",
                        f"dataset_args={json.dumps(DATA)}"], data={"task": "dta_audit"})


def test_dta_audit_checks_the_tuned_checkpoint_against_the_backbone(pair, tmp_path):
    """Breaker F6 (DTA half): a segmentation checkpoint as the tuned model, a backbone on another input contract,
    a backbone without a contract whose img_size differs: clear ValueErrors naming the key, before any attack."""
    bb, tuned = pair
    base = [f"output_dir={tmp_path}", f"dataset_args={json.dumps(DATA)}", "layer=0", "steps=1"]
    seg = "pipelines/segmentation/model"
    with pytest.raises(ValueError, match="checkpoint .*segmentation model.*'segmentation'"):
        run_task(None, [f"checkpoint={seg}", f"backbone_checkpoint={bb}", *base], data={"task": "dta_audit"})
    m = medvit.create_model("vit_small_patch16_224", img_size=48, patch_size=8, embed_dim=32, depth=3,
                            num_heads=4, in_chans=1, num_classes=K)
    other = WeightContract(in_chans=1, input_size=(48, 48), mean=(0.524,), std=(0.290,),
                           label_names=list(CXR_LABELS), version="t")
    bb48 = save_checkpoint(m, tmp_path / "bb48", contract=other)
    with pytest.raises(ValueError, match="checkpoint and backbone_checkpoint: contract key 'input_size'"):
        run_task(None, [f"checkpoint={tuned}", f"backbone_checkpoint={bb48}", *base], data={"task": "dta_audit"})
    bare = save_checkpoint(m, tmp_path / "bare")  # a public backbone: no contract, only model_args
    with pytest.raises(ValueError, match="backbone_checkpoint: model_args 'img_size'"):
        run_task(None, [f"checkpoint={tuned}", f"backbone_checkpoint={bare}", *base], data={"task": "dta_audit"})
