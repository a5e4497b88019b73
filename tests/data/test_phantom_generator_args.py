"""stop-33 leftovers: the phantom generators refuse bad arguments themselves, naming them (one shared check the config
path reuses), a Python call gets the refusal the config path gives, and the config-time check draws nothing."""

from __future__ import annotations

import math

import pytest

from medvit.data.phantom_cxr import ChestPhantomGenerator
from medvit.data.phantom_datasets import PhantomDataset, PhantomFolderDataset, check_phantom_args, make_generator
from medvit.data.phantom_retina import RetinaPhantomGenerator

GENERATORS = {"cxr": ChestPhantomGenerator, "retina": RetinaPhantomGenerator}


def test_config_check_draws_no_texture_and_keeps_its_refusals(monkeypatch):
    """check_phantom_args built a generator (~0.1 s of texture drawing) to validate, and the run built it again;
    now the generator's own checks run without drawing anything."""
    import medvit.data.phantom_cxr as cxr
    import medvit.data.phantom_retina as retina

    def no_drawing(*a, **k):
        raise AssertionError("a config-time check drew a texture bank")

    monkeypatch.setattr(cxr, "texture_bank", no_drawing)
    monkeypatch.setattr(retina, "texture_bank", no_drawing)
    args = check_phantom_args("cxr", {"n": 10, "image_size": 64, "lesion_contrast": 2, "prevalence": 0.5})
    assert args["image_size"] == 64
    check_phantom_args("retina", {"n": 10, "image_size": 512, "stage_probs": [0.2] * 5})
    for kind, bad, msg in (("cxr", {"healthy_fraction": 1.5}, r"dataset_args\.healthy_fraction \(a probability\)"),
                           ("cxr", {"image_size": 16}, r"dataset_args\.image_size must be >= 32 for chest"),
                           ("retina", {"stage_probs": [1, 0, 0, 0]}, r"dataset_args\.stage_probs must be 5"),
                           ("retina", {"image_size": 8000}, r"dataset_args\.image_size \(pixels a side\) must be <=")):
        with pytest.raises(ValueError, match=msg):
            check_phantom_args(kind, {"n": 10, **bad})


@pytest.mark.parametrize("kind, kw, msg", [
    ("cxr", {"intensity": {"png": "minmax"}}, r"^intensity: only a synth folder \(root=DIR\) takes 'intensity'"),
    ("cxr", {"follow_links": True}, r"^follow_links: only a synth folder"),
    ("cxr", {"lesion_contrst": 2}, r"^lesion_contrst: cxr_phantom takes no argument 'lesion_contrst'; did you mean "
                                   r"'lesion_contrast'"),
    ("cxr", {"bogus": 1}, r"^bogus: cxr_phantom takes no argument 'bogus' \(it takes \[.*'in_chans'"),
    ("retina", {"prevalence": 0.3}, r"^prevalence: 'prevalence' is a chest-only knob; retina phantoms take"),
    ("retina", {"fov_mm": 6.0}, r"^fov_mm: retina_phantom takes no argument 'fov_mm'"),
], ids=["intensity", "follow_links", "typo", "unknown", "chest-only", "retina fov"])
def test_phantom_dataset_from_python_refuses_a_keyword_by_name(kind, kw, msg):
    """PhantomDataset(intensity=...) gave the generator's raw TypeError ("__init__() got an unexpected keyword
    argument"); the config path's refusal now serves both."""
    with pytest.raises(ValueError, match=msg):
        PhantomDataset(kind, n=4, image_size=32, **kw)


def test_make_generator_and_write_synth_refuse_an_unknown_knob_by_name(tmp_path):
    from medvit.data.synth import write_synth

    with pytest.raises(ValueError, match=r"^lesion_sise: retina_phantom takes no argument 'lesion_sise'; did you"):
        make_generator("retina", 32, 0, lesion_sise=2)
    with pytest.raises(ValueError, match=r"^nois: cxr_phantom takes no argument 'nois'"):
        write_synth("cxr", 2, tmp_path / "s", fmt="png", image_size=32, nois=2)
    assert not (tmp_path / "s").exists()  # refused before anything is written
    ds = PhantomDataset("cxr", n=4, image_size=32, follow_links=None, intensity=None)  # None: not given
    assert ds[0]["image"].shape == (1, 32, 32)


BAD_SIZE = [(math.nan, "must be a whole number, got nan"), (64.5, "must be a whole number, got 64.5"),
            ("64", "must be a whole number, got '64'"), (True, "must be a whole number, got True"),
            (0, "must be >= 32 for .* phantoms, got 0"), (10**6, r"must be <= 4,096 .*got 1,000,000")]


@pytest.mark.parametrize("kind", ["cxr", "retina"])
@pytest.mark.parametrize("size, msg", BAD_SIZE, ids=[repr(s) for s, _ in BAD_SIZE])
def test_generators_refuse_a_bad_image_size_naming_it(kind, size, msg):
    """The generators did not bound image_size themselves (config and CLI did): NaN gave "cannot convert float NaN
    to integer", 10**6 a MemoryError."""
    with pytest.raises(ValueError, match=rf"^image_size\b.*{msg}"):
        GENERATORS[kind](image_size=size)


@pytest.mark.parametrize("fov, shown", [(math.nan, "nan"), (0, "0"), (-400.0, "-400.0"), (math.inf, "inf"),
                                        ("400", "'400'")])
def test_chest_generator_refuses_a_bad_field_of_view_naming_it(fov, shown):
    """fov_mm NaN gave "cannot convert float NaN to integer", 0 a ZeroDivisionError when drawing, -400 a negative
    PixelSpacing."""
    with pytest.raises(ValueError, match=rf"^fov_mm \(detector field of view in mm.*\) must be a finite number > 0, "
                                         rf"got {shown}$"):
        ChestPhantomGenerator(image_size=32, fov_mm=fov)


@pytest.mark.parametrize("in_chans", [0, 2, 10**9, True, "3"])
def test_phantom_datasets_refuse_a_bad_in_chans_naming_it(tmp_path, in_chans):
    """in_chans 0 gave 1-channel items and 10**9 ran out of memory on the first item; only the config path refused."""
    from medvit.data.synth import write_synth

    with pytest.raises(ValueError, match=r"^in_chans must be 1 \(grey\) or 3 .*got"):
        PhantomDataset("cxr", n=4, image_size=32, in_chans=in_chans)
    write_synth("retina", 3, tmp_path, fmt="png", image_size=32, masks=False)
    with pytest.raises(ValueError, match=r"^in_chans must be 1 \(grey\) or 3"):
        PhantomFolderDataset(tmp_path, "all", in_chans=in_chans)


def test_one_geometry_check_serves_the_generators_and_the_config():
    """The config path names dataset_args.KEY, the generator KEY; otherwise the same words (one check)."""
    for kw in ({"fov_mm": 0.0}, {"image_size": 10**5}, {"prevalence": 1.5}):
        with pytest.raises(ValueError) as direct:
            ChestPhantomGenerator(**{"image_size": 32, **kw})
        with pytest.raises(ValueError) as config:
            check_phantom_args("cxr", {"n": 4, **kw})
        assert str(config.value) == f"dataset_args.{direct.value}"
