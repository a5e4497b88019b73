"""``medvit export``: a trained medvit model in formats other tools load, each with the source's SHA-256.

Formats (``to``):

- ``hf``: a Hugging Face ``transformers`` directory (``config.json`` of a ``ViTConfig`` with ``id2label`` and
  ``problem_type="multi_label_classification"``, ``model.safetensors``, ``preprocessor_config.json`` of a
  ``ViTImageProcessor``) that ``ViTForImageClassification.from_pretrained`` loads; its logits equal medvit's for the
  same normalised input. HF's ViT classifies from the final-normed CLS token, so only ``global_pool="token"``
  backbones without LayerScale export (others raise ValueError saying why). Weight names come from inverting
  :func:`medvit.models.convert.hf_to_timm`, the mapping medvit imports HF checkpoints with (one mapping, both ways).
- ``onnx``: ``model.onnx`` through ``torch.onnx.export`` (input ``pixel_values`` (B, C, H, W), output ``logits``
  (B, K), dynamic batch); checked with onnxruntime on the CPU at export time.
- ``torchscript``: ``model.ts`` (``torch.jit.trace``).
- ``monai-bundle``: a MONAI bundle (``configs/metadata.json`` with the weight contract as MONAI's
  ``network_data_format``, ``configs/inference.json``, ``models/model.ts``, ``docs/README.md``) that
  ``python -m monai.bundle run --config_file configs/inference.json --bundle_root DIR --dataset_dir IMAGES``
  executes: MONAI transforms read each image, scale it to [0, 1] by its stored bit range, resize and normalise it
  (the contract's ``pad`` geometry exactly; ``crop`` / ``squash`` as a plain resize), and the probabilities are
  written to ``predictions.json``. ``medvit infer`` remains the reference preprocessing (DICOM VOI LUT etc.).

A PEFT adapter directory exports merged into its base with ``merge_peft=True`` (LoRA-family methods, through
:func:`medvit.peft.hf.merge_adapter`); without merging, ``onnx`` / ``torchscript`` / ``monai-bundle`` export the
adapted network as it runs. Every export writes ``export.json``: format, source directory, the SHA-256 of the
source weights file, medvit version, and the parity measured at export (max |Δ logit| on a random batch).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

FORMATS = ("hf", "onnx", "torchscript", "monai-bundle")


def load_source(path: str | Path, merge_peft: bool = False) -> tuple[nn.Module, Any, str, Path]:
    """(model in eval mode, contract, SHA-256 of the weights file, that file) of a checkpoint / adapter dir."""
    from medvit.models.checkpoint import sha256_file
    from medvit.tasks.evaluate import load_trained

    p = Path(path)
    model, contract, _ = load_trained(p)
    is_adapter = (p / "adapter_config.json").is_file()
    weights = next((f for f in (p / "adapter.safetensors", p / "model.safetensors") if f.is_file()), None)
    if weights is None:
        weights = next(iter(sorted(p.glob("*.safetensors"))), None)
    if weights is None:
        raise FileNotFoundError(f"{p}: no .safetensors weights file")
    if is_adapter and merge_peft:
        from medvit.peft.hf import merge_adapter

        model = merge_adapter(model)
    elif merge_peft:
        raise ValueError(f"--merge-peft: {p} is not a PEFT adapter directory (no adapter_config.json)")
    return model.eval(), contract, sha256_file(weights), weights


def _example(contract: Any, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, contract.in_chans, *contract.input_size, generator=g)


def _record(out: Path, fmt: str, source: Path, sha: str, parity: dict[str, Any], **extra: Any) -> dict[str, Any]:
    from medvit.version import __version__

    info = {"format": fmt, "source": str(source.parent), "source_file": source.name, "source_sha256": sha,
            "medvit_version": __version__, "parity": parity, **extra}
    (out / "export.json").write_text(json.dumps(info, indent=2))
    return info


# ------------------------------------------------------------------------------------------------ HF transformers
def hf_config(model: nn.Module, contract: Any) -> Any:
    """The ``transformers.ViTConfig`` of a medvit VisionTransformer; ValueError for what HF's ViT cannot express."""
    from transformers import ViTConfig

    args = dict(getattr(model, "model_args", {}) or {})
    why = []
    if getattr(model, "global_pool", None) != "token":
        why.append(f"global_pool={getattr(model, 'global_pool', None)!r} (HF classifies from the CLS token: "
                   "fine-tune with global_pool=token, or export to onnx / torchscript / monai-bundle)")
    if getattr(model, "spatial_dims", 2) != 2:
        why.append("3D model")
    if args.get("init_values") is not None:
        why.append("LayerScale (init_values)")
    if args.get("class_token", True) is False or args.get("pos_embed", "learn") == "none":
        why.append("no CLS token / position table")
    if args.get("fc_norm"):
        why.append("fc_norm")
    if getattr(model, "peft_info", None) is not None:
        why.append("an unmerged PEFT adapter (use --merge-peft for LoRA-family methods)")
    if type(model).__name__ != "VisionTransformer":
        why.append(f"architecture {type(model).__name__} (only the plain VisionTransformer maps onto HF ViT)")
    if why:
        raise ValueError("cannot export to HF ViTForImageClassification: " + "; ".join(why))
    patch = model.patch_embed.patch_size
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    names = list(contract.label_names)
    return ViTConfig(
        hidden_size=model.embed_dim, num_hidden_layers=len(model.blocks),
        num_attention_heads=model.blocks[0].attn.num_heads,
        intermediate_size=model.blocks[0].mlp.fc1.out_features, hidden_act="gelu",
        layer_norm_eps=float(model.norm.eps), image_size=int(contract.input_size[0]), patch_size=int(patch),
        num_channels=int(contract.in_chans), qkv_bias=model.blocks[0].attn.qkv.bias is not None,
        num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        problem_type="multi_label_classification", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def medvit_to_hf_state(sd: dict[str, torch.Tensor], hf_keys: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """medvit (timm-layout) weights → HF ViT names, by inverting :func:`medvit.models.convert.hf_to_timm`.

    Each HF key gets a tag tensor (its index, one per row); converting the tags with ``hf_to_timm`` shows which
    medvit tensor, and which rows of it (fused q/k/v), each HF tensor is. KeyError naming the key for a mismatch.
    """
    from medvit.models.convert import hf_to_timm

    keys = list(hf_keys)
    tags = {k: torch.full((hf_keys[k][0] if hf_keys[k] else 1,), float(i)) for i, k in enumerate(keys)}
    mapped = hf_to_timm(tags)
    out: dict[str, torch.Tensor] = {}
    for mk, tag in mapped.items():
        if mk not in sd:
            raise KeyError(f"HF export: medvit weights have no {mk!r}")
        for i in torch.unique(tag).long().tolist():
            rows = (tag == i).nonzero().flatten()
            v = sd[mk][rows[0]: rows[-1] + 1] if sd[mk].dim() else sd[mk]
            out[keys[i]] = v.reshape(hf_keys[keys[i]]).contiguous().clone()
    missing = [k for k in keys if k not in out]
    if missing:
        raise KeyError(f"HF export: no medvit weights for {missing[:5]}")
    return out


def export_hf(model: nn.Module, contract: Any, out: Path) -> float:
    """Write the HF directory; returns max |Δ logit| of the reloaded HF model vs medvit on a random batch."""
    from transformers import ViTForImageClassification, ViTImageProcessor

    cfg = hf_config(model, contract)
    hf = ViTForImageClassification(cfg).eval()
    hf_keys = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    hf.load_state_dict(medvit_to_hf_state(model.state_dict(), hf_keys), strict=True)
    hf.save_pretrained(str(out))
    h, w = contract.input_size
    ViTImageProcessor(do_resize=True, size={"height": int(h), "width": int(w)}, resample=3, do_rescale=False,
                      do_normalize=True, image_mean=list(contract.mean), image_std=list(contract.std)
                      ).save_pretrained(str(out))
    (out / "medvit_contract.json").write_text(json.dumps(contract.to_dict(), indent=2, default=str))
    reloaded = ViTForImageClassification.from_pretrained(str(out)).eval()
    x = _example(contract)
    with torch.no_grad():
        return float((reloaded(pixel_values=x).logits - model(x)).abs().max())


# ------------------------------------------------------------------------------------------------ ONNX / TorchScript
def export_onnx(model: nn.Module, contract: Any, out: Path) -> float:
    """Write ``model.onnx``; returns max |Δ logit| of onnxruntime vs medvit on a random batch of 3."""
    import onnxruntime as ort

    x = _example(contract, batch=2)
    f = out / "model.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    import contextlib
    import io

    chatter = io.StringIO()  # the exporter reports its stages on stdout; keep stdout for the command's result
    with contextlib.redirect_stdout(chatter):
        torch.onnx.export(model, (x,), str(f), input_names=["pixel_values"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), dynamo=True, external_data=False, verbose=False)
    logger.debug("torch.onnx: %s", chatter.getvalue().strip())
    sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    x3 = _example(contract, batch=3, seed=1)
    got = sess.run(["logits"], {"pixel_values": x3.numpy()})[0]
    with torch.no_grad():
        return float((torch.from_numpy(got) - model(x3)).abs().max())


def export_torchscript(model: nn.Module, contract: Any, path: Path) -> float:
    """Write a traced TorchScript module to ``path``; returns max |Δ logit| of the reloaded module."""
    x = _example(contract)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    x3 = _example(contract, batch=3, seed=1)
    with torch.no_grad():
        return float((loaded(x3) - model(x3)).abs().max())


# ------------------------------------------------------------------------------------------------ MONAI bundle
#: grey images: 8-bit files / 255, 16-bit (PIL mode I;16 -> int32) / 65535 (medvit's raster rule ``full``)
_FULL_RANGE = "(255.0 if x.dtype == torch.uint8 else 65535.0)"


#: Pillow modes the bundle reads as medvit's read_raster does (EXIF orientation applied first): bilevel, grey+alpha
#: and grey-palette images -> 8-bit grey 'L'; colour palettes, RGBA, CMYK, YCbCr, ... -> 'RGB'; 8-bit 'L', 'RGB'
#: and 16-bit 'I;16*' as stored. Other modes (32-bit integer 'I', float 'F', whose stored range is not a bit depth)
#: are refused with a ValueError naming the mode, instead of being scaled differently from medvit.
_BUNDLE_MODES = ("L", "RGB", "I;16", "I;16B", "I;16L", "I;16N")
_PIL_CONVERTER = (
    "$lambda im: (lambda im, pal: im.convert('L') if im.mode in ('1', 'LA') or (im.mode in ('P', 'PA') and "
    "all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) // 3 * 3, 3))) "
    "else im.convert('RGB') if im.mode in ('P', 'PA', 'RGBA', 'CMYK', 'YCbCr', 'LAB', 'HSV', 'RGBX') "
    f"else im if im.mode in {_BUNDLE_MODES!r} "
    "else (_ for _ in ()).throw(ValueError('image mode ' + repr(im.mode) + ' is not read by this bundle (8/16-bit "
    "grey, palette or RGB files only; use medvit infer)')))"
    "(*(lambda im: (im, im.getpalette() or []))(__import__('PIL.ImageOps', fromlist=['ImageOps']).exif_transpose(im)"
    " or im))")


def bundle_preprocessing(contract: Any) -> list[dict[str, Any]]:
    """MONAI dictionary transforms (bundle config form) reproducing the contract's serving preprocessing
    (:class:`medvit.data.preprocess.Preprocessor`) for 8/16-bit grey or RGB PNG/JPEG/TIFF/BMP files: intensity by
    the stored bit range (rule ``full``), RGB -> ITU-R 601 luma for 1-channel models, the same integer pad/crop box
    to the input aspect, one antialiased resize (torch's PIL-compatible kernels) to ``resize_size`` and the centre
    crop, then ``(x - mean) / std``. Raises ValueError for contracts it cannot reproduce (raster rule other than
    ``full``, an ``intensity_window``)."""
    from medvit.data.preprocess import Preprocessor

    pre = Preprocessor.from_contract(contract)
    rule = pre.intensity.get("raster")
    if rule != "full" or pre.intensity_window is not None:
        raise ValueError(f"monai-bundle export reproduces the raster intensity rule 'full' only (contract: raster "
                         f"{rule!r}, intensity_window {pre.intensity_window}); use --to onnx/torchscript with "
                         "medvit's preprocessing (medvit infer)")
    th, tw = pre.input_size
    sh, sw = pre.scaled_size()
    oy, ox = (sh - th) // 2, (sw - tw) // 2
    c = int(contract.in_chans)
    mode = "bicubic" if pre.interpolation == "bicubic" else "bilinear"
    luma = "torch.tensor([0.299, 0.587, 0.114])"
    if c == 1:
        chans = f"(x.float() if x.ndim == 2 else (x.float() * {luma}).sum(-1))[None]"  # no '@': a bundle reference
    else:
        chans = f"(x.float()[None].repeat({c}, 1, 1) if x.ndim == 2 else x.float().permute(2, 0, 1))"
    intensity = f"$lambda x: torch.clamp(torch.as_tensor({chans}) / {_FULL_RANGE}, 0.0, 1.0)"
    r = tw / th
    if pre.geometry == "squash":
        box = "(h, w)"
    elif pre.geometry == "pad":
        box = f"((h, round(h * {r!r})) if w / h < {r!r} else (round(w / {r!r}), w))"
    else:
        box = f"((round(w / {r!r}), w) if w / h < {r!r} else (h, round(h * {r!r})))"
    # F.pad with (left, right, top, bottom); negative values crop: the box of Preprocessor.aspect_box, zero fill
    aspect = ("$lambda x: (lambda h, w: (lambda nh, nw: torch.nn.functional.pad(x, (-((w - nw) // 2), "
              "nw + (w - nw) // 2 - w, -((h - nh) // 2), nh + (h - nh) // 2 - h)))"
              f"(*{box}))(x.shape[-2], x.shape[-1])")
    clamp = ".clamp(0.0, 1.0)" if mode == "bicubic" else ""
    resize = (f"$lambda x: torch.nn.functional.interpolate(x[None], size=({sh}, {sw}), mode='{mode}', "
              f"align_corners=False, antialias=True)[0]{clamp}[:, {oy}:{oy + th}, {ox}:{ox + tw}]")
    mean = list(contract.mean) * (c if len(contract.mean) == 1 else 1)
    std = list(contract.std) * (c if len(contract.std) == 1 else 1)
    return [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True, "reader": "PILReader",
         "reverse_indexing": False, "dtype": None, "converter": _PIL_CONVERTER},
        {"_target_": "Lambdad", "keys": "image", "func": intensity},
        {"_target_": "Lambdad", "keys": "image", "func": aspect},
        {"_target_": "Lambdad", "keys": "image", "func": resize},
        {"_target_": "NormalizeIntensityd", "keys": "image", "subtrahend": mean, "divisor": std,
         "channel_wise": True},
    ]


def bundle_parity(bundle: Path, model: nn.Module, contract: Any, seed: int = 0) -> dict[str, float]:
    """End-to-end check of an exported bundle on image files: the bundle's ``preprocessing`` + ``network`` vs
    medvit (:func:`medvit.io.read_image` + :class:`~medvit.data.preprocess.Preprocessor` + ``model``) on
    synthetic 8-bit, 16-bit, RGB, colour-palette, bilevel and non-square PNGs; returns max |Δ probability| per
    file."""
    import tempfile

    import numpy as np
    from monai.bundle import ConfigParser
    from PIL import Image

    from medvit.data.preprocess import Preprocessor
    from medvit.io import read_image

    pre = Preprocessor.from_contract(contract)
    rng = np.random.default_rng(seed)
    th, tw = pre.input_size
    arrays = {"grey8_square.png": (rng.random((th * 2, tw * 2)) * 255).astype(np.uint8),
              "grey8_wide.png": (rng.random((th, tw * 2 + 3)) * 255).astype(np.uint8),
              "grey8_tall.png": (rng.random((th * 2 + 1, tw)) * 255).astype(np.uint8),
              "grey16.png": (rng.random((th + 5, tw)) * 65535).astype(np.uint16),
              "rgb8.png": (rng.random((th, tw + 7, 3)) * 255).astype(np.uint8),
              "bilevel.png": rng.random((th + 3, tw)) > 0.5}
    cases = {k: Image.fromarray(a) for k, a in arrays.items()}
    cases["palette.png"] = cases["rgb8.png"].quantize(16)  # colour palette: read as RGB, not as indices
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    tf = parser.get_parsed_content("preprocessing")
    net = parser.get_parsed_content("network")
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        for name, im in cases.items():
            f = Path(d) / name
            im.save(f)
            x = torch.from_numpy(pre(read_image(f))[0])[None]
            want = torch.sigmoid(model(x))
            got = torch.sigmoid(net(torch.as_tensor(tf({"image": str(f)})["image"])[None].float()))
            out[name] = float((got - want).abs().max())
    return out


def export_monai_bundle(model: nn.Module, contract: Any, out: Path, sha: str) -> float:
    """Write the bundle; returns the TorchScript parity (the bundle's network is ``models/model.ts``)."""
    from medvit.version import __version__

    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(exist_ok=True)
    (out / "docs").mkdir(exist_ok=True)
    diff = export_torchscript(model, contract, out / "models" / "model.ts")
    h, w = (int(s) for s in contract.input_size)
    names = list(contract.label_names)
    meta = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                  "meta_schema_20220324.json",
        "version": str(contract.version or "0.1.0"), "changelog": {str(contract.version or "0.1.0"): "medvit export"},
        "monai_version": _monai_version(), "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": _numpy_version(), "optional_packages_version": {"medvit": __version__},
        "name": contract.name or "medvit model", "task": "multi-label classification",
        "description": (contract.description or "") + " Research use only; exported by medvit.",
        "authors": "medvit export", "copyright": "see the source model", "source_sha256": sha,
        "intended_use": "research only" if contract.research_only else "",
        "data_source": contract.source or "",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": ",".join(contract.modalities)
                                 or "any", "num_channels": int(contract.in_chans), "spatial_shape": [h, w],
                                 "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                                 "channel_def": {str(i): "grey" for i in range(int(contract.in_chans))},
                                 "normalization": {"mean": list(contract.mean), "std": list(contract.std)}}},
            "outputs": {"pred": {"type": "probabilities", "format": "classes", "value_range": [0, 1],
                                 "num_channels": len(names), "spatial_shape": [len(names)], "dtype": "float32",
                                 "is_patch_data": False, "channel_def": {str(i): n for i, n in enumerate(names)},
                                 "thresholds": list(contract.thresholds or [])}}},
        "medvit_contract": contract.to_dict(),
    }
    (out / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    inference = {
        "imports": ["$import glob", "$import json", "$import os", "$import torch"],
        "bundle_root": ".",
        "dataset_dir": "",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cpu')",
        "label_names": names,
        "datalist": "$sorted(f for f in glob.glob(os.path.join(@dataset_dir, '*')) if os.path.isfile(f))",
        "network": "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), map_location=@device).eval()",
        "preprocessing": {"_target_": "Compose", "transforms": bundle_preprocessing(contract)},
        "predict": "$lambda f: torch.sigmoid(@network(torch.as_tensor(@preprocessing({'image': f})['image'])"
                   "[None].float().to(@device))).detach().cpu()[0].tolist()",
        "run": ["$os.makedirs(@output_dir, exist_ok=True)",
                "$open(os.path.join(@output_dir, 'predictions.json'), 'w').write(json.dumps({os.path.basename(f): "
                "dict(zip(@label_names, @predict(f))) for f in @datalist}, indent=1))"],
    }
    (out / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
    (out / "docs" / "README.md").write_text(
        f"# {contract.name or 'medvit model'} (MONAI bundle exported by medvit {__version__})\n\n"
        f"Labels: {', '.join(names)}. Source weights SHA-256: {sha}. Research use only.\n\n"
        "    python -m monai.bundle run --config_file configs/inference.json --bundle_root . "
        "--dataset_dir IMAGES\n\nwrites eval/predictions.json (probability per label per image). Images: 8- or "
        "16-bit grey or RGB PNG/JPEG/TIFF/BMP (palette, bilevel and alpha images converted as medvit does, EXIF "
        "orientation applied; 32-bit integer or float images are refused), preprocessed as medvit does (stored bit "
        "range, the contract's pad/crop geometry and resize; see configs/inference.json); "
        "the end-to-end difference to medvit measured "
        "at export is in export.json (`bundle_parity`). DICOM input: use `medvit infer` (VOI LUT).\n")
    return diff


def _monai_version() -> str:
    import monai

    return monai.__version__


def _numpy_version() -> str:
    import numpy

    return numpy.__version__


# ------------------------------------------------------------------------------------------------ entry
def _protected_inputs(source: Path) -> list[Path]:
    """The source directory and, for an adapter, the base weights it names (an export must never delete them)."""
    paths = [source]
    if (source / "adapter_config.json").is_file():
        from medvit.models.mae_convert import resolve_encoder_file
        from medvit.peft.checkpoint import read_adapter_config

        try:
            weights = read_adapter_config(source).get("base", {}).get("weights")
            wfile = resolve_encoder_file(weights) if weights else None
        except Exception:  # noqa: BLE001 - an unreadable adapter is reported by load_source later
            wfile = None
        if wfile is not None:
            paths.append(Path(wfile))
    return paths


def _refuse_overlap(source: Path, out: Path) -> None:
    """Raise ValueError when ``out`` is, contains or lies inside the source checkpoint (or an adapter's base
    weights): ``--overwrite`` empties ``out`` first, which would delete the model being exported."""
    o = out.resolve()
    for p in _protected_inputs(source):
        r = p.resolve()
        if o == r or r.is_relative_to(o) or o.is_relative_to(r):
            raise ValueError(f"output {out} overlaps the export's input {p} (same folder, inside it or containing "
                             f"it); choose an --output outside the source checkpoint")


def export(source: str | Path, to: str, out: str | Path, merge_peft: bool = False, tolerance: float | None = None,
           overwrite: bool = False) -> dict[str, Any]:
    """Export ``source`` (checkpoint or adapter directory) ``to`` a format into folder ``out``; returns and writes
    ``export.json``. Raises ValueError when the measured parity exceeds ``tolerance`` (default 1e-5 for hf,
    1e-4 otherwise; for monai-bundle also end to end, image file -> probabilities, :func:`bundle_parity`), for a
    non-empty ``out`` unless ``overwrite``, and for an ``out`` overlapping the source."""
    if to not in FORMATS:
        raise ValueError(f"unknown export format {to!r}; use one of {', '.join(FORMATS)}")
    o = Path(out)
    _refuse_overlap(Path(source), o)
    if o.exists() and any(o.iterdir()):
        if not overwrite:
            raise ValueError(f"{o} is not empty (choose another --output or pass --overwrite)")
        shutil.rmtree(o)
    o.mkdir(parents=True, exist_ok=True)
    model, contract, sha, weights = load_source(source, merge_peft)
    extra: dict[str, Any] = {}
    if contract.input_size is None or contract.in_chans is None:
        raise ValueError(f"{source}: the contract records no input size / channels")
    with torch.no_grad():
        if to == "hf":
            diff = export_hf(model, contract, o)
        elif to == "onnx":
            diff = export_onnx(model, contract, o)
        elif to == "torchscript":
            diff = export_torchscript(model, contract, o / "model.ts")
        else:
            diff = export_monai_bundle(model, contract, o, sha)
            e2e = bundle_parity(o, model, contract)  # image file -> probabilities, bundle vs medvit
            extra["bundle_parity"] = {"max_abs_prob_diff_per_file": e2e}
            diff = max(diff, *e2e.values())
    tol = tolerance if tolerance is not None else (1e-5 if to == "hf" else 1e-4)
    if not (math.isfinite(diff) and diff <= tol):
        raise ValueError(f"export {to}: reloaded outputs differ from medvit's by {diff:.3g} (> {tol:g})")
    (o / "medvit_contract.json").write_text(json.dumps(contract.to_dict(), indent=2, default=str))
    info = _record(o, to, weights, sha, {"max_abs_logit_diff": diff, "tolerance": tol},
                   merged_peft=bool(merge_peft), label_names=list(contract.label_names), **extra)
    logger.info("exported %s to %s (%s), max |Δ logit| %.2g", source, o, to, diff)
    return info
