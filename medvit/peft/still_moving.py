"""Still-Moving adapters on medvit's temporal backbone (Chefer et al., arXiv 2407.08674; notes entry 32).

The paper customises a text-to-video model with still images: the video model's spatial layers get
**spatial adapters** trained on "frozen videos" (a still image repeated over time), while **motion adapters**
(LoRA on the temporal layers) are trained alongside to absorb the static-video bias and are *removed at test
time*, so the temporal layers' motion prior is kept on real clips.

medvit's temporal backbone is the factorised video model of :mod:`medvit.peft.vivit` (spatial ViT per frame
→ compact adapter → temporal transformer). Method ``still_moving``:

- the temporal model (temporal blocks, positions, CLS, norm, compact adapter) is **frozen**: taken from a trained
  ``vivit`` adapter (``temporal_model``: its directory), or initialised as ``vivit`` does (copies of the image
  ViT's last blocks; the other parts drawn with the fixed ``init_seed``). It is rebuilt from the base and the
  config at load (``PeftInfo.derived``, checksum-verified), so adapters hold only what trains;
- **spatial adapters**: LoRA (huggingface ``peft``) on the spatial ViT's ``spatial_targets``;
- **motion adapter**: LoRA on the temporal blocks' ``motion_targets``; active in training mode only
  (``motion_at_eval`` false): ``model.eval()`` removes its contribution, and the temporal transformer then
  computes exactly what the frozen temporal model computes (bit for bit: peft's disabled layer returns its base
  layer's output);
- a still image (B, C, H, W) is a frozen video of ``still_frames`` identical frames (its spatial pass runs once,
  so every frame's spatial output is the same tensor); clips (B, T, C, H, W) run as in ``vivit``.

Medical reading: adapt a cine / ultrasound / endoscopy clip model to a new site or device from labelled *still*
frames (key frames, single slices), while the motion adapter keeps the static training data from overwriting the
temporal model. The generation side of the paper (text-to-video diffusion, T2I weight injection into an inflated
UNet) is out of scope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medvit.config import option
from medvit.peft.base import register_method, tensors_sha256
from medvit.peft.vivit import FrozenSpatialViViT, ViViTConfig

#: top-level names of the frozen temporal model inside the wrapper (everything vivit adds)
TEMPORAL_PARTS = ("temporal", "temporal_pos", "temporal_cls", "temporal_norm", "pool_score", "adapter_down",
                  "adapter_up")


@dataclass
class StillMovingConfig(ViViTConfig):
    """Temporal model (as ``vivit``, or a trained ``vivit`` adapter), spatial and motion LoRA, still-image frames."""

    still_frames: int = option(4, "frames of the frozen video a still image (B, C, H, W) stands for")
    spatial_r: int = option(4, "LoRA rank of the spatial adapters")
    motion_r: int = option(4, "LoRA rank of the motion adapter")
    alpha: float = option(8.0, "LoRA scaling numerator of both (update × alpha / r)")
    spatial_targets: list[str] = option(default_factory=lambda: ["attention"],
                                        help='spatial ViT linears adapted: "attention" | "mlp" | "all-linear" | names')
    spatial_layers: list[int] | None = option(None, "spatial blocks adapted (negative from the end); None = all")
    motion_targets: list[str] = option(default_factory=lambda: ["attention"],
                                       help="temporal-block linears carrying the motion adapter")
    motion_at_eval: bool = option(False, "keep the motion adapter in eval mode (the paper removes it at test time)")
    temporal_model: str | None = option(None, "directory of a trained `vivit` adapter on the same image base whose "
                                              "temporal model is used (frozen); None = vivit's initialisation")
    init_seed: int = option(0, "seed of the temporal model's random parts when temporal_model is None")

    def __post_init__(self) -> None:
        super().__post_init__()
        for k in ("still_frames", "spatial_r", "motion_r"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.still_frames > self.max_frames:
            raise ValueError(f"still_frames={self.still_frames} > max_frames={self.max_frames}")
        for k in ("spatial_targets", "motion_targets"):
            v = getattr(self, k)
            if isinstance(v, str):
                setattr(self, k, [v])
            if not getattr(self, k):
                raise ValueError(f"{k} is empty")


class _TemporalBlocks(nn.Module):
    """Lets :func:`medvit.peft.targets.resolve_targets` address the temporal blocks as ``blocks.N....``."""

    def __init__(self, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.blocks = blocks


class StillMovingViViT(FrozenSpatialViViT):
    """Factorised video model with spatial adapters and a train-time motion adapter; ``forward`` as ``vivit``.

    Raises:
        ValueError: ``temporal_model`` is not a ``vivit`` adapter, was trained on another image base or with another
        temporal shape.
    """

    image_grad = True  # spatial adapters train: the spatial pass keeps its graph

    def __init__(self, backbone: nn.Module, cfg: StillMovingConfig) -> None:
        with torch.random.fork_rng(devices=[]):  # the temporal model is rebuilt identically at load
            torch.manual_seed(cfg.init_seed)
            super().__init__(backbone, cfg)
        self.still_frames = cfg.still_frames
        self.motion_at_eval = cfg.motion_at_eval
        if cfg.temporal_model:
            self._load_temporal(Path(cfg.temporal_model), cfg)
        for name in TEMPORAL_PARTS:
            part = getattr(self, name)
            for p in ([part] if isinstance(part, nn.Parameter) else part.parameters()):
                p.requires_grad_(False)

    def _load_temporal(self, path: Path, cfg: StillMovingConfig) -> None:
        from medvit.models.checkpoint import read_safetensors
        from medvit.peft.checkpoint import ADAPTER_WEIGHTS, read_adapter_config

        meta = read_adapter_config(path)
        if meta["method"] != "vivit":
            raise ValueError(f"temporal_model: {path} is a {meta['method']!r} adapter, not a 'vivit' one")
        for k in ("temporal_depth", "adapter_dim", "max_frames"):
            if meta["method_config"].get(k) != getattr(cfg, k):
                raise ValueError(f"temporal_model: {path} has {k}={meta['method_config'].get(k)}, this config "
                                 f"{getattr(cfg, k)}; set the same value")
        trained = set(meta["method_config"].get("extra_trainable") or [])
        frozen = [(n, t) for n, t in self.backbone.state_dict(keep_vars=True).items()
                  if not (meta["method_config"].get("train_head", True) and n.startswith("head."))]
        if trained or tensors_sha256(frozen) != meta["base"].get("state_sha256"):
            raise ValueError(f"temporal_model: {path} was trained on another image base (frozen-tensor checksum "
                             "differs, or it trained extra backbone tensors); use the same base weights")
        saved = read_safetensors(path / ADAPTER_WEIGHTS)
        own = {n: t for n, t in self.state_dict(keep_vars=True).items() if n.split(".")[0] in TEMPORAL_PARTS}
        missing = sorted(set(own) - set(saved))
        if missing:
            raise ValueError(f"temporal_model: {path / ADAPTER_WEIGHTS} lacks {missing[:5]}")
        with torch.no_grad():
            for n, t in own.items():
                if saved[n].shape != t.shape:
                    raise ValueError(f"temporal_model: {n} is {tuple(saved[n].shape)} in {path}, "
                                     f"{tuple(t.shape)} here")
                t.copy_(saved[n])

    # ---------------------------------------------------------------- adapters
    def motion_layers(self) -> dict[str, nn.Module]:
        """peft layers of the motion adapter, by module name."""
        from medvit.peft.hf import adapter_layers

        return {n: m for n, m in adapter_layers(self).items() if n.startswith("temporal.")}

    def set_motion_adapter(self, enabled: bool) -> None:
        """Switch the motion adapter on (training) or off (the frozen temporal model, exactly); trainable flags
        are kept as they are."""
        for layer in self.motion_layers().values():
            flags = [(p, p.requires_grad) for p in layer.parameters()]
            layer.enable_adapters(enabled)
            for p, f in flags:
                p.requires_grad_(f)

    def train(self, mode: bool = True) -> StillMovingViViT:
        super().train(mode)
        self.set_motion_adapter(mode or self.motion_at_eval)
        return self

    def peft_derived_state(self) -> list[tuple[str, torch.Tensor]]:
        """The frozen temporal model's tensors (rebuilt at load; not saved in the adapter)."""
        return [(n, t) for n, t in self.state_dict(keep_vars=True).items()
                if n.split(".")[0] in TEMPORAL_PARTS and ".lora_" not in n]


