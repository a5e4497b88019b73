"""Image writers: DICOM Digital X-Ray (chest), DICOM Ophthalmic Photography (retina), 16-bit PNG, NIfTI.

DICOM objects are built module by module (PS3.3 A.26 DX Image For Presentation; A.39 Ophthalmic
Photography 8 Bit Image), validate with dicom3tools' ``dciodvfy`` and are byte-identical for identical
inputs: UIDs derive from the given metadata (:func:`medvit.io.uids.make_uid`, deterministic) and
no wall-clock time is written. Optional JPEG 2000 lossless compression uses pydicom's encoder with the
pylibjpeg-openjpeg plugin. MONOCHROME1 stores inverted values with Presentation LUT Shape
INVERSE and a mirrored window, so the displayed image is the same as the MONOCHROME2 file's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from medvit.io.uids import make_uid

logger = logging.getLogger(__name__)

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
OPHTHALMIC_PHOTOGRAPHY_8 = "1.2.840.10008.5.1.4.1.1.77.1.5.1"


def _code(value: str, scheme: str, meaning: str) -> Any:
    from pydicom.dataset import Dataset

    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def _check_pixels(pixels: np.ndarray, bits_stored: int, path: Path) -> np.ndarray:
    arr = np.asarray(pixels)
    if arr.ndim != 2:
        raise ValueError(f"{path}: pixels must be 2-D (rows, columns), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() >= 2 ** bits_stored:
        raise ValueError(f"{path}: pixels must be unsigned integers below 2**{bits_stored} "
                         f"(got {arr.dtype}, range {arr.min()}..{arr.max()}); quantise first")
    return arr.astype(np.uint16 if bits_stored > 8 else np.uint8)


def _base(meta: dict[str, Any], sop_class: str, modality: str) -> Any:
    """Patient, General Study, General Series, General Equipment and SOP Common attributes."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    pid = str(meta.get("PatientID", "ANON"))
    acc = str(meta.get("AccessionNumber", ""))
    ds.SOPClassUID = sop_class
    ds.StudyInstanceUID = meta.get("StudyInstanceUID") or make_uid("study", pid, acc, meta.get("StudyDate", ""))
    ds.SeriesInstanceUID = meta.get("SeriesInstanceUID") or make_uid("series", ds.StudyInstanceUID, modality)
    ds.SOPInstanceUID = meta.get("SOPInstanceUID") or make_uid("instance", ds.SeriesInstanceUID,
                                                               meta.get("ImageID", ""), meta.get("InstanceNumber", 1))
    ds.PatientName = str(meta.get("PatientName", ""))
    ds.PatientID = pid
    ds.PatientBirthDate = str(meta.get("PatientBirthDate", ""))
    ds.PatientSex = str(meta.get("PatientSex", ""))
    if meta.get("PatientAge"):
        ds.PatientAge = str(meta["PatientAge"])
    ds.StudyDate = str(meta.get("StudyDate", ""))
    ds.StudyTime = str(meta.get("StudyTime", ""))
    ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
    ds.ReferringPhysicianName = ""
    ds.StudyID = str(meta.get("StudyID", ""))
    ds.AccessionNumber = acc
    ds.StudyDescription = str(meta.get("StudyDescription", ""))
    ds.Modality = modality
    ds.SeriesNumber = int(meta.get("SeriesNumber", 1))
    ds.SeriesDescription = str(meta.get("SeriesDescription", "medvit synthetic phantom"))
    ds.InstanceNumber = int(meta.get("InstanceNumber", 1))
    ds.Manufacturer = "medvit"
    ds.ManufacturerModelName = "medvit phantom generator"
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = str(meta.get("SoftwareVersions", "medvit"))
    ds.BurnedInAnnotation = "NO"
    ds.PatientIdentityRemoved = "YES"  # synthetic: no real identity present
    ds.DeidentificationMethod = "synthetic data (medvit phantom), no real patient"
    return ds


def _pixel_module(ds: Any, arr: np.ndarray, bits_stored: int, photometric: str) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
    ds.BitsAllocated = 16 if bits_stored > 8 else 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    ds.PixelData = arr.tobytes()


