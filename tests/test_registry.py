import pytest

from medvit.registry import Registry


def test_duplicate_raises_and_unknown_suggests():
    r = Registry(["backbone"])
    r.add("backbone", "vit_small_patch16_224", object())
    with pytest.raises(ValueError, match="already registered"):
        r.add("backbone", "vit_small_patch16_224", object())
    with pytest.raises(KeyError, match="vit_small_patch16_224"):
        r.get("backbone", "vit_smal_patch16_224")
    with pytest.raises(KeyError, match="unknown registry kind"):
        r.get("nope", "x")


def test_decorator_and_names():
    r = Registry(["metric"])

    @r.register("metric")
    def auroc():
        """Mean AUROC."""

    assert r.names("metric") == ["auroc"]
    assert r.entry("metric", "auroc").description == "Mean AUROC."


def test_global_registry_has_backbones():
    from medvit import list_names

    names = list_names("backbone")
    for n in ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224",
              "vit_small_patch16_96_3d"):
        assert n in names
    assert "extract_features" in list_names("task")
