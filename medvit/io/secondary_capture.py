"""Heatmap overlays as DICOM Secondary Capture images (highdicom ``SCImage``), for display next to the source.

The SC shares the source's Study Instance UID (and Patient/Study modules), gets new Series/SOP UIDs derived
from the source and the weights checksum, ``ImageType DERIVED\\SECONDARY``, ``BurnedInAnnotation YES``,
a reference to the source image (Source Image Sequence) and, for research models, the research-only note in
the series description and Image Comments. Pixels are 8-bit RGB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medvit.io.uids import make_uid

#: JPEG-LS Lossless Image Compression (PS3.5 §A.4.3), encoded by pyjpegls through highdicom
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"


def build_overlay_sc(source: Any, rgb: np.ndarray, model_name: str, sha256: str, description: str = "",
                     research_only: bool = True, deidentified: bool = False, series_number: int = 7702,
                     deidentifier: Any = None) -> Any:
    """A ``highdicom.sc.SCImage`` holding ``rgb`` (h, w, 3) uint8, derived from the ``source`` header.

    ``deidentifier`` (:class:`medvit.io.deidentify.Deidentifier`): applied to the finished object (PS3.15
    basic profile; the series description and image comments medvit wrote are kept).
    """
    import highdicom as hd
    from pydicom.dataset import Dataset

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"overlay must be (h, w, 3) uint8, got {rgb.shape} {rgb.dtype}")
    from medvit.io.sr import fit_long_string, sr_source

    note = "research use only - not for diagnosis" if research_only else ""
    if not str(getattr(source, "StudyInstanceUID", "") or ""):
        raise ValueError("the source image has no Study Instance UID; a Secondary Capture must belong to its "
                         "study (PS3.3 C.7.2.1)")
    source = sr_source(source)  # missing Type 2 / invalid values empty, as for the SR
    study = str(source.StudyInstanceUID)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=np.ascontiguousarray(rgb), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", patient_orientation=_orientation(source) or ("L", "F"),
        series_instance_uid=make_uid("medvit-sc-series", sha256, study),
        series_number=series_number,
        sop_instance_uid=make_uid("medvit-sc", sha256, str(source.SOPInstanceUID)),
        instance_number=int(getattr(source, "InstanceNumber", 1) or 1), manufacturer="medvit",
        series_description=fit_long_string(f"medvit {model_name} heatmaps", "medvit heatmaps", note),
        manufacturer_model_name=model_name[:64],
        transfer_syntax_uid=JPEG_LS_LOSSLESS,  # lossless and compact (an overlay is mostly smooth colour)
    )
    if _orientation(source) is None:  # unknown: Patient Orientation is Type 2, so present and empty
        sc.PatientOrientation = ""
    if "Laterality" not in sc:  # Type 2C in General Series for patient-based images: present, maybe empty
        sc.Laterality = str(getattr(source, "Laterality", "") or "")
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "YES"
    comment = " ".join(x for x in (description, note) if x)
    if comment:
        sc.ImageComments = comment[:10240]
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    if deidentifier is not None:
        return deidentifier.finish(sc, authored=SC_AUTHORED)
    if deidentified:
        from medvit.io.sr import _mark_deidentified

        _mark_deidentified(sc)
    return sc


#: elements of the SC that medvit writes itself (kept by the de-identifier)
SC_AUTHORED = ("SeriesDescription", "ImageComments", "ManufacturerModelName")


def write_overlay_sc(path: str | Path, source: Any, rgb: np.ndarray, model_name: str, sha256: str,
                     description: str = "", research_only: bool = True, deidentified: bool = False,
                     root: str | Path | None = None, deidentifier: Any = None) -> Path:
    """Build (see :func:`build_overlay_sc`) and write atomically to ``path`` (kept inside ``root`` if given)."""
    from medvit.io.safe_write import make_dirs, save_dataset

    sc = build_overlay_sc(source, rgb, model_name, sha256, description, research_only, deidentified,
                          deidentifier=deidentifier)
    p = Path(path)
    if root is not None:
        make_dirs(root, p.parent)  # owner-only folders inside OUTPUT (SECURITY.md §7)
    else:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return save_dataset(p, sc, root)


def _orientation(source: Any) -> tuple[str, str] | None:
    """Source Patient Orientation when it holds two valid biped values (e.g. ``P``, ``F``), else None."""
    from highdicom.enum import PatientOrientationValuesBiped

    po = getattr(source, "PatientOrientation", None)
    try:
        if po is not None and len(po) == 2:
            return tuple(PatientOrientationValuesBiped(str(v)).value for v in po)  # type: ignore[return-value]
    except (ValueError, TypeError):
        pass
    return None
