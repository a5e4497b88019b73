"""Measurements on the image on screen: distance (mm), angle, rectangle / ellipse ROI statistics in modality units.

Geometry, statistics and spacing are medvit's (:mod:`medvit.io.measure`, :mod:`medvit.io.spacing`, with the
PS3.3 C.8.11.7 caveat for Imager Pixel Spacing); points are typed in image pixel coordinates (x = column,
y = row, the numbers the cursor position and the corner text use). Measurements are kept per image in the
session, saved with the reader's feedback, and exported as a TID 1500 measurement SR.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

KINDS = {"distance": "Distance", "angle": "Angle", "rectangle": "Rectangle ROI", "ellipse": "Ellipse ROI"}


@st.cache_data(max_entries=64, show_spinner=False)
def _spacing(path: str, modified: float):
    from medvit.io import read_dicom_header
    from medvit.io.spacing import pixel_spacing

    try:
        return pixel_spacing(read_dicom_header(path))
    except Exception:  # not DICOM (PNG / NIfTI): pixels only
        return None


def _points(kind: str, w: int, h: int) -> list[tuple[float, float]]:
    defaults = {"distance": [(w * 0.25, h * 0.5), (w * 0.75, h * 0.5)],
                "angle": [(w * 0.25, h * 0.25), (w * 0.5, h * 0.5), (w * 0.75, h * 0.25)],
                "rectangle": [(w * 0.4, h * 0.4), (w * 0.6, h * 0.6)], "ellipse": [(w * 0.4, h * 0.4),
                                                                              (w * 0.6, h * 0.6)]}[kind]
    names = {"distance": ["start", "end"], "angle": ["arm 1", "vertex", "arm 2"],
             "rectangle": ["corner", "opposite corner"], "ellipse": ["box corner", "opposite corner"]}[kind]
    pts = []
    for (x0, y0), name in zip(defaults, names, strict=True):
        c1, c2 = st.columns(2)
        x = c1.number_input(f"{name} x", 0.0, float(w), float(round(x0)), 1.0, key=f"ms_{kind}_{name}_x")
        y = c2.number_input(f"{name} y", 0.0, float(h), float(round(y0)), 1.0, key=f"ms_{kind}_{name}_y")
        pts.append((float(x), float(y)))
    return pts


def controls(image: Any, shown: Any, results_dir: str) -> list[tuple[str, list[tuple[float, float]]]]:
    """Measurement widgets; returns the shapes to draw on the image (kind, points)."""
    from medvit.io.measure import angle_deg, distance_mm, distance_px, roi_stats

    h, w = image.pixels.shape[:2]
    sp = _spacing(shown.path, Path(shown.path).stat().st_mtime) if Path(shown.path).is_file() else None
    kind = st.radio("Tool", list(KINDS), format_func=KINDS.__getitem__, horizontal=True, key="ms_kind")
    pts = _points(kind, w, h)
    values: dict[str, float | None] = {}
    unit = ""
    try:
        if kind == "distance":
            mm, px = distance_mm(pts[0], pts[1], sp), distance_px(pts[0], pts[1])
            values = {"length_mm": mm, "length_px": px}
            st.markdown(f"**Distance: {mm:.2f} mm**" if mm is not None else f"**Distance: {px:.1f} px** (no spacing)")
        elif kind == "angle":
            a = angle_deg(pts[0], pts[1], pts[2], sp)
            values = {"angle_deg": a}
            st.markdown(f"**Angle: {a:.1f}°**")
        else:
            if image.is_color:
                st.warning("ROI statistics need a grey image")
                return [(kind, pts)]
            r = roi_stats(image.pixels, kind, (*pts[0], *pts[1]), sp, image.modality, image.padding_mask)
            unit = r.unit
            values = {"mean": r.mean, "sd": r.sd, "min": r.min, "max": r.max, "area_mm2": r.area_mm2}
            u = f" {unit}" if unit else ""
            st.markdown(f"**{KINDS[kind]}: mean {r.mean:.1f}{u}, SD {r.sd:.1f}, min {r.min:.1f}, max {r.max:.1f}**"
                        f" · {r.n} px" + (f" · {r.area_mm2:.1f} mm²" if r.area_mm2 is not None else ""))
    except ValueError as e:
        st.error(str(e))
        return [(kind, pts)]
    if sp is None:
        st.caption("No pixel spacing in this file: values in pixels.")
    else:
        st.caption(f"Spacing {sp.row_mm:g} × {sp.col_mm:g} mm from {sp.source} ({sp.at})"
                   + (f" — {sp.caveat}" if sp.caveat else ""))
    key = f"ms_list|{shown.instance_uid}|{shown.frame}"
    saved: list[dict[str, Any]] = st.session_state.setdefault(key, [])
    comment = st.text_input("Comment", key="ms_comment")
    c1, c2, c3 = st.columns(3)
    if c1.button("Keep measurement", key="ms_keep"):
        saved.append({"kind": kind, "points": pts, "values": values, "unit": unit,
                      "spacing_source": sp.source if sp else "", "comment": comment})
    if saved:
        st.dataframe([{"#": i + 1, "tool": m["kind"], **{k: (round(v, 2) if isinstance(v, float) else v)
                                                           for k, v in m["values"].items()}}
                      for i, m in enumerate(saved)], hide_index=True)
    if c2.button("Save with feedback", key="ms_save", disabled=not saved):
        _save(results_dir, shown, saved)
    if c3.button("Export SR", key="ms_sr", disabled=not saved):
        _export(results_dir, shown, saved)
    return [(m["kind"], m["points"]) for m in saved] + [(kind, pts)]


def _save(results_dir: str, shown: Any, saved: list[dict[str, Any]]) -> None:
    from apps.viewer import feedback

    entry = {"reader": st.session_state.get("fb_reader", ""), "series": shown.series_uid,
             "instance": shown.instance_uid, "frame": shown.frame,
             "model": {"name": "reader measurements", "version": "", "sha256": "measurements"}, "findings": [],
             "measurements": saved}
    try:
        path = feedback.save(results_dir, shown.study_key, entry)
    except (OSError, ValueError, KeyError) as e:
        st.error(f"Measurements not saved: {e}")
    else:
        st.success(f"Measurements saved to {path}")


def _export(results_dir: str, shown: Any, saved: list[dict[str, Any]]) -> None:
    from medvit.io import read_dicom_header
    from medvit.io.measurement_sr import ReaderMeasurement, write_measurement_sr
    from medvit.io.safe_write import path_component

    try:
        ms = [ReaderMeasurement(m["kind"], m["points"], m["values"], m["unit"], m["spacing_source"], m["comment"])
              for m in saved]
        out = Path(results_dir) / "measurements" / path_component(shown.study_key, "study") / \
            f"{path_component(shown.instance_uid, 'instance')}.dcm"
        Path(results_dir).mkdir(parents=True, exist_ok=True)
        p = write_measurement_sr(out, read_dicom_header(shown.path), ms, st.session_state.get("fb_reader", ""),
                                 root=results_dir)
    except Exception as e:  # not DICOM, no study UID, unwritable folder: say why
        st.error(f"SR not written: {type(e).__name__}: {e}")
    else:
        st.success(f"Measurement SR written to {p}")
        st.download_button("Download SR", p.read_bytes(), file_name=p.name, mime="application/dicom",
                           key="ms_sr_download")
