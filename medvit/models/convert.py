"""Weight-key converters into medvit's (timm / MAE) layout, and weight adaptation.

Supported sources:
- timm / facebookresearch-MAE / chest-X-ray MAE (``patch_embed.proj.weight``, ``blocks.N.attn.qkv``,
  ``pos_embed``, ``cls_token``, ``norm``, ``fc_norm``, ``head``), possibly wrapped in ``{"model": ...}``
  or ``{"state_dict": ...}`` and prefixed ``module.``; MAE decoder keys are dropped.
- HF transformers ViT / ViT-MAE, both the 5.x names (``layers.N.attention.q_proj``, ``mlp.fc1``) and
  the 4.x names (``encoder.layer.N.attention.attention.query``, ``intermediate.dense``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch
from torch import nn

from medvit.nn import resample_pos_embed

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


def unwrap(sd: dict[str, Any]) -> StateDict:
    """Take the tensor dict out of common checkpoint wrappers and strip DDP/backbone prefixes."""
    for key in ("model", "state_dict", "model_state", "module"):
        if key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        for p in ("module.", "_orig_mod."):
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def detect_layout(sd: StateDict) -> str:
    """'hf' for HF transformers ViT/ViT-MAE keys, 'timm' for timm/MAE/medvit keys."""
    keys = list(sd)
    if any("embeddings.patch_embeddings.projection" in k for k in keys):
        return "hf"
    if any(k.startswith("patch_embed.proj") for k in keys):
        return "timm"
    raise ValueError(
        "unrecognised checkpoint layout: expected timm/MAE keys (patch_embed.proj.weight, blocks.N...) "
        f"or HF ViT keys (embeddings.patch_embeddings...); first keys: {keys[:5]}"
    )


_HF_BLOCK = [
    # (HF 5.x suffix | HF 4.x suffix) -> medvit suffix
    (r"layernorm_before\.", "norm1."),
    (r"layernorm_after\.", "norm2."),
    (r"attention\.o_proj\.", "attn.proj."),
    (r"attention\.output\.dense\.", "attn.proj."),
    (r"mlp\.fc1\.", "mlp.fc1."),
    (r"mlp\.fc2\.", "mlp.fc2."),
    (r"intermediate\.dense\.", "mlp.fc1."),
    (r"output\.dense\.", "mlp.fc2."),
]
_HF_QKV = {
    "q_proj": 0, "k_proj": 1, "v_proj": 2,  # 5.x
    "attention.query": 0, "attention.key": 1, "attention.value": 2,  # 4.x
}


def hf_to_timm(sd: StateDict) -> StateDict:
    """Rename HF ViT / ViT-MAE keys to medvit's layout; q/k/v are fused into ``attn.qkv``."""
    out: StateDict = {}
    qkv: dict[tuple[int, str], list[torch.Tensor | None]] = {}
    dropped = []
    for k, v in sd.items():
        k2 = re.sub(r"^(vit|model)\.", "", k)
        if k2.startswith(("decoder.", "pooler.")):
            dropped.append(k)
            continue
        if k2 == "embeddings.cls_token":
            out["cls_token"] = v
        elif k2 == "embeddings.position_embeddings":
            out["pos_embed"] = v
        elif k2.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + k2.rsplit(".", 1)[1]] = v
        elif k2.startswith(("layernorm.", "classifier.")):
            head, kind = k2.split(".", 1)
            out[("norm." if head == "layernorm" else "head.") + kind] = v
        else:
            m = re.match(r"^(?:encoder\.layer|layers)\.(\d+)\.(.*)$", k2)
            if not m:
                dropped.append(k)
                continue
            i, rest = int(m.group(1)), m.group(2)
            hit = False
            for name, slot in _HF_QKV.items():
                mm = re.match(rf"^attention\.{name}\.(weight|bias)$", rest)
                if mm:
                    qkv.setdefault((i, mm.group(1)), [None, None, None])[slot] = v
                    hit = True
                    break
            if hit:
                continue
            for pat, rep in _HF_BLOCK:
                if re.match("^" + pat, rest):
                    out[f"blocks.{i}." + re.sub("^" + pat, rep, rest)] = v
                    hit = True
                    break
            if not hit:
                dropped.append(k)
    for (i, kind), parts in qkv.items():
        if any(p is None for p in parts):
            raise KeyError(f"HF checkpoint block {i} lacks one of query/key/value {kind}")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
    if dropped:
        logger.info("HF conversion dropped %d keys not used by the encoder (e.g. %s)", len(dropped), dropped[:3])
    return out


