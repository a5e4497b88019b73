"""Pure-torch building blocks for ViTs (2D and 3D, any channel count)."""

from medvit.nn.attention import Attention
from medvit.nn.block import Block, LayerScale
from medvit.nn.drop_path import DropPath, drop_path
from medvit.nn.mlp import Mlp
from medvit.nn.patch_embed import PatchEmbed
from medvit.nn.pos_embed import resample_pos_embed, sincos_pos_embed

__all__ = [
    "Attention",
    "Block",
    "DropPath",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "drop_path",
    "resample_pos_embed",
    "sincos_pos_embed",
]
