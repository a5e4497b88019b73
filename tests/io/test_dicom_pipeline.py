"""PS3.3 pixel pipeline on synthetic files: modality LUT, VOI LUT functions, inversion, padding, signedness."""

from __future__ import annotations

import numpy as np
import pytest

from medvit.io import (
    CorruptFileError,
    PixelBudgetError,
    read_dicom,
    read_image,
    render,
    window_linear,
)
from medvit.io.display import display_array, select_voi


def test_rescale_to_hu_and_window(make_dicom):
    stored = np.array([[0, 1024], [1064, 2048]], dtype=np.uint16)
    p = make_dicom(stored, Modality="CT", RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40,
                   WindowWidth=400, PixelSpacing=[0.5, 0.7])
    img = read_dicom(p)
    np.testing.assert_array_equal(img.pixels, [[-1024, 0], [40, 1024]])
    assert img.pixels.dtype == np.float32 and img.axes == "HW" and img.spacing == (0.5, 0.7)
    assert img.windows[0].center == 40 and img.windows[0].width == 400
    out = render(img)
    assert out.dtype == np.uint8 and out[0, 0] == 0 and out[1, 1] == 255
    assert abs(int(out[1, 0]) - 127) <= 1  # the window centre maps to mid gray
    assert img.uids["SOPInstanceUID"] and img.meta["PatientID"] == "P1"


def test_signed_pixels_with_bits_stored(make_dicom):
    stored = np.array([[-2048, -1], [0, 2047]], dtype=np.int16)
    img = read_dicom(make_dicom(stored, BitsStored=12))
    np.testing.assert_array_equal(img.pixels, stored)
    assert img.value_range == (-2048.0, 2047.0)


def test_modality_lut_sequence(make_dicom):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [4, 10, 16]
    item.add_new(0x00283006, "US", [100, 200, 300, 400])  # LUT Data as US values
    item.ModalityLUTType = "OD"
    stored = np.array([[5, 10, 11], [12, 13, 99]], dtype=np.uint16)
    img = read_dicom(make_dicom(stored, ModalityLUTSequence=[item]))
    np.testing.assert_array_equal(img.pixels, [[100, 100, 200], [300, 400, 400]])  # clamped at both ends


def test_voi_lut_sequence_and_multiple_windows(make_dicom):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [3, 0, 8]
    item.LUTData = np.array([0, 128, 255], "<u2").tobytes()  # LUT Data as OW bytes
    stored = np.array([[0, 1, 2, 7]], dtype=np.uint16)
    img = read_dicom(make_dicom(stored, VOILUTSequence=[item], WindowCenter=[1, 4], WindowWidth=[2, 8],
                                WindowCenterWidthExplanation=["NARROW", "WIDE"]))
    assert [w.explanation for w in img.windows] == ["NARROW", "WIDE"]
    np.testing.assert_array_equal(render(img, preset="lut:1")[0], [0, 128, 255, 255])
    assert select_voi(img, preset="wide").width == 8
    assert select_voi(img, preset="file:2").center == 4
    with pytest.raises(ValueError, match="unknown window preset"):
        render(img, preset="nonsense")


@pytest.mark.parametrize("fn", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_voi_functions_match_ps33_formulas(fn):
    x = np.linspace(-100, 300, 81)
    c, w = 100.0, 200.0
    y = window_linear(x, c, w, fn)
    if fn == "LINEAR":
        ref = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    elif fn == "LINEAR_EXACT":
        ref = np.clip((x - c) / w + 0.5, 0, 1)
    else:
        ref = 1 / (1 + np.exp(-4 * (x - c) / w))
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_voi_function_from_file(make_dicom):
    stored = np.arange(0, 256, dtype=np.uint16).reshape(16, 16)
    img = read_dicom(make_dicom(stored, WindowCenter=128, WindowWidth=64, VOILUTFunction="SIGMOID"))
    assert img.windows[0].function == "SIGMOID"
    y = display_array(img)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-4 * (stored - 128.0) / 64)), atol=1e-6)


