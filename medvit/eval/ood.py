"""Out-of-distribution reference: Gaussians over the training data's features, scored by Mahalanobis distance.

Following Lee et al. (NeurIPS 2018, "A simple unified framework for detecting out-of-distribution samples"), each
feature layer gets a mean and a shared covariance of the training images' features, and the distances of the layers
are combined (their feature ensemble). The layers here: the pooled, normalised vector the classifier head reads
(the input of ``model.head``) and, for up to four evenly spaced transformer blocks, the mean and standard deviation
over the patch tokens of the block's output (intermediate layers see contrast, texture and field-of-view changes
the final features abstract away). Multi-label outputs have no exclusive classes, so one mean per layer is fitted;
covariances are Ledoit-Wolf shrunk (:class:`sklearn.covariance.LedoitWolf`), invertible for any number of images.
The score of an image is the mean over layers of its Mahalanobis distance divided by the layer's median training
distance; the threshold is the ``1 - target_fpr`` quantile of the validation split's scores, so in-distribution
images are flagged at about ``target_fpr``.

Storage: ``ood.safetensors`` (per layer ``<layer>.mean`` (D,), ``<layer>.precision`` (D, D), ``<layer>.scale`` (1,),
float32) in the checkpoint directory, and the contract's ``ood`` entry (method, layers, threshold, target and measured
false-positive rates, the file's SHA-256, which is checked at load).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

OOD_NAME = "ood.safetensors"
METHOD = "mahalanobis-ledoitwolf-layers"


def default_blocks(depth: int, n: int = 4) -> list[int]:
    """Up to ``n`` evenly spaced block indices of a ``depth``-block encoder, the last included."""
    if depth < 1:
        return []
    return sorted({round(i * (depth - 1) / max(n - 1, 1)) for i in range(min(n, depth))})


def _blocks_of(model: nn.Module) -> Any:
    blocks = getattr(model, "blocks", None)
    if blocks is None and isinstance(getattr(model, "backbone", None), nn.Module):  # prompt wrappers (VPT, DVPT)
        blocks = getattr(model.backbone, "blocks", None)
    return blocks


class FeatureTap:
    """Context manager capturing, per forward: ``head`` = input of ``model.head`` (B, D) and ``block<i>`` = mean and
    std over the patch tokens of block ``i``'s output (B, 2D), for ``blocks``."""

    def __init__(self, model: nn.Module, blocks: list[int] | tuple[int, ...] = ()) -> None:
        head = getattr(model, "head", None)
        if not isinstance(head, nn.Module):
            raise ValueError(f"{type(model).__name__} has no `head` module; the OOD reference reads its input")
        mods = _blocks_of(model)
        if blocks and mods is None:
            raise ValueError(f"{type(model).__name__} has no `blocks`; give blocks=() for head features only")
        self.head, self.blocks = head, [(int(i), mods[int(i)]) for i in blocks]
        self.prefix = int(getattr(model, "num_prefix_tokens", 1))
        self.features: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []

    def _head_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.features["head"] = args[0].detach().float().cpu()

    def _block_hook(self, i: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            t = out.detach().float()[:, self.prefix:]
            self.features[f"block{i}"] = torch.cat([t.mean(1), t.std(1)], dim=1).cpu()
        return hook

    def arrays(self) -> dict[str, np.ndarray]:
        """The last forward's features as float64 arrays."""
        return {k: v.numpy().astype(np.float64) for k, v in self.features.items()}

    def __enter__(self) -> FeatureTap:
        self.handles = [self.head.register_forward_pre_hook(self._head_hook)]
        self.handles += [m.register_forward_hook(self._block_hook(i)) for i, m in self.blocks]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def extract_features(model: nn.Module, ds: Any, batch_size: int = 128, device: str | torch.device = "cpu",
                     blocks: list[int] | tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """Layer name -> (N, D) float64 features of ``model`` over dataset ``ds`` (items with a transformed ``image``)."""
    was = model.training
    model.eval()
    out: dict[str, list[np.ndarray]] = {}
    with FeatureTap(model, blocks) as tap:
        for batch in torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False):
            model(batch["image"].to(device))
            for k, v in tap.arrays().items():
                out.setdefault(k, []).append(v)
    model.train(was)
    return {k: np.concatenate(v) for k, v in out.items()}


@dataclass
class OODReference:
    """Per layer: mean (D,), precision (D, D) and median training distance; the flag threshold on the score."""

    layers: dict[str, tuple[np.ndarray, np.ndarray, float]]
    threshold: float
    info: dict[str, Any]  # the contract's ``ood`` entry

    @property
    def blocks(self) -> list[int]:
        return [int(k[len("block"):]) for k in self.layers if k.startswith("block")]

    def distances(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Layer -> (B,) Mahalanobis distance divided by the layer's median training distance."""
        out = {}
        for k, (mean, prec, scale) in self.layers.items():
            if k not in features:
                raise ValueError(f"OOD reference needs features of layer {k!r}; got {sorted(features)}")
            f = np.asarray(features[k], dtype=np.float64) - mean
            out[k] = np.sqrt(np.clip(np.einsum("bi,ij,bj->b", f, prec, f), 0.0, None)) / scale
        return out

    def score(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """(B,) score: mean over layers of the scaled distances (float32); 1 = a typical training image."""
        return np.mean(list(self.distances(features).values()), axis=0).astype(np.float32)

    def flag(self, scores: np.ndarray) -> np.ndarray:
        """(B,) bool: outside the training distribution (:func:`ood_flagged`)."""
        return ood_flagged(scores, self.threshold)

    def score_call(self, model: nn.Module, call: Callable[[], Any]) -> tuple[Any, np.ndarray]:
        """(``call()``'s result, (B,) score) with ``model``'s blocks tapped during the call: one eager forward
        gives the outputs and the OOD score (``medvit infer``'s predictor and the VLM's CXR expert use this)."""
        with FeatureTap(model, self.blocks) as tap:
            out = call()
        return out, self.score(tap.arrays())


def ood_flagged(scores: np.ndarray | float, threshold: float) -> np.ndarray:
    """(B,) bool (0-d for a scalar): outside the training distribution — score >= ``threshold``, or a non-finite
    score (non-finite features cannot be scored: fail closed). The one rule for infer, the VLM's experts and
    :meth:`OODReference.flag`."""
    s = np.asarray(scores, dtype=np.float64)
    return ~np.isfinite(s) | (s >= threshold)


def fit_reference(train_features: dict[str, np.ndarray], val_features: dict[str, np.ndarray],
                  target_fpr: float = 0.05, test_features: dict[str, np.ndarray] | None = None) -> OODReference:
    """Fit per-layer mean + Ledoit-Wolf covariance on ``train_features`` (layer -> (N, D)); threshold at
    ``target_fpr`` on validation; the FPR on ``test_features`` is reported in ``info``.

    Raises ValueError when there are fewer than 2 training or 1 validation images, or ``target_fpr`` is not in (0, 1).
    """
    from sklearn.covariance import LedoitWolf

    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    n_tr = len(next(iter(train_features.values())))
    n_va = len(next(iter(val_features.values())))
    if n_tr < 2 or n_va < 1:
        raise ValueError(f"the OOD reference needs >= 2 training and >= 1 validation images, got {n_tr} and {n_va}")
    layers = {}
    for k, f in train_features.items():
        lw = LedoitWolf().fit(f)
        mean, prec = lw.location_.astype(np.float64), lw.precision_.astype(np.float64)
        d = np.sqrt(np.clip(np.einsum("bi,ij,bj->b", f - mean, prec, f - mean), 0.0, None))
        layers[k] = (mean, prec, float(max(np.median(d), 1e-6)))
    ref = OODReference(layers, 0.0, {})
    val = ref.score(val_features)
    ref.threshold = float(np.quantile(val, 1.0 - target_fpr, method="higher"))
    ref.info = {"method": METHOD, "layers": list(layers),
                "features": "head: input of the classifier head; block<i>: mean and std over patch tokens",
                "threshold": ref.threshold, "target_fpr": float(target_fpr),
                "val_fpr": float(np.mean(ref.flag(val))), "n_train": int(n_tr), "n_val": int(n_va),
                "dims": {k: int(v[0].shape[0]) for k, v in layers.items()}}
    if test_features is not None and len(next(iter(test_features.values()))):
        ref.info["test_fpr"] = float(np.mean(ref.flag(ref.score(test_features))))
        ref.info["n_test"] = int(len(next(iter(test_features.values()))))
    logger.info("OOD reference: threshold %.3f (val FPR %.3f at target %.3f)", ref.threshold, ref.info["val_fpr"],
                target_fpr)
    return ref


def save_reference(ref: OODReference, ckpt_dir: str | Path) -> dict[str, Any]:
    """Write ``ckpt_dir/ood.safetensors``; returns the contract ``ood`` entry (with the file's SHA-256)."""
    from medvit.models.checkpoint import write_safetensors

    out = Path(ckpt_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, (mean, prec, scale) in ref.layers.items():
        tensors[f"{k}.mean"] = torch.from_numpy(mean.astype(np.float32))
        tensors[f"{k}.precision"] = torch.from_numpy(prec.astype(np.float32)).contiguous()
        tensors[f"{k}.scale"] = torch.tensor([scale], dtype=torch.float32)
    # atomic and byte-reproducible (sorted metadata), readable like the weights it is shipped beside
    write_safetensors(out / OOD_NAME, tensors, metadata={"format": "medvit-ood/2", "method": METHOD}, mode=0o644)
    return {**ref.info, "sha256": hashlib.sha256((out / OOD_NAME).read_bytes()).hexdigest()}


def load_reference(ckpt_dir: str | Path, info: dict[str, Any]) -> OODReference:
    """Read ``ckpt_dir/ood.safetensors`` for the contract entry ``info``; ValueError on a missing/changed file."""
    from safetensors.torch import load_file

    f = Path(ckpt_dir) / OOD_NAME
    if not f.is_file():
        raise ValueError(f"{f} is missing; the model's contract declares an OOD reference (restore the file or "
                         "remove 'ood' from config.json)")
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    if info.get("sha256") and sha != info["sha256"]:
        raise ValueError(f"{f}: SHA-256 {sha[:16]}... does not match the contract ({str(info['sha256'])[:16]}...)")
    if info.get("method") != METHOD:
        raise ValueError(f"{f}: unknown OOD method {info.get('method')!r}; this medvit knows {METHOD!r}")
    t = load_file(str(f))
    layers = {}
    for k in info.get("layers", []):
        try:
            mean, prec = t[f"{k}.mean"].double().numpy(), t[f"{k}.precision"].double().numpy()
            scale = float(t[f"{k}.scale"][0])
        except KeyError as e:
            raise ValueError(f"{f}: layer {k!r} listed in the contract is missing ({e})") from e
        if prec.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(f"{f}: {k}.precision {tuple(prec.shape)} does not fit its mean {tuple(mean.shape)}")
        layers[k] = (mean, prec, scale)
    if not layers:
        raise ValueError(f"{f}: the contract's OOD entry lists no layers")
    return OODReference(layers, float(info["threshold"]), dict(info))


def fit_for_model(model: nn.Module, train_ds: Any, val_ds: Any, test_ds: Any = None, target_fpr: float = 0.05,
                  batch_size: int = 128, device: str | torch.device = "cpu",
                  blocks: list[int] | None = None) -> OODReference:
    """Features of ``model`` over transformed datasets -> :func:`fit_reference` (test split: FPR reported only).

    ``blocks``: transformer blocks whose token statistics join the head features (default
    :func:`default_blocks` of the model's depth).
    """
    if blocks is None:
        mods = _blocks_of(model)
        blocks = default_blocks(len(mods)) if mods is not None else []
    tr = extract_features(model, train_ds, batch_size, device, blocks)
    va = extract_features(model, val_ds, batch_size, device, blocks)
    te = extract_features(model, test_ds, batch_size, device, blocks) if test_ds is not None else None
    return fit_reference(tr, va, target_fpr, te)