@register_method("still_moving", StillMovingConfig,
                 "Still-Moving: spatial LoRA trained on still images (frozen videos) + train-time motion LoRA on a "
                 "frozen temporal model (vivit)")
def inject(model: nn.Module, cfg: StillMovingConfig) -> nn.Module:
    """Wrap the image ViT as a frozen video model and add spatial and motion LoRA (huggingface ``peft``)."""
    import peft

    from medvit.peft.hf import inject_hf
    from medvit.peft.targets import check_rank, resolve_targets

    w = StillMovingViViT(model, cfg)
    spatial = resolve_targets(model, cfg.spatial_targets, cfg.spatial_layers)
    check_rank(model, spatial, cfg.spatial_r, "spatial_r")
    shim = _TemporalBlocks(w.temporal)
    motion = resolve_targets(shim, cfg.motion_targets)
    check_rank(shim, motion, cfg.motion_r, "motion_r")
    motion = ["temporal." + n.removeprefix("blocks.") for n in motion]
    names = ["backbone." + n for n in spatial] + motion
    pc = peft.LoraConfig(r=cfg.spatial_r, lora_alpha=cfg.alpha, target_modules=names,
                         rank_pattern={re.escape(n): cfg.motion_r for n in motion})
    inject_hf(w, pc, names)
    return w.train(model.training)