def test_monochrome1_inverted_after_voi(make_dicom):
    stored = np.array([[0, 100], [200, 255]], dtype=np.uint16)
    m2 = read_dicom(make_dicom(stored, name="m2.dcm", WindowCenter=128, WindowWidth=256))
    m1 = read_dicom(make_dicom(stored, name="m1.dcm", WindowCenter=128, WindowWidth=256,
                               PhotometricInterpretation="MONOCHROME1", PresentationLUTShape="INVERSE"))
    np.testing.assert_array_equal(m1.pixels, m2.pixels)  # pixels stay modality values
    assert m1.invert and not m2.invert
    np.testing.assert_array_equal(render(m1).astype(int) + render(m2).astype(int), 255)


def test_presentation_inverse_on_monochrome2(make_dicom):
    stored = np.array([[0, 255]], dtype=np.uint16)
    img = read_dicom(make_dicom(stored, WindowCenter=128, WindowWidth=256, PresentationLUTShape="INVERSE"))
    assert img.invert and render(img)[0, 0] == 255


def test_padding_excluded_from_minmax(make_dicom):
    stored = np.array([[0, 0], [100, 200]], dtype=np.uint16)
    img = read_dicom(make_dicom(stored, PixelPaddingValue=0))
    assert img.padding_mask.sum() == 2
    out = render(img)  # min-max over 100..200 only
    assert out[1, 0] == 0 and out[1, 1] == 255


def test_imager_pixel_spacing_fallback(make_dicom):
    img = read_dicom(make_dicom(np.zeros((4, 4), np.uint16), Modality="DX", ImagerPixelSpacing=[0.14, 0.15]))
    assert img.spacing == (0.14, 0.15) and img.meta["spacing_source"] == "ImagerPixelSpacing"
    img = read_dicom(make_dicom(np.zeros((4, 4), np.uint16), name="b.dcm"))
    assert img.spacing == (1.0, 1.0) and img.meta["spacing_source"] == "default"


def test_multiframe_and_frame_selection(make_dicom):
    stored = np.stack([np.full((3, 4), k, np.uint16) for k in range(5)])
    p = make_dicom(stored, ImageOrientationPatient=[1, 0, 0, 0, 1, 0], ImagePositionPatient=[0, 0, 0],
                   SpacingBetweenSlices=2.5, PixelSpacing=[1, 1])
    img = read_image(p)
    assert img.axes == "FHW" and img.pixels.shape == (5, 3, 4) and img.spacing == (2.5, 1.0, 1.0)
    one = read_image(p, frame=3)
    assert one.axes == "HW" and (one.pixels == 3).all()
    np.testing.assert_array_equal(img.frame(3).pixels, one.pixels)
    with pytest.raises(IndexError):
        read_image(p, frame=5)


def test_affine_is_ras(make_dicom):
    p = make_dicom(np.zeros((2, 3), np.uint16), ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                   ImagePositionPatient=[10, 20, 30], PixelSpacing=[0.5, 0.25])
    aff = read_dicom(p).affine
    # index (row, col) = (1, 1) -> LPS (10.25, 20.5, 30) -> RAS (-10.25, -20.5, 30)
    np.testing.assert_allclose(aff @ [1, 1, 0, 1], [-10.25, -20.5, 30, 1])


def test_palette_color_and_ybr(make_dicom):
    lut = list(range(0, 256))
    img = read_dicom(make_dicom(np.array([[0, 255]], np.uint8), PhotometricInterpretation="PALETTE COLOR",
                                RedPaletteColorLookupTableDescriptor=[256, 0, 8],
                                GreenPaletteColorLookupTableDescriptor=[256, 0, 8],
                                BluePaletteColorLookupTableDescriptor=[256, 0, 8],
                                RedPaletteColorLookupTableData=bytes(lut),
                                GreenPaletteColorLookupTableData=bytes(lut[::-1]),
                                BluePaletteColorLookupTableData=bytes([7] * 256)))
    assert img.axes == "HWC" and img.photometric == "RGB"
    np.testing.assert_array_equal(img.pixels[0, 0], [0, 255, 7])
    ybr = np.zeros((2, 2, 3), np.uint8)
    ybr[..., 0], ybr[..., 1:] = 128, 128  # Y=128, Cb=Cr=128 -> gray 128
    img = read_dicom(make_dicom(ybr, name="ybr.dcm", SamplesPerPixel=3, PhotometricInterpretation="YBR_FULL"))
    np.testing.assert_allclose(img.pixels, 128, atol=1)
    assert render(img).shape == (2, 2, 3)


