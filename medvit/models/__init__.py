"""Backbones with one uniform interface, checkpoints, converters and the backbone registry."""

from medvit.models.checkpoint import CheckpointError, load_weights_into, save_checkpoint
from medvit.models.contract import WeightContract
from medvit.models.factory import backbone_args, create_model, load_model, register_backbone
from medvit.models.vit import VisionTransformer

_VIT_SIZES = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
}
for _size, _shape in _VIT_SIZES.items():
    register_backbone(
        f"vit_{_size}_patch16_224", VisionTransformer,
        description=f"ViT-{_size[0].upper()}/16 at 224x224 (2D)",
        img_size=224, patch_size=16, **_shape,
    )
for _size in ("small", "base"):
    register_backbone(
        f"vit_{_size}_patch16_96_3d", VisionTransformer,
        description=f"3D ViT-{_size[0].upper()}/16 for 96^3 volumes, 1 channel, sin-cos positions",
        img_size=96, patch_size=16, in_chans=1, spatial_dims=3, pos_embed="sincos",
        **_VIT_SIZES[_size],
    )

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
    "CheckpointError",
    "VisionTransformer",
    "WeightContract",
    "backbone_args",
    "create_model",
    "load_model",
    "load_weights_into",
    "register_backbone",
    "save_checkpoint",
]
