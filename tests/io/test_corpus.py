"""Every file of pydicom's bundled test corpus, with its expected outcome: read OK or which typed error.

The table lists ALL files (including non-DICOM ones); a file added to or removed from the corpus fails the test,
so the table has to be reviewed. "ok:AXES" = reads to an array with those axes and renders to uint8.
"""

from __future__ import annotations

import numpy as np
import pytest

import medvit.io as mio

from .conftest import corpus_root

#: relative path -> "ok:<axes>" or the MedicalIOError subclass name
EXPECTED: dict[str, str] = {
    "693_J2KI.dcm": "ok:HW",
    "CT_small.dcm": "ok:HW",
    "ExplVR_BigEnd.dcm": "ok:HWC",
    "ExplVR_BigEndNoMeta.dcm": "NoPixelDataError",  # RT Ion Plan without File Meta: parsed, no pixels
    "ExplVR_LitEndNoMeta.dcm": "NoPixelDataError",  # RT Ion Plan without File Meta: parsed, no pixels
    "GDCMJ2K_TextGBR.dcm": "ok:HWC",
    "J2K_pixelrep_mismatch.dcm": "ok:HW",
    "JPEG-lossy.dcm": "ok:HW",  # 12-bit JPEG Extended: GDCM's reader directly (pydicom's GDCM plugin refuses)
    "JPEG2000-embedded-sequence-delimiter.dcm": "CorruptFileError",  # J2K codestream damaged by an embedded delimiter
    "JPEG2000.dcm": "ok:HW",
    "JPEGLSNearLossless_08.dcm": "ok:HW",
    "JPEGLSNearLossless_16.dcm": "ok:HW",
    "JPGExtended.dcm": "ok:HW",  # 12-bit JPEG Extended, as JPEG-lossy.dcm
    "MR_small.dcm": "ok:HW",
    "MR_small_RLE.dcm": "ok:HW",
    "MR_small_bigendian.dcm": "ok:HW",
    "MR_small_expb.dcm": "ok:HW",
    "MR_small_implicit.dcm": "ok:HW",
    "MR_small_jp2klossless.dcm": "ok:HW",
    "MR_small_jpeg_ls_lossless.dcm": "ok:HW",
    "MR_small_padded.dcm": "ok:HW",
    "MR_truncated.dcm": "CorruptFileError",  # Pixel Data shorter than Rows x Columns x 2
    "README.txt": "NotDicomError",
    "SC_jpeg_no_color_transform.dcm": "ok:HWC",
    "SC_jpeg_no_color_transform_2.dcm": "ok:HWC",
    "SC_rgb_dcmtk_+eb+cr.dcm": "ok:HWC",
    "SC_rgb_dcmtk_+eb+cy+n1.dcm": "ok:HWC",
    "SC_rgb_dcmtk_+eb+cy+n2.dcm": "ok:HWC",
    "SC_rgb_dcmtk_+eb+cy+np.dcm": "ok:HWC",
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": "ok:HWC",
    "SC_rgb_dcmtk_+eb+cy+s4.dcm": "ok:HWC",
    "SC_rgb_gdcm_KY.dcm": "ok:HWC",
    "SC_rgb_jls_lossy_line.dcm": "ok:HWC",
    "SC_rgb_jls_lossy_sample.dcm": "ok:HWC",
    "SC_rgb_jpeg.dcm": "ok:HWC",
    "SC_rgb_jpeg_app14_dcmd.dcm": "ok:HWC",
    "SC_rgb_jpeg_dcmd.dcm": "ok:HWC",
    "SC_rgb_jpeg_dcmtk.dcm": "ok:HWC",
    "SC_rgb_jpeg_gdcm.dcm": "ok:HWC",
    "SC_rgb_jpeg_lossy_gdcm.dcm": "ok:HWC",
    "SC_rgb_rle.dcm": "ok:HWC",
    "SC_rgb_rle_16bit.dcm": "ok:HWC",
    "SC_rgb_rle_16bit_2frame.dcm": "ok:FHWC",
    "SC_rgb_rle_2frame.dcm": "ok:FHWC",
    "SC_rgb_rle_32bit.dcm": "ok:HWC",
    "SC_rgb_rle_32bit_2frame.dcm": "ok:FHWC",
    "SC_rgb_small_odd.dcm": "ok:HWC",
    "SC_rgb_small_odd_big_endian.dcm": "ok:HWC",
    "SC_rgb_small_odd_jpeg.dcm": "ok:HWC",
    "SC_ybr_full_422_uncompressed.dcm": "ok:HWC",
    "UN_sequence.dcm": "NoPixelDataError",
    "badVR.dcm": "ok:FHW",  # NumberOfFrames '1A': 15 frames from the Pixel Data length (= GridFrameOffsetVector)
    "crayons.icc": "NotDicomError",
    "empty_charset_LEI.dcm": "NoPixelDataError",
    "examples_jpeg2k.dcm": "ok:HWC",
    "examples_overlay.dcm": "ok:HW",
    "examples_palette.dcm": "ok:HWC",
    "examples_rgb_color.dcm": "ok:HWC",
    "examples_ybr_color.dcm": "ok:FHWC",
    "image_dfl.dcm": "ok:HW",
    "liver_1frame.dcm": "ok:HW",
    "liver_expb_1frame.dcm": "ok:HW",
    "meta_missing_tsyntax.dcm": "CorruptFileError",  # no Transfer Syntax and no Image Pixel module
    "nested_priv_SQ.dcm": "CorruptFileError",  # Pixel Data without Rows/Columns
    "no_meta.dcm": "NotDicomError",  # garbage when forced: not a data set
    "no_meta_group_length.dcm": "NoPixelDataError",
    "priv_SQ.dcm": "NoPixelDataError",
    "reportsi.dcm": "NoPixelDataError",
    "reportsi_with_empty_number_tags.dcm": "NoPixelDataError",
    "rtdose.dcm": "ok:FHW",
    "rtdose_1frame.dcm": "ok:HW",
    "rtdose_expb.dcm": "ok:FHW",
    "rtdose_expb_1frame.dcm": "ok:HW",
    "rtdose_rle.dcm": "ok:FHW",
    "rtdose_rle_1frame.dcm": "ok:HW",
    "rtplan.dcm": "NoPixelDataError",
    "rtplan.dump": "NotDicomError",
    "rtplan_truncated.dcm": "NoPixelDataError",
    "rtstruct.dcm": "NoPixelDataError",
    "rtstruct.dump": "NotDicomError",
    "test-SR.dcm": "NoPixelDataError",
    "test1.json": "NotDicomError",
    "test_PN.json": "NotDicomError",
    "waveform_ecg.dcm": "NoPixelDataError",
    "zipMR.gz": "NotDicomError",
    "dicomdirtests/DICOMDIR": "NoPixelDataError",
    "dicomdirtests/DICOMDIR-bigEnd": "NoPixelDataError",
    "dicomdirtests/DICOMDIR-empty.dcm": "NoPixelDataError",
    "dicomdirtests/DICOMDIR-implicit": "NoPixelDataError",
    "dicomdirtests/DICOMDIR-nooffset": "NoPixelDataError",
    "dicomdirtests/DICOMDIR-nopatient": "NoPixelDataError",
    "dicomdirtests/DICOMDIR-reordered": "NoPixelDataError",
    "dicomdirtests/README.txt": "NotDicomError",
    "dicomdirtests/77654033/CR1/6154": "ok:HW",
    "dicomdirtests/77654033/CR2/6247": "ok:HW",
    "dicomdirtests/77654033/CR3/6278": "ok:HW",
    "dicomdirtests/77654033/CT2/17106": "ok:HW",
    "dicomdirtests/77654033/CT2/17136": "ok:HW",
    "dicomdirtests/77654033/CT2/17166": "ok:HW",
    "dicomdirtests/77654033/CT2/17196": "ok:HW",
    "dicomdirtests/98892001/CT2N/6293": "ok:HW",
    "dicomdirtests/98892001/CT2N/6924": "ok:HW",
    "dicomdirtests/98892001/CT5N/2062": "ok:HW",
    "dicomdirtests/98892001/CT5N/2392": "ok:HW",
    "dicomdirtests/98892001/CT5N/2693": "ok:HW",
    "dicomdirtests/98892001/CT5N/3023": "ok:HW",
    "dicomdirtests/98892001/CT5N/3353": "ok:HW",
    "dicomdirtests/98892003/MR1/15820": "ok:HW",
    "dicomdirtests/98892003/MR1/4919": "ok:HW",
    "dicomdirtests/98892003/MR1/5641": "ok:HW",
    "dicomdirtests/98892003/MR2/15970": "ok:HW",
    "dicomdirtests/98892003/MR2/4950": "ok:HW",
    "dicomdirtests/98892003/MR2/4981": "ok:HW",
    "dicomdirtests/98892003/MR2/5011": "ok:HW",
    "dicomdirtests/98892003/MR2/6273": "ok:HW",
    "dicomdirtests/98892003/MR2/6605": "ok:HW",
    "dicomdirtests/98892003/MR2/6935": "ok:HW",
    "dicomdirtests/98892003/MR700/4467": "ok:HW",
    "dicomdirtests/98892003/MR700/4528": "ok:HW",
    "dicomdirtests/98892003/MR700/4558": "ok:HW",
    "dicomdirtests/98892003/MR700/4588": "ok:HW",
    "dicomdirtests/98892003/MR700/4618": "ok:HW",
    "dicomdirtests/98892003/MR700/4648": "ok:HW",
    "dicomdirtests/98892003/MR700/4678": "ok:HW",
    "dicomdirtests/TINY_ALPHA/DICOMDIR": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/README": "NotDicomError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000000": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000001": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000002": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000003": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000004": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000005": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000006": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000007": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000008": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000009": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000A": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000B": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000C": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000D": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000E": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000F": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000G": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000H": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000I": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000J": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000K": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000L": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000M": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000N": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000O": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000P": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000Q": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000R": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000S": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000T": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000U": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000V": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000W": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000X": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000Y": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000Z": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000010": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000011": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000012": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000013": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000014": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000015": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000016": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000017": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000018": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000019": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00001A": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00001B": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00001C": "NoPixelDataError",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00001D": "NoPixelDataError",
}