def _save(ds: Any, path: Path, jpeg2000: bool) -> Path:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if jpeg2000:
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
        ds.LossyImageCompression = "00"  # lossless
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dicom_dx(path: str | Path, pixels: np.ndarray, meta: dict[str, Any],
                   window: tuple[float, float] | None = None, monochrome1: bool = False, jpeg2000: bool = False,
                   bits_stored: int = 12) -> Path:
    """Write a Digital X-Ray Image (For Presentation) of a chest radiograph.

    Args:
        pixels: (rows, cols) unsigned integers < 2**bits_stored; bright = dense (MONOCHROME2 sense).
        meta: PatientID, PatientName, PatientSex, PatientBirthDate, PatientAge, StudyDate, StudyTime,
            AccessionNumber, StudyID, ViewPosition (PA/AP), PixelSpacing (mm, float or [row, col]),
            optional UIDs (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID; else derived).
        window: VOI (center, width) in stored-value units of the MONOCHROME2 image; default full range.
        monochrome1: store inverted values as MONOCHROME1 (display unchanged).
        jpeg2000: JPEG 2000 lossless transfer syntax instead of explicit VR little endian.
    """
    path = Path(path)
    arr = _check_pixels(pixels, bits_stored, path)
    maxv = 2 ** bits_stored - 1
    c, w = window if window is not None else ((maxv + 1) / 2, maxv + 1)
    if monochrome1:
        arr = (maxv - arr).astype(arr.dtype)
        c = maxv + 1 - c  # mirrored window keeps the displayed image identical
    ds = _base(meta, DX_FOR_PRESENTATION, "DX")
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.StudyDescription = ds.StudyDescription or "XR CHEST"
    ds.BodyPartExamined = "CHEST"
    ds.AnatomicRegionSequence = [_code("51185008", "SCT", "Thorax")]
    ds.ImageLaterality = "U"
    view = str(meta.get("ViewPosition", "PA"))
    ds.ViewPosition = view
    ds.PatientOrientation = ["R", "F"] if view == "AP" else ["L", "F"]
    ds.PatientPosition = ""
    ds.PositionerType = "COLUMN"
    ds.AcquisitionContextSequence = []
    ds.ViewCodeSequence = [_code("399182009", "SCT", "antero-posterior") if view == "AP"
                           else _code("399348003", "SCT", "postero-anterior")]
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = []
    _pixel_module(ds, arr, bits_stored, "MONOCHROME1" if monochrome1 else "MONOCHROME2")
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1 if monochrome1 else 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.WindowCenter, ds.WindowWidth = float(c), float(w)
    ds.WindowCenterWidthExplanation = "PHANTOM DEFAULT"
    sp = meta.get("PixelSpacing", 0.78)
    sp = [float(sp), float(sp)] if np.isscalar(sp) else [float(v) for v in sp]
    ds.ImagerPixelSpacing = sp
    ds.PixelSpacing = sp
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "synthetic phantom: detector plane spacing"
    ds.DetectorType = "DIRECT"
    ds.DetectorConfiguration = "AREA"
    ds.KVP = float(meta.get("KVP", 120))
    ds.DistanceSourceToDetector = 1800.0
    return _save(ds, path, jpeg2000)


