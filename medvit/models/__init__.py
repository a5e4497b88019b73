"""Backbones with one uniform interface, checkpoints, converters and the backbone registry."""

from medvit.models.checkpoint import CheckpointError, load_weights_into, save_checkpoint
from medvit.models.contract import WeightContract
from medvit.models.factory import (
    VIT_SIZES,
    backbone_args,
    create_model,
    load_model,
    register_backbone,
    register_sizes,
)
from medvit.models.vit import VisionTransformer

register_sizes("vit_{size}_patch16_224", VisionTransformer, "ViT-{S}/16 at 224x224 (2D)", sizes=VIT_SIZES,
               img_size=224, patch_size=16)
register_sizes("vit_{size}_patch16_96_3d", VisionTransformer,
               "3D ViT-{S}/16 for 96^3 volumes, 1 channel, sin-cos positions", sizes=("small", "base"),
               img_size=96, patch_size=16, in_chans=1, spatial_dims=3, pos_embed="sincos")

from medvit.models import channelvit as _channelvit  # noqa: E402,F401  (general-vision families register on import)
from medvit.models import convit as _convit  # noqa: E402,F401
from medvit.models import deit as _deit  # noqa: E402,F401
from medvit.models import evit as _evit  # noqa: E402,F401
from medvit.models import fmvit as _fmvit  # noqa: E402,F401
from medvit.models import lgvit as _lgvit  # noqa: E402,F401
from medvit.models import lookupvit as _lookupvit  # noqa: E402,F401
from medvit.models import monai_cnn as _monai_cnn  # noqa: E402,F401
from medvit.models import pretrained as _pretrained  # noqa: E402,F401  (registers weight tags)
from medvit.models import pruned as _pruned  # noqa: E402,F401
from medvit.models import segmentation as _segmentation  # noqa: E402,F401  (registers segmentation models)
from medvit.models import upernet as _upernet  # noqa: E402,F401  (registers the upernet_vit segmenter)

__all__ = [
    "VIT_SIZES",
    "CheckpointError",
    "VisionTransformer",
    "WeightContract",
    "backbone_args",
    "create_model",
    "load_model",
    "load_weights_into",
    "register_backbone",
    "register_sizes",
    "save_checkpoint",
]
