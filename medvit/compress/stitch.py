"""SN-Netv2 stitchable networks (Pan et al., ECCV'24): two medvit ViT anchors of different sizes joined by
low-rank stitching layers, one checkpoint serving many size/speed points chosen at load time.

- **Routes** (:func:`stitch_configs`): the two anchors alone, S→L (small anchor's blocks 0..i−1, a stitching
  layer, large anchor's blocks j..) and L→S (large anchor's blocks 0..j−1, a stitching layer, small anchor's
  blocks i..) — SN-Netv2's two-way stitching. Stitch positions pair blocks at the same relative depth,
  ``j = round(i · L_depth / S_depth)`` for i = 1..S_depth−1, so depths (4, 8) give 2 + 3 + 3 = 8 configurations.
  The three-anchor-segment routes (S→L→S, L→S→L) are not implemented.
- **Stitching layer** (:class:`StitchLayer`): ``Linear(d_in, d_out)`` plus a LoRA update ``B·A`` of rank r
  (B = 0 at init), the linear initialised by least squares on anchor features,
  ``[W | b] = pinv([X_front, 1]) · X_end`` (SN-Net's ``ps_inv``, :func:`least_squares_affine`).
- **FLOPs-aware sampling** (:class:`FlopsSampler`): configurations grouped into MAC bins; a training step draws a
  bin uniformly, then a configuration inside it.
- **Training** (:func:`train_stitches`): each step draws a configuration with the FLOPs-aware sampler and trains
  it on the task loss — the stitching layers only (anchors frozen, the default here) or everything
  (``train_anchors=True``, SN-Netv2's joint fine-tuning).
- **Deployment**: :func:`save_stitched` writes one ``model.safetensors`` + ``config.json`` (both anchors'
  architectures and every stitching layer); :func:`load_stitched` rebuilds it with the chosen ``config_id``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvit.compress.optim import optimizer_step
from medvit.io.jsonfile import read_json

FORMAT = "medvit-snnet/1"
logger = logging.getLogger(__name__)


def least_squares_affine(x_front: torch.Tensor, x_end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (d_out, d_in), b (d_out,)) minimising ‖[X_front, 1]·[W | b]ᵀ − X_end‖² (SN-Net ``ps_inv``).
    x_front: (N, d_in), x_end: (N, d_out) token features."""
    a = torch.cat([x_front, torch.ones(x_front.shape[0], 1, dtype=x_front.dtype)], 1).double()
    sol = torch.linalg.lstsq(a, x_end.double()).solution  # (d_in + 1, d_out)
    return sol[:-1].T.float().contiguous(), sol[-1].float().contiguous()


class StitchLayer(nn.Module):
    """Linear(d_in → d_out) + LoRA(rank r): (B, T, d_in) -> (B, T, d_out)."""

    def __init__(self, d_in: int, d_out: int, rank: int = 8):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.lora_a = nn.Parameter(torch.randn(rank, d_in) / d_in**0.5)
        self.lora_b = nn.Parameter(torch.zeros(d_out, rank))

    def init_least_squares(self, x_front: torch.Tensor, x_end: torch.Tensor) -> None:
        w, b = least_squares_affine(x_front.reshape(-1, x_front.shape[-1]), x_end.reshape(-1, x_end.shape[-1]))
        with torch.no_grad():
            self.linear.weight.copy_(w)
            self.linear.bias.copy_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + (x @ self.lora_a.T) @ self.lora_b.T


@dataclass(frozen=True)
class StitchConfig:
    """route "S" / "L" (an anchor alone), "S2L" (S blocks < front, L blocks ≥ back), "L2S" (L < front, S ≥ back)."""

    route: str
    front: int = 0
    back: int = 0

    @property
    def key(self) -> str:
        return self.route if self.route in ("S", "L") else f"{self.route}_{self.front}_{self.back}"


def stitch_configs(depth_s: int, depth_l: int) -> list[StitchConfig]:
    """Both anchors, then S→L and L→S at blocks paired by relative depth (see the module docstring)."""
    out = [StitchConfig("S"), StitchConfig("L")]
    pairs = [(i, round(i * depth_l / depth_s)) for i in range(1, depth_s)]
    out += [StitchConfig("S2L", i, j) for i, j in pairs]
    out += [StitchConfig("L2S", j, i) for i, j in pairs]
    return out


