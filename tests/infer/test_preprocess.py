"""Contract-driven preprocessing: intensity (file VOI / contract window, MONOCHROME1), geometry, channels."""

from __future__ import annotations

import numpy as np
import pytest

from medvit.infer.preprocess import Preprocessor, unmap_heatmap
from medvit.io import MedicalImage, Window
from medvit.models import WeightContract


def img(px, photometric="MONOCHROME2", windows=()):
    px = np.asarray(px, np.float32)
    return MedicalImage(px, "HW", (1.0, 1.0), photometric=photometric, windows=list(windows), bits_stored=12)


def pre(**kw):
    c = WeightContract(in_chans=kw.pop("in_chans", 1), input_size=kw.pop("size", (8, 8)), mean=(0.5,), std=(0.5,),
                       label_names=["a"], intensity_window=kw.pop("window", None))
    return Preprocessor.from_contract(c, **kw)


def test_file_voi_and_normalisation():
    ramp = np.tile(np.linspace(0, 4095, 8), (8, 1))
    x, notes, unit = pre()(img(ramp, windows=[Window(2048, 4096)]))
    assert x.shape == (1, 8, 8) and x.dtype == np.float32
    assert "file VOI" in notes["intensity"]
    np.testing.assert_allclose(x, (unit[None] - 0.5) / 0.5, atol=1e-6)
    assert unit[0, 0] < 0.01 and unit[0, -1] > 0.99


def test_monochrome1_is_inverted():
    ramp = np.tile(np.linspace(0, 4095, 8), (8, 1))
    _, n1, u1 = pre()(img(ramp, "MONOCHROME1", [Window(2048, 4096)]))
    _, n2, u2 = pre()(img(ramp, "MONOCHROME2", [Window(2048, 4096)]))
    assert n1["inverted"] and not n2["inverted"]
    np.testing.assert_allclose(u1, 1.0 - u2, atol=1e-6)


def test_contract_window_overrides_file():
    px = np.full((8, 8), 100.0)
    _, notes, unit = pre(window=(100.0, 200.0))(img(px, windows=[Window(2048, 4096)]))
    assert notes["intensity"].startswith("contract window")
    np.testing.assert_allclose(unit, 0.5, atol=0.01)


@pytest.mark.parametrize("geometry, shape, key, expect", [
    ("pad", (4, 8), "pad", [2, 2, 0, 0]),
    ("crop", (4, 8), "crop", [0, 0, -2, -2]),
    ("pad", (8, 6), "pad", [0, 0, 1, 1]),
])
def test_geometry_recorded(geometry, shape, key, expect):
    _, notes, _ = pre(geometry=geometry)(img(np.ones(shape) * 7))
    assert notes[key] == expect
    assert notes["source_size"] == list(shape)
    assert notes["resize"][-2:] == [8, 8]


def test_pad_keeps_content_and_unmap_inverts():
    px = np.zeros((4, 8))
    px[:, 6:] = 1000.0  # bright band on the right
    p = pre(size=(16, 16))
    x, notes, unit = p(img(px))
    band = (x[0] > 0).any(axis=0)
    assert band[-4:].all() and not band[:8].any()
    heat = np.zeros((16, 16), np.float32)
    heat[:, 12:] = 1.0
    back = unmap_heatmap(heat, notes, "pad")
    assert back.shape == (4, 8)
    assert back[:, 7].min() > 0.9 and back[:, 0].max() < 0.1


def test_channels():
    x, notes, _ = pre(in_chans=3)(img(np.eye(8) * 10))
    assert x.shape == (3, 8, 8) and notes["channels"] == "grey->x3"
    rgb = MedicalImage(np.zeros((8, 8, 3), np.float32) + [255, 0, 0], "HWC", (1.0, 1.0), photometric="RGB",
                       bits_stored=8)
    x, notes, _ = pre()(rgb)
    assert x.shape == (1, 8, 8) and notes["channels"] == "RGB->luma"
    np.testing.assert_allclose((x * 0.5 + 0.5), 0.299, atol=1e-3)


def test_3d_contract_rejected():
    c = WeightContract(in_chans=1, input_size=(8, 8, 8), label_names=["a"])
    with pytest.raises(ValueError, match="2D"):
        Preprocessor.from_contract(c)


def test_phantom_storage_variants_give_the_same_model_input(tmp_path):
    """Plain, MONOCHROME1 and JPEG 2000 MONOCHROME1 encodings of one phantom -> identical model input,
    equal to the in-memory phantom resized (what training saw) up to 12-bit quantisation."""
    from PIL import Image

    from medvit.data.phantom_cxr import ChestPhantomGenerator
    from medvit.infer.decode import DecodeSpec, decode_file
    from medvit.io.rules import SelectionRules
    from medvit.io.writers import write_dicom_dx

    ph = ChestPhantomGenerator(96, seed=3, with_masks=False).sample(0)
    q = np.round(ph.image * 4095).astype(np.uint16)
    variants = {"plain.dcm": {}, "m1.dcm": {"monochrome1": True}, "j2k.dcm": {"monochrome1": True, "jpeg2000": True}}
    for name, kw in variants.items():
        write_dicom_dx(tmp_path / name, q, dict(ph.meta), window=(2048.0, 4096.0), **kw)
    p = pre(size=(32, 32))
    spec = DecodeSpec(str(tmp_path), p, SelectionRules([]))
    xs = {n: decode_file(tmp_path / n, spec) for n in variants}
    assert all(d.status == "ok" for d in xs.values()), {n: d.reason for n, d in xs.items()}
    assert xs["m1.dcm"].notes["inverted"] and not xs["plain.dcm"].notes["inverted"]
    np.testing.assert_allclose(xs["m1.dcm"].x, xs["plain.dcm"].x, atol=1e-5)
    np.testing.assert_allclose(xs["j2k.dcm"].x, xs["plain.dcm"].x, atol=1e-5)
    ref = np.asarray(Image.fromarray(ph.image.astype(np.float32)).resize((32, 32), Image.BILINEAR))
    np.testing.assert_allclose(xs["plain.dcm"].x[0], (ref - 0.5) / 0.5, atol=2e-3)
