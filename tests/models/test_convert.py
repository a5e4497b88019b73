"""Parity with HF transformers ViT and timm-layout round trips."""

from __future__ import annotations

import pytest
import torch

from medvit.models import create_model
from medvit.models.convert import adapt_input_channels, hf_config_to_args, to_medvit


def _hf_vit(num_channels=1, **kw):
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=num_channels, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, **kw)
    return ViTModel(cfg, add_pooling_layer=False).eval(), cfg


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_hf_vit_parity(qkv_bias):
    hf, cfg = _hf_vit(qkv_bias=qkv_bias)
    with torch.no_grad():  # non-trivial position table and cls token
        hf.embeddings.position_embeddings.normal_(std=0.5)
        hf.embeddings.cls_token.normal_()
    m = create_model("vit_base_patch16_224", num_classes=0, **hf_config_to_args(cfg)).eval()
    m.load_state_dict(to_medvit(hf.state_dict(), m))
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state
        out = m.forward_features(x)
    assert (out - ref).abs().max().item() <= 1e-5


def test_hf_vit_mae_encoder_loads_through_pretrained(tmp_path):
    from safetensors.torch import save_file
    from transformers import ViTMAEConfig, ViTMAEModel

    cfg = ViTMAEConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=64, mask_ratio=0.0)
    hf = ViTMAEModel(cfg).eval()
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(tmp_path / "w.safetensors"))
    m = create_model("vit_base_patch16_224", pretrained=str(tmp_path / "w.safetensors"), num_classes=4,
                     **hf_config_to_args(cfg))
    torch.testing.assert_close(m.blocks[1].mlp.fc2.weight, hf.state_dict()["layers.1.mlp.fc2.weight"])


def test_timm_layout_round_trip_is_exact():
    m = create_model("vit_small_patch16_224", embed_dim=48, depth=2, num_heads=4, img_size=32, num_classes=3)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    wrapped = {"model": {"module." + k: v for k, v in sd.items()}, "epoch": 3}
    back = to_medvit(wrapped, m)
    assert back.keys() == sd.keys()
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
    m2 = create_model("vit_small_patch16_224", embed_dim=48, depth=2, num_heads=4, img_size=32, num_classes=3)
    m2.load_state_dict(back)
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_mae_checkpoint_to_grey_avg_pool_model(tmp_path, caplog):
    """An RGB MAE checkpoint (.pth, decoder keys, 224 grid) loads into a 1-channel, 64-px, avg-pool model."""
    src = create_model("vit_small_patch16_224", embed_dim=48, depth=2, num_heads=4, num_classes=0)
    sd = dict(src.state_dict())
    sd["decoder_embed.weight"] = torch.zeros(8, 48)
    sd["mask_token"] = torch.zeros(1, 1, 8)
    torch.save({"model": sd}, tmp_path / "mae.pth")
    m = create_model("vit_small_patch16_224", pretrained=str(tmp_path / "mae.pth"), embed_dim=48, depth=2,
                     num_heads=4, in_chans=1, img_size=64, global_pool="avg", num_classes=14)
    assert m.pos_embed.shape == (1, 1 + 16, 48)
    torch.testing.assert_close(m.patch_embed.proj.weight, src.patch_embed.proj.weight.sum(1, keepdim=True))
    # grey image replicated to RGB gives the same embedding as the 1-channel kernel on the grey image
    g = torch.randn(1, 1, 224, 224)
    a = src.patch_embed(g.expand(-1, 3, -1, -1))
    m2 = create_model("vit_small_patch16_224", pretrained=str(tmp_path / "mae.pth"), embed_dim=48, depth=2,
                      num_heads=4, in_chans=1, num_classes=0)
    torch.testing.assert_close(m2.patch_embed(g), a, atol=1e-4, rtol=1e-4)


def test_adapt_channels_tiles():
    w = torch.randn(4, 1, 2, 2)
    w3 = adapt_input_channels(w, 3)
    assert w3.shape == (4, 3, 2, 2)
    torch.testing.assert_close(w3.sum(1, keepdim=True), w)


def test_convert_missing_source_says_not_found(tmp_path, capsys):
    from medvit.cli.main import main

    rc = main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "out"), "--arch", "vit_tiny_patch16_224"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.pth: not found" in err and "neither" not in err
