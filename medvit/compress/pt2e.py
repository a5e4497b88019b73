"""The one int8 export path: PT2E static quantisation with the x86 Inductor quantizer (``torchao.quantization.pt2e``).

``export → prepare_pt2e → (calibrate | fix the observers to given qparams) → convert_pt2e``. Only ``nn.Linear``
layers are annotated (≈ 97 % of a ViT's FLOPs): int8 per-channel symmetric weights ([-128, 127]) and uint8
per-tensor affine inputs ([0, 255]); attention matmuls, norms and the patch-embedding convolution stay float
(torch 2.13's Inductor cannot freeze a quantised convolution: ``onednn.qconv_prepack`` has no fake-tensor kernel).
The converted graph computes with quantise/dequantise pairs; Inductor (``medvit.infer.fastpath.compile_cached``)
fuses them into oneDNN int8 kernels.

Given ``qparams`` (from :mod:`medvit.compress.ptq`: searched ranges, block-reconstructed weights), each linear's
observers are replaced by fixed ones, so the exported model computes exactly the simulated (fake-quant) model.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

ACT_QMIN, ACT_QMAX = 0, 255  # uint8 per-tensor affine (x86 Inductor quantizer default)
W_QMIN, W_QMAX = -128, 127  # int8 per-channel symmetric


@dataclass
class LinearQParams:
    """Static int8 parameters of one ``nn.Linear``: weight scales (out_features,) (zero point 0) and the input's
    per-tensor scale and zero point (uint8)."""

    weight_scale: torch.Tensor
    input_scale: float
    input_zero_point: int


def _quantizer() -> object:
    try:
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )
    except ImportError as e:  # pragma: no cover - torchao is a declared dependency
        raise ImportError("int8 quantisation needs torchao (PT2E quantisation); pip install torchao") from e
    q = X86InductorQuantizer()
    q.set_module_type_qconfig(nn.Linear, get_default_x86_inductor_quantization_config())
    return q


def _fixed_observer(like: nn.Module, scale: torch.Tensor, zero_point: torch.Tensor) -> nn.Module:
    """An observer that keeps ``like``'s dtype/scheme/range and returns the given qparams."""
    from torchao.quantization.pt2e.observer import MinMaxObserver, PerChannelMinMaxObserver

    per_channel = hasattr(like, "ch_axis")
    base = PerChannelMinMaxObserver if per_channel else MinMaxObserver
    kw = {"ch_axis": like.ch_axis} if per_channel else {}

    class Fixed(base):  # type: ignore[valid-type, misc]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
            return self.fixed_scale, self.fixed_zero_point

    obs = Fixed(dtype=like.dtype, qscheme=like.qscheme, quant_min=like.quant_min, quant_max=like.quant_max, **kw)
    obs.register_buffer("fixed_scale", scale.detach().clone().float())
    obs.register_buffer("fixed_zero_point", zero_point.detach().clone().to(torch.int64))
    return obs


def _qparams_for(weight_name: str, qparams: Mapping[str, LinearQParams]) -> tuple[str, LinearQParams] | None:
    """The entry of ``qparams`` (keyed by module name, e.g. ``blocks.0.attn.qkv``) whose module owns
    ``weight_name`` (e.g. ``model.blocks.0.attn.qkv.weight`` inside a wrapper)."""
    mod = weight_name.rsplit(".", 1)[0]
    for k, v in qparams.items():
        if mod == k or mod.endswith("." + k):
            return k, v
    return None


def fix_linear_observers(prepared: torch.fx.GraphModule, qparams: Mapping[str, LinearQParams]) -> list[str]:
    """Replace the input and weight observers of every annotated ``aten.linear`` in a PT2E-prepared graph by
    fixed ones holding ``qparams``. Returns the module names fixed; raises ``ValueError`` naming linears of the
    graph without qparams, or qparams whose linear is not in the graph (a checkpoint for another model)."""
    fixed, missing = [], []
    for n in prepared.graph.nodes:
        if n.op != "call_function" or n.target is not torch.ops.aten.linear.default:
            continue
        a, w = n.args[0], n.args[1]
        if not (a.op == "call_module" and w.op == "call_module" and w.args[0].op == "get_attr"):
            continue
        hit = _qparams_for(str(w.args[0].target), qparams)
        if hit is None:
            missing.append(str(w.args[0].target))
            continue
        name, qp = hit
        a_obs, w_obs = prepared.get_submodule(a.target), prepared.get_submodule(w.target)
        setattr(prepared, a.target, _fixed_observer(a_obs, torch.tensor([qp.input_scale]),
                                                    torch.tensor([qp.input_zero_point])))
        setattr(prepared, w.target, _fixed_observer(w_obs, qp.weight_scale.flatten(),
                                                    torch.zeros(qp.weight_scale.numel(), dtype=torch.int64)))
        fixed.append(name)
    unused = sorted(set(qparams) - set(fixed))
    if missing or unused:
        raise ValueError(f"int8 qparams do not fit this model: linears without qparams {missing[:5]}, "
                         f"qparams without a linear {unused[:5]}")
    return fixed


def quantize_pt2e_x86(model: nn.Module, calibration: Sequence[torch.Tensor],
                      qparams: Mapping[str, LinearQParams] | None = None) -> nn.Module:
    """Static int8 through PT2E with the x86 Inductor quantizer: export → prepare → calibrate → convert.

    ``calibration``: float32 input batches (B, C, H, W); the first fixes the exported shape. Without ``qparams``
    the observers are calibrated on them (histogram activation ranges, per-channel min/max weights). With
    ``qparams`` (module name → :class:`LinearQParams`, e.g. :func:`medvit.compress.ptq.ptq_calibrate`'s result)
    the observers are fixed to them and the batches are only the export example. Returns the converted graph
    module (quantise/dequantise pairs around float linears: compile it for speed). Raises ``ValueError`` for no
    calibration batch or qparams that do not fit, ``ImportError`` without ``torchao``.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not calibration:
        raise ValueError("int8 quantisation needs at least one calibration (example) batch")
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        exported = torch.export.export(m, (calibration[0],)).module()
        prepared = prepare_pt2e(exported, _quantizer())
        if qparams is not None:
            fix_linear_observers(prepared, qparams)
        else:
            for x in calibration:
                prepared(x)
        return convert_pt2e(prepared)
