"""DICOM Segmentation objects (PS3.3 A.51, C.8.20) written and read with highdicom.

:func:`build_segmentation` turns per-label masks of one source image into a SEG (``BINARY``: masks at the
model's thresholds; ``FRACTIONAL``: probabilities quantised to 0..255) that shares the source's Patient/Study,
references the source instance (Referenced Series / Source Image sequences, written by highdicom), names the
algorithm (Segment Algorithm Type AUTOMATIC, Algorithm Identification with family "Artificial Intelligence")
and gives each segment its label, coded concepts and recommended display colour (CIELab, PS3.3 C.10.7.1.1).
:func:`read_segmentation` returns the masks per source instance for overlays (from medvit or from a PACS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medvit.io.uids import make_uid

#: source attributes a SEG's spatial metadata comes from (Frame of Reference, Image Plane: PS3.3 C.7.4.1, C.7.6.2)
SPATIAL_KEYWORDS = ("FrameOfReferenceUID", "PositionReferenceIndicator", "ImageOrientationPatient",
                    "ImagePositionPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices")
SEG_AUTHORED = ("SeriesDescription", "ContentLabel", "ContentDescription", "ManufacturerModelName",
                "DeviceSerialNumber", "SoftwareVersions")  # written by medvit (weights checksum, version)
FRACTIONAL_MAX = 255


class SegmentLike(Protocol):
    """What a segment description needs (:class:`medvit.models.segmentation.SegmentLabel` has it)."""

    name: str
    category: tuple[str, str, str]
    type: tuple[str, str, str]
    color: tuple[int, int, int]


def build_segmentation(source: Any, masks: np.ndarray, labels: list[SegmentLike], seg_type: str,
                       model_name: str, model_version: str, sha256: str, research_only: bool = True,
                       series_number: int = 7703, deidentifier: Any = None, deidentified: bool = False) -> Any:
    """A ``highdicom.seg.Segmentation`` of one single-frame source image.

    Args:
        source: the source header (pydicom Dataset; pixel data not needed).
        masks: (K, Rows, Columns) at the source resolution: bool for BINARY, probabilities in [0, 1] for FRACTIONAL.
        labels: K segment descriptions, in channel order.
        seg_type: "BINARY" or "FRACTIONAL" (PS3.3 C.8.20.2).
    Raises:
        ValueError: shape does not match the source's Rows/Columns or the label count; no Study Instance UID.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from medvit.io.sr import fit_long_string, sr_source

    if seg_type not in ("BINARY", "FRACTIONAL"):
        raise ValueError(f"seg_type must be BINARY or FRACTIONAL, got {seg_type!r}")
    rows, cols = int(getattr(source, "Rows", 0) or 0), int(getattr(source, "Columns", 0) or 0)
    if masks.ndim != 3 or masks.shape[0] != len(labels) or masks.shape[1:] != (rows, cols):
        raise ValueError(f"masks {masks.shape} do not fit {len(labels)} labels x source {rows}x{cols}")
    if not str(getattr(source, "StudyInstanceUID", "") or ""):
        raise ValueError("the source image has no Study Instance UID; a SEG must belong to its study")
    orientation = getattr(source, "PatientOrientation", None)
    original, source = source, sr_source(source)
    if original.get("ImageOrientationPatient") not in (None, ""):  # cross-sectional: in the patient frame
        for kw in SPATIAL_KEYWORDS:  # highdicom derives the SEG's plane geometry from these
            if original.get(kw) not in (None, "") and source.get(kw) in (None, ""):  # sr_source blanks DS values
                setattr(source, kw, original[kw].value)
    algo = hd.AlgorithmIdentificationSequence(name=model_name[:64] or "medvit", version=(model_version or "0")[:64],
                                              family=codes.cid7162.ArtificialIntelligence,
                                              source=f"sha256 {sha256[:16]}")
    descs = []
    for i, lab in enumerate(labels):
        descs.append(hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=lab.name[:64],
            segmented_property_category=hd.sr.CodedConcept(*lab.category),
            segmented_property_type=hd.sr.CodedConcept(*lab.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo,
            display_color=hd.color.CIELabColor.from_rgb(*lab.color)))
    arr = np.moveaxis(masks, 0, -1)[None]  # (1, Rows, Columns, K)
    if seg_type == "BINARY":
        arr = arr.astype(bool)
        extra: dict[str, Any] = {}
    else:
        arr = np.clip(arr.astype(np.float32), 0.0, 1.0)
        extra = {"max_fractional_value": FRACTIONAL_MAX,
                 "fractional_type": hd.seg.SegmentationFractionalTypeValues.PROBABILITY}
    note = "research use only - not for diagnosis" if research_only else ""
    study, sop = str(source.StudyInstanceUID), str(source.SOPInstanceUID)
    seg = hd.seg.Segmentation(
        source_images=[source], pixel_array=arr, segmentation_type=seg_type, segment_descriptions=descs,
        series_instance_uid=make_uid("medvit-seg-series", sha256, study), series_number=series_number,
        sop_instance_uid=make_uid("medvit-seg", sha256, sop), instance_number=int(getattr(source, "InstanceNumber",
                                                                                           1) or 1),
        manufacturer="medvit", manufacturer_model_name=model_name[:64] or "medvit",
        software_versions=_software_version(), device_serial_number=sha256[:16] or "0",
        series_description=fit_long_string(f"medvit {model_name} segmentation", "medvit segmentation", note),
        content_label="MEDVIT_SEG", content_description=note[:64] or None, **extra)
    if "ImageOrientationPatient" not in source and orientation:  # Type 2C without a patient frame (projection)
        seg.PatientOrientation = orientation
    elif "ImageOrientationPatient" not in source:
        seg.PatientOrientation = ""
    if deidentifier is not None:
        return deidentifier.finish(seg, authored=SEG_AUTHORED)
    if deidentified:
        from medvit.io.sr import _mark_deidentified

        _mark_deidentified(seg)
    return seg


