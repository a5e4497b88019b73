"""Batched prediction with a medvit model: auto/fp32/bf16/int8, eager or Inductor-compiled, on CPU or CUDA."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medvit.infer.fastpath import PRECISIONS  # noqa: F401  (re-exported: auto, fp32, bf16, int8)
from medvit.models.contract import WeightContract
from medvit.nn.precision import model_at_precision

logger = logging.getLogger(__name__)

#: the fewest images a plain checkpoint's int8 activation ranges are calibrated on (the first batch of a run)
INT8_MIN_CALIBRATION_IMAGES = 8


@dataclass
class ModelInfo:
    """Identity of the model used for a run (goes into every output row)."""

    name: str  # the contract's name; else the weight tag or checkpoint folder name
    version: str  # contract version
    sha256: str  # checksum of the weights file
    architecture: str  # backbone name
    source: str  # contract source (paper / training command)
    research_only: bool  # contract flag

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_for_inference(model_ref: str | Path) -> tuple[nn.Module, WeightContract, ModelInfo]:
    """(model, contract, info) for a checkpoint directory or a registered weight tag.

    Raises ``ValueError`` when the checkpoint has no contract or no classifier head (batch inference needs
    label names), and ``FileNotFoundError`` naming where weights for a tag are expected.
    """
    from medvit.models import load_model
    from medvit.models.checkpoint import label_count_problem, sha256_file
    from medvit.registry import REGISTRY

    p = Path(model_ref)
    if p.is_dir() and (p / "adapter_config.json").is_file():
        model, contract, sha = _load_adapter_for_inference(p)
        name = p.resolve().name
    elif p.is_dir():
        from medvit.compress.ptq import load_qparams

        model = load_model(p)
        contract = model.contract
        name = p.resolve().name
        sha = model.checkpoint_sha256
        model.int8_qparams = load_qparams(p)  # a PTQ checkpoint's static int8 parameters (None otherwise)
    elif ("weight", str(model_ref)) in REGISTRY:
        from medvit.models.factory import create_model
        from medvit.models.pretrained import resolve_weight_file

        spec = REGISTRY.get("weight", str(model_ref))
        contract = spec.contract
        f = resolve_weight_file(str(model_ref))
        model = create_model(spec.arch, pretrained=str(model_ref), in_chans=contract.in_chans,
                             num_classes=len(contract.label_names))
        name, sha = str(model_ref), sha256_file(f)
    else:
        raise FileNotFoundError(f"model {model_ref!r} is neither a checkpoint directory (model.safetensors + "
                                "config.json) nor a registered weight tag (see `medvit list weight`)")
    if contract is None:
        raise ValueError(f"model {model_ref}: checkpoint has no weight contract (config.json 'contract'); batch "
                         "inference derives preprocessing and labels from it. Re-save with save_checkpoint(..., "
                         "contract=WeightContract(...)).")
    if not getattr(model, "num_classes", 0):  # the inference-only rule; the label count is the shared one below
        raise ValueError(f"model {model_ref} has no classification head (num_classes 0: an encoder); batch "
                         "inference needs a classifier whose outputs the contract labels")
    if problem := label_count_problem(contract, model):
        raise ValueError(f"model {model_ref}: contract.label_names {problem}")
    model.ood_reference = None
    if getattr(contract, "ood", None):
        if not p.is_dir():
            raise ValueError(f"model {model_ref}: the contract declares an OOD reference but there is no checkpoint "
                             "directory to read ood.safetensors from")
        from medvit.eval.ood import load_reference

        model.ood_reference = load_reference(p, contract.ood)
    if getattr(model, "spatial_dims", 2) != 2:
        raise ValueError(f"model {model_ref} is {model.spatial_dims}D; `medvit infer` handles 2D images")
    info = ModelInfo(getattr(contract, "name", "") or name, contract.version, sha,
                     getattr(model, "arch_name", type(model).__name__), contract.source, bool(contract.research_only))
    return model.eval(), contract, info


def _load_adapter_for_inference(p: Path) -> tuple[nn.Module, WeightContract | None, str]:
    """A PEFT adapter directory -> (model on its recorded base, contract, adapter sha256).

    The base is rebuilt from the weights the adapter records; their file checksum and the frozen-tensor checksum
    must match (:func:`medvit.peft.load_adapter`), so an adapter never runs on another base.
    """
    from medvit.models import WeightContract
    from medvit.peft.checkpoint import load_adapter, read_adapter_config

    cfg = read_adapter_config(p)
    if not cfg.get("contract"):
        raise ValueError(f"adapter {p}: adapter_config.json has no weight contract (labels, thresholds, "
                         "preprocessing); re-run the tuning with this medvit version, or merge it and save the "
                         "merged model with save_checkpoint(..., contract=WeightContract(...))")
    contract = WeightContract.from_dict(cfg["contract"], source=str(p / "adapter_config.json"))
    model = load_adapter(p, check_base=True)
    return model, contract, str(cfg.get("sha256", ""))


class Predictor:
    """``predict(x)`` → probabilities; x: float32 (B, C, H, W) numpy or tensor → (B, K) float32 numpy.

    ``precision`` (see :mod:`medvit.infer.fastpath`): "auto" (bf16 on CUDA or a CPU with native bf16, else
    fp32; the choice is in ``self.precision``, the reason in ``self.precision_reason``); "fp32"; "bf16"
    (a bf16 copy of the weights, inputs cast to bf16: no per-call weight casts as under autocast); "int8"
    (CPU only: static int8 through PT2E with the x86 Inductor quantizer, then compiled by Inductor, the ops between the
    int8 GEMMs in ``int8_rest`` — None: bf16 where the CPU has native bf16, else fp32; the parameters
    of a PTQ checkpoint (``model.int8_qparams``, :mod:`medvit.compress.ptq`) when it has them, else activations
    calibrated on the first batch predicted). ``compile``: "none" (eager), "inductor"
    (``torch.compile`` with freezing, cached on disk per model hash and input shape; the first batch fixes
    the compiled shape and smaller batches are zero-padded to it) or "openvino" (the optional OpenVINO CPU
    backend, fp32 or bf16, IR cached the same way: :func:`medvit.infer.fastpath.openvino_cached`). ``model_sha256``
    names the weights in the cache key (hashed from the state dict when None). ``multilabel`` chooses sigmoid vs
    softmax.
    ``fp32_model`` keeps the fp32 module for gradient-based explanations.
    """

    def __init__(self, model: nn.Module, precision: str = "fp32", device: str = "cpu",
                 multilabel: bool = True, compile: str = "none", model_sha256: str | None = None,
                 cache_root: Path | None = None, batch_size: int | None = None,
                 int8_rest: str | None = None) -> None:
        from medvit.infer.fastpath import COMPILE_MODES, resolve_int8_rest, resolve_precision

        if compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {compile!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("--device cuda requested but torch sees no CUDA device; use --device cpu")
        self.requested_precision = precision
        self.precision, self.precision_reason = resolve_precision(precision, device)
        if self.precision == "int8" and device != "cpu":
            raise ValueError("int8 (PT2E x86 static quantisation) runs on CPU only; use --device cpu or "
                             "--precision bf16")
        if compile == "openvino" and (device != "cpu" or self.precision == "int8"):
            raise ValueError("--compile openvino runs fp32 or bf16 on the CPU (int8 has one path: --precision int8, "
                             "PT2E + Inductor)")
        self.device = torch.device(device)
        self.multilabel = multilabel
        self.compile_mode = "inductor" if self.precision == "int8" else compile
        # int8: dtype of everything between the int8 GEMMs (bf16 where the CPU has native bf16; resolve_int8_rest)
        self.int8_rest, self.int8_rest_reason = resolve_int8_rest(int8_rest) if self.precision == "int8" else \
            (None, None)
        self.model_sha256 = model_sha256
        self.cache_root = cache_root
        self.fp32_model = model.eval()
        self.compile_info: Any = None
        self.calibration_images = 0
        self.int8_source: str | None = None
        self._compiled: Any = None
        self._batch = 0
        self.batch_size = batch_size  # the compiled shape's batch (None: the first batch's size)
        self.int8_calibration: dict[str, Any] | None = None
        # an OOD reference reads the head's input and block statistics (hooks, which a compiled graph does not
        # run): the compiled graph returns them beside the logits
        ref = getattr(model, "ood_reference", None)
        self._with_features = ref is not None and all(hasattr(model, a) for a in ("embed", "blocks", "norm",
                                                                                  "forward_head", "head"))
        if ref is not None and self.compile_mode != "none" and not self._with_features:
            raise ValueError(f"{type(model).__name__} has an OOD reference but not the VisionTransformer stages "
                             "(embed, blocks, norm, forward_head) a compiled graph needs to return its features; "
                             "run it without --compile and with --precision fp32 or bf16")
        self._ood_blocks: tuple[int, ...] = tuple(ref.blocks) if ref is not None else ()
        self.last_features: dict[str, np.ndarray] | None = None
        # bf16: a bf16 copy of the weights (as the viewer and the VLM CXR expert run it); OpenVINO converts the fp32
        # model, int8 quantises it
        eager = "bf16" if self.precision == "bf16" and self.compile_mode != "openvino" else "fp32"
        self.model, self.input_dtype = model_at_precision(model, eager, self.device)

    def describe(self) -> dict[str, Any]:
        """How the model runs (for run.json): precision requested/used and why, compile cache, calibration."""
        return {"precision_requested": self.requested_precision, "precision": self.precision,
                "precision_reason": self.precision_reason, "device": str(self.device),
                "compile": self.compile_mode,
                "compile_cache": self.compile_info.to_dict() if self.compile_info is not None else None,
                "int8_calibration_images": self.calibration_images if self.precision == "int8" else None,
                "int8_calibration_source": self.int8_source if self.precision == "int8" else None,
                "int8_calibration": self.int8_calibration if self.precision == "int8" else None,
                **({"int8_rest": self.int8_rest, "int8_rest_reason": self.int8_rest_reason}
                   if self.precision == "int8" else {})}

    def autocast(self) -> Any:
        """A no-op context (bf16 runs on bf16 weights; kept for callers written against autocast)."""
        return torch.autocast(self.device.type, enabled=False)

    def _prepare(self, t: torch.Tensor) -> None:
        """First batch: quantise (int8) and/or compile for the run's batch shape.

        The compiled shape is ``batch_size`` (the first batch's rows repeated when it is shorter), so that the cache
        entry depends on the model and the shapes only, not on how many files an inbox holds. int8: a PTQ
        checkpoint's stored parameters (nothing depends on the run), else activation ranges calibrated on this first
        batch when no package is cached for the model and shape yet (``ValueError`` when it holds fewer than
        :data:`INT8_MIN_CALIBRATION_IMAGES` images: nothing is calibrated or cached on fewer); a cached package (and
        its calibration, recorded beside it) is reused by every later run whatever its images (``int8_calibration``
        in :meth:`describe`).
        """
        from medvit.infer.fastpath import (
            AutocastBF16,
            compile_cached,
            openvino_cached,
            quantize_int8_pt2e,
            state_dict_sha256,
        )

        module: nn.Module = _LogitsAndFeatures(self.model, self._ood_blocks) if self._with_features else self.model
        sha = self.model_sha256 or state_dict_sha256(self.fp32_model)
        if self._with_features:
            sha += f":logits+features{list(self._ood_blocks)}"
        n = int(t.shape[0])
        b = max(n, int(self.batch_size or n))
        example = t if b == n else t[torch.arange(b, device=t.device) % n]  # real rows repeated, never zeros
        qparams = getattr(self.fp32_model, "int8_qparams", None)
        build: Any = module
        record: dict[str, Any] = {}
        if self.precision == "int8" and qparams:  # a PTQ checkpoint: its searched/reconstructed static parameters
            build = lambda: quantize_int8_pt2e(module, [example], qparams=qparams)  # noqa: E731
            ptq = ((getattr(self.fp32_model, "checkpoint_config", None) or {}).get("extra") or {}).get("ptq") or {}
            self.calibration_images = int((ptq.get("report") or {}).get("calibration_images", 0))
            self.int8_source = "checkpoint (Q-HyViT-style PTQ)"
            self.int8_calibration = {"source": self.int8_source, "images": self.calibration_images,
                                     "run_independent": True}
            sha = f"{sha}:int8-pt2e-x86:ptq-checkpoint:{ptq.get('sha256', '')}"
        elif self.precision == "int8":  # the features wrapper too: the OOD score needs them
            def build() -> nn.Module:  # only when no package is cached yet: a calibration needs enough images
                if n < INT8_MIN_CALIBRATION_IMAGES:
                    # a batch is filled with decoded images only: a short first batch is all the input had
                    why = (f"the input had only {n} decodable image(s) for a batch of {self.batch_size}; files "
                           "that could not be decoded, duplicates and files the rules skip do not count"
                           if self.batch_size and n < self.batch_size else f"batch size {n}")
                    raise ValueError(f"--precision int8 calibrates activation ranges on the first batch, which holds "
                                     f"{n} image(s) ({why}); it needs >= {INT8_MIN_CALIBRATION_IMAGES} images: give "
                                     "more images, or use a PTQ checkpoint (medvit.compress.ptq: its stored int8 "
                                     "parameters need no calibration batch)")
                return quantize_int8_pt2e(module, [example])
            def calibration() -> dict[str, Any]:  # hashed only when this run calibrates (not on a cache hit)
                return {"images": n, "input_sha256": _tensor_sha256(t)}

            record = {"int8_calibration": calibration}
            sha = f"{sha}:int8-pt2e-x86:calibrated-once"  # one entry per model + shape, not per inbox
        precision = self.precision
        if self.precision == "int8" and self.int8_rest == "bf16":  # int8-mixed-bf16: one more cache entry kind
            quantize = build
            build = lambda: AutocastBF16(quantize())  # noqa: E731
            precision = "int8-mixed-bf16"
        if self.compile_mode == "openvino":
            self._compiled, self.compile_info = openvino_cached(module, example, self.precision, sha,
                                                                self.cache_root)
        else:  # int8: quantised only when the package is not cached yet (a later run loads it directly)
            self._compiled, self.compile_info = compile_cached(build, example, precision, sha, self.cache_root,
                                                               record=record)
        if record:
            cal = dict(self.compile_info.meta.get("int8_calibration") or record["int8_calibration"]())
            self.calibration_images = int(cal.get("images", n))
            self.int8_source = ("first batch of an earlier run (cached package)" if self.compile_info.reused
                                else "first batch of this run")
            self.int8_calibration = {**cal, "source": self.int8_source, "run_independent": False,
                                     "note": "activation ranges calibrated on the first batch of the run that "
                                             "compiled the cached package (key in compile_cache); later runs reuse "
                                             "it whatever their images. With an empty or other cache the ranges "
                                             "come from another first batch: use a PTQ checkpoint "
                                             "(medvit.compress.ptq) for int8 results that depend on no run"}
        self._batch = b

    def _run_compiled(self, t: torch.Tensor) -> torch.Tensor:
        outs, feats = [], []
        for i in range(0, t.shape[0], self._batch):
            chunk = t[i:i + self._batch]
            n = chunk.shape[0]
            if n < self._batch:  # same shape as compiled: no recompilation for the last, partial batch
                pad = chunk.new_zeros((self._batch - n, *chunk.shape[1:]))
                chunk = torch.cat([chunk, pad])
            out = self._compiled(chunk)
            if self._with_features:
                outs.append(out[0][:n])
                feats.append([f[:n].float().cpu() for f in out[1:]])
            else:
                outs.append(out[:n])
        if feats:
            names = ["head"] + [f"block{i}" for i in self._ood_blocks]
            self.last_features = {k: torch.cat([f[j] for f in feats]).numpy().astype(np.float64)
                                  for j, k in enumerate(names)}
        return torch.cat(outs)

    @torch.no_grad()  # not inference_mode: compiled int8 graphs are frozen under no_grad (see compile_cached)
    def logits(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, K) float32 logits on CPU."""
        t = torch.as_tensor(x)
        if self.device.type == "cuda" and t.device.type == "cpu":
            t = t.pin_memory()
        t = t.to(self.device, self.input_dtype, non_blocking=True)
        if self.compile_mode != "none":
            if self._compiled is None:
                self._prepare(t)
            out = self._run_compiled(t)
        else:
            out = self.model(t)
        return out.float().cpu()

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, C, H, W) → (B, K) probabilities (sigmoid per label, or softmax for single-label models)."""
        return self.predict_with_ood(x)[0]

    def predict_with_ood(self, x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, K) probabilities and (B,) out-of-distribution scores (None when the model has no OOD reference).

        The score is the layer-averaged, scaled Mahalanobis distance of the image's features to the training data
        (:mod:`medvit.eval.ood`); the contract's ``ood.threshold`` turns it into a flag.
        """
        ref = getattr(self.fp32_model, "ood_reference", None)
        if ref is None:
            z = self.logits(x)
            scores = None
        elif self.compile_mode != "none":  # hooks do not run inside a compiled graph: it returns the features
            z = self.logits(x)
            scores = ref.score(self.last_features)
        else:
            z, scores = ref.score_call(self.model, lambda: self.logits(x))
        p = torch.sigmoid(z) if self.multilabel else torch.softmax(z, dim=-1)
        return p.numpy().astype(np.float32), scores


def _tensor_sha256(t: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class _LogitsAndFeatures(nn.Module):
    """(B, C, H, W) → ((B, K) logits, (B, D) head input, (B, 2D) per tapped block): prediction and the OOD
    features (as :class:`medvit.eval.ood.FeatureTap` computes them with hooks) from one compiled graph."""

    def __init__(self, model: nn.Module, blocks: tuple[int, ...]) -> None:
        super().__init__()
        self.model, self.blocks = model, set(blocks)
        self.prefix = int(getattr(model, "num_prefix_tokens", 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        t = m.embed(x)
        stats = []
        for i, blk in enumerate(m.blocks):
            t = blk(t)
            if i in self.blocks:
                p = t.float()[:, self.prefix:]
                stats.append(torch.cat([p.mean(1), p.std(1)], dim=1))
        f = m.forward_head(m.norm(t), pre_logits=True)
        return (m.head(f), f, *stats)