def _corpus_files() -> list[str]:
    root = corpus_root()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_table_covers_the_whole_corpus():
    files = _corpus_files()
    assert len(files) >= 170
    assert set(files) == set(EXPECTED), (
        f"corpus changed: new {sorted(set(files) - set(EXPECTED))}, gone {sorted(set(EXPECTED) - set(files))}")


def test_every_file_reads_or_raises_its_typed_error():
    root = corpus_root()
    failures = []
    for rel in _corpus_files():
        want = EXPECTED.get(rel, "?")
        try:
            img = mio.read_image(root / rel)
        except mio.MedicalIOError as e:
            got = type(e).__name__
            if rel.split("/")[-1] not in str(e) or not e.reason:
                failures.append(f"{rel}: message does not name the file: {e}")
        else:
            got = f"ok:{img.axes}"
            assert img.pixels.dtype == np.float32 and np.isfinite(img.pixels).all(), rel
            out = mio.render(img)
            assert out.dtype == np.uint8 and out.shape[:2] == img.pixels.shape[-3 if img.is_color else -2:][:2] \
                or img.axes.startswith("XYZ"), rel
        if got != want:
            failures.append(f"{rel}: expected {want}, got {got}")
    assert not failures, "\n".join(failures)


def test_unsupported_syntax_names_the_plugin(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gdcm", None)  # as on a machine without python-gdcm
    with pytest.raises(mio.UnsupportedTransferSyntaxError, match="pylibjpeg-libjpeg"):
        mio.read_image(corpus_root() / "JPGExtended.dcm")


def test_frame_budget_reads_one_frame_of_a_large_multiframe():
    path = corpus_root() / "examples_ybr_color.dcm"  # 30 frames of 240x320x3
    with pytest.raises(mio.PixelBudgetError):
        mio.read_image(path, pixel_budget=240 * 320 * 3 * 10)
    img = mio.read_image(path, frame=29, pixel_budget=240 * 320 * 3)
    assert img.axes == "HWC" and img.pixels.shape == (240, 320, 3)
