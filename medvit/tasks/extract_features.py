"""Task ``extract_features``: embed images with a registered backbone and save the features."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from medvit.config import option
from medvit.tasks.base import register_task

logger = logging.getLogger(__name__)


@dataclass
class ExtractFeaturesConfig:
    """Embed a list of images with a backbone; writes ``features.safetensors`` + ``summary.json``."""

    inputs: list[str] = option(default_factory=list, help="image files (DICOM, PNG, NIfTI, .npy); pydicom:NAME "
                               "names a file of pydicom's bundled test data")
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


def _load(path: str, pre: object) -> torch.Tensor:
    """File -> (in_chans, H, W) model input through the one preprocessing (:class:`medvit.data.preprocess.
    Preprocessor`) of the middle frame / slice (the image the viewer shows)."""
    from medvit.io import read_image
    from medvit.io.display import slice_for_display

    img = read_image(path)
    mid = img.n_frames // 2 if "F" in img.axes else None
    x, _, _ = pre(slice_for_display(img, mid))  # type: ignore[operator]
    return torch.from_numpy(x)


def _contract(cfg: ExtractFeaturesConfig) -> object:
    """The weights' contract when they carry one (checkpoint dir, weight tag), else [0, 1] input, squashed."""
    from medvit.models import WeightContract
    from medvit.registry import REGISTRY

    base = WeightContract(in_chans=cfg.in_chans, input_size=(cfg.image_size, cfg.image_size), mean=(0.0,),
                          std=(1.0,), crop_mode="squash")
    src = None
    if cfg.pretrained and Path(cfg.pretrained, "config.json").is_file():
        src = json.loads(Path(cfg.pretrained, "config.json").read_text()).get("contract")
    elif cfg.pretrained and ("weight", cfg.pretrained) in REGISTRY:
        src = REGISTRY.get("weight", cfg.pretrained).contract.to_dict()
    if not src:
        return base
    keep = {k: src[k] for k in ("mean", "std", "intensity_window", "intensity", "crop_mode", "crop_pct",
                                "interpolation") if k in src}
    if len(keep.get("mean", [])) not in (1, cfg.in_chans):
        keep.pop("mean", None), keep.pop("std", None)
    return WeightContract.from_dict({**base.to_dict(), **keep, "resize_size": None})


def run(cfg: ExtractFeaturesConfig) -> dict:
    """Embed ``cfg.inputs`` and save pooled features (N, D)."""
    from safetensors.torch import save_file

    from medvit.models import create_model
    from medvit.nn.precision import autocast

    if not cfg.inputs:
        raise ValueError("extract_features: 'inputs' is empty; give image files")
    inputs = [resolve_input(p) for p in cfg.inputs]
    missing = [p for p, r in zip(cfg.inputs, inputs, strict=True) if not Path(r).exists()]
    if missing:
        raise FileNotFoundError(f"extract_features: input(s) not found: {', '.join(missing[:10])}"
                                + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))
    model = create_model(cfg.backbone, pretrained=cfg.pretrained, in_chans=cfg.in_chans,
                         img_size=cfg.image_size, num_classes=0).eval()
    from medvit.data.preprocess import Preprocessor

    pre = Preprocessor.from_contract(_contract(cfg))
    feats, done, failed = [], [], []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if not batch:
            return
        x = torch.stack(batch)
        with torch.inference_mode(), autocast("cpu", cfg.precision):
            feats.append(model(x).float())
        batch.clear()

    for p in inputs:
        try:
            batch.append(_load(p, pre))
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
    if not done:
        why = "; ".join(f["file"] + ": " + f["reason"] for f in failed[:3])
        raise ValueError(f"extract_features: none of the {len(inputs)} input(s) could be read as an image "
                         f"({why}); see {out / 'summary.json'}")
    return summary


def resolve_input(name: str) -> str:
    """An input path; ``pydicom:NAME`` names a file of pydicom's bundled test data (the demo uses them)."""
    if name.startswith("pydicom:"):
        from medvit.io.dicom import bundled_test_file

        found = bundled_test_file(name.split(":", 1)[1])
        return str(found) if found else name
    return name


# registered when medvit.tasks is imported
register_task("extract_features", ExtractFeaturesConfig,
              "embed images with a registered backbone and save pooled features")(run)
