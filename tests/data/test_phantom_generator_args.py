"""stop-33 leftovers: the phantom generators refuse bad arguments themselves, naming them (one shared check the config
path reuses), a Python call gets the refusal the config path gives, and the config-time check draws nothing."""

from __future__ import annotations

import math
import re

import numpy as np
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
    with pytest.raises(ValueError, match=rf"^fov_mm \(detector field of view in mm.*\) must be a number in "
                                         rf"\[50, 1000\], got {shown}$"):
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


BIG = 10**400  # an int beyond float range (a 401-digit YAML / argparse integer)


def test_an_integer_beyond_float_range_is_refused_by_name_not_an_overflow_error(tmp_path, capsys):
    """breaker34 B15 (regression of 188f19d): check_geometry called math.isfinite on the value before the upper
    bound, so a 401-digit image_size raised OverflowError ("int too large to convert to float", a traceback) from
    the generators, `medvit data synth --size` and `medvit run --dry-run`; fov_mm / prevalence of that size did the
    same in the config's float check. Now each is the named refusal."""
    from medvit.cli.main import main
    from medvit.config import ConfigError, check_type
    from medvit.data.phantom_common import check_geometry

    too_big = r"image_size \(pixels a side\) must be <= 4,096 \(more would not fit in memory\), got 10,000,000,"
    for kind in ("cxr", "retina"):
        with pytest.raises(ValueError, match=rf"^{too_big}"):
            GENERATORS[kind](image_size=BIG)
        with pytest.raises(ValueError, match=rf"^dataset_args\.{too_big}"):
            check_phantom_args(kind, {"n": 4, "image_size": BIG})
    with pytest.raises(ValueError, match=r"^fov_mm \(detector field of view in mm.*got 1000000000"):
        check_geometry(fov_mm=BIG)
    with pytest.raises(ValueError, match=r"^prevalence \(a probability\) must lie in \[0, 1\], got 1000000000"):
        ChestPhantomGenerator(image_size=32, prevalence=BIG)
    for key in ("fov_mm", "prevalence"):
        with pytest.raises(ConfigError, match=rf"^dataset_args\.{key} must be a finite number, got 1000000000.*"
                                              r"\(a number beyond ±1\.8e308 reads as infinite\)$"):
            check_phantom_args("cxr", {"n": 4, key: BIG})
    with pytest.raises(ConfigError, match=r"^x must be a finite number"):
        check_type(-BIG, float, "x")
    out = tmp_path / "out"
    assert main(["data", "synth", "--kind", "cxr", "--n", "2", "--out", str(out), "--size", str(BIG)]) == 2
    assert "--size (pixels a side) must be <= 4,096" in capsys.readouterr().err
    assert not out.exists()


def test_a_whole_decimal_or_fraction_is_a_whole_number():
    """breaker34 B3 (regression of 188f19d): Decimal(64) was refused as "image_size must be a whole number" (it is
    one; it is not a numbers.Real) and Decimal(400) as a bad fov_mm; both worked before. A Decimal / Fraction is now
    read by its value: the same phantom as the int; 64.5 in any type is still refused."""
    from decimal import Decimal
    from fractions import Fraction

    ref = ChestPhantomGenerator(image_size=64, seed=1).sample(0).image
    for size, fov in ((Decimal(64), Decimal(400)), (Fraction(128, 2), Fraction(400)), (np.int16(64), 400)):
        assert np.array_equal(ChestPhantomGenerator(image_size=size, seed=1, fov_mm=fov).sample(0).image, ref)
    for bad in (Decimal("64.5"), Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Fraction(129, 2)):
        with pytest.raises(ValueError, match=rf"^image_size \(pixels a side\) must be a whole number, got "
                                             rf"{re.escape(repr(bad))}$"):
            RetinaPhantomGenerator(image_size=bad)
    assert ChestPhantomGenerator.check_args(prevalence=Decimal("0.25"), image_size=Decimal(32)) is None


