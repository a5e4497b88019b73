"""One helper registers a family's sizes (medvit.models.factory.register_sizes) instead of a loop per model file."""

from __future__ import annotations

import pytest

from medvit.models import VIT_SIZES, VisionTransformer, backbone_args, register_sizes
from medvit.registry import REGISTRY


@pytest.fixture
def cleanup():
    names: list[str] = []
    yield names
    for n in names:
        REGISTRY.remove("backbone", n)


def test_register_sizes_names_shapes_and_descriptions(cleanup):
    names = register_sizes("tidyfam_{size}_p8", VisionTransformer, "TidyFam-{S}/8 ({size})", sizes=("tiny", "base"),
                           img_size=32, patch_size=8)
    cleanup += names
    assert names == ["tidyfam_tiny_p8", "tidyfam_base_p8"]
    assert backbone_args("tidyfam_base_p8") == dict(img_size=32, patch_size=8, **VIT_SIZES["base"])
    assert REGISTRY.entry("backbone", "tidyfam_tiny_p8").description == "TidyFam-T/8 (tiny)"
    own = {"wide": dict(embed_dim=64, depth=2, num_heads=4)}  # a family with its own shapes (e.g. ConViT)
    cleanup += register_sizes("tidyown_{size}", VisionTransformer, "Own-{S}", sizes=own, img_size=32, patch_size=8)
    assert backbone_args("tidyown_wide")["embed_dim"] == 64
    with pytest.raises(KeyError):
        register_sizes("tidybad_{size}", VisionTransformer, "x", sizes=("huge",))
    with pytest.raises(TypeError, match="has no arguments"):  # register_backbone's own check still applies
        register_sizes("tidybad2_{size}", VisionTransformer, "x", sizes=("tiny",), bogus=1)


@pytest.mark.parametrize("family,sizes", [
    ("vit_{size}_patch16_224", ("tiny", "small", "base", "large")), ("vit_{size}_patch16_96_3d", ("small", "base")),
    ("deit_{size}_distilled_patch16_224", ("tiny", "small", "base")),
    ("evit_{size}_patch16_224", ("tiny", "small", "base")),
    ("channelvit_{size}_patch16_224", ("tiny", "small")), ("channelvit_{size}_patch16_96_3d", ("small",)),
    ("fmvit_{size}_patch16_224", ("tiny", "small")), ("fmvit_{size}_patch16_96_3d", ("small",)),
    ("lgvit_{size}_patch16_224", ("small", "base")), ("lookupvit_{size}_patch16_224", ("small", "base")),
])
def test_families_carry_the_standard_vit_shapes(family, sizes):
    for s in sizes:
        args = backbone_args(family.format(size=s))
        assert {k: args[k] for k in VIT_SIZES[s]} == VIT_SIZES[s], family.format(size=s)
