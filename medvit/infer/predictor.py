"""Batched prediction with a medvit model: fp32, bf16 autocast or int8 dynamic quantisation, on CPU or CUDA."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from medvit.models.contract import WeightContract

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS = ("fp32", "bf16", "int8")


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
    from medvit.models.checkpoint import sha256_file
    from medvit.registry import REGISTRY

    p = Path(model_ref)
    if p.is_dir() and (p / "adapter_config.json").is_file():
        model, contract, sha = _load_adapter_for_inference(p)
        name = p.resolve().name
    elif p.is_dir():
        model = load_model(p)
        contract = model.contract
        name = p.resolve().name
        sha = model.checkpoint_sha256
    elif ("weights", str(model_ref)) in REGISTRY:
        from medvit.models.factory import create_model
        from medvit.models.pretrained import resolve_weight_file

        spec = REGISTRY.get("weights", str(model_ref))
        contract = spec.contract
        f = resolve_weight_file(str(model_ref))
        model = create_model(spec.arch, pretrained=str(model_ref), in_chans=contract.in_chans,
                             num_classes=len(contract.label_names))
        name, sha = str(model_ref), sha256_file(f)
    else:
        raise FileNotFoundError(f"model {model_ref!r} is neither a checkpoint directory (model.safetensors + "
                                "config.json) nor a registered weight tag (see `medvit list weights`)")
    if contract is None:
        raise ValueError(f"model {model_ref}: checkpoint has no weight contract (config.json 'contract'); batch "
                         "inference derives preprocessing and labels from it. Re-save with save_checkpoint(..., "
                         "contract=WeightContract(...)).")
    n_out = getattr(model, "num_classes", 0)
    if not contract.label_names or n_out != len(contract.label_names):
        raise ValueError(f"model {model_ref}: {n_out} outputs but the contract names {len(contract.label_names)} "
                         "labels; batch inference needs a classifier whose outputs the contract labels")
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
    contract = WeightContract.from_dict(cfg["contract"])
    model = load_adapter(p, check_base=True)
    return model, contract, str(cfg.get("sha256", ""))


class Predictor:
    """``predict(x)`` → probabilities; x: float32 (B, C, H, W) numpy or tensor → (B, K) float32 numpy.

    ``precision``: "fp32"; "bf16" (autocast, weights stay fp32); "int8" (``torch.ao.quantization
    .quantize_dynamic`` of every ``nn.Linear``, CPU only). ``multilabel`` chooses sigmoid vs softmax.
    """

    def __init__(self, model: nn.Module, precision: Precision = "fp32", device: str = "cpu",
                 multilabel: bool = True) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("--device cuda requested but torch sees no CUDA device; use --device cpu")
        if precision == "int8" and device != "cpu":
            raise ValueError("int8 dynamic quantisation runs on CPU only; use --device cpu or --precision bf16")
        self.precision = precision
        self.device = torch.device(device)
        self.multilabel = multilabel
        self.fp32_model = model.eval()
        if precision == "int8":
            import copy
            import warnings

            from torch.ao.quantization import quantize_dynamic

            with warnings.catch_warnings():  # torch marks eager quantisation deprecated in favour of torchao
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", UserWarning)
                self.model = quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
        else:
            self.model = model.to(self.device)

    def autocast(self) -> Any:
        """The autocast context for this precision (a no-op context for fp32/int8)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @torch.inference_mode()
    def logits(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, K) float32 logits on CPU."""
        t = torch.as_tensor(x).to(self.device, non_blocking=True)
        with self.autocast():
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
        else:
            from medvit.eval.ood import FeatureTap

            with FeatureTap(self.model, ref.blocks) as tap:
                z = self.logits(x)
            scores = ref.score(tap.arrays())
        p = torch.sigmoid(z) if self.multilabel else torch.softmax(z, dim=-1)
        return p.numpy().astype(np.float32), scores