@pytest.mark.parametrize("fov", [1e-300, 49.9, 1000.5, 1e308])
def test_a_field_of_view_outside_the_physical_range_is_refused_before_anything_is_written(tmp_path, fov):
    """breaker34 B1: fov_mm only had to be finite and > 0, so write_synth(fov_mm=1e-300) wrote DICOM Pixel Spacing
    0.0 (DICOM requires > 0) and 1e308 a spacing of 2.5e306 mm; the dry run accepted both too."""
    from medvit.data.synth import write_synth

    with pytest.raises(ValueError, match=r"^fov_mm \(detector field of view in mm; sets the pixel spacing\) must be a "
                                         rf"number in \[50, 1000\], got {re.escape(repr(fov))}$"):
        write_synth("cxr", 2, tmp_path / "s", image_size=32, masks=False, fov_mm=fov)
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match=r"^dataset_args\.fov_mm .* must be a number in \[50, 1000\]"):
        check_phantom_args("cxr", {"n": 4, "fov_mm": fov})


def test_the_field_of_view_bounds_give_a_positive_pixel_spacing_recorded_in_the_manifest(tmp_path):
    """breaker34 B1: at the bounds the DICOM Pixel Spacing stays a positive number, and a PNG folder (no spacing in
    its files) records its fov_mm in manifest.json."""
    import json

    import pydicom

    from medvit.data.synth import write_synth

    for fov, size, spacing in ((50, 4096 // 64, 50 / 64), (1000.0, 32, 31.25)):
        write_synth("cxr", 1, tmp_path / str(fov), image_size=size, masks=False, fov_mm=fov)
        ds = pydicom.dcmread(next((tmp_path / str(fov) / "images").iterdir()))
        assert [float(x) for x in ds.PixelSpacing] == [spacing, spacing]
    write_synth("cxr", 1, tmp_path / "png", fmt="png", image_size=32, masks=False, fov_mm=250)
    assert json.loads((tmp_path / "png" / "manifest.json").read_text())["fov_mm"] == 250.0


@pytest.mark.parametrize("kw, msg", [
    ({"seed": 1.5}, r"^seed \(a random seed\) must be a whole number, got 1\.5$"),
    ({"seed": "3"}, r"^seed \(a random seed\) must be a whole number, got '3'$"),
    ({"seed": True}, r"^seed \(a random seed\) must be a whole number, got True$"),
    ({"seed": -1}, r"^seed must be >= 0 \(a random seed\), got -1$"),
    ({"n": "2"}, r"^n \(number of phantom images\) must be a whole number, got '2'$"),
    ({"n": 2.5}, r"^n \(number of phantom images\) must be a whole number, got 2\.5$"),
    ({"n": 0}, r"^n \(number of phantom images\) must be >= 1, got 0$"),
    ({"n": 10**9}, r"^n \(number of phantom images\) must be <= 10,000,000 .*got 1,000,000,000$"),
    ({"with_masks": "yes"}, r"^with_masks must be true or false, got 'yes'$"),
    ({"in_chans": None}, r"^in_chans must be 1 \(grey\) or 3 .*got None$"),
    ({"in_chans": np.True_}, r"^in_chans must be 1 \(grey\) or 3 .*got (np\.)?True_?$"),
    ({"fov_mm": None}, r"^fov_mm \(detector field of view in mm.*got None$"),
], ids=lambda v: repr(v) if isinstance(v, dict) else "")
def test_python_calls_refuse_seed_n_and_flags_of_the_wrong_kind_by_name(kw, msg):
    """breaker34 B2: the Python entry points took seed 1.5 (drawn as seed 1), "3", True and with_masks="yes"; seed -1
    gave numpy's "expected non-negative integer", n "2" a bare TypeError from '<', None values float()/int()
    TypeErrors, all naming nothing. Now the generators' / patient plan's shared checks refuse them by name, from
    the builder as from the dataset."""
    from medvit.data.phantom_datasets import cxr_phantom

    with pytest.raises(ValueError, match=msg):
        cxr_phantom(split="train", **{"n": 4, "seed": 0, "image_size": 32, **kw})


def test_the_generators_shared_check_refuses_seed_and_with_masks_and_stage_probs_of_the_wrong_kind():
    """breaker34 B2: check_args (the dry run's check) passed seed=-1, seed="x" and with_masks="yes" silently, and
    retina took stage_probs ["0.2", ...] as numbers."""
    for gen in GENERATORS.values():
        with pytest.raises(ValueError, match=r"^image_size \(pixels a side\) must be a whole number, got None$"):
            gen(image_size=None)
        with pytest.raises(ValueError, match=r"^seed must be >= 0 \(a random seed\), got -1$"):
            gen.check_args(seed=-1)
        with pytest.raises(ValueError, match=r"^seed \(a random seed\) must be a whole number, got 'x'$"):
            gen.check_args(seed="x", with_masks="yes")
        with pytest.raises(ValueError, match=r"^dataset_args\.with_masks must be true or false, got 'yes'$"):
            gen.check_args(lambda k: f"dataset_args.{k}", with_masks="yes")
        gen.check_args(seed=np.int64(3), with_masks=np.False_, image_size=32.0)  # numpy / whole values are fine
    for probs in ([0.2, 0.2, 0.2, 0.2, "0.2"], [0.2, 0.2, 0.2, 0.2, True], "0.2,0.2", 0.2):
        with pytest.raises(ValueError, match=r"^stage_probs must be 5 non-negative numbers summing to 1"):
            RetinaPhantomGenerator(image_size=32, stage_probs=probs)


def test_write_synth_refuses_before_writing_and_records_the_seed_it_drew(tmp_path):
    """breaker34 B2: write_synth(seed=1.5) drew seed 1 and wrote "seed": 1.5 into manifest.json; image_size 64.5 was
    truncated to 64; with_masks=False gave "got multiple values for keyword argument 'with_masks'"; n "2" failed
    after the folders were made. A numpy seed is recorded as a plain number."""
    import json

    from medvit.data.synth import write_synth

    for kw, msg in (({"seed": 1.5}, r"^seed \(a random seed\) must be a whole number"),
                    ({"image_size": 64.5}, r"^image_size \(pixels a side\) must be a whole number, got 64\.5"),
                    ({"with_masks": False}, r"^with_masks: write_synth takes masks=True/False"),
                    ({"masks": "yes"}, r"^masks must be true or false, got 'yes'$"),
                    ({"n": "2"}, r"^n \(number of phantom images\) must be a whole number")):
        with pytest.raises(ValueError, match=msg):
            write_synth("retina", **{"n": 2, "out": tmp_path / "s", "image_size": 32, **kw})
        assert not (tmp_path / "s").exists()
    write_synth("retina", 2.0, tmp_path / "ok", fmt="png", seed=np.int64(3), image_size=32.0, masks=False)
    man = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    assert (man["seed"], man["n"], man["image_size"]) == (3, 2, 32)
    assert all(type(man[k]) is int for k in ("seed", "n", "image_size"))


WRAPPERS = ("cxr_phantom_lt", "cxr_multiwindow_phantom", "cxr_phantom_benchx")


@pytest.mark.parametrize("dataset", WRAPPERS)
@pytest.mark.parametrize("override, msg", [
    ("dataset_args.nois=1", r"^dataset_args\.nois: {ds} takes no argument 'nois'"),
    ("dataset_args.image_size=5000", r"^dataset_args\.image_size \(pixels a side\) must be <= 4,096"),
    ("dataset_args.n=2000000000", r"^dataset_args\.n \(number of phantom images\) must be <= 10,000,000"),
    ("dataset_args.root=/tmp", r"^dataset_args\.root: {ds} takes no argument 'root'"),
    ("dataset_args.transform=x", r"^dataset_args\.transform: the transform is set by the task"),
], ids=["typo", "image_size", "n", "root", "transform"])
def test_dry_run_of_a_wrapper_phantom_dataset_refuses_what_its_run_refuses(dataset, override, msg):
    """breaker34 B13: cxr_phantom_lt / cxr_multiwindow_phantom / cxr_phantom_benchx registered no check_args, so
    `medvit run --dry-run` accepted a misspelt key, image_size 5000 and n 2e9 (which the run refused, or, for n, did
    not bound: a 16 GB patient plan)."""
    from medvit.config import ConfigError
    from medvit.tasks import build_config

    with pytest.raises(ConfigError, match=msg.format(ds=dataset)):
        build_config("pipelines/demo/cxr_phantom_demo.yaml",
                     [f"dataset={dataset}", "dataset_args={n: 100, seed: 0, image_size: 64}", override])


@pytest.mark.parametrize("override, msg", [
    ("dataset=cxr_phantom_lt dataset_args.imbalance=0.5", r"^dataset_args\.imbalance \(head/tail ratio\) must be"),
    ("dataset=cxr_phantom_lt dataset_args.order=[Mass]", r"^dataset_args\.order must list every finding"),
    ("dataset=cxr_phantom_lt dataset_args.normal_fraction=2", r"^dataset_args\.normal_fraction \(a probability\)"),
    ("dataset=cxr_phantom_lt dataset_args.lesion_contrast=9", r"phantom knob lesion_contrast=9"),
    ("dataset=cxr_multiwindow_phantom dataset_args.windows=[brain]", r"^dataset_args\.windows: unknown windows"),
    ("dataset=cxr_phantom_benchx dataset_args.mask_of=lung_", r"^dataset_args\.mask_of must name at least one"),
])
def test_dry_run_of_a_wrapper_checks_its_own_arguments_with_the_runs_check(override, msg):
    """breaker34 B13: each wrapper's own arguments (imbalance, order, windows, mask_of) were checked only when the run
    built the data; the dry run now runs the same check (mask_of 'lung_' was split into its letters)."""
    from medvit.config import ConfigError
    from medvit.tasks import build_config

    with pytest.raises(ConfigError, match=msg):
        build_config("pipelines/demo/cxr_phantom_demo.yaml", ["dataset_args={n: 100, seed: 0, image_size: 64}",
                                                              *override.split()])


def test_wrapper_builders_refuse_a_keyword_and_an_unbounded_n_by_name():
    """breaker34 B13: the builders gave a raw TypeError ("__init__() got an unexpected keyword argument 'nois'") or
    named cxr_phantom instead of the dataset, and n = 2e9 reached plan_patients unbounded (now bounded there: the
    shared path of every phantom dataset). The presets using the wrappers still pass the dry run."""
    from medvit.data import build_dataset
    from medvit.tasks import build_config

    for ds in WRAPPERS:
        with pytest.raises(ValueError, match=rf"^nois: {ds} takes no argument 'nois'"):
            build_dataset(ds, "train", n=8, image_size=32, nois=1)
        with pytest.raises(ValueError, match=r"^n \(number of phantom images\) must be <= 10,000,000"):
            build_dataset(ds, "train", n=2_000_000_000, image_size=32)
    with pytest.raises(ValueError, match=r"^cxr_phantom_benchx: mask_of must name at least one phantom mask prefix"):
        build_dataset("cxr_phantom_benchx", "train", n=8, image_size=32, mask_of="lung_")
    for preset in ("pipelines/distill20/cxr_lt_plain_tiny_cpu.yaml",
                   "pipelines/general_vision/multiwindow_channelvit_tiny_cpu.yaml"):
        build_config(preset, [])


@pytest.mark.parametrize("ds, kw, msg", [
    ("cxr_phantom_lt", dict(imbalance=0.5), r"^cxr_phantom_lt: imbalance \(head/tail ratio\) must be a number >= 1"),
    ("cxr_phantom_lt", dict(order=["Mass"]), r"^cxr_phantom_lt: order must list every finding once \("),
    ("cxr_phantom_lt", dict(normal_fraction=2), r"^cxr_phantom_lt: normal_fraction \(a probability\)"),
    ("cxr_multiwindow_phantom", dict(windows=["brain"]), r"^cxr_multiwindow_phantom: windows: unknown windows"),
    ("cxr_phantom_benchx", dict(mask_of=[]), r"^cxr_phantom_benchx: mask_of must name at least one phantom mask"),
])
def test_wrapper_value_errors_of_a_python_call_name_the_dataset_and_the_key(ds, kw, msg):
    """review34 F3: a Python call of the wrappers said "order: order must list ..." / "imbalance ... must be" without
    the dataset (the dry run names dataset_args.<key>, checked above)."""
    from medvit.data import build_dataset

    with pytest.raises(ValueError, match=msg) as e:
        build_dataset(ds, "val", n=8, image_size=32, **kw)
    key = next(iter(kw))
    assert f"{key}: {key}" not in str(e.value)  # the key not repeated


@pytest.mark.parametrize("size, msg", [
    (100000, r"image_size \(pixels a side\) must be <= 4,096 \(more would not fit in memory\), got 100,000"),
    (0, r"image_size must be >= 1 for a synth folder's resize target, got 0"),
    (-3, r"image_size must be >= 1 for a synth folder's resize target, got -3"),
    (True, r"image_size \(pixels a side\) must be a whole number, got True"),
    (24.5, r"image_size \(pixels a side\) must be a whole number, got 24\.5"),
])
def test_a_synth_folders_resize_target_is_checked_at_config_time_and_construction(tmp_path, size, msg):
    """breaker34 B10: with root=DIR image_size (the resize target) was checked nowhere: the dry run accepted 100000
    (each item a 40 GB resize), 0 / -3 / True failed at the first item with to_chw's or torch's words."""
    from medvit.config import ConfigError
    from medvit.data import build_dataset
    from medvit.data.synth import write_synth
    from medvit.tasks import build_config

    write_synth("cxr", 3, tmp_path, fmt="png", image_size=32, masks=False)
    with pytest.raises(ValueError, match=rf"^{msg}$"):
        build_dataset("cxr_phantom", "all", root=tmp_path, image_size=size)
    if isinstance(size, bool | float):
        return  # YAML true / 24.5 are refused by the config's own int check ("expected an integer")
    nulls = [f"dataset_args.{k}=null" for k in ("n", "seed", "lesion_contrast", "lesion_size", "anatomy")]
    with pytest.raises(ConfigError, match=rf"^dataset_args\.{msg}$"):
        build_config("pipelines/demo/cxr_phantom_demo.yaml",
                     [f"dataset_args.root={tmp_path}", f"dataset_args.image_size={size}", *nulls])
    ok = build_dataset("cxr_phantom", "all", root=tmp_path, image_size=24.0)  # a whole float: 24 px
    assert ok[0]["image"].shape == (1, 24, 24)


@pytest.mark.parametrize("kw, match", [({"lesion_contrast": 3.0}, r"lesion_contrast: a synth folder .* no knob"),
                                       ({"with_masks": True}, r"with_masks: a synth folder .* takes no 'with_masks'"),
                                       ({"n": 5}, r"give either root=DIR .* not both")])
def test_a_python_call_on_a_synth_folder_refuses_in_memory_arguments_as_the_dry_run_does(tmp_path, kw, match):
    """cxr_phantom(root=DIR, <knob>) from Python: the dry run's named refusal, not the folder class's TypeError."""
    from medvit.data.phantom_datasets import cxr_phantom
    from medvit.data.synth import write_synth

    write_synth("cxr", 4, tmp_path / "f", fmt="png", seed=0, image_size=32, masks=False)
    assert len(cxr_phantom("train", root=tmp_path / "f", lesion_contrast=None)) >= 1  # null = not given
    with pytest.raises(ValueError, match=match):
        cxr_phantom("train", root=tmp_path / "f", **kw)
