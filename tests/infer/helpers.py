"""Test material for batch inference: a tiny checkpoint with a contract and small DICOM studies made with pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS = ["Cardiomegaly", "Pleural effusion", "phantom_nodule"]


def make_model(out: Path, modalities: tuple[str, ...] = ("CR", "DX"), size: int = 32, seed: int = 0,
               in_chans: int = 1) -> Path:
    """Save a tiny random ViT checkpoint with a contract (labels, thresholds, modalities) to ``out``."""
    import torch

    import medvit
    from medvit.models import WeightContract, save_checkpoint

    torch.manual_seed(seed)
    m = medvit.create_model("vit_tiny_patch16_224", img_size=size, patch_size=16, embed_dim=48, depth=2,
                            num_heads=4, in_chans=in_chans, num_classes=len(LABELS))
    torch.nn.init.normal_(m.head.weight, std=0.5)
    contract = WeightContract(in_chans=in_chans, input_size=(size, size), mean=(0.5,), std=(0.25,),
                              label_names=list(LABELS), thresholds=[0.5, 0.4, 0.6],
                              modalities=list(modalities), version="test-1", source="tests/infer random weights")
    return save_checkpoint(m, out, contract=contract)


def write_dx(path: Path, study: str, series: str, *, rows: int = 40, cols: int = 48, seed: int = 0,
             modality: str = "DX", view: str | None = "PA", monochrome1: bool = False, patient: str = "P1",
             window: tuple[float, float] | None = (2048.0, 4096.0)) -> Path:
    """A small 12-bit projection image with patient/study attributes and a file VOI window."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(seed)
    px = (rng.random((rows, cols)) * 4095).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1" if modality == "DX" else "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"Doe^{patient}", patient, "19700101", "F"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20240102", "101500", f"ACC{patient}", "1"
    ds.ReferringPhysicianName = "Ref^Doc"
    ds.InstitutionName = "General Hospital"
    ds.Modality = modality
    if view:
        ds.ViewPosition = view
    ds.BodyPartExamined = "CHEST"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ["A", "F"]
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = px.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_studies(root: Path, n_studies: int = 2, per_study: int = 2, seed: int = 0) -> list[Path]:
    """``n_studies`` studies of ``per_study`` DX images each (one MONOCHROME1, one non-square) under ``root``."""
    from pydicom.uid import generate_uid

    paths = []
    k = 0
    for s in range(n_studies):
        study, series = generate_uid(), generate_uid()
        for i in range(per_study):
            paths.append(write_dx(root / f"patient{s}" / f"study{s}" / f"img{i}.dcm", study, series,
                                  seed=seed + k, monochrome1=(i == 1), cols=48 + 8 * i, patient=f"P{s}"))
            k += 1
    return paths
