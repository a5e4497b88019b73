"""Fixtures for the viewer tests: DICOM files written here with pydicom, and a tiny model checkpoint with a contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

LABELS = ["Cardiomegaly", "Effusion", "Nodule"]
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-4711"


def write_dx(path: Path, rows: int = 96, cols: int = 80, *, study: str = "1.2.826.0.1.3680043.8.498.1",
             series: str = "1.2.826.0.1.3680043.8.498.1.1", instance: int = 1, seed: int = 0,
             window: tuple[float, float] | None = (2048.0, 4096.0), monochrome1: bool = False,
             description: str = "CHEST PA", transfer_syntax: str | None = None, frames: int = 1) -> Path:
    """A small uncompressed 12-bit DX image (or ``frames`` frames) with identifiers that must be redacted."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = 1000 + 2000 * np.exp(-(((yy - rows / 2) / (rows / 3)) ** 2 + ((xx - cols / 2) / (cols / 3)) ** 2))
    px = np.stack([base + rng.normal(0, 50, base.shape) + 40 * f for f in range(frames)])
    px = np.clip(px, 0, 4095).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, "19700101"
    ds.StudyDate, ds.StudyDescription = "20240131", "XR CHEST"
    ds.InstitutionName = "Test Hospital"
    ds.Modality, ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = "DX", description, 1, instance
    ds.ViewPosition, ds.BodyPartExamined, ds.ImageType = "PA", "CHEST", ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [0.2, 0.2]
    if frames > 1:
        ds.NumberOfFrames = frames
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = (px if frames > 1 else px[0]).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    """A folder with two studies (one with two series, one multi-frame) plus a non-image file beside them."""
    root = tmp_path / "studies"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    write_dx(root / "a" / "img1.dcm", study="1.2.3.1", series="1.2.3.1.1", seed=1)
    write_dx(root / "a" / "img2.dcm", study="1.2.3.1", series="1.2.3.1.2", seed=2, description="CHEST LAT",
             monochrome1=True)
    write_dx(root / "b" / "multi.dcm", study="1.2.3.2", series="1.2.3.2.1", frames=3, description="CINE")
    (root / "README.md").write_text("results and notes beside the studies are ignored")
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block ViT on 32x32 single-channel input with 3 labelled outputs, saved as a medvit checkpoint."""
    import torch

    from medvit.models import WeightContract, create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=48, depth=2, num_heads=4,
                         in_chans=1, num_classes=len(LABELS))
    contract = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.5,), std=(0.25,), label_names=LABELS,
                              thresholds=[0.5, 0.4, 0.6], modalities=["DX", "CR"], version="test-1",
                              research_only=True, source="tests/viewer")
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny_cxr", contract=contract)
