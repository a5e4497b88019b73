"""DICOM series -> volume: group by Series Instance UID, sort slices along the normal, check, then stack.

Sorting uses Image Position (Patient) projected on the slice normal (the cross product of the two Image
Orientation (Patient) cosines); without positions it falls back to Instance Number. Before any pixel is decoded
the headers are checked: one series only, same orientation, size and pixel spacing, no duplicate positions and
regular slice spacing. Problems raise :class:`InconsistentSeriesError` naming the files (``allow_gaps=True``
accepts irregular spacing and records it in ``meta["gaps"]``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medvit.io.dicom import read_dicom, read_dicom_header
from medvit.io.dicom_pixels import pixel_budget as _budget
from medvit.io.errors import CorruptFileError, InconsistentSeriesError, MedicalIOError, PixelBudgetError
from medvit.io.image import MedicalImage

logger = logging.getLogger(__name__)


@dataclass
class SliceInfo:
    """Header facts of one slice file needed to sort and check a series."""

    path: str
    series_uid: str
    instance_number: int | None
    position: tuple[float, ...] | None  # Image Position (Patient), LPS mm
    orientation: tuple[float, ...] | None  # Image Orientation (Patient), 6 cosines
    rows: int
    columns: int
    spacing: tuple[float, ...] | None  # Pixel Spacing (row, column)
    frames: int = 1


@dataclass
class SeriesPlan:
    """A sorted, checked series: slices in order and the geometry derived from them."""

    slices: list[SliceInfo]
    slice_spacing: float  # mm between consecutive slices (median), 1.0 if unknown
    positions: list[float] = field(default_factory=list)  # slice positions along the normal (mm)
    normal: np.ndarray | None = None  # (3,) unit slice normal in LPS, oriented along the sorted order
    gaps: list[dict] = field(default_factory=list)  # irregular steps: {"after": path, "step": mm, "expected": mm}
    sorted_by: str = "position"  # "position" | "instance_number"


def _floats(v) -> tuple[float, ...] | None:
    try:
        out = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return out or None


def slice_info(path: str | Path) -> SliceInfo:
    """Read one file's header (no pixels) into a :class:`SliceInfo`."""
    ds = read_dicom_header(path)
    try:
        inum = int(ds.get("InstanceNumber")) if ds.get("InstanceNumber") not in (None, "") else None
    except (TypeError, ValueError):
        inum = None
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except (TypeError, ValueError) as e:
        raise CorruptFileError(path, f"invalid Rows/Columns/NumberOfFrames ({e})") from e
    return SliceInfo(str(path), str(ds.get("SeriesInstanceUID", "") or ""), inum,
                     _floats(ds.get("ImagePositionPatient")), _floats(ds.get("ImageOrientationPatient")),
                     rows, cols, _floats(ds.get("PixelSpacing")), frames)


def group_by_series(infos: list[SliceInfo]) -> dict[str, list[SliceInfo]]:
    """Series Instance UID -> its slices (unsorted)."""
    groups: dict[str, list[SliceInfo]] = defaultdict(list)
    for s in infos:
        groups[s.series_uid].append(s)
    return dict(groups)


def plan_series(slices: list[SliceInfo], allow_gaps: bool = False, rel_tol: float = 0.1) -> SeriesPlan:
    """Sort and check one series' slices. Raises InconsistentSeriesError on anything that would mis-stack."""
    if not slices:
        raise InconsistentSeriesError(None, "no slices given")
    first = slices[0].path
    uids = {s.series_uid for s in slices}
    if len(uids) > 1:
        raise InconsistentSeriesError(first, f"mixed series: {len(uids)} Series Instance UIDs "
                                             f"({', '.join(sorted(uids))[:300]}); pick one with series_uid=")
    multi = [s.path for s in slices if s.frames > 1]
    if multi and len(slices) > 1:
        raise InconsistentSeriesError(multi[0], "multi-frame file inside a multi-file series; read it alone")
    sizes = {(s.rows, s.columns) for s in slices}
    if len(sizes) > 1:
        raise InconsistentSeriesError(first, f"slices differ in size {sorted(sizes)}")
    sp = {tuple(round(v, 4) for v in s.spacing) for s in slices if s.spacing}
    if len(sp) > 1:
        raise InconsistentSeriesError(first, f"slices differ in Pixel Spacing {sorted(sp)}")
    if len(slices) == 1:
        return SeriesPlan(list(slices), 1.0)
    have_geo = all(s.position and len(s.position) == 3 and s.orientation and len(s.orientation) == 6
                   for s in slices)
    if have_geo:
        o = np.asarray(slices[0].orientation)
        bad = [s.path for s in slices if not np.allclose(s.orientation, o, atol=1e-4)]
        if bad:
            raise InconsistentSeriesError(bad[0], f"orientation differs from {first} ({len(bad)} slices); "
                                                  "a series must share Image Orientation (Patient)")
        normal = np.cross(o[:3], o[3:])
        if np.linalg.norm(normal) < 1e-3:
            raise InconsistentSeriesError(first, f"degenerate Image Orientation (Patient) {tuple(o)}")
        normal /= np.linalg.norm(normal)
        proj = np.array([float(np.dot(s.position, normal)) for s in slices])
        order = np.argsort(proj, kind="stable")
        ordered = [slices[i] for i in order]
        pos = proj[order]
        steps = np.diff(pos)
        dup = np.flatnonzero(np.abs(steps) < 1e-3)
        if dup.size:
            a, b = ordered[dup[0]].path, ordered[dup[0] + 1].path
            raise InconsistentSeriesError(a, f"{dup.size} duplicate slice position(s), e.g. {a} and {b} at "
                                             f"{pos[dup[0]]:.3f} mm (several acquisitions/echoes/phases in one "
                                             "series?); split them before stacking")
        expected = float(np.median(steps))
        gaps = [{"after": ordered[i].path, "step": float(st), "expected": expected}
                for i, st in enumerate(steps) if abs(st - expected) > rel_tol * expected + 1e-3]
        if gaps and not allow_gaps:
            g = gaps[0]
            raise InconsistentSeriesError(g["after"], f"irregular slice spacing: {len(gaps)} step(s) differ from "
                                                      f"{expected:.3f} mm, e.g. {g['step']:.3f} mm after this "
                                                      "slice (missing slices?); pass allow_gaps=True to stack")
        return SeriesPlan(ordered, expected, [float(p) for p in pos], normal, gaps, "position")
    nums = [s.instance_number for s in slices]
    if any(n is None for n in nums) or len(set(nums)) != len(nums):
        raise InconsistentSeriesError(first, "cannot order slices: no Image Position/Orientation and Instance "
                                             "Numbers are missing or repeated")
    logger.warning("series %s: no Image Position (Patient); ordered by Instance Number", slices[0].series_uid)
    ordered = sorted(slices, key=lambda s: s.instance_number)
    return SeriesPlan(ordered, 1.0, [], None, [], "instance_number")


