"""MAE weights in and out: reference (facebookresearch / thorax-MAE), HF ViTMAE and medvit layouts.

- :func:`mae_state_dict`: any full MAE state dict (encoder + decoder) -> medvit :class:`MaskedAutoencoder` keys,
  so a released or HF MAE checkpoint continues pretraining.
- :func:`load_pretrained_encoder`: load the encoder part of anything (mae_pretrain run folder, medvit checkpoint,
  released ``.pth``, HF file, weight tag) into a backbone for fine-tuning; decoder keys are dropped.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvit.models.convert import StateDict, detect_layout, hf_to_timm, unwrap

logger = logging.getLogger(__name__)

_DECODER_TOP = ("decoder_embed.", "decoder_norm.", "decoder_pred.")


def _read_any(path: Path) -> StateDict:
    from medvit.models.checkpoint import read_pickled_weights, read_safetensors

    raw = read_pickled_weights(path) if path.suffix in (".pth", ".pt", ".bin") else read_safetensors(path)
    return unwrap(raw)


def _hf_decoder(sd: StateDict) -> StateDict:
    """HF ``decoder.*`` keys -> reference decoder names (blocks renamed like the encoder's)."""
    out: StateDict = {}
    layers: StateDict = {}
    for k, v in sd.items():
        k2 = re.sub(r"^(vit|model)\.", "", k)
        if not k2.startswith("decoder."):
            continue
        rest = k2[len("decoder.") :]
        m = re.match(r"^decoder_layers\.(\d+)\.(.*)$", rest)
        if m:
            layers[f"layers.{m.group(1)}.{m.group(2)}"] = v
        elif rest in ("mask_token", "decoder_pos_embed") or rest.startswith(_DECODER_TOP):
            out[rest] = v
    for k, v in hf_to_timm(layers).items():
        out["decoder_" + k] = v  # blocks.N.* -> decoder_blocks.N.*
    return out


def mae_state_dict(sd: dict[str, Any]) -> StateDict:
    """Full MAE state (reference, HF ViTMAEForPreTraining or medvit layout) -> medvit MaskedAutoencoder keys."""
    sd = unwrap(sd)
    if any(k.startswith("encoder.") for k in sd):
        return dict(sd)  # already medvit
    if detect_layout(sd) == "hf":
        enc = hf_to_timm(sd)
        dec = _hf_decoder(sd)
    else:
        dec = {k: v for k, v in sd.items() if k.startswith(("decoder", "mask_token"))}
        enc = {k: v for k, v in sd.items() if k not in dec}
    if not dec:
        logger.warning("the checkpoint has no MAE decoder keys; the decoder stays freshly initialised")
    return {**{"encoder." + k: v for k, v in enc.items()}, **dec}


def load_mae_weights(mae: nn.Module, src: str | Path) -> nn.Module:
    """Load a full MAE checkpoint (file or medvit run folder ``mae/``) into ``mae`` to continue pretraining.

    Shapes must match except the position tables, which are rebuilt by the model (fixed sin-cos) when the grid
    differs. Missing decoder keys are tolerated and logged (encoder-only checkpoints).
    """
    from medvit.models.checkpoint import load_state_dict_checked
    from medvit.models.convert import fit_to_model

    p = Path(src)
    if p.is_dir():
        p = p / "mae" / "model.safetensors" if (p / "mae").is_dir() else p / "model.safetensors"
    sd = mae_state_dict(_read_any(p))
    enc = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    enc = fit_to_model(enc, mae.encoder)  # type: ignore[arg-type]
    dec = {k: v for k, v in sd.items() if not k.startswith("encoder.")}
    sd = {**{"encoder." + k: v for k, v in enc.items()}, **dec}
    target = mae.state_dict()
    if "decoder_pos_embed" in sd and sd["decoder_pos_embed"].shape != target["decoder_pos_embed"].shape:
        logger.warning("decoder position table %s rebuilt for %s", tuple(sd["decoder_pos_embed"].shape),
                       tuple(target["decoder_pos_embed"].shape))
        sd.pop("decoder_pos_embed")
    load_state_dict_checked(mae, sd, str(p), allow_missing=("decoder", "mask_token", "encoder.head.",
                                                              "encoder.fc_norm.", "encoder.norm."),
                            allow_unexpected=("encoder.head.", "encoder.fc_norm."))
    return mae


def resolve_encoder_file(src: str | Path) -> Path | None:
    """Weights file holding an encoder for ``src`` (run folder, checkpoint dir or file); None for weight tags.

    Raises:
        FileNotFoundError: a folder without ``model.safetensors`` (nor ``encoder/`` / ``model/`` holding one).
        ValueError: ``src`` (or the model.safetensors a folder holds) exists but is neither a folder nor a regular
            file (a device, FIFO or socket such as ``/dev/zero``, or a /proc or /sys pseudo-file; never opened), so
            it is not a weight tag either.
    """
    from medvit.models.checkpoint import special_file_problem

    p = Path(src)
    if why := special_file_problem(p):
        raise ValueError(f"{p}: {why}")
    if p.is_dir():
        for cand in (p / "encoder" / "model.safetensors", p / "model" / "model.safetensors", p / "model.safetensors"):
            if why := special_file_problem(cand):  # it holds one, which is not a regular file
                raise ValueError(f"{cand}: {why}")
            if cand.is_file():
                return cand
        raise FileNotFoundError(f"{p} holds no model.safetensors (nor encoder/ or model/ subfolders)")
    return p if p.is_file() else None


def load_pretrained_encoder(model: nn.Module, src: str | Path) -> nn.Module:
    """Load the encoder weights of ``src`` into backbone ``model`` (head, fc_norm, final norm may be missing)."""
    from medvit.models.checkpoint import load_state_dict_checked, load_weights_into
    from medvit.models.convert import to_medvit

    f = resolve_encoder_file(src)
    if f is None:
        return load_weights_into(model, src)  # a registered weight tag
    sd = _read_any(f)
    if any(k.startswith("encoder.") for k in sd):  # a medvit MAE state: take the encoder
        sd = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    sd = to_medvit(sd, model)
    load_state_dict_checked(model, sd, str(f), allow_missing=("head.", "fc_norm.", "norm."),
                            allow_unexpected=("norm.", "fc_norm.", "head."))
    return model


def export_encoder(mae: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's state dict out of a medvit MAE (timm layout, for fine-tuning)."""
    return {k[len("encoder.") :]: v for k, v in mae.state_dict().items() if k.startswith("encoder.")}
