"""Display controls (window preset / manual centre-width, invert, zoom, pan, slice) and the image itself.

Windowing is medvit.io's: :func:`medvit.io.render` with a preset name from :data:`medvit.io.display.PRESETS`
(or ``"file"``, ``"file:N"``, ``"full"``, ``"minmax"``) or an explicit (centre, width); the window actually used
(for the overlay text) comes from :func:`medvit.io.display.select_voi`. Session-state keys start with ``disp_``
and are reset when another image series is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from apps.viewer import shortcuts, view

MANUAL = "Manual centre / width"



@dataclass
class DisplayState:
    """What the user chose; ``window`` wins over ``preset`` (both None = the file's first VOI window)."""

    preset: str | None  # medvit.io preset name
    window: tuple[float, float] | None  # manual (centre, width)
    invert: bool
    zoom: float
    pan: tuple[float, float]  # (x, y) centre of the zoom box as fractions of width / height
    label: str  # the option shown to the user


def preset_options(image: Any) -> dict[str, str | None]:
    """Label -> medvit.io preset name: the file's windows, then the presets that suit the image
    (:func:`medvit.io.display.presets_for`: full, minmax, and the CT presets only on CT), manual. Labels start
    with the preset's name as ``medvit dicom render --preset`` spells it."""
    from medvit.io.display import PRESETS, SPECIAL_PRESET_TEXT, presets_for

    opts: dict[str, str | None] = {}
    if image.windows or image.voi_luts:
        for i, w in enumerate(image.windows, 1):
            opts[f"File window {i}" + (f": {w.explanation}" if w.explanation else "") +
                 f" (C {w.center:g} / W {w.width:g})"] = f"file:{i}"
        for i, lut in enumerate(image.voi_luts, 1):
            opts[f"File VOI LUT {i}" + (f": {lut.explanation}" if lut.explanation else "")] = f"lut:{i}"
    else:
        opts["Default (min–max, no window in file)"] = None
    for name in presets_for(image):
        if name in PRESETS:
            c, w = PRESETS[name]
            opts[f"{name} (CT, C {c:g} / W {w:g} HU)"] = name
        else:
            opts[f"{name} ({SPECIAL_PRESET_TEXT[name]})"] = name
    opts[MANUAL] = "manual"
    return opts


def controls(image: Any) -> DisplayState:
    """Window / invert / zoom widgets for a 2D ``image`` (a MedicalImage); returns the choices."""
    from medvit.io.display import select_voi

    opts = preset_options(image)
    labels = list(opts)
    shortcuts.remember(preset_labels=opts)
    if st.session_state.get("disp_preset") not in (None, *labels):  # e.g. a file window of another image
        del st.session_state["disp_preset"]
    c1, c2, c3 = st.columns([3, 1, 2])
    label = c1.selectbox("Window", labels, key="disp_preset", help="File VOI window by default; CT presets in HU")
    preset = opts[label]
    window = None
    if preset == "manual":
        base = select_voi(image, None, None)
        c0, w0 = (base.center, base.width) if hasattr(base, "center") else _minmax_cw(image)
        m1, m2 = st.columns(2)
        centre = m1.number_input("Centre", value=float(round(c0, 1)), step=max(1.0, round(w0 / 50, 0)),
                                 key="disp_center")
        width = m2.number_input("Width", value=float(round(max(w0, 1.0), 1)), min_value=1.0,
                                step=max(1.0, round(w0 / 50, 0)), key="disp_width")
        window, preset = (float(centre), float(width)), None
    invert = c2.checkbox("Invert", key="disp_invert", help="swap black and white (after the VOI window)")
    st.session_state.setdefault("disp_zoom", 1.0)
    zoom = c3.select_slider("Zoom", options=[1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0], key="disp_zoom",
                            format_func=lambda z: f"{z:g}×")
    pan = (0.5, 0.5)
    if zoom > 1.0:
        p1, p2 = st.columns(2)
        pan = (p1.slider("Pan ←→", 0.0, 1.0, 0.5, 0.01, key="disp_pan_x"),
               p2.slider("Pan ↑↓", 0.0, 1.0, 0.5, 0.01, key="disp_pan_y"))
    return DisplayState(preset, window, bool(invert), float(zoom), pan, label)


def _minmax_cw(image: Any) -> tuple[float, float]:
    lo, hi = float(np.min(image.pixels)), float(np.max(image.pixels))
    return (lo + hi) / 2.0, max(hi - lo, 1.0)


def window_text(image: Any, state: DisplayState) -> str:
    """The window in use, for the overlay (e.g. ``W 1500 L -600 (lung)``)."""
    from medvit.io.display import select_voi

    if image.is_color:
        return "colour"
    voi = select_voi(image, state.window, state.preset)
    if hasattr(voi, "center"):
        name = voi.explanation or ("file" if state.preset is None and state.window is None else "")
        return f"W {voi.width:g} L {voi.center:g}" + (f" ({name})" if name else "")
    return f"VOI LUT{f' ({voi.explanation})' if voi.explanation else ''}"


#: the view fits this box (CSS pixels): wide enough for the main column, short enough to stay above the fold
VIEW_MAX_W, VIEW_MAX_H = 1024, 680


def render_view(image: Any, state: DisplayState, heat: np.ndarray | None, opacity: float,
                corners: dict[str, list[str]], max_side: int = VIEW_MAX_W, max_h: int = VIEW_MAX_H,
                seg: Any = None, shapes: list | tuple = ()) -> np.ndarray:
    """On-screen view, (h, w) or (h, w, 3) uint8: medvit.io.render → invert → segmentation labels (``seg``: a
    :class:`apps.viewer.seg_panel.SegOverlay`) → measurement graphics (``shapes``) → zoom box → downsample →
    heatmap → corner text."""
    from medvit.io import render
    from medvit.visualize.annotate import blend_labels, draw_measurements

    disp = render(image, window=state.window, preset=state.preset)
    if state.invert:
        disp = 255 - disp
    if seg is not None:
        disp = blend_labels(disp, seg.masks, seg.colors, seg.opacity, seg.visible)
    if shapes:
        disp = draw_measurements(disp, shapes)
    h, w = disp.shape[:2]
    box = view.zoom_box(h, w, state.zoom, *state.pan)
    rgb = view.compose(disp, box, max_side=max_side, heat=heat, opacity=opacity, max_h=max_h)
    return view.draw_corners(rgb, corners)
