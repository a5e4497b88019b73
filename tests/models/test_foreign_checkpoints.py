"""Training checkpoints saved the facebookresearch-MAE / thorax-MAE way load through the safe unpickler.

The released thorax-MAE ViT-S/B files hold ``{'model', 'optimizer', 'epoch', 'scaler', 'args'}`` with ``args`` an
``argparse.Namespace``; the files here have the same five keys (tiny widths so the test stays fast).
"""

from __future__ import annotations

import argparse
import os
import pathlib

import numpy as np
import pytest
import torch

from medvit.models import CheckpointError, create_model
from medvit.models.pretrained import WeightSpec, register_weights
from medvit.registry import REGISTRY

ARCH = "vit_test_mae_tiny"
TAG = f"{ARCH}.thorax_like"


@pytest.fixture(scope="module", autouse=True)
def _tiny_arch():
    from medvit.models import VisionTransformer, WeightContract, register_backbone

    register_backbone(ARCH, VisionTransformer, img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4)
    register_weights(WeightSpec(TAG, "vit-t_CXR_mae.pth", "built in the test", WeightContract(in_chans=3)))
    yield
    REGISTRY.remove("weights", TAG)
    REGISTRY.remove("backbone", ARCH)


def _mae_args() -> argparse.Namespace:
    """The argument namespace of facebookresearch/mae main_pretrain.py (values as in a released run)."""
    return argparse.Namespace(
        batch_size=256, epochs=800, accum_iter=1, model="mae_vit_small_patch16", input_size=224, mask_ratio=0.9,
        norm_pix_loss=True, weight_decay=0.05, lr=None, blr=1.5e-4, min_lr=0.0, warmup_epochs=40,
        data_path="/data/cxr", output_dir="./output_dir", log_dir="./output_dir", device="cuda", seed=0, resume="",
        start_epoch=0, num_workers=10, pin_mem=True, world_size=8, local_rank=-1, dist_on_itp=False,
        dist_url="env://", distributed=True, rank=0, gpu=0, dist_backend="nccl", datasets=["nih", "chexpert"],
        max_accuracy=np.float64(0.823),
    )


def _thorax_mae_file(path, src: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Write a five-key MAE training checkpoint for ``src`` (encoder + decoder keys, real optimizer state)."""
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    sd["decoder_embed.weight"] = torch.randn(16, 48)
    sd["decoder_pos_embed"] = torch.zeros(1, 17, 16)
    sd["mask_token"] = torch.zeros(1, 1, 16)
    opt = torch.optim.AdamW(src.parameters(), lr=1e-3)
    src(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 17}
    torch.save({"model": sd, "optimizer": opt.state_dict(), "epoch": 799, "scaler": scaler, "args": _mae_args()},
               path)
    return sd


def test_thorax_mae_shaped_checkpoint_converts_and_loads(tmp_path, monkeypatch, capsys):
    from medvit.cli.main import main
    from medvit.models import load_model

    src = create_model(ARCH, num_classes=0)
    f = tmp_path / "vit-t_CXR_mae.pth"
    sd = _thorax_mae_file(f, src)
    ck = torch.load(f, weights_only=False)  # the test's own file: check it really has the five keys
    assert set(ck) == {"model", "optimizer", "epoch", "scaler", "args"} and isinstance(ck["args"], argparse.Namespace)

    # medvit convert
    assert main(["convert", str(f), str(tmp_path / "ckpt"), "--arch", ARCH, "--in-chans", "1"]) == 0
    m = load_model(tmp_path / "ckpt")
    torch.testing.assert_close(m.patch_embed.proj.weight, sd["patch_embed.proj.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(m.blocks[1].attn.qkv.weight, sd["blocks.1.attn.qkv.weight"])
    # weight tag
    monkeypatch.setenv("MEDVIT_WEIGHTS", str(tmp_path / "weights"))
    (tmp_path / "weights" / TAG).mkdir(parents=True)
    os.replace(f, tmp_path / "weights" / TAG / "vit-t_CXR_mae.pth")
    m2 = create_model(ARCH, pretrained=TAG, num_classes=3)
    torch.testing.assert_close(m2.blocks[0].mlp.fc1.weight, sd["blocks.0.mlp.fc1.weight"])
    # and as the starting point of fine-tuning / MAE continuation
    from medvit.models.mae_convert import load_pretrained_encoder

    m3 = load_pretrained_encoder(create_model(ARCH, num_classes=2), tmp_path / "weights" / TAG / "vit-t_CXR_mae.pth")
    torch.testing.assert_close(m3.pos_embed, sd["pos_embed"])


def test_dangerous_global_still_refused_without_escape_codes(tmp_path, capsys):
    from medvit.cli.main import main

    src = create_model(ARCH, num_classes=0)
    f = tmp_path / "evil.pth"
    torch.save({"model": src.state_dict(), "epoch": 1, "hook": os.system}, f)
    assert main(["convert", str(f), str(tmp_path / "out"), "--arch", ARCH]) == 2
    err = capsys.readouterr().err
    assert "evil.pth" in err and "system" in err and "will not unpickle" in err
    assert "\x1b" not in err and "weights_only=False" not in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(CheckpointError, match="system"):
        create_model(ARCH, pretrained=str(f))


def test_unknown_class_refused_and_truncated_file_named(tmp_path):
    from medvit.models.checkpoint import read_pickled_weights

    f = tmp_path / "obj.pth"
    torch.save({"model": {}, "out": pathlib.PurePosixPath("/tmp/x")}, f)
    with pytest.raises(CheckpointError, match="PurePosixPath") as e:
        read_pickled_weights(f)
    assert "\x1b" not in str(e.value)
    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.zeros(3)}, "args": _mae_args()}, good)
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cut.pth"):
        read_pickled_weights(tmp_path / "cut.pth")