def drop_mae_decoder(sd: StateDict) -> StateDict:
    """Remove MAE decoder keys (``decoder_*``, ``mask_token``) from a timm-layout state dict."""
    keep = {k: v for k, v in sd.items() if not (k.startswith("decoder") or k == "mask_token")}
    if len(keep) != len(sd):
        logger.info("dropped %d MAE decoder keys", len(sd) - len(keep))
    return keep


def adapt_input_channels(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Patch-embedding kernel (D, C_src, *k) -> (D, in_chans, *k).

    RGB -> 1 channel sums the kernel over channels (a grey image replicated to RGB gives the same
    response); otherwise channels are tiled and rescaled by C_src / in_chans.
    """
    c_src = weight.shape[1]
    if c_src == in_chans:
        return weight
    if in_chans == 1:
        new = weight.sum(dim=1, keepdim=True)
    else:
        reps = -(-in_chans // c_src)
        new = weight.repeat(1, reps, *([1] * (weight.ndim - 2)))[:, :in_chans] * (c_src / in_chans)
    logger.warning("adapted patch-embedding kernel from %d to %d input channels", c_src, in_chans)
    return new


def fit_to_model(sd: StateDict, model: nn.Module) -> StateDict:
    """Resize position embeddings and adapt input channels so ``sd`` fits ``model``'s shapes."""
    target = model.state_dict()
    sd = dict(sd)
    if "patch_embed.proj.weight" in sd and "patch_embed.proj.weight" in target:
        sd["patch_embed.proj.weight"] = adapt_input_channels(
            sd["patch_embed.proj.weight"], target["patch_embed.proj.weight"].shape[1]
        )
    if "pos_embed" in sd and "pos_embed" in target and sd["pos_embed"].shape != target["pos_embed"].shape:
        p = getattr(model, "num_prefix_tokens", 1)
        src_prefix = p if sd["pos_embed"].shape[1] - p > 0 else 0
        pe = sd["pos_embed"]
        if "cls_token" not in sd and p == 1:
            src_prefix = 0  # source table without a class position
        n_grid = int(torch.tensor(model.patch_embed.grid_size).prod())
        resized = pe.shape[1] - src_prefix != n_grid
        if resized:
            pe = resample_pos_embed(pe, model.patch_embed.grid_size, None, num_prefix_tokens=src_prefix)
        if src_prefix < p:
            pe = torch.cat([pe.new_zeros(1, p - src_prefix, pe.shape[-1]), pe], dim=1)
        if resized:
            logger.warning("resized position embedding %s -> %s (grid %s)", tuple(sd["pos_embed"].shape),
                           tuple(pe.shape), tuple(model.patch_embed.grid_size))
        else:  # same grid: only zero positions for the prefix tokens were added, nothing was resampled
            logger.info("position embedding %s: added %d zero prefix position(s) -> %s",
                        tuple(sd["pos_embed"].shape), p - src_prefix, tuple(pe.shape))
        sd["pos_embed"] = pe
    for k in ("head.weight", "head.bias"):
        if k in sd and (k not in target or sd[k].shape != target[k].shape):
            logger.warning("checkpoint head %s %s does not fit the model; head left freshly initialised",
                           k, tuple(sd[k].shape))
            sd.pop(k)
    return sd


def to_medvit(sd: dict[str, Any], model: nn.Module | None = None) -> StateDict:
    """Any supported layout -> medvit keys; with ``model``, also fit shapes to it."""
    sd = unwrap(sd)
    sd = hf_to_timm(sd) if detect_layout(sd) == "hf" else drop_mae_decoder(sd)
    return fit_to_model(sd, model) if model is not None else sd


def hf_config_to_args(cfg: Any) -> dict[str, Any]:
    """HF ``ViTConfig``/``ViTMAEConfig`` -> medvit ``VisionTransformer`` arguments."""
    if getattr(cfg, "hidden_act", "gelu") != "gelu":
        raise ValueError(f"only hidden_act='gelu' is supported, got {cfg.hidden_act!r}")
    return dict(
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.num_channels,
        embed_dim=cfg.hidden_size,
        depth=cfg.num_hidden_layers,
        num_heads=cfg.num_attention_heads,
        mlp_ratio=cfg.intermediate_size / cfg.hidden_size,
        qkv_bias=cfg.qkv_bias,
        norm_eps=cfg.layer_norm_eps,
        global_pool="token",
        class_token=True,
    )
