"""Q-HyViT-style post-training int8 quantisation (Lee et al., arXiv 2303.12557) exported through PT2E.

Q-HyViT's recipe, adapted to what the x86 int8 kernels (oneDNN via Inductor, :mod:`medvit.compress.pt2e`)
execute — W8A8 on every ``nn.Linear``, int8 weights with a zero point of 0 per output channel, uint8 inputs per
tensor:

1. **Calibration** (:func:`collect_linear_inputs`): a few hundred images through the float model; each linear's
   input range (min/max and percentiles) and a random sample of its input rows are recorded.
2. **Per-layer scheme search by reconstruction error** (:func:`search_linear`): for each linear, weight
   granularity (per output channel, or one scale for the whole tensor) × input scheme (asymmetric or symmetric
   range) × input clipping (min/max, 99.99th or 99.9th percentile) — the combination with the lowest
   mean-squared error of the layer's output on the sampled rows wins (Q-HyViT: granularity and scheme per layer
   by reconstruction error). A one-scale weight is exported as equal per-channel scales.
3. **Block reconstruction** (:func:`reconstruct_blocks`; BRECQ/AdaRound, which Q-HyViT builds on): block by
   block, each linear's rounding direction (up or down) is learnt — a rectified-sigmoid variable per weight
   with the annealed rounding regulariser ``λ·Σ(1 − |2h − 1|^β)``, β 20 → 2 — to minimise the MSE between the
   quantised block's output (its input coming from the already-quantised blocks) and the float model's block
   output. Q-HyViT reconstructs the *bridge blocks* of hybrid models jointly; a plain ViT has no conv→token
   bridge inside its blocks (the patch-embedding convolution stays float here), so every block is reconstructed.
4. **Export**: the weights are written on their int8 grid (``scale · k``), and the scales/zero points are fixed
   in the PT2E observers (:func:`medvit.compress.pt2e.quantize_pt2e_x86`), so the int8 graph computes exactly
   the simulated model; :func:`save_ptq_checkpoint` stores an ordinary medvit checkpoint plus ``ptq.safetensors``,
   and ``medvit infer --precision int8`` uses those parameters instead of calibrating on its first batch.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvit.compress.pt2e import ACT_QMAX, ACT_QMIN, W_QMAX, W_QMIN, LinearQParams

logger = logging.getLogger(__name__)

PTQ_FILE = "ptq.safetensors"
PTQ_FORMAT = "medvit-ptq/1"
_ZETA, _GAMMA = 1.1, -0.1  # AdaRound's rectified sigmoid stretch


@dataclass
class PTQConfig:
    """Search and reconstruction settings (defaults: Q-HyViT/BRECQ-style W8A8)."""

    weight_granularities: tuple[str, ...] = ("channel", "tensor")
    act_schemes: tuple[str, ...] = ("asymmetric", "symmetric")
    act_percentiles: tuple[float, ...] = (100.0, 99.99, 99.9)
    search_rows: int = 4096  # sampled input rows (tokens) per linear for the search
    recon_iters: int = 200  # AdaRound steps per block (0: nearest rounding, no reconstruction)
    recon_batch: int = 8  # images per reconstruction step
    recon_lr: float = 1e-2
    round_weight: float = 0.01  # λ of the rounding regulariser
    beta: tuple[float, float] = (20.0, 2.0)
    warmup: float = 0.2  # fraction of steps without the regulariser
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [g for g in self.weight_granularities if g not in ("channel", "tensor")]
        bad += [s for s in self.act_schemes if s not in ("asymmetric", "symmetric")]
        bad += [p for p in self.act_percentiles if not 50.0 < p <= 100.0]
        if bad or not self.weight_granularities or not self.act_schemes or not self.act_percentiles:
            raise ValueError(f"PTQConfig: invalid search space entries {bad} (granularities: channel|tensor, "
                             "schemes: asymmetric|symmetric, percentiles in (50, 100])")
        if self.recon_iters < 0 or self.recon_batch < 1 or self.search_rows < 1:
            raise ValueError("PTQConfig: recon_iters >= 0, recon_batch >= 1, search_rows >= 1")


@dataclass
class PTQResult:
    """qparams per linear (module name → :class:`LinearQParams`), the chosen scheme per linear, and the
    reconstruction report (per-block output MSE with nearest rounding and after reconstruction)."""

    qparams: dict[str, LinearQParams]
    choices: dict[str, dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- quantisers
def act_qparams(lo: float, hi: float, scheme: str) -> tuple[float, int]:
    """uint8 per-tensor (scale, zero point) for the range [lo, hi] (widened to include 0, as torch's observers do):
    asymmetric: scale = (hi − lo)/255, zp = round(−lo/scale); symmetric: zp = 128, scale = max|·|/127.5."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if scheme == "symmetric":
        scale = max(max(-lo, hi) / ((ACT_QMAX - ACT_QMIN) / 2), 1e-8)
        return scale, (ACT_QMAX + ACT_QMIN + 1) // 2
    scale = max((hi - lo) / (ACT_QMAX - ACT_QMIN), 1e-8)
    return scale, int(min(max(round(-lo / scale), ACT_QMIN), ACT_QMAX))


def weight_scales(w: torch.Tensor, granularity: str) -> torch.Tensor:
    """Symmetric int8 scales (out_features,) = max|w| / 127.5 per output channel, or one value repeated."""
    amax = w.detach().abs().amax(dim=1) if granularity == "channel" else w.detach().abs().max().expand(w.shape[0])
    return (amax / ((W_QMAX - W_QMIN) / 2)).clamp_min(1e-8).float().contiguous()


def fake_quant_act(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Quantise-dequantise (uint8 affine; straight-through gradient): (..., D) -> (..., D)."""
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, ACT_QMIN, ACT_QMAX)


def fake_quant_weight(w: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Quantise-dequantise weights (out, in) per output channel with zero point 0 (nearest rounding)."""
    zp = torch.zeros(scales.numel(), dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scales, zp, 0, W_QMIN, W_QMAX)


class QuantLinear(nn.Module):
    """Simulated W8A8 linear: fake-quantised input and weight, float bias; optionally AdaRound rounding."""

    def __init__(self, linear: nn.Linear, qp: LinearQParams):
        super().__init__()
        self.linear = linear
        self.qp = qp
        self.alpha: nn.Parameter | None = None

    def _floor_and_rest(self) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.qp.weight_scale[:, None]
        v = self.linear.weight.detach() / s
        return v.floor(), v - v.floor()

    def start_adaround(self) -> None:
        """Learnable rounding initialised at the weights' fractional part (h(alpha) = rest)."""
        _, rest = self._floor_and_rest()
        r = rest.clamp(0.01, 0.99)
        self.alpha = nn.Parameter(-torch.log((_ZETA - _GAMMA) / (r - _GAMMA) - 1))

    def soft_round(self) -> torch.Tensor:
        assert self.alpha is not None
        return (torch.sigmoid(self.alpha) * (_ZETA - _GAMMA) + _GAMMA).clamp(0, 1)

    def quant_weight(self) -> torch.Tensor:
        s = self.qp.weight_scale[:, None]
        if self.alpha is None:
            return fake_quant_weight(self.linear.weight, self.qp.weight_scale)
        floor, _ = self._floor_and_rest()
        return s * (floor + self.soft_round()).clamp(W_QMIN, W_QMAX)

    def harden(self) -> None:
        """Fix the learnt rounding: write the on-grid weight (scale · k) into the linear; stop learning."""
        with torch.no_grad():
            if self.alpha is not None:
                floor, _ = self._floor_and_rest()
                k = (floor + (self.alpha >= 0).float()).clamp(W_QMIN, W_QMAX)
            else:
                k = (self.linear.weight / self.qp.weight_scale[:, None]).round().clamp(W_QMIN, W_QMAX)
            self.linear.weight.copy_(k * self.qp.weight_scale[:, None])
        self.alpha = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = fake_quant_act(x, self.qp.input_scale, self.qp.input_zero_point)
        return F.linear(xq, self.quant_weight(), self.linear.bias)


def _linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if type(m) is nn.Linear}


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def simulate(model: nn.Module, qparams: dict[str, LinearQParams]) -> nn.Module:
    """A copy of ``model`` with every quantised linear replaced by a fake-quant :class:`QuantLinear` (the exact
    float simulation of the PT2E int8 graph)."""
    sim = copy.deepcopy(model).eval()
    for name, lin in _linears(sim).items():
        if name in qparams:
            _set_module(sim, name, QuantLinear(lin, qparams[name]))
    return sim


# ---------------------------------------------------------------------------------------------- calibration
@torch.no_grad()
def collect_linear_inputs(model: nn.Module, batches: Sequence[torch.Tensor], max_rows: int = 4096,
                          percentiles: Sequence[float] = (100.0, 99.99, 99.9), seed: int = 0
                          ) -> dict[str, dict[str, Any]]:
    """Run the calibration batches (B, C, H, W) through the float model; per linear: {"rows": (≤ max_rows, in)
    sampled input rows, "range": {percentile: (lo, hi)}} (100 = exact min/max over all inputs; other percentiles
    from the sampled rows, clipped inside min/max)."""
    g = torch.Generator().manual_seed(seed)
    stats: dict[str, dict[str, Any]] = {}
    per_batch = max(1, max_rows // max(1, len(batches)))

    def hook(name: str):  # noqa: ANN202
        def fn(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            st = stats.setdefault(name, {"lo": math.inf, "hi": -math.inf, "rows": []})
            st["lo"], st["hi"] = min(st["lo"], float(x.min())), max(st["hi"], float(x.max()))
            idx = torch.randperm(x.shape[0], generator=g)[:per_batch]
            st["rows"].append(x[idx])
        return fn

    hooks = [m.register_forward_pre_hook(hook(n)) for n, m in _linears(model).items()]
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():  # the fused inference kernel bypasses the linear modules (and their hooks)
            for x in batches:
                model(x).detach()
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    out = {}
    for name, st in stats.items():
        rows = torch.cat(st["rows"])[:max_rows]
        rng = {}
        flat = rows.flatten()
        if flat.numel() > 8_000_000:  # torch.quantile's input limit
            flat = flat[torch.randperm(flat.numel(), generator=g)[:8_000_000]]
        for p in percentiles:
            if p >= 100.0:
                rng[p] = (st["lo"], st["hi"])
            else:
                q = torch.quantile(flat, torch.tensor([1 - p / 100, p / 100]))
                rng[p] = (max(float(q[0]), st["lo"]), min(float(q[1]), st["hi"]))
        out[name] = {"rows": rows, "range": rng}
    return out


@torch.no_grad()
def search_linear(linear: nn.Linear, rows: torch.Tensor, ranges: dict[float, tuple[float, float]],
                  cfg: PTQConfig) -> tuple[LinearQParams, dict[str, Any]]:
    """Pick the weight granularity, input scheme and clipping of one linear by its output MSE on ``rows`` (n, in).

    Returns (qparams, {"weight": granularity, "act_scheme", "act_percentile", "mse", "table": {key: mse}})."""
    w, b = linear.weight.detach().float(), None if linear.bias is None else linear.bias.detach().float()
    ref = F.linear(rows, w, b)
    best: tuple[float, LinearQParams, dict[str, Any]] | None = None
    table = {}
    for gran in cfg.weight_granularities:
        ws = weight_scales(w, gran)
        wq = fake_quant_weight(w, ws)
        for scheme in cfg.act_schemes:
            for p in cfg.act_percentiles:
                s, zp = act_qparams(*ranges[p], scheme)
                mse = float(F.mse_loss(F.linear(fake_quant_act(rows, s, zp), wq, b), ref))
                table[f"{gran}/{scheme}/{p:g}"] = mse
                if best is None or mse < best[0]:
                    best = (mse, LinearQParams(ws, s, zp), {"weight": gran, "act_scheme": scheme,
                                                            "act_percentile": p, "mse": mse})
    assert best is not None
    return best[1], {**best[2], "table": table}


# ---------------------------------------------------------------------------------------------- reconstruction
def _blocks(model: nn.Module) -> tuple[Any, nn.ModuleList]:
    if not (hasattr(model, "embed") and isinstance(getattr(model, "blocks", None), nn.ModuleList)):
        raise ValueError(f"{type(model).__name__} lacks the VisionTransformer stages (embed, blocks) block "
                         "reconstruction needs; use recon_iters=0")
    return model.embed, model.blocks


def _run(mod: nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    return torch.cat([mod(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])


def reconstruct_blocks(sim: nn.Module, fp: nn.Module, batches: Sequence[torch.Tensor],
                       cfg: PTQConfig) -> list[dict[str, float]]:
    """BRECQ/AdaRound block reconstruction of a :func:`simulate` model against its float model, in place.

    Block i's quantised input comes from the already-reconstructed quantised blocks 0..i−1; its target is the
    float model's block output. Returns per block {"mse_nearest", "mse_reconstructed"} on the calibration set.
    """
    _, qblocks = _blocks(sim)
    embed, fblocks = _blocks(fp)
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        x_fp = torch.cat([embed(x) for x in batches])
    x_q = x_fp.clone()
    report = []
    for i, (qb, fb) in enumerate(zip(qblocks, fblocks, strict=True)):
        qls = [m for m in qb.modules() if isinstance(m, QuantLinear)]
        with torch.no_grad():
            target = _run(fb, x_fp, 64)
            before = float(F.mse_loss(_run(qb, x_q, 64), target))
        after = before
        if cfg.recon_iters and qls:
            for q in qls:
                q.start_adaround()
            opt = torch.optim.Adam([q.alpha for q in qls], lr=cfg.recon_lr)
            warm = int(cfg.warmup * cfg.recon_iters)
            for it in range(cfg.recon_iters):
                idx = torch.randint(0, x_q.shape[0], (min(cfg.recon_batch, x_q.shape[0]),), generator=g)
                rec = F.mse_loss(qb(x_q[idx]), target[idx])
                if it >= warm:
                    frac = (it - warm) / max(1, cfg.recon_iters - warm)
                    beta = cfg.beta[0] + (cfg.beta[1] - cfg.beta[0]) * frac
                    reg = sum((1 - (2 * q.soft_round() - 1).abs().pow(beta)).sum() for q in qls)
                    loss = rec + cfg.round_weight * reg
                else:
                    loss = rec
                opt.zero_grad()
                loss.backward()
                opt.step()
            for q in qls:
                q.harden()
            with torch.no_grad():
                after = float(F.mse_loss(_run(qb, x_q, 64), target))
        else:
            for q in qls:
                q.harden()
        with torch.no_grad():
            x_q = _run(qb, x_q, 64)
        x_fp = target
        report.append({"block": i, "mse_nearest": before, "mse_reconstructed": after})
        logger.info("PTQ block %d: output MSE %.3g (nearest) -> %.3g (reconstructed)", i, before, after)
    return report


def ptq_calibrate(model: nn.Module, batches: Sequence[torch.Tensor], cfg: PTQConfig | None = None
                  ) -> tuple[nn.Module, PTQResult]:
    """Q-HyViT-style PTQ of a float model on calibration batches (float32 (B, C, H, W), e.g. 256 images).

    Returns (a copy of ``model`` whose linear weights lie on their int8 grid — an ordinary float medvit model —,
    :class:`PTQResult`). Export it with :func:`medvit.compress.pt2e.quantize_pt2e_x86` (``qparams``), save it with
    :func:`save_ptq_checkpoint`. Raises ``ValueError`` for no batches or no linear layers.
    """
    cfg = cfg or PTQConfig()
    if not batches:
        raise ValueError("PTQ needs calibration batches")
    fp = copy.deepcopy(model).eval()
    for p in fp.parameters():
        p.requires_grad_(False)
    stats = collect_linear_inputs(fp, batches, cfg.search_rows, cfg.act_percentiles, cfg.seed)
    if not stats:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layers to quantise")
    lins = _linears(fp)
    qparams, choices = {}, {}
    for name, st in stats.items():
        qparams[name], choices[name] = search_linear(lins[name], st["rows"], st["range"], cfg)
    sim = simulate(fp, qparams)
    report: dict[str, Any] = {"calibration_images": int(sum(x.shape[0] for x in batches)), "config": asdict(cfg)}
    if hasattr(fp, "blocks"):
        report["blocks"] = reconstruct_blocks(sim, fp, batches, cfg)
    for q in (m for m in sim.modules() if isinstance(m, QuantLinear)):
        if q.alpha is not None or not _on_grid(q):
            q.harden()  # linears outside the blocks (head): nearest rounding
    out = copy.deepcopy(model).eval()
    qmods = {n: m for n, m in sim.named_modules() if isinstance(m, QuantLinear)}
    with torch.no_grad():
        for name, lin in _linears(out).items():
            if name in qmods:
                lin.weight.copy_(qmods[name].linear.weight)
    counts: dict[str, int] = {}
    for c in choices.values():
        key = f"{c['weight']}/{c['act_scheme']}/{c['act_percentile']:g}"
        counts[key] = counts.get(key, 0) + 1
    report["choice_counts"] = counts
    return out, PTQResult(qparams, choices, report)


def _on_grid(q: QuantLinear) -> bool:
    v = q.linear.weight.detach() / q.qp.weight_scale[:, None]
    return bool(((v - v.round()).abs() < 1e-3).all())


# ---------------------------------------------------------------------------------------------- checkpoints
def save_ptq_checkpoint(model: nn.Module, result: PTQResult, out_dir: str | Path, contract: Any = None) -> Path:
    """An ordinary medvit checkpoint of the on-grid model (``model.safetensors`` + ``config.json``) plus
    ``ptq.safetensors`` (per linear ``<name>.weight_scale`` (out,), ``<name>.input_scale``,
    ``<name>.input_zero_point``); ``config.json`` ``extra.ptq`` records its SHA-256, the choices and the report."""
    from medvit.models import save_checkpoint
    from medvit.models.checkpoint import sha256_file, write_safetensors

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, qp in result.qparams.items():
        tensors[f"{name}.weight_scale"] = qp.weight_scale.float()
        tensors[f"{name}.input_scale"] = torch.tensor([qp.input_scale], dtype=torch.float64)
        tensors[f"{name}.input_zero_point"] = torch.tensor([qp.input_zero_point], dtype=torch.int64)
    write_safetensors(out / PTQ_FILE, tensors, metadata={"format": PTQ_FORMAT})
    choices = {n: {k: v for k, v in c.items() if k != "table"} for n, c in result.choices.items()}
    meta = {"format": PTQ_FORMAT, "file": PTQ_FILE, "sha256": sha256_file(out / PTQ_FILE),
            "scheme": "W8A8: int8 per-channel symmetric weights, uint8 per-tensor affine linear inputs (PT2E x86)",
            "choices": choices, "report": result.report}
    extra = dict(getattr(model, "checkpoint_config", {}).get("extra", {}) or {})
    extra["ptq"] = meta
    return save_checkpoint(model, out, contract=contract, extra=extra)


def load_qparams(checkpoint_dir: str | Path) -> dict[str, LinearQParams] | None:
    """The int8 parameters of a PTQ checkpoint directory (None when it has no ``ptq.safetensors``).

    Raises :class:`medvit.models.checkpoint.CheckpointError` when the file's SHA-256 differs from the one
    ``config.json`` records, or an entry is incomplete."""
    from medvit.models.checkpoint import CheckpointError, read_config, read_safetensors, sha256_file

    d = Path(checkpoint_dir)
    f = d / PTQ_FILE
    if not d.is_dir() or not f.is_file():
        return None
    meta = (read_config(d).get("extra") or {}).get("ptq") or {}
    if meta.get("sha256") != sha256_file(f):
        raise CheckpointError(f"{f}: SHA-256 differs from config.json extra.ptq.sha256 (file changed or replaced)")
    t = read_safetensors(f)
    names = {k.rsplit(".", 1)[0] for k in t}
    out = {}
    for n in sorted(names):
        try:
            out[n] = LinearQParams(t[f"{n}.weight_scale"].float(), float(t[f"{n}.input_scale"].item()),
                                   int(t[f"{n}.input_zero_point"].item()))
        except KeyError as e:
            raise CheckpointError(f"{f}: entry {n!r} lacks {e.args[0]!r}") from None
    return out