def test_pixel_budget_refuses_before_decoding(make_dicom):
    p = make_dicom(np.zeros((64, 64), np.uint16))
    with pytest.raises(PixelBudgetError, match="pixel budget"):
        read_dicom(p, pixel_budget=1000)
    assert read_dicom(p, pixel_budget=64 * 64).pixels.shape == (64, 64)


def test_truncated_pixel_data(make_dicom, tmp_path):
    p = make_dicom(np.zeros((64, 64), np.uint16))
    data = p.read_bytes()
    (tmp_path / "t.dcm").write_bytes(data[:-100])
    with pytest.raises(CorruptFileError, match="t.dcm"):
        read_dicom(tmp_path / "t.dcm")


def test_signed_padding_value_stored_as_us(make_dicom):
    from pydicom.dataelem import DataElement

    stored = np.array([[-2000, -2000], [0, 100]], dtype=np.int16)
    p = make_dicom(stored, RescaleSlope=1, RescaleIntercept=-1024)
    import pydicom

    ds = pydicom.dcmread(p)
    ds.add(DataElement(0x00280120, "US", 65536 - 2000))  # -2000 written with the unsigned VR
    ds.save_as(p)
    img = read_dicom(p)
    assert img.padding_mask.sum() == 2
    out = render(img)  # min-max over the two real pixels
    assert out[1, 0] == 0 and out[1, 1] == 255


def test_enhanced_multiframe_per_frame_windows_and_rescale(make_dicom):
    from pydicom.dataset import Dataset

    def group(c, w, slope, z):
        g = Dataset()
        voi, pvt, pos = Dataset(), Dataset(), Dataset()
        voi.WindowCenter, voi.WindowWidth = c, w
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = slope, 0, "US"
        pos.ImagePositionPatient = [0, 0, z]
        g.FrameVOILUTSequence, g.PixelValueTransformationSequence, g.PlanePositionSequence = [voi], [pvt], [pos]
        return g

    shared = Dataset()
    orient, meas = Dataset(), Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    meas.PixelSpacing, meas.SliceThickness = [0.4, 0.4], 3.0
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orient], [meas]
    stored = np.full((2, 3, 3), 100, np.uint16)
    img = read_dicom(make_dicom(stored, SharedFunctionalGroupsSequence=[shared],
                                PerFrameFunctionalGroupsSequence=[group(100, 50, 1, 0), group(400, 50, 2, 1.5)]))
    np.testing.assert_array_equal(img.pixels[:, 0, 0], [100, 200])  # per-frame rescale
    assert img.spacing == (1.5, 0.4, 0.4)  # slice step from the per-frame positions
    assert img.frame(0).windows[0].center == 100 and img.frame(1).windows[0].center == 400
    assert render(img, frame=1)[0, 0] == 0  # 200 is far below frame 1's window (400/50)


def test_video_syntax_and_odd_photometric_are_typed_errors(make_dicom):
    import pydicom
    from pydicom.encaps import encapsulate

    from medvit.io import UnsupportedPhotometricError, UnsupportedTransferSyntaxError

    p = make_dicom(np.zeros((4, 4), np.uint8), name="mpeg.dcm")
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: no Python decoder
    ds.PixelData = encapsulate([b"\0" * 16])
    ds["PixelData"].VR = "OB"
    ds.save_as(p)
    with pytest.raises(UnsupportedTransferSyntaxError, match="MPEG2"):
        read_dicom(p)
    q = make_dicom(np.zeros((4, 4, 3), np.uint8), name="cmyk.dcm", SamplesPerPixel=3,
                   PhotometricInterpretation="HSV")
    with pytest.raises(UnsupportedPhotometricError, match="HSV"):
        read_dicom(q)


def test_bits_stored_masks_high_bits_and_sign_extends(make_dicom):
    img = read_dicom(make_dicom(np.array([[0xF123, 0x0FFF]], np.uint16), BitsStored=12))
    np.testing.assert_array_equal(img.pixels, [[0x123, 4095]])  # overlay/garbage bits above Bits Stored dropped
    raw = np.array([[0x0800, 0x07FF, 0xF800]], np.uint16).view(np.int16)
    img = read_dicom(make_dicom(raw, name="s.dcm", BitsStored=12))
    np.testing.assert_array_equal(img.pixels, [[-2048, 2047, -2048]])  # 12-bit two's complement
