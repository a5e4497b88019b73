"""Reader measurements as a DICOM SR Measurement Report (TID 1500), built with highdicom.

Each measurement is one TID 1410 Planar ROI Measurements group referencing the source image
(SCOORD on the stored pixel matrix): a distance is a 2-point POLYLINE with a Length (SCT 410668003, mm);
an angle a 3-point POLYLINE with an Angle (SCT 1483009, deg); a rectangle a closed 5-point POLYLINE and an
ellipse an ELLIPSE (major/minor axis end points) with Mean / Standard Deviation / Minimum / Maximum
(SCT 373098007 / 386136009 / 255605001 / 56851009, in HU on CT, else "no units") and Area (mm²) when the image
has spacing. The observer is the reader (person observer context, TID 1002); the reader's comment is a
finding text in the group. Pixel-only measurements (no spacing) are stored in pixel units ({pixels}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvit.io.uids import make_uid

KINDS = ("distance", "angle", "rectangle", "ellipse")


@dataclass
class ReaderMeasurement:
    """One measurement on one image, as the viewer saves it (JSON-able)."""

    kind: str  # distance | angle | rectangle | ellipse
    points: list[tuple[float, float]]  # (x, y) pixel coordinates: 2 (distance, ROI box corners) or 3 (angle)
    values: dict[str, float | None]  # e.g. {"length_mm": 12.3} / {"angle_deg": 91} / {"mean": ..., "sd": ...}
    unit: str = ""  # modality unit of ROI statistics ("HU" on CT)
    spacing_source: str = ""  # PixelSpacing / ImagerPixelSpacing / ... ("" = pixels only)
    comment: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"measurement kind must be one of {KINDS}, got {self.kind!r}")
        need = 3 if self.kind == "angle" else 2
        if len(self.points) != need:
            raise ValueError(f"a {self.kind} needs {need} points, got {len(self.points)}")


def _graphic(m: ReaderMeasurement) -> tuple[Any, Any]:
    import highdicom as hd
    import numpy as np

    pts = [tuple(map(float, p)) for p in m.points]
    if m.kind in ("distance", "angle"):
        return hd.sr.GraphicTypeValues.POLYLINE, np.array(pts)
    (x0, y0), (x1, y1) = pts
    x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    if m.kind == "rectangle":
        return hd.sr.GraphicTypeValues.POLYLINE, np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if x1 - x0 >= y1 - y0:  # major axis first (PS3.3 C.18.6.1.2 ELLIPSE)
        axes = [(x0, cy), (x1, cy), (cx, y0), (cx, y1)]
    else:
        axes = [(cx, y0), (cx, y1), (x0, cy), (x1, cy)]
    return hd.sr.GraphicTypeValues.ELLIPSE, np.array(axes)


def _measurements(m: ReaderMeasurement) -> list[Any]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    px = hd.sr.CodedConcept("{pixels}", "UCUM", "pixels")
    out = []

    def add(name: Any, value: float | None, unit: Any) -> None:
        if value is not None:
            out.append(hd.sr.Measurement(name=name, value=float(value), unit=unit))

    if m.kind == "distance":
        if m.values.get("length_mm") is not None:
            add(codes.SCT.Length, m.values["length_mm"], codes.UCUM.Millimeter)
        else:
            add(codes.SCT.Length, m.values.get("length_px"), px)
    elif m.kind == "angle":
        add(codes.SCT.Angle, m.values.get("angle_deg"), codes.UCUM.Degree)
    else:
        unit = codes.UCUM.HounsfieldUnit if m.unit == "HU" else hd.sr.CodedConcept("1", "UCUM", "no units")
        for key, name in (("mean", codes.SCT.Mean), ("sd", codes.SCT.StandardDeviation),
                          ("min", codes.SCT.Minimum), ("max", codes.SCT.Maximum)):
            add(name, m.values.get(key), unit)
        add(codes.SCT.Area, m.values.get("area_mm2"), codes.UCUM.SquareMillimeter)
    if not out:
        raise ValueError(f"{m.kind} measurement has no value to store")
    return out


def build_measurement_sr(source: Any, measurements: list[ReaderMeasurement], reader: str = "",
                         series_number: int = 7704, deidentifier: Any = None) -> Any:
    """A ``highdicom.sr.Comprehensive3DSR`` (TID 1500) of ``measurements`` on the ``source`` image header.

    Raises ValueError when there is nothing to store or the source has no Study Instance UID.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from medvit.io.sr import sr_source

    if not measurements:
        raise ValueError("no measurement to store")
    if not str(getattr(source, "StudyInstanceUID", "") or ""):
        raise ValueError("the source image has no Study Instance UID; an SR must belong to its study")
    source = sr_source(source)
    ref = hd.sr.SourceImageForRegion(referenced_sop_class_uid=source.SOPClassUID,
                                     referenced_sop_instance_uid=source.SOPInstanceUID)
    groups = []
    for i, m in enumerate(measurements, 1):
        gtype, data = _graphic(m)
        region = hd.sr.ImageRegion(graphic_type=gtype, graphic_data=data, source_image=ref)
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=make_uid("medvit-measure", str(source.SOPInstanceUID),
                                                                      str(i), m.kind, str(m.points)),
                                                     identifier=f"{m.kind} {i}"),
            referenced_region=region, measurements=_measurements(m)))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=(reader or "Reader")[:64]))
    context = hd.sr.ObservationContext(observer_person_context=observer)
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.SCT.ImagingProcedure,
                                     imaging_measurements=groups)
    study = str(source.StudyInstanceUID)
    key = "|".join(f"{m.kind}{m.points}" for m in measurements)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source], content=report[0], series_instance_uid=make_uid("medvit-measure-series", study),
        series_number=series_number, sop_instance_uid=make_uid("medvit-measure-sr", study, key, reader),
        instance_number=1, manufacturer="medvit", series_description="medvit reader measurements",
        is_complete=True, is_final=False, is_verified=False)
    if deidentifier is not None:
        return deidentifier.finish(sr, authored=("SeriesDescription",))
    return sr


def write_measurement_sr(path: str | Path, source: Any, measurements: list[ReaderMeasurement], reader: str = "",
                         root: str | Path | None = None) -> Path:
    """Build (see :func:`build_measurement_sr`) and write atomically to ``path`` (inside ``root`` when given)."""
    from medvit.io.seg import write_derived

    return write_derived(path, build_measurement_sr(source, measurements, reader), root)
