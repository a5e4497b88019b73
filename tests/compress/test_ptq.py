"""Q-HyViT-style PTQ: per-layer scheme search, block reconstruction, PT2E export equal to the simulation,
tolerance against fp32 on calibration-disjoint phantoms, PTQ checkpoints used by `medvit infer --precision int8`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import medvit
from medvit.compress.ptq import (
    PTQConfig,
    act_qparams,
    load_qparams,
    ptq_calibrate,
    save_ptq_checkpoint,
    search_linear,
    simulate,
)

pytest.importorskip("torchao")
TOL_PROB = 0.05  # max |Δ probability| vs fp32 on images the calibration never saw (as tests/infer/test_fastpath.py)


def phantoms(n, seed, size=32):
    from medvit.data.phantom_cxr import ChestPhantomGenerator

    gen = ChestPhantomGenerator(image_size=size, seed=seed, with_masks=False)
    x = np.stack([gen.sample(i, i).image for i in range(n)])[:, None]
    return torch.from_numpy(((x - 0.5) / 0.25).astype(np.float32))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = medvit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                            in_chans=1, num_classes=3).eval()
    nn.init.normal_(m.head.weight, std=0.5)
    return m


@pytest.fixture(scope="module")
def calibrated(tiny):
    cal = list(phantoms(48, seed=1).split(16))
    return ptq_calibrate(tiny, cal, PTQConfig(recon_iters=40, recon_batch=8))


def test_act_qparams_by_hand():
    assert act_qparams(-1.0, 3.0, "asymmetric") == pytest.approx((4 / 255, 64))
    assert act_qparams(-1.0, 3.0, "symmetric") == pytest.approx((3 / 127.5, 128))
    assert act_qparams(0.5, 2.0, "asymmetric") == pytest.approx((2 / 255, 0))  # range widened to include 0


def test_search_picks_channelwise_for_planted_outlier_channel():
    torch.manual_seed(0)
    lin = nn.Linear(32, 16)
    with torch.no_grad():
        lin.weight.normal_(0, 0.05)
        lin.weight[3] *= 60  # one output channel with a 60x larger range
    rows = torch.randn(512, 32)
    rng = {100.0: (float(rows.min()), float(rows.max()))}
    cfg = PTQConfig(act_percentiles=(100.0,))
    qp, choice = search_linear(lin, rows, rng, cfg)
    assert choice["weight"] == "channel"
    t = choice["table"]
    assert t["channel/asymmetric/100"] < 0.5 * t["tensor/asymmetric/100"]
    assert torch.equal(qp.weight_scale, lin.weight.detach().abs().amax(1) / 127.5)
    # without the outlier, one scale for the tensor is a candidate the search may keep: both are scored
    assert {"tensor/symmetric/100", "channel/symmetric/100"} <= set(t)


def test_reconstruction_lowers_block_error_and_weights_lie_on_grid(calibrated):
    qm, res = calibrated
    blocks = res.report["blocks"]
    assert len(blocks) == 2
    assert sum(b["mse_reconstructed"] for b in blocks) < sum(b["mse_nearest"] for b in blocks)
    for name, qp in res.qparams.items():
        w = qm.get_submodule(name).weight.detach() / qp.weight_scale[:, None]
        assert (w - w.round()).abs().max() < 1e-3, name
        assert w.round().min() >= -128 and w.round().max() <= 127
    assert res.report["calibration_images"] == 48


def test_pt2e_export_equals_simulation_and_stays_near_fp32(tiny, calibrated):
    from medvit.compress.pt2e import quantize_pt2e_x86

    qm, res = calibrated
    held_out = phantoms(24, seed=7)  # calibration-disjoint images (another generator seed)
    with torch.no_grad():
        ref = tiny(held_out)
        sim = simulate(qm, res.qparams)(held_out)
        q = quantize_pt2e_x86(qm, [held_out], res.qparams)
        got = q(held_out)
    torch.testing.assert_close(got, sim, atol=1e-5, rtol=1e-5)  # the int8 graph computes the simulated model
    assert (torch.sigmoid(got) - torch.sigmoid(ref)).abs().max() <= TOL_PROB
    assert torch.nn.functional.cosine_similarity(got, ref, dim=1).min() > 0.99
    assert not torch.allclose(got, ref, atol=1e-5)  # it did quantise


def test_fixed_qparams_must_fit_the_model(tiny, calibrated):
    from medvit.compress.pt2e import quantize_pt2e_x86

    _, res = calibrated
    other = medvit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=1,
                                num_heads=4, in_chans=1, num_classes=3).eval()
    with pytest.raises(ValueError, match="qparams without a linear"):
        quantize_pt2e_x86(other, [torch.zeros(2, 1, 32, 32)], res.qparams)


def test_ptq_checkpoint_is_used_by_infer_int8(tmp_path, calibrated):
    from medvit.infer.predictor import Predictor, load_for_inference
    from medvit.models import WeightContract
    from medvit.models.checkpoint import CheckpointError

    qm, res = calibrated
    contract = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.5,), std=(0.25,),
                              label_names=["a", "b", "c"], thresholds=[0.5, 0.5, 0.5], version="t")
    out = save_ptq_checkpoint(qm, res, tmp_path / "ptq", contract=contract)
    model, _, _ = load_for_inference(out)
    assert set(model.int8_qparams) == set(res.qparams)
    x = phantoms(8, seed=9)
    p = Predictor(model, "int8", cache_root=tmp_path / "cache", int8_rest="fp32")  # bf16 between GEMMs adds ~0.02
    got = p.predict(x.numpy())
    d = p.describe()
    assert d["int8_calibration_source"].startswith("checkpoint") and d["int8_calibration_images"] == 48
    with torch.no_grad():
        want = torch.sigmoid(simulate(qm, res.qparams)(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-3)  # compiled oneDNN int8 kernels vs the float simulation
    (out / "ptq.safetensors").write_bytes((out / "ptq.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_qparams(out)
    assert load_qparams(tmp_path) is None


def test_bad_config_refused():
    with pytest.raises(ValueError, match="granularities"):
        PTQConfig(weight_granularities=("row",))
    with pytest.raises(ValueError, match="calibration"):
        ptq_calibrate(nn.Linear(2, 2), [])