class StitchedViT(nn.Module):
    """Two anchors (``small``, ``large``: medvit ViTs on the same patch grid and prefix tokens) + stitching layers;
    ``forward(x)`` runs configuration ``config_id`` (change it with :meth:`select`)."""

    def __init__(self, small: nn.Module, large: nn.Module, rank: int = 8, config_id: int = 0):
        super().__init__()
        if small.patch_embed.grid_size != large.patch_embed.grid_size or \
                small.num_prefix_tokens != large.num_prefix_tokens:
            raise ValueError("anchors must share the patch grid and the number of prefix tokens")
        if small.num_classes != large.num_classes:
            raise ValueError(f"anchors' heads differ ({small.num_classes} vs {large.num_classes} outputs)")
        self.small, self.large = small, large
        self.configs = stitch_configs(len(small.blocks), len(large.blocks))
        ds, dl = small.embed_dim, large.embed_dim
        self.stitches = nn.ModuleDict({c.key: StitchLayer(ds, dl, rank) if c.route == "S2L" else
                                       StitchLayer(dl, ds, rank) for c in self.configs if c.route in ("S2L", "L2S")})
        self.rank = rank
        self.select(config_id)

    def select(self, config_id: int) -> None:
        """Choose the configuration ``forward`` runs (0 = small anchor, 1 = large anchor)."""
        if not 0 <= config_id < len(self.configs):
            raise ValueError(f"config_id must be in [0, {len(self.configs)}), got {config_id}")
        self.config_id = config_id

    def forward_config(self, x: torch.Tensor, c: StitchConfig) -> torch.Tensor:
        """(B, C, H, W) -> logits (B, K) of configuration ``c``."""
        if c.route == "S":
            return self.small(x)
        if c.route == "L":
            return self.large(x)
        a, b = (self.small, self.large) if c.route == "S2L" else (self.large, self.small)
        t = self.stitches[c.key](a.forward_until(x, c.front))
        return b.forward_head(b.forward_from(t, c.back))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_config(x, self.configs[self.config_id])

    @torch.no_grad()
    def init_stitches(self, x: torch.Tensor) -> None:
        """Least-squares init of every stitching layer on calibration images (B, C, H, W)."""
        for c in self.configs:
            if c.route in ("S", "L"):
                continue
            a, b = (self.small, self.large) if c.route == "S2L" else (self.large, self.small)
            self.stitches[c.key].init_least_squares(a.forward_until(x, c.front), b.forward_until(x, c.back))

    def config_macs(self, x: torch.Tensor) -> list[int]:
        """Measured MACs per image of every configuration (FlopCounter)."""
        from medvit.nn.flops import measured_macs

        return [measured_macs(self.forward_config, x[:1], c) for c in self.configs]


class FlopsSampler:
    """SN-Netv2 resource-constrained sampling: configs grouped into ``n_bins`` equal-width MAC bins; draw a
    non-empty bin uniformly, then a config inside it uniformly."""

    def __init__(self, macs: list[int], n_bins: int = 4, seed: int = 0):
        lo, hi = min(macs), max(macs)
        width = (hi - lo) / n_bins or 1
        self.bins: list[list[int]] = [[] for _ in range(n_bins)]
        for i, m in enumerate(macs):
            self.bins[min(int((m - lo) / width), n_bins - 1)].append(i)
        self.bins = [b for b in self.bins if b]
        self.g = torch.Generator().manual_seed(seed)

    def sample(self) -> int:
        b = self.bins[int(torch.randint(len(self.bins), (1,), generator=self.g))]
        return b[int(torch.randint(len(b), (1,), generator=self.g))]


@dataclass
class StitchTrainResult:
    """Per-step record of :func:`train_stitches`: drawn configuration id and its loss."""

    config_ids: list[int]
    losses: list[float]


