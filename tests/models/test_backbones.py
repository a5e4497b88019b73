"""Registry-driven backbone tests: forward, backward, state-dict/safetensors round trip, bad args."""

from __future__ import annotations

import json

import pytest
import torch

from medvit.models import CheckpointError, create_model, load_model, save_checkpoint
from medvit.registry import REGISTRY, list_names
from tests.conftest import tiny_args

#: backbones with the uniform ViT interface (classifier-only entries such as monai_cnn are tested by their modules)
BACKBONES = [n for n in list_names("backbone") if REGISTRY.entry("backbone", n).meta.get("interface", "vit") == "vit"]


def _input(model, batch=2):
    return torch.randn(batch, model.in_chans, *model.img_size)


@pytest.mark.parametrize("name", BACKBONES)
def test_forward_shapes(name):
    m = create_model(name, num_classes=5, **tiny_args(name)).eval()
    x = _input(m)
    tokens = m.forward_features(x)
    n = m.patch_embed.num_patches
    n_out = m.num_output_tokens(n)  # P + N for the plain ViT; token-reducing families return fewer
    assert tokens.shape == (2, n_out, m.embed_dim)
    assert m(x).shape == (2, 5)
    assert m.forward_head(tokens, pre_logits=True).shape == (2, m.embed_dim)
    inter = m.forward_intermediates(x, indices=[0, -1])
    assert len(inter) == 2 and inter[-1].shape == (2, n_out - m.num_prefix_tokens, m.embed_dim)
    maps = m.attention_maps(x)
    assert len(maps) == len(m.blocks) and maps[0].shape[-1] == m.embed(x).shape[1]
    torch.testing.assert_close(maps[0].sum(-1), torch.ones_like(maps[0].sum(-1)))


@pytest.mark.parametrize("name", BACKBONES)
def test_backward_reaches_every_trainable_param(name):
    m = create_model(name, num_classes=3, drop_path_rate=0.1, **tiny_args(name)).train()
    m(_input(m)).sum().backward()
    for pname, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
            assert p.grad.abs().sum() > 0, f"zero gradient for {pname}"


@pytest.mark.parametrize("name", BACKBONES)
def test_state_dict_and_safetensors_round_trip(name, tmp_path):
    m = create_model(name, num_classes=2, **tiny_args(name)).eval()
    x = _input(m)
    ref = m(x)
    m2 = create_model(name, num_classes=2, **tiny_args(name)).eval()
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2(x), ref, rtol=0, atol=0)
    save_checkpoint(m, tmp_path / "ck")
    m3 = load_model(tmp_path / "ck").eval()
    torch.testing.assert_close(m3(x), ref, rtol=0, atol=0)
    assert m3.arch_name == name


#: (illegal constructor arguments, the message the ValueError must carry)
ILLEGAL = [
    (dict(embed_dim=50, num_heads=4), "embed_dim 50 must be divisible by num_heads 4"),
    (dict(depth=0), "depth must be a positive int, got 0"),
    (dict(spatial_dims=4), "spatial_dims must be 2 or 3, got 4"),
    (dict(img_size=30, patch_size=16), r"patch_size \(16, 16(, 16)?\) must divide img_size"),
    (dict(global_pool="max"), "global_pool must be 'token', 'avg' or '', got 'max'"),
    (dict(global_pool="token", class_token=False), "global_pool='token' needs class_token=True"),
    (dict(pos_embed="rope"), "pos_embed must be 'learn', 'sincos' or 'none', got 'rope'"),
    (dict(drop_path_rate=1.0), r"drop_path_rate must be in \[0, 1\), got 1.0"),
    (dict(in_chans=0), "in_chans must be a positive int, got 0"),
    (dict(num_classes=-1), "num_classes must be an int >= 0, got -1"),
    (dict(embed_dim=50, num_heads=5), "sin-cos position init needs embed_dim divisible by [46] in [23]D, got 50"),
]


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize(("bad", "message"), ILLEGAL, ids=[str(b) for b, _ in ILLEGAL])
def test_illegal_arguments(name, bad, message):
    kw = {**tiny_args(name), **bad}
    with pytest.raises(ValueError, match=message):
        create_model(name, **kw)


def test_unknown_argument_and_name():
    with pytest.raises(TypeError, match="embed_dim"):
        create_model("vit_tiny_patch16_224", embed_dims=10)
    with pytest.raises(KeyError, match="vit_tiny_patch16_224"):
        create_model("vit_tiny_patch16_244")


def test_wrong_input_is_explained():
    m = create_model("vit_tiny_patch16_224", **tiny_args("vit_tiny_patch16_224"), in_chans=1)
    with pytest.raises(ValueError, match="input channels"):
        m(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="multiple of patch size"):
        m(torch.randn(1, 1, 40, 40))


