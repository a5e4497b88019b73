"""Fixtures for medvit.io tests: pydicom's bundled corpus and a factory for small synthetic DICOM files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def corpus_root() -> Path:
    import pydicom.data

    return Path(os.path.dirname(pydicom.data.__file__)) / "test_files"


def write_dicom(path: Path, pixels: np.ndarray, **attrs) -> Path:
    """Write a minimal valid DICOM image: ``pixels`` (H, W) / (F, H, W) / (H, W, 3) stored as given dtype.

    Keyword attributes are set on the data set (keyword=value); ``transfer_syntax`` picks the syntax
    (default Explicit VR Little Endian, uncompressed).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ts = attrs.pop("transfer_syntax", ExplicitVRLittleEndian)
    color = attrs.get("SamplesPerPixel", 1) == 3
    arr = np.asarray(pixels)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = attrs.get("SOPClassUID", SecondaryCaptureImageStorage)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = attrs.pop("SOPInstanceUID", generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = attrs.pop("StudyInstanceUID", generate_uid())
    ds.SeriesInstanceUID = attrs.pop("SeriesInstanceUID", generate_uid())
    ds.PatientID = "P1"
    ds.PatientName = "Test^Patient"
    ds.Modality = attrs.pop("Modality", "OT")
    nf = arr.shape[0] if (arr.ndim == 3 and not color) or arr.ndim == 4 else 1
    ds.Rows, ds.Columns = (arr.shape[1:3] if nf > 1 else arr.shape[:2])
    if nf > 1:
        ds.NumberOfFrames = nf
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = attrs.pop("PhotometricInterpretation", "RGB" if color else "MONOCHROME2")
    if color:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = attrs.pop("BitsStored", ds.BitsAllocated)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(arr.dtype.kind == "i")
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


@pytest.fixture
def make_dicom(tmp_path):
    """Factory fixture: ``make_dicom(pixels, name="x.dcm", **attrs) -> Path``."""

    def _make(pixels: np.ndarray, name: str = "img.dcm", **attrs) -> Path:
        return write_dicom(tmp_path / name, pixels, **attrs)

    return _make
