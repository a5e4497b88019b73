"""`medvit export`: HF transformers (<= 1e-5), ONNX through onnxruntime (<= 1e-4), TorchScript, and a MONAI bundle
executed by MONAI's bundle runner; merged LoRA adapters; the source SHA-256 in export.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medvit.cli.main import main

LABELS = ["Atelectasis", "Effusion", "Mass"]


def _checkpoint(out: Path, global_pool: str = "token") -> Path:
    import medvit
    from medvit.data.preprocess import TRAINING_DEFAULT_INTENSITY
    from medvit.models import WeightContract, save_checkpoint

    torch.manual_seed(0)
    m = medvit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=48, depth=2, num_heads=4,
                            in_chans=1, num_classes=len(LABELS), global_pool=global_pool)
    with torch.no_grad():  # away from the init so every weight matters in the comparison
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    c = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.52,), std=(0.29,), label_names=LABELS,
                       thresholds=[0.3, 0.5, 0.7], intensity=dict(TRAINING_DEFAULT_INTENSITY), crop_mode="pad",
                       interpolation="bicubic", modalities=["DX"], name="tiny-export")
    return save_checkpoint(m, out, contract=c)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "model")


def _medvit(ckpt: Path, x: torch.Tensor) -> torch.Tensor:
    from medvit.models import load_model

    with torch.no_grad():
        return load_model(ckpt).eval()(x)


def _sha(p: Path) -> str:
    from medvit.models.checkpoint import sha256_file

    return sha256_file(p)


def _export(capsys, *argv: str) -> dict:
    assert main(["export", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_hf_export_loads_in_transformers_with_identical_logits(ckpt, tmp_path, capsys):
    from transformers import ViTForImageClassification

    info = _export(capsys, str(ckpt), "--to", "hf", "-o", str(tmp_path / "hf"))
    assert info["source_sha256"] == _sha(ckpt / "model.safetensors") and info["parity"]["max_abs_logit_diff"] <= 1e-5
    hf = ViTForImageClassification.from_pretrained(str(tmp_path / "hf")).eval()
    assert [hf.config.id2label[i] for i in range(3)] == LABELS
    assert hf.config.problem_type == "multi_label_classification"
    x = torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        got = hf(pixel_values=x).logits
    assert (got - _medvit(ckpt, x)).abs().max() <= 1e-5
    pre = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert pre["image_mean"] == [0.52] and pre["image_std"] == [0.29]


def test_hf_export_refuses_what_hf_vit_cannot_express(tmp_path, capsys):
    avg = _checkpoint(tmp_path / "avg", global_pool="avg")
    assert main(["export", str(avg), "--to", "hf", "-o", str(tmp_path / "hf")]) == 2
    assert "global_pool='avg'" in capsys.readouterr().err


def test_onnx_export_runs_in_onnxruntime(ckpt, tmp_path, capsys):
    import onnxruntime as ort

    info = _export(capsys, str(ckpt), "--to", "onnx", "-o", str(tmp_path / "onnx"))
    assert info["source_sha256"] == _sha(ckpt / "model.safetensors")
    sess = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(7, 1, 32, 32, generator=torch.Generator().manual_seed(8))  # another batch size than exported
    got = sess.run(["logits"], {"pixel_values": x.numpy()})[0]
    assert np.abs(got - _medvit(ckpt, x).numpy()).max() <= 1e-4


def test_torchscript_export(ckpt, tmp_path, capsys):
    _export(capsys, str(ckpt), "--to", "torchscript", "-o", str(tmp_path / "ts"))
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        got = torch.jit.load(str(tmp_path / "ts" / "model.ts"))(x)
    assert (got - _medvit(ckpt, x)).abs().max() <= 1e-5
    assert main(["export", str(ckpt), "--to", "torchscript", "-o", str(tmp_path / "ts")]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err


def test_monai_bundle_runs_in_monai_bundle_runner(ckpt, tmp_path, capsys):
    from monai.bundle import run
    from PIL import Image

    from medvit.data.imageload import load_unit
    from medvit.data.preprocess import Preprocessor
    from medvit.models import load_model

    bundle = tmp_path / "bundle"
    info = _export(capsys, str(ckpt), "--to", "monai-bundle", "-o", str(bundle))
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["source_sha256"] == info["source_sha256"] == _sha(ckpt / "model.safetensors")
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["spatial_shape"] == [32, 32] and fmt["inputs"]["image"]["num_channels"] == 1
    assert list(fmt["outputs"]["pred"]["channel_def"].values()) == LABELS
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(images / f"img{i}.png")
    run(run_id="run", config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"), bundle_root=str(bundle), dataset_dir=str(images))
    preds = json.loads((bundle / "eval" / "predictions.json").read_text())
    model = load_model(ckpt).eval()
    pre = Preprocessor.from_contract(model.contract)
    assert sorted(preds) == ["img0.png", "img1.png", "img2.png"]
    for name, probs in preds.items():
        x, _ = pre.from_unit(load_unit(images / name, model.contract.intensity))  # medvit's own preprocessing
        with torch.no_grad():
            want = torch.sigmoid(model(torch.from_numpy(x)[None]))[0].numpy()
        assert np.abs(np.array([probs[k] for k in LABELS]) - want).max() <= 1e-4, name


def test_merged_lora_exports(tmp_path, capsys):
    from medvit.models import create_model, save_checkpoint
    from medvit.tasks import run_task
    from medvit.tasks.evaluate import load_trained

    torch.manual_seed(3)
    args = dict(embed_dim=48, depth=2, num_heads=4)
    base = save_checkpoint(create_model("vit_tiny_patch16_224", img_size=32, in_chans=1, num_classes=0, **args),
                           tmp_path / "base")
    run_task(None, [], data=dict(task="prompt_tune", output_dir=str(tmp_path / "lora"), pretrained=str(base),
                                 method="lora", method_config={"r": 2}, backbone="vit_tiny_patch16_224",
                                 backbone_args=args, image_size=32, dataset="cxr_phantom", ood_fpr=0.0,
                                 dataset_args=dict(n=60, image_size=32, seed=0),
                                 train=dict(steps=2, batch_size=8, lr=5e-2, progress=False)))
    adapter = tmp_path / "lora" / "seed_0" / "adapter"
    assert main(["export", str(adapter), "--to", "hf", "-o", str(tmp_path / "no")]) == 2
    assert "--merge-peft" in capsys.readouterr().err
    info = _export(capsys, str(adapter), "--to", "hf", "--merge-peft", "-o", str(tmp_path / "hf"))
    assert info["merged_peft"] and info["source_sha256"] == _sha(adapter / "adapter.safetensors")
    from transformers import ViTForImageClassification

    hf = ViTForImageClassification.from_pretrained(str(tmp_path / "hf")).eval()
    model, _, _ = load_trained(adapter)  # the unmerged adapter as medvit runs it
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert (hf(pixel_values=x).logits - model(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_export_refuses_output_overlapping_the_source_before_deleting_anything(tmp_path, capsys, where):
    """breaker F7: `-o SOURCE --overwrite` emptied the source checkpoint, then failed."""
    src = _checkpoint(tmp_path / "run" / "model")
    before = {f.name: _sha(f) for f in src.iterdir()}
    out = {"same": src, "inside": src / "hf", "parent": tmp_path / "run"}[where]
    assert main(["export", str(src), "--to", "hf", "-o", str(out), "--overwrite"]) == 2
    assert "overlaps" in capsys.readouterr().err
    assert {f.name: _sha(f) for f in src.iterdir() if f.is_file()} == before


def test_export_refuses_output_holding_an_adapters_base_weights(tmp_path, capsys):
    """An adapter export with --overwrite must not delete the base checkpoint the adapter needs."""
    from medvit.models import create_model, save_checkpoint
    from medvit.peft import apply_peft
    from medvit.peft.checkpoint import save_adapter

    torch.manual_seed(1)
    base = save_checkpoint(create_model("vit_tiny_patch16_224", img_size=32, in_chans=1, num_classes=0, embed_dim=48,
                                        depth=2, num_heads=4), tmp_path / "base")
    wfile = base / "model.safetensors"
    sha = _sha(wfile)
    m = create_model("vit_tiny_patch16_224", img_size=32, in_chans=1, num_classes=3, embed_dim=48, depth=2,
                     num_heads=4)
    from medvit.models.mae_convert import load_pretrained_encoder

    load_pretrained_encoder(m, base)
    m = apply_peft(m, "lora", {"r": 2}, base_weights=str(base), base_weights_sha256=sha)
    adapter = save_adapter(m, tmp_path / "adapter")
    assert main(["export", str(adapter), "--to", "hf", "--merge-peft", "-o", str(base), "--overwrite"]) == 2
    assert "overlaps" in capsys.readouterr().err
    assert wfile.is_file() and _sha(wfile) == sha


def test_monai_bundle_reproduces_medvit_preprocessing_on_16bit_rgb_and_non_square_files(ckpt, tmp_path, capsys):
    """breaker F8: the bundle divided every PNG by 255 (16-bit inputs wrong) and resized differently from medvit;
    export.json's parity compared network tensors only. Now the bundle run by MONAI's runner matches medvit's
    read_image + Preprocessor end to end, and export.json records that file-level parity."""
    from monai.bundle import run
    from PIL import Image

    from medvit.data.preprocess import Preprocessor
    from medvit.io import read_image
    from medvit.models import load_model

    bundle = tmp_path / "bundle"
    info = _export(capsys, str(ckpt), "--to", "monai-bundle", "-o", str(bundle))
    e2e = info["bundle_parity"]["max_abs_prob_diff_per_file"]
    assert set(e2e) >= {"grey16.png", "grey8_wide.png", "rgb8.png", "palette.png", "bilevel.png"}
    assert max(e2e.values()) <= 1e-4
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 1, 45 * 70).reshape(45, 70)
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(images / "g16.png")  # 16-bit, non-square
    Image.fromarray((rng.random((80, 30)) * 255).astype(np.uint8)).save(images / "tall8.png")
    Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(images / "rgb.png")
    run(run_id="run", config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"), bundle_root=str(bundle), dataset_dir=str(images))
    preds = json.loads((bundle / "eval" / "predictions.json").read_text())
    model = load_model(ckpt).eval()
    pre = Preprocessor.from_contract(model.contract)
    for name, probs in preds.items():
        x = torch.from_numpy(pre(read_image(images / name))[0])[None]
        with torch.no_grad():
            want = torch.sigmoid(model(x))[0].numpy()
        assert np.abs(np.array([probs[k] for k in LABELS]) - want).max() <= 1e-4, name


def test_monai_bundle_crop_geometry_three_channels_and_unreproducible_contracts(tmp_path, capsys):
    import medvit
    from medvit.data.preprocess import TRAINING_DEFAULT_INTENSITY
    from medvit.models import WeightContract, save_checkpoint
    from medvit.tasks.export import bundle_parity, load_source

    torch.manual_seed(2)
    m = medvit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=48, depth=2, num_heads=4,
                            in_chans=3, num_classes=2)
    c = WeightContract(in_chans=3, input_size=(32, 32), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3),
                       label_names=["a", "b"], thresholds=[0.5, 0.5], intensity=dict(TRAINING_DEFAULT_INTENSITY),
                       crop_mode="crop", crop_pct=0.875, interpolation="bilinear")
    src = save_checkpoint(m, tmp_path / "m3", contract=c)
    info = _export(capsys, str(src), "--to", "monai-bundle", "-o", str(tmp_path / "b3"))
    assert max(info["bundle_parity"]["max_abs_prob_diff_per_file"].values()) <= 1e-4
    model, contract, _, _ = load_source(src)
    with torch.no_grad():
        assert max(bundle_parity(tmp_path / "b3", model, contract, seed=5).values()) <= 1e-4
    c2 = WeightContract(**{**c.to_dict(), "intensity": {"raster": "minmax"}})
    src2 = save_checkpoint(m, tmp_path / "m4", contract=c2)
    assert main(["export", str(src2), "--to", "monai-bundle", "-o", str(tmp_path / "b4")]) == 2
    assert "raster intensity rule 'full' only" in capsys.readouterr().err


def test_monai_bundle_reads_palette_bilevel_alpha_and_exif_images_as_medvit_and_refuses_32bit(tmp_path):
    """F-EXPORT16 residual: the bundle's PILReader read colour-palette PNGs as indices, bilevel images as 0/1 over
    65535, ignored EXIF orientation, failed on LA/RGBA and scaled 32-bit/float TIFFs differently from medvit
    (silently different probabilities). Its converter now mirrors medvit.io.read_raster and refuses the rest."""
    from monai.bundle import ConfigParser
    from PIL import Image

    from medvit.data.preprocess import TRAINING_DEFAULT_INTENSITY, Preprocessor
    from medvit.io import read_image
    from medvit.models import WeightContract
    from medvit.tasks.export import bundle_preprocessing

    c = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.5,), std=(0.25,), label_names=["a", "b"],
                       thresholds=[0.5, 0.5], intensity=dict(TRAINING_DEFAULT_INTENSITY), crop_mode="pad")
    pre = Preprocessor.from_contract(c)
    tf = ConfigParser({"t": {"_target_": "Compose", "transforms": bundle_preprocessing(c)}}).get_parsed_content("t")
    rng = np.random.default_rng(0)
    g8 = (rng.random((40, 50)) * 255).astype(np.uint8)
    rgb = np.stack([g8, g8[::-1], g8[:, ::-1]], -1)
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees (TIFF 6.0 / EXIF 2.3)
    rotated.save(tmp_path / "exif.jpg", exif=exif, quality=95)
    ims = {"palette.png": Image.fromarray(rgb).quantize(16), "bilevel.png": Image.fromarray(g8 > 128),
           "la.png": Image.fromarray(g8).convert("LA"), "rgba.png": Image.fromarray(rgb).convert("RGBA")}
    for name, im in ims.items():
        im.save(tmp_path / name)
    for name in [*ims, "exif.jpg"]:
        want = pre(read_image(tmp_path / name))[0]
        got = np.asarray(tf({"image": str(tmp_path / name)})["image"])
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5, name
    Image.fromarray((rng.random((40, 50)) * 1e6).astype(np.int32)).save(tmp_path / "i32.tif")
    with pytest.raises(RuntimeError) as e:
        tf({"image": str(tmp_path / "i32.tif")})
    assert "image mode 'I' is not read by this bundle" in str(e.value.__cause__)