def dicom_files(folder: str | Path) -> list[Path]:
    """All regular files under ``folder`` (recursive, sorted), DICOMDIR excluded."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name.upper() != "DICOMDIR")


def read_series(source: str | Path | list[str | Path], series_uid: str | None = None,
                pixel_budget: int | None = None, allow_gaps: bool = False) -> MedicalImage:
    """Read a folder (or a list of files) holding one series into a volume.

    Shapes: ``pixels`` (F, H, W) float32 modality values (each slice's own rescale applied), axes ``"FHW"``,
    ``spacing`` (slice step, row, column); ``direction``/``origin`` follow the sorted order (first slice = index 0).
    Non-DICOM files in a folder are ignored (logged); ``series_uid`` selects one series among several.
    """
    paths = dicom_files(source) if isinstance(source, str | Path) and Path(source).is_dir() else \
        [Path(p) for p in ([source] if isinstance(source, str | Path) else source)]
    infos, skipped = [], []
    for p in paths:
        try:
            infos.append(slice_info(p))
        except MedicalIOError as e:
            skipped.append(f"{p}: {e.reason}")
    if skipped:
        logger.info("read_series: ignored %d non-DICOM/unreadable files, e.g. %s", len(skipped), skipped[0])
    infos = [s for s in infos if s.rows and s.columns]
    if not infos:
        raise InconsistentSeriesError(str(source)[:200], "no DICOM image files found")
    groups = group_by_series(infos)
    if series_uid is not None:
        if series_uid not in groups:
            raise InconsistentSeriesError(str(source)[:200], f"series {series_uid} not found; present: "
                                                             f"{', '.join(sorted(groups))}")
        infos = groups[series_uid]
    elif len(groups) > 1:
        desc = ", ".join(f"{uid} ({len(v)} files)" for uid, v in sorted(groups.items()))
        raise InconsistentSeriesError(str(source)[:200], f"mixed series: {desc}; pass series_uid=")
    plan = plan_series(infos, allow_gaps=allow_gaps)
    n = sum(s.frames for s in plan.slices)
    limit = _budget(pixel_budget)
    if n * plan.slices[0].rows * plan.slices[0].columns > limit:
        raise PixelBudgetError(plan.slices[0].path, f"series of {n} slices of {plan.slices[0].rows}x"
                                                    f"{plan.slices[0].columns} exceeds the pixel budget {limit:,}")
    if len(plan.slices) == 1:
        return read_dicom(plan.slices[0].path, pixel_budget=pixel_budget)
    imgs = [read_dicom(s.path, pixel_budget=pixel_budget) for s in plan.slices]
    if any(im.axes != "HW" for im in imgs):
        raise InconsistentSeriesError(plan.slices[0].path, "series of colour or multi-frame images cannot be "
                                                           "stacked into a volume")
    first = imgs[0]
    direction = None
    if first.direction is not None and plan.normal is not None:
        direction = np.stack([plan.normal, first.direction[:, 0], first.direction[:, 1]], axis=1)
    pad = None
    if any(im.padding_mask is not None for im in imgs):
        pad = np.stack([im.padding_mask if im.padding_mask is not None else np.zeros(im.pixels.shape, bool)
                        for im in imgs])
    meta = dict(first.meta, files=[s.path for s in plan.slices], slice_positions=plan.positions,
                sorted_by=plan.sorted_by, gaps=plan.gaps, NumberOfFrames=len(imgs))
    lo = min(im.value_range[0] for im in imgs if im.value_range) if first.value_range else None
    hi = max(im.value_range[1] for im in imgs if im.value_range) if first.value_range else None
    return MedicalImage(
        pixels=np.stack([im.pixels for im in imgs]), axes="FHW",
        spacing=(plan.slice_spacing, *first.spacing), photometric=first.photometric, modality=first.modality,
        origin=first.origin, direction=direction, space="LPS", windows=first.windows, voi_luts=first.voi_luts,
        bits_stored=first.bits_stored, value_range=None if lo is None else (lo, hi), padding_mask=pad,
        uids={k: v for k, v in first.uids.items() if k != "SOPInstanceUID"}, meta=meta, path=plan.slices[0].path)