def _software_version() -> str:
    from medvit.version import __version__

    return f"medvit {__version__}"[:64]


def write_segmentation(path: str | Path, source: Any, masks: np.ndarray, labels: list[SegmentLike], seg_type: str,
                       model_name: str, model_version: str, sha256: str, research_only: bool = True,
                       root: str | Path | None = None, deidentifier: Any = None) -> Path:
    """Build (see :func:`build_segmentation`) and write atomically to ``path`` (inside ``root`` when given)."""
    seg = build_segmentation(source, masks, labels, seg_type, model_name, model_version, sha256, research_only,
                             deidentifier=deidentifier)
    return write_derived(path, seg, root)


def write_derived(path: str | Path, ds: Any, root: str | Path | None = None) -> Path:
    """Write a derived object (SEG, measurement SR) atomically: owner-only folders, inside ``root`` when given."""
    from medvit.io.safe_write import make_dirs, save_dataset

    p = Path(path)
    if root is not None:
        make_dirs(root, p.parent)
    else:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return save_dataset(p, ds, root)


@dataclass
class SegmentInfo:
    """One segment of a SEG as read back."""

    number: int
    label: str
    type_meaning: str
    color: tuple[int, int, int]  # RGB from the recommended CIELab colour (yellow when absent)


@dataclass
class SegmentationResult:
    """A SEG read back: its segments and, per referenced source SOP Instance UID, masks (K, Rows, Columns)
    float32 in [0, 1] (binary segmentations hold 0/1)."""

    sop_instance_uid: str
    seg_type: str
    segments: list[SegmentInfo]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    study_instance_uid: str = ""


def read_segmentation(path: str | Path) -> SegmentationResult:
    """Read a DICOM SEG (from medvit or another system) with highdicom.

    Raises ``ValueError`` naming ``path`` when it is not a Segmentation or its frames reference no source
    instance (volume-only SEGs are not overlaid per image by this reader).
    """
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
    except Exception as e:
        raise ValueError(f"{path}: not a readable DICOM Segmentation ({type(e).__name__}: {e})") from e
    segments = []
    for n in seg.get_segment_numbers():
        d = seg.get_segment_description(n)
        rgb = (255, 255, 0)
        if "RecommendedDisplayCIELabValue" in d:
            try:
                rgb = tuple(int(c) for c in hd.color.CIELabColor.from_dicom_value(
                    d.RecommendedDisplayCIELabValue).to_rgb())
            except Exception:  # a malformed colour keeps the default
                pass
        segments.append(SegmentInfo(int(n), str(d.SegmentLabel), str(d.segmented_property_type.meaning), rgb))
    res = SegmentationResult(str(seg.SOPInstanceUID), str(seg.SegmentationType), segments,
                             study_instance_uid=str(getattr(seg, "StudyInstanceUID", "")))
    sources = [u[2] for u in seg.get_source_image_uids()]
    if not sources:
        raise ValueError(f"{path}: the segmentation references no source image instances")
    for sop in sources:
        try:
            arr = seg.get_pixels_by_source_instance([sop], combine_segments=False, rescale_fractional=True,
                                                    skip_overlap_checks=True)
        except Exception as e:
            raise ValueError(f"{path}: frames for source instance {sop} could not be read ({type(e).__name__}: "
                             f"{e})") from e
        res.masks[sop] = np.moveaxis(np.asarray(arr[0], dtype=np.float32), -1, 0)
    return res


def segmentation_index(*folders: str | Path, limit: int = 100_000) -> dict[str, list[str]]:
    """Source SOP Instance UID -> paths of the DICOM SEG files under ``folders`` (recursive) that reference it.

    Reads headers only (no pixel data); files that are not DICOM or not Segmentations are passed over. At most
    ``limit`` files are looked at per folder (a guard for a mistyped root).
    """
    import pydicom

    out: dict[str, list[str]] = {}
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            continue
        for n, p in enumerate(sorted(root.rglob("*"))):
            if n >= limit:
                break
            if not p.is_file() or p.is_symlink():
                continue
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=[
                    "Modality", "SOPClassUID", "ReferencedSeriesSequence"])
            except Exception:  # not DICOM (or unreadable): not a SEG to offer
                continue
            if str(ds.get("Modality", "")) != "SEG" and str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS:
                continue
            for series in ds.get("ReferencedSeriesSequence", []):
                for inst in series.get("ReferencedInstanceSequence", []):
                    out.setdefault(str(inst.ReferencedSOPInstanceUID), []).append(str(p))
    return out


#: Segmentation Storage (PS3.4 B.5)
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
