"""Registered weight tags (``arch.tag``): where the weights come from and the contract they carry.

Weights cannot be downloaded inside medvit (no hub access is assumed); a tag names the file a user
places under ``$MEDVIT_WEIGHTS`` (default ``~/.cache/medvit/weights``) and what it means.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medvit.data.labels import NIH14_LABELS
from medvit.models.contract import WeightContract
from medvit.registry import REGISTRY


@dataclass
class WeightSpec:
    """A published set of weights: the architecture, the file name, its origin and contract."""

    tag: str  # "arch.tag"
    filename: str  # file expected under $MEDVIT_WEIGHTS/<tag>/
    url: str  # where a user downloads it by hand
    contract: WeightContract
    sha256: str = ""  # expected checksum when known

    @property
    def arch(self) -> str:
        return self.tag.split(".", 1)[0]


def weights_dir() -> Path:
    return Path(os.environ.get("MEDVIT_WEIGHTS", Path.home() / ".cache" / "medvit" / "weights"))


def resolve_weight_file(tag: str) -> Path:
    """Local file for a weight tag, or ``FileNotFoundError`` saying where to put it."""
    spec: WeightSpec = REGISTRY.get("weight", tag)
    d = weights_dir() / tag
    for cand in (d / "model.safetensors", d / spec.filename):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"weights for {tag!r} are not on this machine. Download {spec.filename} from {spec.url} and place it "
        f"at {d / spec.filename} (or set MEDVIT_WEIGHTS to the folder holding {tag}/)."
    )


def register_weights(spec: WeightSpec) -> None:
    REGISTRY.add("weight", spec.tag, spec, description=spec.contract.description)


_MAE_URL = "https://github.com/lambert-x/medical_mae (Google Drive links in README)"
_NIH_NORM = dict(mean=(0.5056,) * 3, std=(0.252,) * 3)

register_weights(WeightSpec(
    "vit_small_patch16_224.cxr_mae", "vit-s_CXR_0.3M_mae.pth", _MAE_URL,
    WeightContract(in_chans=3, input_size=(224, 224), **_NIH_NORM,
                   source="Xiao et al. WACV 2023, MAE on 0.3M CXR", license="see upstream repository",
                   description="ViT-S/16 MAE-pretrained on NIH+CheXpert (encoder only)"),
))
register_weights(WeightSpec(
    "vit_base_patch16_224.cxr_mae", "vit-b_CXR_0.5M_mae.pth", _MAE_URL,
    WeightContract(in_chans=3, input_size=(224, 224), **_NIH_NORM,
                   source="Xiao et al. WACV 2023, MAE on 0.5M CXR", license="see upstream repository",
                   description="ViT-B/16 MAE-pretrained on NIH+CheXpert+MIMIC (encoder only)"),
))
register_weights(WeightSpec(
    "vit_small_patch16_224.cxr_mae_ft_nih", "vit-s_CXR_0.3M_mae_finetuned_nih.pth", _MAE_URL,
    WeightContract(in_chans=3, input_size=(224, 224), **_NIH_NORM, label_names=list(NIH14_LABELS),
                   modalities=["CR", "DX"], view_positions=["PA", "AP"], source="Xiao et al. WACV 2023",
                   license="see upstream repository",
                   description="ViT-S/16 fine-tuned on NIH ChestX-ray14 (82.3 mAUC)"),
))
