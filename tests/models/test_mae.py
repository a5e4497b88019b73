"""MAE: patch order, masking, HF ViTMAEForPreTraining loss parity, 2D/3D, bad arguments, weight round trips."""

from __future__ import annotations

import pytest
import torch

from medvit.models.mae import MaskedAutoencoder, create_mae
from medvit.models.mae_convert import load_mae_weights, load_pretrained_encoder, mae_state_dict

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4)


def _mae(in_chans=1, **kw):
    torch.manual_seed(0)
    args = dict(decoder_dim=32, decoder_depth=2, decoder_heads=4, mask_ratio=0.75)
    args.update(kw)
    return create_mae("vit_small_patch16_224", in_chans=in_chans, **TINY, **args)


def _hf_mae(in_chans, norm_pix_loss):
    """A tiny HF ViTMAEForPreTraining built offline, every parameter random, sin-cos tables re-initialised."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    cfg = ViTMAEConfig(image_size=32, patch_size=8, num_channels=in_chans, hidden_size=48, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=192, decoder_hidden_size=32,
                       decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=128,
                       mask_ratio=0.75, norm_pix_loss=norm_pix_loss, layer_norm_eps=1e-6)
    torch.manual_seed(1)
    hf = ViTMAEForPreTraining(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "pos" not in name and "position" not in name:
                p.normal_(std=0.1).add_(1.0 if "layernorm" in name or "norm.weight" in name else 0.0)
    # transformers 5.x leaves both sin-cos tables all zero at random init (ecosystem-notes §F.4)
    assert hf.vit.embeddings.position_embeddings.abs().sum() == 0
    hf.vit.embeddings.patch_embeddings.projection._is_hf_initialized = False
    hf.vit.embeddings.initialize_weights()
    hf.decoder.initialize_weights(hf.vit.embeddings.patch_embeddings.num_patches)
    assert hf.vit.embeddings.position_embeddings.abs().sum() > 0
    assert hf.decoder.decoder_pos_embed.abs().sum() > 0
    return hf


def test_patchify_matches_hf_order_and_round_trips():
    hf = _hf_mae(3, False)
    mae = _mae(in_chans=3)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(mae.patchify(x), hf.patchify(x))
    assert torch.equal(mae.unpatchify(mae.patchify(x)), x)
    mae3 = create_mae("vit_small_patch16_96_3d", img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=4,
                      decoder_dim=48, decoder_depth=1, decoder_heads=4)
    v = torch.randn(2, 1, 16, 32, 24)
    p = mae3.patchify(v)
    assert p.shape == (2, 2 * 4 * 3, 8 * 8 * 8)
    assert torch.equal(p[0, 0].reshape(8, 8, 8), v[0, 0, :8, :8, :8])  # (p_d, p_h, p_w, C) order
    assert torch.equal(mae3.unpatchify(p, (2, 4, 3)), v)


def test_sincos_tables_equal_hf_layout():
    hf = _hf_mae(1, False)
    mae = _mae()
    torch.testing.assert_close(mae.encoder.state_dict()["pos_embed"], hf.vit.embeddings.position_embeddings,
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(mae.decoder_pos_embed, hf.decoder.decoder_pos_embed, atol=1e-6, rtol=0)


@pytest.mark.parametrize("in_chans, norm_pix", [(1, False), (3, True), (1, True)])
def test_loss_parity_with_hf_vitmae(in_chans, norm_pix):
    hf = _hf_mae(in_chans, norm_pix)
    mae = _mae(in_chans=in_chans, norm_pix_loss=norm_pix).eval()
    mae.load_state_dict(mae_state_dict(hf.state_dict()))
    x = torch.randn(3, in_chans, 32, 32)
    noise = torch.rand(3, 16)
    with torch.no_grad():
        ref = hf(pixel_values=x, noise=noise)
        out = mae(x, noise=noise)
    assert torch.equal(out["mask"], ref.mask) and torch.equal(out["ids_restore"], ref.ids_restore)
    assert (out["pred"] - ref.logits).abs().max().item() <= 1e-5
    assert abs(out["loss"].item() - ref.loss.item()) <= 1e-5


def test_masking_keeps_lowest_noise_and_restores_order():
    mae = _mae()
    x = torch.arange(2 * 16 * 3, dtype=torch.float32).reshape(2, 16, 3)
    noise = torch.rand(2, 16)
    vis, mask, restore = mae.random_masking(x, 0.75, noise)
    assert vis.shape == (2, 4, 3) and mask.sum(1).tolist() == [12.0, 12.0]
    keep = noise.argsort(1)[:, :4]
    assert torch.equal(vis, torch.gather(x, 1, keep[..., None].expand(-1, -1, 3)))
    assert torch.equal(mask == 0, torch.zeros_like(mask, dtype=torch.bool).scatter(1, keep, True))
    padded = torch.cat([vis, torch.zeros(2, 12, 3)], 1)
    back = torch.gather(padded, 1, restore[..., None].expand(-1, -1, 3))
    assert torch.equal(back[mask == 0], x[mask == 0])


def test_same_noise_same_loss_and_gradients_reach_every_parameter():
    mae = _mae(in_chans=3)
    x = torch.rand(2, 3, 32, 32)
    noise = torch.rand(2, 16)
    a, b = mae(x, noise=noise)["loss"], mae(x, noise=noise)["loss"]
    assert a.item() == b.item()
    a.backward()
    missing = [n for n, p in mae.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing
    assert not mae.decoder_pos_embed.requires_grad


def test_3d_mae_forward_backward():
    mae = create_mae("vit_small_patch16_96_3d", img_size=32, patch_size=16, embed_dim=48, depth=1, num_heads=4,
                     decoder_dim=48, decoder_depth=1, decoder_heads=4, mask_ratio=0.5)
    out = mae(torch.rand(2, 1, 32, 32, 32))
    assert out["pred"].shape == (2, 8, 16**3) and out["mask"].sum().item() == 8
    out["loss"].backward()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="mask_ratio"):
        _mae(mask_ratio=1.0)
    with pytest.raises(ValueError, match="mask_ratio"):
        create_mae("vit_small_patch16_224", img_size=16, patch_size=8, embed_dim=48, depth=1, num_heads=4,
                   mask_ratio=0.9)  # 4 patches: int(4 * 0.1) = 0 kept
    with pytest.raises(ValueError, match="patch_size"):
        create_mae("vit_small_patch16_224", img_size=30, patch_size=8, embed_dim=48, depth=1, num_heads=4)
    with pytest.raises(ValueError, match="multiple of patch size"):
        _mae()(torch.rand(1, 1, 36, 36))
    with pytest.raises(ValueError, match="unknown MAE preset"):
        create_mae(preset="mae_vit_small_patch16_dec512d3b")


def test_presets_shapes():
    mae = create_mae(preset="mae_vit_small_patch16_dec512d2b", in_chans=1, img_size=32, depth=1)
    assert mae.encoder.embed_dim == 384 and len(mae.decoder_blocks) == 2 and mae.decoder_dim == 512
    assert isinstance(mae, MaskedAutoencoder)


def test_reference_layout_continues_pretraining_and_encoder_feeds_finetuning(tmp_path):
    from safetensors.torch import save_file

    from medvit.models import create_model

    src = _mae()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    ref_layout = {k.removeprefix("encoder."): v for k, v in src.state_dict().items()}  # facebookresearch keys
    save_file({k: v.contiguous() for k, v in ref_layout.items()}, str(tmp_path / "mae_ref.safetensors"))
    dst = load_mae_weights(_mae(), tmp_path / "mae_ref.safetensors")
    x, noise = torch.rand(2, 1, 32, 32), torch.rand(2, 16)
    assert dst(x, noise=noise)["loss"].item() == src(x, noise=noise)["loss"].item()
    ft = create_model("vit_small_patch16_224", in_chans=1, num_classes=5, global_pool="avg", **TINY)
    load_pretrained_encoder(ft, tmp_path / "mae_ref.safetensors")
    w = src.state_dict()["encoder.blocks.1.attn.qkv.weight"]
    assert torch.equal(ft.state_dict()["blocks.1.attn.qkv.weight"], w)


def test_layer_decay_groups_through_mae_group_matcher():
    from medvit.train import param_groups

    groups = param_groups(_mae(), 0.05, layer_decay=0.5)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    assert scale["encoder.patch_embed.proj.weight"] == pytest.approx(0.5**3)
    assert scale["encoder.blocks.0.attn.qkv.weight"] == pytest.approx(0.5**2)
    assert scale["decoder_blocks.0.attn.qkv.weight"] == 1.0


def test_reconstruction_figure(tmp_path):
    from medvit.visualize.mae_figure import reconstruct, reconstruction_figure

    mae = _mae()
    x = torch.rand(3, 1, 32, 32)
    r = reconstruct(mae, x)
    vis = r["mask"] == 0
    assert torch.allclose(r["pasted"][vis], x[vis])
    p = reconstruction_figure(mae, x, tmp_path / "rec.png", mean=(0.5,), std=(0.25,))
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_released_pth_and_hf_mae_files_load_for_finetuning(tmp_path):
    """A reference-layout ``.pth`` ({"model": ...}, decoder included) and an HF ViTMAE safetensors file both
    initialise a fine-tuning backbone (decoder dropped, head fresh)."""
    from safetensors.torch import save_file

    from medvit.models import create_model

    src = _mae()
    ref = {k.removeprefix("encoder."): v.clone() for k, v in src.state_dict().items()}
    torch.save({"model": ref, "epoch": 799}, tmp_path / "vit-s_CXR_mae.pth")
    ft = create_model("vit_small_patch16_224", in_chans=1, num_classes=14, global_pool="avg", **TINY)
    load_pretrained_encoder(ft, tmp_path / "vit-s_CXR_mae.pth")
    assert torch.equal(ft.state_dict()["patch_embed.proj.weight"], ref["patch_embed.proj.weight"])
    hf = _hf_mae(1, False)
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(tmp_path / "hf_mae.safetensors"))
    ft2 = create_model("vit_small_patch16_224", in_chans=1, num_classes=3, global_pool="avg", **TINY)
    load_pretrained_encoder(ft2, tmp_path / "hf_mae.safetensors")
    q = hf.state_dict()["vit.layers.0.attention.q_proj.weight"]
    assert torch.equal(ft2.state_dict()["blocks.0.attn.qkv.weight"][:48], q)


def test_encoder_position_table_fixed_through_mae_steps_with_weight_decay():
    """Encoder sin-cos table: requires_grad False, in no optimizer group, bit-identical after AdamW steps (wd 0.05)."""
    from medvit.train.optim import param_groups

    mae = _mae(in_chans=3)
    pos = mae.encoder.pos_embed
    assert isinstance(pos, torch.nn.Parameter) and not pos.requires_grad
    before = pos.detach().clone()
    groups = param_groups(mae, weight_decay=0.05)
    assert all(p is not pos for g in groups for p in g["params"])
    assert any(g["weight_decay"] == 0.05 for g in groups)
    opt = torch.optim.AdamW(groups, lr=1e-2)
    w_before = mae.decoder_embed.weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        mae(torch.rand(2, 3, 32, 32))["loss"].backward()
        opt.step()
    assert pos.grad is None
    assert torch.equal(pos, before)
    assert not torch.equal(mae.decoder_embed.weight, w_before)  # the optimizer did step
    assert "encoder.pos_embed" in mae.state_dict()


def test_fine_tuning_backbone_keeps_a_learnable_table_loaded_from_the_mae(tmp_path):
    from medvit.models.factory import create_model

    mae = _mae(in_chans=3)
    f = tmp_path / "mae.pth"
    torch.save(mae.state_dict(), f)
    torch.manual_seed(1)
    ft = create_model("vit_small_patch16_224", in_chans=3, num_classes=2, **TINY)
    load_pretrained_encoder(ft, f)
    assert ft.pos_embed.requires_grad
    assert torch.equal(ft.pos_embed, mae.encoder.pos_embed)
