"""One preprocessing from training to serving: the same files through the training evaluation transform,
``medvit infer`` and the viewer give identical model inputs (the contract drives all three)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _model(out: Path, **pre) -> Path:
    import torch

    import medvit
    from medvit.data.phantom_cxr import CXR_LABELS
    from medvit.data.preprocess import TRAINING_DEFAULT_INTENSITY
    from medvit.models import WeightContract, save_checkpoint

    torch.manual_seed(0)
    m = medvit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=48, depth=1, num_heads=4,
                            in_chans=1, num_classes=len(CXR_LABELS))
    c = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.52,), std=(0.29,), label_names=list(CXR_LABELS),
                       intensity=dict(TRAINING_DEFAULT_INTENSITY), modalities=["CR", "DX"], **pre)
    return save_checkpoint(m, out, contract=c)


@pytest.mark.parametrize("pre", [
    {"crop_mode": "crop", "crop_pct": 0.875, "interpolation": "bicubic"},  # the paper's Resize(256)+CenterCrop(224)
    {"crop_mode": "pad", "crop_pct": 1.0, "interpolation": "bilinear"},  # what pre-contract checkpoints were served
])
def test_training_eval_infer_and_viewer_feed_identical_inputs(tmp_path, monkeypatch, pre):
    from apps.viewer import cache
    from medvit.data import build_dataset
    from medvit.data.augment import build_contract_eval_transform
    from medvit.data.synth import write_synth
    from medvit.infer import InferConfig, run_inference
    from medvit.infer.runner import InferenceRun
    from medvit.models import load_model

    inbox = tmp_path / "inbox"
    write_synth("cxr", 10, inbox / "synth", fmt="dicom", seed=2, image_size=72, masks=False)
    # a second site: MONOCHROME1 + JPEG 2000 (the intensity step must undo both identically everywhere)
    write_synth("cxr", 4, inbox / "synth_b", fmt="dicom", seed=3, image_size=80, masks=False, monochrome1=True,
                jpeg2000=True)
    from medvit.data.imageload import load_unit
    from tests.infer.helpers import write_dx

    # a non-square DX (pad and crop differ), read as the dataset adapters read a file
    write_dx(inbox / "extra" / "wide.dcm", "1.2.3.4", "1.2.3.4.1", rows=40, cols=64, seed=4)
    model_dir = _model(tmp_path / "model", **pre)
    contract = load_model(model_dir).contract

    # 1. training evaluation: the dataset reads the files (medvit.io), the eval transform is the contract's
    tf = build_contract_eval_transform(contract)
    train_x = {}
    for root in ("synth", "synth_b"):
        ds = build_dataset("cxr_phantom", "all", root=inbox / root)
        for i in range(len(ds)):
            train_x[f"{root}/images/{ds.rows[i]['image_id']}.dcm"] = tf(ds[i])["image"].numpy()

    import torch

    wide = torch.from_numpy(load_unit(inbox / "extra" / "wide.dcm", contract.intensity))[None]
    train_x["extra/wide.dcm"] = tf({"image": wide})["image"].numpy()

    # 2. medvit infer: capture what goes into the model
    served: dict[str, np.ndarray] = {}
    orig = InferenceRun._flush

    def capture(self, batch):
        for d in batch:
            served[d.rel] = d.x.copy()
        return orig(self, batch)

    monkeypatch.setattr(InferenceRun, "_flush", capture)
    res = run_inference(InferConfig(model=str(model_dir), input=str(inbox), output=str(tmp_path / "out"),
                                    workers=0, progress=False))
    assert res.counts["predicted"] == 15

    # 3. the viewer's cached model + image path
    lm = cache.load_model(str(model_dir))
    assert set(served) == set(train_x)
    for rel, x in train_x.items():
        assert x.shape == (1, 32, 32)
        v, _, _ = lm.preprocess(cache.image_2d(str(inbox / rel), None))
        np.testing.assert_array_equal(served[rel], x, err_msg=rel)
        np.testing.assert_array_equal(v, x, err_msg=rel)
    # the contract's geometry really acts: a padded wide image has black bands top and bottom, a cropped one not
    w = train_x["extra/wide.dcm"][0] * 0.29 + 0.52
    if pre["crop_mode"] == "pad":
        assert np.abs(w[:4]).max() < 1e-5 and np.abs(w[-4:]).max() < 1e-5
    else:
        assert w[:4].std() > 0.05 and w[-4:].std() > 0.05


def test_old_contract_loads_with_documented_defaults():
    from medvit.models import WeightContract

    old = {"in_chans": 1, "input_size": [64, 64], "mean": [0.5], "std": [0.25], "intensity_window": None,
           "label_names": ["a"], "thresholds": [0.5]}
    c = WeightContract.from_dict(old)
    assert c.crop_mode == "pad" and c.crop_pct == 1.0 and c.interpolation == "bilinear" and c.resize_size is None
    assert c.intensity == {"dicom": "voi", "raster": "voi", "nifti": "voi", "npy": "voi"}
    with pytest.raises(ValueError, match="crop_mode"):
        WeightContract.from_dict({**old, "crop_mode": "zoom"})
    with pytest.raises(ValueError, match="intensity"):
        WeightContract.from_dict({**old, "intensity": {"dicom": "auto"}})


def test_crop_pct_is_resize_then_centre_crop():
    """crop_pct 0.875 at 28 px = resize to 32 then centre crop 28 (timm's rule), as one resample."""
    from PIL import Image

    from medvit.data.preprocess import Preprocessor

    rng = np.random.default_rng(0)
    a = rng.random((64, 64)).astype(np.float32)
    p = Preprocessor(1, (28, 28), (0.0,), (1.0,), geometry="crop", crop_pct=0.875, interpolation="bilinear")
    x, _ = p.from_unit(a)
    ref = np.asarray(Image.fromarray(a).resize((32, 32), Image.BILINEAR))[2:30, 2:30]
    np.testing.assert_allclose(x[0], ref, atol=1e-5)
