"""Image measurements: distance, angle, and rectangle / ellipse ROI statistics in modality units.

Points are image pixel coordinates ``(x, y)`` = (column, row) on the stored pixel matrix, as DICOM spatial
coordinates use them (PS3.3 C.18.6.1.2: the top-left corner of the top-left pixel is (0, 0), its centre
(0.5, 0.5)). Millimetres come from a :class:`medvit.io.spacing.Spacing` (row spacing scales y, column
spacing scales x); its ``at``/``caveat`` say whether they are patient millimetres (PS3.3 C.8.11.7: Imager
Pixel Spacing is at the detector). ROI statistics are over the pixels whose centres lie inside the shape, in
the image's modality values (HU on CT, after the Modality LUT / rescale), Pixel Padding excluded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medvit.io.spacing import Spacing

Point = tuple[float, float]
ROI_SHAPES = ("rectangle", "ellipse")


def modality_unit(modality: str) -> str:
    """Unit of modality values: ``HU`` for CT (PS3.3 C.11.1.1.2), else ``""`` (unitless / vendor units)."""
    return "HU" if str(modality).upper() == "CT" else ""


def distance_mm(p0: Point, p1: Point, spacing: Spacing | None) -> float | None:
    """Distance between two points in mm (None without spacing); anisotropic spacing respected."""
    if spacing is None:
        return None
    return math.hypot((p1[0] - p0[0]) * spacing.col_mm, (p1[1] - p0[1]) * spacing.row_mm)


def distance_px(p0: Point, p1: Point) -> float:
    """Distance in pixels (pixel units of the stored matrix)."""
    return math.hypot(p1[0] - p0[0], p1[1] - p0[1])


def angle_deg(a: Point, vertex: Point, b: Point, spacing: Spacing | None = None) -> float:
    """Angle a-vertex-b in degrees [0, 180], measured in physical space when ``spacing`` is given (pixels are
    not square on every detector). Raises ValueError when an arm has zero length."""
    sx, sy = (spacing.col_mm, spacing.row_mm) if spacing else (1.0, 1.0)
    u = np.array([(a[0] - vertex[0]) * sx, (a[1] - vertex[1]) * sy])
    v = np.array([(b[0] - vertex[0]) * sx, (b[1] - vertex[1]) * sy])
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0 or nv == 0:
        raise ValueError("angle: an arm has zero length (a point coincides with the vertex)")
    return math.degrees(math.acos(max(-1.0, min(1.0, float(u @ v) / (nu * nv)))))


@dataclass(frozen=True)
class RoiStats:
    """Statistics of an ROI, in modality units (``unit``)."""

    shape: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (pixel coordinates, x0 < x1, y0 < y1)
    n: int  # pixels inside (padding excluded)
    mean: float
    sd: float  # population SD over the ROI's pixels (ddof 0)
    min: float
    max: float
    area_mm2: float | None  # pixel count x pixel area (None without spacing)
    unit: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def roi_mask(shape_hw: tuple[int, int], roi: str, box: tuple[float, float, float, float]) -> np.ndarray:
    """(H, W) bool: pixels whose centres (x + 0.5, y + 0.5) lie in the rectangle or the inscribed ellipse."""
    if roi not in ROI_SHAPES:
        raise ValueError(f"ROI shape must be one of {ROI_SHAPES}, got {roi!r}")
    x0, y0, x1, y1 = min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        raise ValueError(f"ROI box {box} has no area")
    h, w = shape_hw
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = xx + 0.5, yy + 0.5
    if roi == "rectangle":
        return (cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)
    ax, ay = (x1 - x0) / 2, (y1 - y0) / 2
    return ((cx - (x0 + ax)) / ax) ** 2 + ((cy - (y0 + ay)) / ay) ** 2 <= 1.0


def roi_stats(pixels: np.ndarray, roi: str, box: tuple[float, float, float, float], spacing: Spacing | None,
              modality: str = "", padding_mask: np.ndarray | None = None) -> RoiStats:
    """Mean, SD, min, max of a 2D grey ``pixels`` (H, W) (modality values) inside the ROI.

    Raises ValueError for a colour image, a box without area, or an ROI holding no pixel.
    """
    px = np.asarray(pixels)
    if px.ndim != 2:
        raise ValueError(f"ROI statistics need a 2D grey image, got shape {px.shape}")
    m = roi_mask(px.shape, roi, box)
    if padding_mask is not None:
        m &= ~np.asarray(padding_mask, bool)
    vals = px[m].astype(np.float64)
    if vals.size == 0:
        raise ValueError(f"ROI {roi} {box} contains no image pixel")
    x0, y0, x1, y1 = min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])
    return RoiStats(roi, (x0, y0, x1, y1), int(vals.size), float(vals.mean()), float(vals.std()),
                    float(vals.min()), float(vals.max()),
                    float(vals.size * spacing.pixel_area_mm2) if spacing else None, modality_unit(modality))