def test_position_embedding_interpolates_for_other_sizes():
    m = create_model("vit_tiny_patch16_224", **tiny_args("vit_tiny_patch16_224"), num_classes=0).eval()
    out = m.forward_features(torch.randn(1, 3, 64, 48))
    assert out.shape == (1, 1 + 4 * 3, m.embed_dim)


def test_sdpa_and_explicit_attention_agree():
    m = create_model("vit_tiny_patch16_224", **tiny_args("vit_tiny_patch16_224")).eval()
    blk = m.blocks[0]
    t = torch.randn(2, 5, m.embed_dim)
    a = blk.attn(t)
    b, _ = blk.attn(t, return_attention=True)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_avg_pool_uses_fc_norm_and_group_matcher():
    m = create_model("vit_small_patch16_224", global_pool="avg", **tiny_args("vit_small_patch16_224"))
    keys = m.state_dict().keys()
    assert "fc_norm.weight" in keys and "norm.weight" not in keys
    g = m.group_matcher()
    import re

    assert re.match(g["stem"], "patch_embed.proj.weight")
    assert re.match(g["blocks"][0][0], "blocks.1.attn.qkv.weight")
    assert m.no_weight_decay() == {"pos_embed", "cls_token"}


def test_reset_classifier():
    m = create_model("vit_tiny_patch16_224", **tiny_args("vit_tiny_patch16_224"), num_classes=3)
    m.reset_classifier(7)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    m.reset_classifier(0)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, m.embed_dim)
    with pytest.raises(ValueError, match="num_classes must be >= 0, got -2"):
        m.reset_classifier(-2)


def test_checkpoint_errors_name_keys_and_files(tmp_path):
    from safetensors.torch import save_file

    m = create_model("vit_tiny_patch16_224", **tiny_args("vit_tiny_patch16_224"))
    d = save_checkpoint(m, tmp_path / "ok")
    sd = m.state_dict()
    sd.pop("blocks.0.attn.qkv.weight")
    sd["extra.thing"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "model.safetensors"))
    from medvit.models.checkpoint import sha256_file

    cfg = json.loads((d / "config.json").read_text())  # record the new file's hash: its keys are what is tested
    cfg["sha256"] = sha256_file(d / "model.safetensors")
    (d / "config.json").write_text(json.dumps(cfg))
    pat = r"missing keys \['blocks.0.attn.qkv.weight'\].*unexpected keys \['extra.thing'\]"
    with pytest.raises(CheckpointError, match=pat):
        load_model(d)
    # truncated file
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(d)
    # random bytes
    (d / "model.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(d)
    # a pickle is refused, never unpickled
    torch.save(m.state_dict(), d / "model.safetensors")
    with pytest.raises(CheckpointError, match="pickled PyTorch checkpoint"):
        load_model(d)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model(tmp_path / "nope")


def test_contract_round_trip(tmp_path):
    from medvit.models import WeightContract

    m = create_model("vit_tiny_patch16_224", **tiny_args("vit_tiny_patch16_224"), in_chans=1, num_classes=2)
    c = WeightContract(in_chans=1, input_size=(32, 32), label_names=["a", "b"], thresholds=[0.3, 0.6],
                       intensity_window=(40, 400), source="test", license="CC0")
    save_checkpoint(m, tmp_path / "c", contract=c)
    m2 = load_model(tmp_path / "c")
    assert m2.contract == c
    assert len(m2.checkpoint_sha256) == 64
    with pytest.raises(ValueError, match="thresholds"):
        WeightContract(label_names=["a"], thresholds=[0.1, 0.2])


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_fused_inference_block_matches_reference(qkv_bias):
    """The fused inference kernel and the module path give the same block output (fp32 and bf16)."""
    from medvit.nn import Block

    blk = Block(48, 4, qkv_bias=qkv_bias).eval()
    x = torch.randn(2, 17, 48)
    with torch.no_grad():
        fused = blk(x)
    ref = blk(x)  # autograd on -> module path
    torch.testing.assert_close(fused, ref.detach(), atol=1e-5, rtol=1e-5)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        fused16 = blk(x)
    with torch.autocast("cpu", torch.bfloat16):
        ref16 = blk(x)
    torch.testing.assert_close(fused16.float(), ref16.detach().float(), atol=5e-2, rtol=5e-2)


def test_fused_path_never_bypasses_wrapped_or_hooked_layers():
    from medvit.nn import Block

    blk = Block(48, 4).eval()
    x = torch.randn(1, 5, 48)
    calls = []
    h = blk.attn.qkv.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        blk(x)
    assert calls, "a forward hook on qkv must still run at inference"
    h.remove()
    import warnings

    with warnings.catch_warnings():  # torch marks torch.ao quantisation deprecated; medvit infer still offers it
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(blk), {torch.nn.Linear}, dtype=torch.qint8)
        with torch.no_grad():
            out = q(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
