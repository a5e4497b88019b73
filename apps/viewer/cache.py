"""Session-spanning caches around the medvit library calls the viewer makes.

* ``st.cache_resource`` holds objects shared by every session and never copied: loaded models (one load per
  server, not per rerun) and decoded images (a 2,048² DX is 16 MB of float32; copying it on every rerun would
  cost more than the render).
* ``st.cache_data`` holds small, copyable results: predictions, heatmaps, thumbnails. Their keys include the
  file's modification time and the model's checksum, so a changed file or model is never served stale.

Every function here is a thin wrapper: the work is done by ``medvit.io``, ``medvit.infer`` and ``medvit.visualize``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

THUMB_SIDE = 160
HEAT_SIDE = 512


@dataclass
class LoadedModel:
    """A model ready to run on one image, plus what the banner shows."""

    ref: str  # checkpoint directory or weight tag, as given
    model: Any  # torch module in eval mode
    contract: Any  # medvit.models.WeightContract
    info: Any  # medvit.infer.predictor.ModelInfo (name, version, sha256, architecture, research_only)
    predictor: Any  # medvit.infer.predictor.Predictor
    preprocess: Any  # medvit.infer.preprocess.Preprocessor


def mtime(path: str | Path) -> float:
    """Modification time used in cache keys (0 when the path vanished)."""
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


@st.cache_resource(max_entries=3, show_spinner="Loading model…")
def load_model(ref: str) -> LoadedModel:
    """Load a checkpoint directory or weight tag once per server (errors propagate: ValueError/FileNotFoundError)."""
    import torch

    from medvit.infer.fastpath import DEFAULT_PRECISION
    from medvit.infer.predictor import Predictor, load_for_inference
    from medvit.infer.preprocess import Preprocessor

    torch.set_num_threads(min(4, torch.get_num_threads()))
    model, contract, info = load_for_inference(ref)
    # the predictor and precision `medvit infer` uses by default (bf16 on a CPU with native bf16, else fp32), so
    # the viewer shows the probabilities the batch run writes; heatmaps use the fp32 module (gradients)
    predictor = Predictor(model, DEFAULT_PRECISION, "cpu", contract.multilabel, model_sha256=info.sha256)
    return LoadedModel(ref, predictor.fp32_model, contract, info, predictor, Preprocessor.from_contract(contract))


@st.cache_resource(max_entries=6, show_spinner=False)
def read_image(path: str, modified: float) -> Any:
    """The decoded :class:`medvit.io.MedicalImage` of ``path`` (shared, treat as read-only)."""
    from medvit.io import read_image as _read

    return _read(path)  # medvit.io's pixel budget: a header claiming more samples is refused before decoding


def image_2d(path: str, frame: int | None) -> Any:
    """One 2D image (frame / slice ``frame``) of ``path`` via :func:`medvit.io.display.slice_for_display`."""
    from medvit.io.display import slice_for_display

    return slice_for_display(read_image(path, mtime(path)), frame)


@st.cache_data(max_entries=512, show_spinner=False)
def thumbnail(path: str, modified: float) -> np.ndarray | None:
    """(h, w) or (h, w, 3) uint8 preview (file VOI window, middle slice for volumes); None when unreadable."""
    from PIL import Image

    from medvit.io import MedicalIOError, render

    try:
        img = read_image(path, modified)
        frame = None if img.axes.startswith("XYZ") else 0
        arr = render(img, frame=frame)
    except (MedicalIOError, OSError, IndexError, ValueError):
        return None
    im = Image.fromarray(arr)
    im.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(im)


@st.cache_data(max_entries=256, show_spinner="Running the model…")
def predict(ref: str, sha256: str, path: str, modified: float, frame: int | None) -> dict[str, Any]:
    """Probabilities of the model on one 2D image: ``{"probabilities": [K floats], "notes": {...}, "ood": ...,
    "precision": "bf16" | "fp32"}`` (the precision the model ran at, as in ``medvit infer``'s ``model_precision``);
    a segmentation model adds ``masks`` (K, h, w) probabilities on the source grid (presence = highest pixel)
    (``ood``: ``{"score", "threshold", "flag"}`` when the model's contract has an out-of-distribution reference)."""
    lm = load_model(ref)
    x, notes, _unit = lm.preprocess(image_2d(path, frame))
    probs, ood = lm.predictor.predict_with_ood(x[None])
    extra: dict[str, Any] = {}
    if lm.contract.segmentation is not None:  # (1, K, h, w) maps: presence per label + masks on the source grid
        from medvit.infer.segment import presence, source_masks

        extra["masks"] = source_masks(probs[0], notes, lm.preprocess.geometry, list(lm.contract.thresholds),
                                      "FRACTIONAL")
        probs = presence(probs)
    ref = lm.contract.ood
    return {**extra, "probabilities": [float(p) for p in probs[0]], "notes": notes, "precision": lm.predictor.precision,
            "ood": None if ood is None else {"score": float(ood[0]), "threshold": float(ref["threshold"]),
                                             "flag": bool(ood[0] >= float(ref["threshold"]))}}


@st.cache_data(max_entries=64, show_spinner="Computing the heatmap…")
def heatmap(ref: str, sha256: str, path: str, modified: float, frame: int | None, target: int,
            method: str) -> np.ndarray:
    """(h, w) float32 heatmap in [0, 1] for label ``target`` over the source image's field of view.

    :func:`medvit.visualize.attribution.explain` on the model input, mapped back through the preprocessing geometry with
    :func:`medvit.infer.preprocess.unmap_heatmap`, then kept at most :data:`HEAT_SIDE` pixels on a side (the
    map is smooth; a 2,048² float map would cost 16 MB per cache entry).
    """
    import torch

    from medvit.visualize.attribution import explain

    lm = load_model(ref)
    x, notes, _unit = lm.preprocess(image_2d(path, frame))
    heat = explain(lm.model, torch.from_numpy(x[None]), method=method, target=target)[0].numpy()
    return _on_source(heat, notes, lm.preprocess.geometry)


def _on_source(heat: np.ndarray, notes: dict[str, Any], geometry: str | None) -> np.ndarray:
    """A (H, W) map on the model input -> float32 in [0, 1] on the source image, at most HEAT_SIDE a side."""
    from apps.viewer.view import fit
    from medvit.data.preprocess import resize_array
    from medvit.infer.preprocess import unmap_heatmap

    full = np.clip(unmap_heatmap(heat, notes, geometry), 0.0, 1.0).astype(np.float32)
    if max(full.shape) <= HEAT_SIDE:
        return full
    h, w = fit(*full.shape, HEAT_SIDE)
    return resize_array(full, (h, w))


@st.cache_data(max_entries=64, show_spinner="Computing the kept-token map…")
def keep_map(ref: str, sha256: str, path: str, modified: float, frame: int | None) -> tuple[np.ndarray, list[int]]:
    """EViT kept-token map over the source image: ((h, w) float32 in [0, 1], patches alive after each stage).

    :meth:`medvit.models.evit.EViT.keep_stage_map` on the model input (stages each patch survived, 0..S),
    divided by S, each patch drawn as its input-pixel square, mapped back like :func:`heatmap`.
    Raises ValueError when the model has no token reorganisation (not an EViT backbone).
    """
    import torch

    lm = load_model(ref)
    fn = getattr(lm.model, "keep_stage_map", None)
    if fn is None:
        raise ValueError(f"{lm.info.name} has no token reorganisation (the kept-token map is for EViT models)")
    x, notes, _unit = lm.preprocess(image_2d(path, frame))
    with torch.no_grad():
        stages = fn(torch.from_numpy(x[None]))[0].numpy()
    n_stages = len(set(lm.model.keep_locs))
    alive = [int((stages > s).sum()) for s in range(n_stages)]
    ph, pw = (x.shape[-2] // stages.shape[0], x.shape[-1] // stages.shape[1])
    on_input = np.kron(stages.astype(np.float32) / max(n_stages, 1), np.ones((ph, pw), np.float32))
    return _on_source(on_input, notes, lm.preprocess.geometry), alive


@st.cache_resource(show_spinner="No studies given: generating a few chest X-ray phantoms…")
def phantom_studies(folder: str, n: int = 6) -> str:
    """Folder of ``n`` chest phantom DICOM studies (written once by :func:`medvit.data.synth.write_synth`)."""
    from medvit.data.synth import write_synth

    images = Path(folder) / "images"
    if len(list(images.glob("*.dcm"))) < n:
        write_synth("cxr", n, folder, fmt="dicom", seed=0, masks=False)
    return str(images)
