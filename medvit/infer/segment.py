"""Segmentation outputs of a `medvit infer` run: one DICOM SEG per image and per-label areas in the tables.

A segmentation model (contract ``segmentation``, see :mod:`medvit.models.segmentation`) returns per-label
probability maps (B, K, h, w) on the model input. Per image they are mapped back through the recorded
pad/crop + resize onto the source grid (Rows x Columns), thresholded at the contract's per-label thresholds
(BINARY) or kept as probabilities (FRACTIONAL), written as ``OUTPUT/seg/<study uid>/<sop uid>.dcm`` and
summarised in the image's record: pixel count and area (mm², from :func:`medvit.io.spacing.pixel_spacing`) per
label, the spacing's source, and the SEG path. The record's ``probabilities`` are each label's highest pixel
probability (its presence), so the worklist and SR treat a segmentation model like a classifier.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from medvit.infer.context import RunOutputs
from medvit.infer.decode import Decoded
from medvit.infer.preprocess import unmap_heatmap

logger = logging.getLogger(__name__)

#: header keywords the area computation needs (added to what decoding keeps of every header)
SPACING_KEYS = ("PixelSpacing", "ImagerPixelSpacing", "PixelSpacingCalibrationType",
                "EstimatedRadiographicMagnificationFactor", "NominalScannedPixelSpacing")


def slice_spacing(header: dict[str, Any]) -> float | str:
    """Distance between adjacent slices in mm for cross-sectional images: Spacing Between Slices, else Slice
    Thickness (contiguous slices assumed); ``""`` when neither is a positive number (projection images)."""
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            v = float(header.get(key) or 0)
        except (TypeError, ValueError):
            continue
        if v > 0:
            return v
    return ""


def series_volumes(records: list[dict[str, Any]], labels: list[str]) -> list[list[Any]]:
    """Per series with a slice spacing: [study, series, modality, images, slice_mm, volume_mm3 per label], the
    volume being the sum over its images of area x slice spacing (discrete Cavalieri estimate; exact for
    contiguous slices of that spacing). Series of projection images (no slice spacing) get no row."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        if r.get("slice_mm") in ("", None) or "segment_areas_mm2" not in r:
            continue
        a = acc.setdefault((r.get("study_instance_uid", ""), r.get("series_instance_uid", "")),
                           {"modality": r.get("modality", ""), "n": 0, "slice": float(r["slice_mm"]),
                            "vol": dict.fromkeys(labels, 0.0), "unknown": False})
        a["n"] += 1
        for k in labels:
            area = r["segment_areas_mm2"].get(k, "")
            if area == "":
                a["unknown"] = True
            else:
                a["vol"][k] += float(area) * float(r["slice_mm"])
    return [[st, se, a["modality"], a["n"], a["slice"]] + [("" if a["unknown"] else round(a["vol"][k], 1))
                                                        for k in labels]
            for (st, se), a in sorted(acc.items())]


def presence(maps: np.ndarray) -> np.ndarray:
    """(B, K, h, w) probability maps -> (B, K) highest pixel probability per label."""
    return maps.reshape(maps.shape[0], maps.shape[1], -1).max(-1)


def seg_path(out_dir: Path, rec: dict[str, Any]) -> Path:
    """``OUTPUT/seg/<study uid>/<sop uid>.dcm`` (invalid UIDs hashed; checked to stay inside OUTPUT)."""
    from medvit.io.safe_write import checked_path, path_component

    d = Path(out_dir) / "seg" / path_component(rec.get("study_instance_uid"), "unknown-study")
    return checked_path(out_dir, d / f"{path_component(rec.get('sop_instance_uid'), 'unknown-instance')}.dcm")


def source_masks(maps: np.ndarray, notes: dict[str, Any], geometry: str | None, thresholds: list[float],
                 seg_type: str) -> np.ndarray:
    """(K, h, w) model-input probabilities -> (K, Rows, Columns) on the source grid: bool (BINARY, at the
    per-label ``thresholds``) or float32 probabilities (FRACTIONAL). Pixels cropped away get 0."""
    src = np.stack([unmap_heatmap(m, notes, geometry) for m in maps])
    if seg_type == "BINARY":
        return src >= np.asarray(thresholds, dtype=np.float32)[:, None, None]
    return src.astype(np.float32)



def _check_source_uids(header: Any) -> None:
    """ValueError naming the tag when the source's Study / Series / SOP Instance UID is missing or not a UID
    (PS3.5 9.1): a SEG references its source by these UIDs (PS3.3 C.8.20), so none is written (as for the SR)."""
    from medvit.io.safe_write import is_valid_uid

    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        v = str(getattr(header, kw, "") or "")
        if not is_valid_uid(v):
            what = f"no {kw}" if not v else f"an invalid {kw} (not a UID per PS3.5 9.1)"
            raise ValueError(f"the source has {what}; a SEG references its source by it (PS3.3 C.8.20)")

def segmentation_outputs(run: RunOutputs, seg: Any, thresholds: list[float], batch: list[Decoded],
                         maps: np.ndarray, recs: list[dict[str, Any]]) -> None:
    """Write one SEG per image of ``batch`` and add areas to ``recs`` (in place). ``seg``: the model's
    :class:`~medvit.models.segmentation.SegmentationContract`; ``maps``: (B, K, h, w) probabilities.

    A SEG that cannot be written (e.g. a source without Study Instance UID) is logged and recorded in the
    record's ``seg_error``; the areas and probabilities stay valid.
    """
    from medvit.io.errors import printable_path, redact_values
    from medvit.io.seg import write_segmentation
    from medvit.io.spacing import pixel_spacing

    for d, m, rec in zip(batch, maps, recs, strict=True):
        masks = source_masks(m, d.notes, run.geometry, thresholds, seg.seg_type)
        binary = masks if masks.dtype == bool else masks >= np.asarray(thresholds, np.float32)[:, None, None]
        sp = pixel_spacing(d.header)
        counts = binary.reshape(binary.shape[0], -1).sum(1)
        rec["segment_pixels"] = {k: int(c) for k, c in zip(seg.names, counts, strict=True)}
        rec["segment_areas_mm2"] = {k: (round(float(c) * sp.pixel_area_mm2, 2) if sp else "")
                                    for k, c in zip(seg.names, counts, strict=True)}
        rec["spacing_source"] = sp.source if sp else ""
        rec["slice_mm"] = slice_spacing(d.header)
        rec["seg_dcm"] = ""
        try:
            src = run.source_header(d.rel)
            if run.deid is None:
                _check_source_uids(src)
            p = seg_path(run.out, rec)
            write_segmentation(p, src, masks, seg.labels, seg.seg_type, run.info.name,
                               run.info.version, run.info.sha256, run.info.research_only, root=run.out,
                               deidentifier=run.deid)
            rec["seg_dcm"] = str(p.relative_to(run.out))
        except Exception as e:  # a SEG must never cost the prediction
            rec["seg_error"] = f"{type(e).__name__}: {redact_values(str(e))}"
            logger.warning("%s: SEG not written (%s)", printable_path(d.rel), rec["seg_error"])