def write_png16(path: str | Path, arr: np.ndarray) -> Path:
    """Write a (rows, cols) uint16 array as a 16-bit greyscale PNG (no timestamps: byte-reproducible)."""
    from PIL import Image

    path = Path(path)
    a = np.asarray(arr)
    if a.ndim != 2 or a.dtype != np.uint16:
        raise ValueError(f"{path}: write_png16 needs a 2-D uint16 array, got {a.dtype} {a.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, format="PNG", optimize=False)
    return path


def write_nifti(path: str | Path, arr: np.ndarray, affine: np.ndarray | None = None,
                scale: tuple[float, float] | None = None) -> Path:
    """Write a NIfTI-1 image (``.nii`` or ``.nii.gz``). ``arr`` is indexed (i, j[, k]) along the affine's axes.

    ``scale`` = (slope, intercept) stored in the header so readers get ``arr * slope + intercept``.
    gzip output carries no timestamp (byte-reproducible).
    """
    import gzip

    import nibabel as nib

    path = Path(path)
    aff = np.eye(4) if affine is None else np.asarray(affine, float)
    img = nib.Nifti1Image(np.asarray(arr), aff)
    img.header.set_xyzt_units("mm")
    if scale is not None:
        img.header.set_slope_inter(*scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        raw = img.to_bytes()
        with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
            gz.write(raw)
    else:
        nib.save(img, str(path))
    return path


def write_dicom_ophthalmic(path: str | Path, pixels: np.ndarray, meta: dict[str, Any],
                           jpeg2000: bool = False) -> Path:
    """Write a retina image (OCT B-scan rendering or fundus) as an Ophthalmic Photography 8 Bit Image (OP).

    The Ophthalmic Tomography IOD would suit a B-scan better, but the dicom3tools release we validate
    with holds contradictory concatenation rules for it (no single-frame OPT passes ``dciodvfy``), so
    the single B-scan is stored as an ophthalmic photograph of the scan, modality ``OP``.

    Args:
        pixels: (rows, cols) uint8.
        meta: patient/study fields as for :func:`write_dicom_dx`, plus ``ImageLaterality`` (R/L) and
            ``PixelSpacing`` [row mm, col mm].
        jpeg2000: JPEG 2000 lossless transfer syntax.

    The OP IOD has no VOI LUT module: stored values are presentation values (Presentation LUT Shape
    IDENTITY), so no window is written.
    """
    path = Path(path)
    arr = _check_pixels(pixels, 8, path)
    ds = _base(meta, OPHTHALMIC_PHOTOGRAPHY_8, "OP")
    ds.StudyDescription = ds.StudyDescription or "OCT MACULA"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.NumberOfFrames = 1
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 0.0
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = f"{ds.StudyDate}{ds.StudyTime}"
    ds.PatientOrientation = ""
    ds.SynchronizationFrameOfReferenceUID = make_uid("synchronization", ds.StudyInstanceUID)
    ds.SynchronizationTrigger = "NO TRIGGER"
    ds.AcquisitionTimeSynchronized = "N"
    _pixel_module(ds, arr, 8, "MONOCHROME2")
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    lat = str(meta.get("ImageLaterality", "R"))
    ds.ImageLaterality = lat
    ds.AnatomicRegionSequence = [_code("81745001", "SCT", "Eye")]
    sp = meta.get("PixelSpacing", [0.002, 0.008])
    ds.PixelSpacing = [float(sp), float(sp)] if np.isscalar(sp) else [float(v) for v in sp]
    # Ophthalmic Photography Acquisition Parameters (type 2: empty = unknown for a phantom)
    ds.PatientEyeMovementCommanded = "NO"
    ds.HorizontalFieldOfView = None
    ds.RefractiveStateSequence = []
    ds.EmmetropicMagnification = None
    ds.IntraOcularPressure = None
    ds.PupilDilated = ""
    # Ophthalmic Photographic Parameters
    ds.AcquisitionDeviceTypeCodeSequence = [_code("392012008", "SCT", "Optical Coherence Tomography Scanner")]
    ds.IlluminationTypeCodeSequence = []
    ds.LightPathFilterTypeStackCodeSequence = []
    ds.ImagePathFilterTypeStackCodeSequence = []
    ds.LensesCodeSequence = []
    ds.DetectorType = "CCD"
    return _save(ds, path, jpeg2000)


CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_ct_series(folder: str | Path, n_slices: int, meta: dict[str, Any], size: int = 128,
                    spacing_mm: float = 0.7, slice_mm: float = 2.0) -> list[Path]:
    """A synthetic axial CT series (PS3.3 A.3 CT Image), one file per slice: ``folder/ct_0001.dcm`` ...

    Each slice is ``size`` x ``size`` HU values of a water ellipse (0 HU) in air (-1000 HU) holding a bone ring
    (+700 HU) and lungs (-850 HU) whose extent changes along z, stored as unsigned 16-bit with Rescale
    Intercept -1024 and a soft-tissue window (C 40 / W 400). ``meta``: Patient / Study attributes as for
    :func:`write_dicom_dx`. Deterministic (UIDs from ``meta`` and the slice index).
    """
    folder = Path(folder)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    body = (xx / 0.45) ** 2 + (yy / 0.35) ** 2 <= 1
    ring = body & ((xx / 0.42) ** 2 + (yy / 0.32) ** 2 > 1)
    paths = []
    for k in range(n_slices):
        z = k / max(n_slices - 1, 1)
        hu = np.where(body, 0.0, -1000.0)
        r = 0.08 + 0.1 * np.sin(np.pi * z)
        for cx in (-0.18, 0.18):
            hu[((xx - cx) / r) ** 2 + (yy / (1.4 * r)) ** 2 <= 1] = -850.0
        hu[ring] = 700.0
        m = dict(meta, InstanceNumber=k + 1, ImageID=f"ct{k}")
        ds = _base(m, CT_IMAGE, "CT")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID = make_uid("for", ds.StudyInstanceUID)
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.Laterality = ""  # Type 2C (paired body part not stated): present, empty
        ds.ImagePositionPatient = [-size * spacing_mm / 2, -size * spacing_mm / 2, k * slice_mm]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = k * slice_mm
        ds.SliceThickness = slice_mm
        ds.PixelSpacing = [spacing_mm, spacing_mm]
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        _pixel_module(ds, np.clip(hu + 1024, 0, 4095).astype(np.uint16), 12, "MONOCHROME2")
        paths.append(_save(ds, folder / f"ct_{k + 1:04d}.dcm", False))
    return paths
