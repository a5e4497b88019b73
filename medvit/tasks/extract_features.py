"""Task ``extract_features``: embed images with a registered backbone and save the features."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from medvit.config import option

logger = logging.getLogger(__name__)


@dataclass
class ExtractFeaturesConfig:
    """Embed a list of images with a backbone; writes ``features.safetensors`` + ``summary.json``."""

    inputs: list[str] = option(default_factory=list, help="image files (DICOM, PNG, NIfTI, .npy)")
    output_dir: str = option("runs/extract_features", "where features and the resolved config go")
    backbone: str = option("vit_small_patch16_224", "registered backbone name")
    pretrained: str | None = option(None, "checkpoint dir / weights file / weight tag; None = random init")
    in_chans: int = option(1, "channels fed to the model")
    image_size: int = option(224, "images are resized to image_size x image_size")
    batch_size: int = option(8, "images per forward pass")
    precision: str = option("fp32", '"fp32" or "bf16" (autocast)')

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")


def _load(path: str, size: int, in_chans: int) -> torch.Tensor:
    """File -> (in_chans, size, size) float tensor in [0, 1]: the displayed image (file VOI window or min-max,
    MONOCHROME1 inverted) of the middle frame/slice; colour is averaged to gray when ``in_chans == 1``."""
    from medvit.io import display_array, read_image
    from medvit.io.display import slice_for_display

    img = read_image(path)
    mid = img.n_frames // 2 if "F" in img.axes else None
    arr = torch.as_tensor(display_array(slice_for_display(img, mid))).float()
    if arr.ndim == 3:  # (H, W, 3) colour
        arr = arr.permute(2, 0, 1)
        if in_chans == 1:
            arr = arr.mean(0, keepdim=True)
    else:
        arr = arr[None]
    arr = torch.nn.functional.interpolate(arr[None], size=(size, size), mode="bilinear", antialias=True)[0]
    if arr.shape[0] != in_chans:
        arr = arr[:1].expand(in_chans, -1, -1)
    return arr.clone()


def run(cfg: ExtractFeaturesConfig) -> dict:
    """Embed ``cfg.inputs`` and save pooled features (N, D)."""
    from safetensors.torch import save_file

    from medvit.models import create_model
    from medvit.nn.precision import autocast

    if not cfg.inputs:
        raise ValueError("extract_features: 'inputs' is empty; give image files")
    model = create_model(cfg.backbone, pretrained=cfg.pretrained, in_chans=cfg.in_chans,
                         img_size=cfg.image_size, num_classes=0).eval()
    feats, done, failed = [], [], []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if not batch:
            return
        x = torch.stack(batch)
        with torch.inference_mode(), autocast("cpu", cfg.precision):
            feats.append(model(x).float())
        batch.clear()

    for p in cfg.inputs:
        try:
            batch.append(_load(p, cfg.image_size, cfg.in_chans))
            done.append(p)
        except Exception as e:  # a bad file is reported and skipped; the run goes on
            logger.warning("skipping %s: %s", p, e)
            failed.append({"file": p, "reason": str(e)})
        if len(batch) == cfg.batch_size:
            flush()
    flush()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"n_images": len(done), "failed": failed, "backbone": cfg.backbone}
    if feats:
        f = torch.cat(feats)
        save_file({"features": f.contiguous()}, str(out / "features.safetensors"))
        summary.update(feature_dim=int(f.shape[1]), feature_norm_mean=float(f.norm(dim=1).mean()),
                       files=done)
        if len(done) > 1:
            fn = torch.nn.functional.normalize(f, dim=1)
            sim = fn @ fn.T
            summary["mean_pairwise_cosine"] = float((sim.sum() - sim.diag().sum()) / (len(done) * (len(done) - 1)))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _register() -> None:
    from medvit.tasks.base import register_task

    register_task("extract_features", ExtractFeaturesConfig,
                  "embed images with a registered backbone and save pooled features")(run)


_register()