def train_stitches(model: StitchedViT, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], steps: int,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], lr: float = 1e-3,
                   weight_decay: float = 0.0, train_anchors: bool = False, n_bins: int = 4, seed: int = 0,
                   clip_grad: float = 1.0) -> StitchTrainResult:
    """SN-Netv2 training with FLOPs-aware sampling (AdamW, cosine LR), in place.

    ``batches`` yields (x (B, C, H, W), y) for ``steps`` steps. Each step draws a configuration from a
    :class:`FlopsSampler` over the configurations' measured MACs (the anchors alone are left out when
    ``train_anchors`` is False: they have nothing to train then) and minimises ``loss_fn(logits, y)``. With
    ``train_anchors=False`` only the stitching layers change (anchors frozen, in eval mode). Raises
    ``ValueError`` when ``steps`` < 1 or ``batches`` runs out early."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    try:
        x, y = next(batches)
    except StopIteration:
        raise ValueError("batches is empty") from None
    ids = [i for i, c in enumerate(model.configs) if train_anchors or c.route not in ("S", "L")]
    macs = model.config_macs(x)
    sampler = FlopsSampler([macs[i] for i in ids], n_bins=n_bins, seed=seed)
    anchors = [model.small, model.large]
    req = {id(p): p.requires_grad for a in anchors for p in a.parameters()}
    if not train_anchors:
        for a in anchors:
            a.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rec = StitchTrainResult([], [])
    model.train()
    if not train_anchors:
        for a in anchors:
            a.eval()
    try:
        for step in range(steps):
            if step:
                try:
                    x, y = next(batches)
                except StopIteration:
                    raise ValueError(f"batches ran out after {step} of {steps} steps") from None
            cid = ids[sampler.sample()]
            loss = loss_fn(model.forward_config(x, model.configs[cid]), y)
            optimizer_step(loss, opt, sched, params, clip_grad)
            rec.config_ids.append(cid)
            rec.losses.append(float(loss.detach()))
            if (step + 1) % 25 == 0 or step + 1 == steps:
                logger.info("stitch step %d/%d: %s loss %.4f", step + 1, steps, model.configs[cid].key,
                            rec.losses[-1])
    finally:
        for a in anchors:
            for p in a.parameters():
                p.requires_grad_(req[id(p)])
        model.eval()
    return rec


def save_stitched(model: StitchedViT, out_dir: str | Path) -> Path:
    """``model.safetensors`` (anchors + stitches) + ``config.json`` (both anchors' architecture/arguments, rank,
    the configuration list)."""
    from medvit.io.safe_write import atomic_write
    from medvit.models.checkpoint import FILE_MODE, WEIGHTS_NAME, sha256_file, write_safetensors

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / WEIGHTS_NAME, model.state_dict(), metadata={"format": FORMAT})
    anchors = {}
    for k in ("small", "large"):
        m = getattr(model, k)
        if not hasattr(m, "arch_name"):
            raise ValueError(f"anchor {k} was not made by medvit.create_model (no arch_name)")
        anchors[k] = {"architecture": m.arch_name, "model_args": {a: list(v) if isinstance(v, tuple) else v
                                                                  for a, v in m.model_args.items()}}
    cfg = {"format": FORMAT, "anchors": anchors, "rank": model.rank, "sha256": sha256_file(out / WEIGHTS_NAME),
           "configs": [c.key for c in model.configs]}
    atomic_write(out / "config.json", json.dumps(cfg, indent=2), mode=FILE_MODE)
    return out


def load_stitched(path: str | Path, config_id: int = 0) -> StitchedViT:
    """Rebuild a :func:`save_stitched` checkpoint with configuration ``config_id`` selected. Raises
    ``CheckpointError`` for another format, a changed weights file or weights that do not fit."""
    from medvit.models import create_model
    from medvit.models.checkpoint import (
        WEIGHTS_NAME,
        CheckpointError,
        load_state_dict_checked,
        read_safetensors,
        sha256_file,
    )

    p = Path(path)
    cfg_file = p / "config.json"
    cfg: dict[str, Any] = read_json(cfg_file, error=CheckpointError, format_id=FORMAT)
    f = p / WEIGHTS_NAME
    if cfg.get("sha256") != sha256_file(f):
        raise CheckpointError(f"{f}: SHA-256 differs from config.json (file changed or replaced)")
    small, large = (create_model(cfg["anchors"][k]["architecture"], **cfg["anchors"][k]["model_args"])
                    for k in ("small", "large"))
    model = StitchedViT(small, large, int(cfg["rank"]), config_id)
    load_state_dict_checked(model, read_safetensors(f), str(f))
    return model.eval()
