"""Physical pixel spacing of a 2D image for measurements (areas, distances), with its provenance.

DICOM gives spacing in several places (PS3.3 C.7.6.2.1.1 Image Plane, C.8.11.7 DX Detector, 10.7.1.3):

* ``PixelSpacing`` — in the patient (for cross-sectional images) or, in projection radiography, a calibrated
  spacing at some plane described by ``PixelSpacingCalibrationType`` (``GEOMETRY`` / ``FIDUCIAL``).
* ``ImagerPixelSpacing`` — at the front plane of the detector, *not* in the patient: objects in the patient
  are magnified by the divergent beam, so distances computed from it over-estimate patient sizes unless
  corrected, e.g. by ``EstimatedRadiographicMagnificationFactor`` (PS3.3 C.8.11.7, 10.7.1.3).
* ``NominalScannedPixelSpacing`` — digitised film.

:func:`pixel_spacing` picks, in that order, PixelSpacing (top level or the multi-frame Pixel Measures
sequence), else ImagerPixelSpacing divided by the estimated magnification when given, else the nominal
scanned spacing, and says which one it used and what the caveat is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Spacing:
    """Row and column spacing in mm (centre to centre of adjacent rows / columns) and where it came from."""

    row_mm: float
    col_mm: float
    source: str  # PixelSpacing | ImagerPixelSpacing | ImagerPixelSpacing/magnification | NominalScannedPixelSpacing
    at: str  # "patient" | "detector" | "calibrated plane" | "film" (the plane the millimetres refer to)
    caveat: str = ""  # for users: why the millimetres may not be patient millimetres

    @property
    def pixel_area_mm2(self) -> float:
        return self.row_mm * self.col_mm


DETECTOR_CAVEAT = ("Imager Pixel Spacing is measured at the detector, not in the patient (PS3.3 C.8.11.7): "
                   "sizes are magnified by the beam geometry unless calibrated")


def _pair(v: Any) -> tuple[float, float] | None:
    if v is None:
        return None
    try:
        vals = [float(x) for x in (v if isinstance(v, list | tuple) or hasattr(v, "__iter__") and not isinstance(
            v, str) else [v])]
    except (TypeError, ValueError):
        return None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not all(x > 0 and x < 1e4 for x in vals):
        return None
    return vals[0], vals[1]


def _get(h: Any, key: str) -> Any:
    if isinstance(h, dict):
        return h.get(key)
    return getattr(h, key, None)


def pixel_spacing(header: Any) -> Spacing | None:
    """The spacing to measure with, from a pydicom Dataset or a dict of header keywords; None when the header
    holds no usable spacing (then measurements are in pixels only). Values ≤ 0 or unparsable are ignored."""
    ps = _pair(_get(header, "PixelSpacing"))
    if ps is None:
        sfg = _get(header, "SharedFunctionalGroupsSequence")
        try:
            ps = _pair(sfg[0].PixelMeasuresSequence[0].PixelSpacing) if sfg else None
        except (AttributeError, IndexError, TypeError):
            ps = None
    modality = str(_get(header, "Modality") or "").upper()
    projection = _get(header, "ImagerPixelSpacing") is not None or modality in ("CR", "DX", "MG", "IO", "RF", "XA")
    if ps is not None:
        calib = str(_get(header, "PixelSpacingCalibrationType") or "").upper()
        if projection and calib:
            return Spacing(ps[0], ps[1], "PixelSpacing", "calibrated plane",
                           f"Pixel Spacing calibrated ({calib}) at the plane its calibration describes")
        if projection:
            return Spacing(ps[0], ps[1], "PixelSpacing", "calibrated plane",
                           "Pixel Spacing of a projection image without a calibration type: the plane it refers "
                           "to is not stated (PS3.3 10.7.1.3)")
        return Spacing(ps[0], ps[1], "PixelSpacing", "patient")
    ips = _pair(_get(header, "ImagerPixelSpacing"))
    if ips is not None:
        try:
            mag = float(_get(header, "EstimatedRadiographicMagnificationFactor") or 0)
        except (TypeError, ValueError):
            mag = 0.0
        if mag > 0:
            return Spacing(ips[0] / mag, ips[1] / mag, "ImagerPixelSpacing/magnification", "patient",
                           f"Imager Pixel Spacing divided by the estimated radiographic magnification {mag:g} "
                           "(an estimate; PS3.3 C.8.11.7)")
        return Spacing(ips[0], ips[1], "ImagerPixelSpacing", "detector", DETECTOR_CAVEAT)
    nss = _pair(_get(header, "NominalScannedPixelSpacing"))
    if nss is not None:
        return Spacing(nss[0], nss[1], "NominalScannedPixelSpacing", "film",
                       "nominal spacing of the digitised film, not the patient")
    return None
