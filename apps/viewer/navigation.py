"""Opening the selected series: image / frame / slice sliders, readable errors, and the corner overlay text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from apps.viewer import cache, shortcuts
from apps.viewer.findings_panel import Shown
from apps.viewer.redact import shown as redacted
from apps.viewer.sources import Series


@dataclass
class Opened:
    """The 2D image on screen and where it comes from."""

    image: Any  # 2D medvit.io.MedicalImage (frame / slice already selected)
    shown: Shown
    series: Series
    file_index: int  # position of the file in the series (0-based)
    frame_index: int  # frame or slice within the file (0-based)
    n_frames: int  # frames / slices in the file


def _n_frames(image: Any) -> int:
    if image.axes.startswith("XYZ"):
        return int(image.pixels.shape[2])
    return int(image.n_frames)


def first_readable(files: list[str], limit: int = 64) -> tuple[int, dict[int, str]]:
    """(index of the first file whose pixels read, {index: reason} of the unreadable ones before it); looks at
    most at ``limit`` files (then index 0: the slider and its error take over)."""
    from medvit.io import MedicalIOError

    broken: dict[int, str] = {}
    for i, path in enumerate(files[:limit]):
        try:
            cache.read_image(path, cache.mtime(path))
            return i, broken
        except (MedicalIOError, FileNotFoundError) as e:
            broken[i] = str(getattr(e, "reason", e))
    return 0, broken


def open_image(series: Series) -> Opened | None:
    """Sliders for file and frame, then the 2D image; a readable error (and None) when it cannot be shown."""
    from medvit.io import MedicalIOError

    state = st.session_state
    if state.get("open_series") != series.key:  # a new series: its own window (kept per series), first image
        keep_series_display(state.get("open_series"), series.key)
        for k in ("nav_file", "nav_frame"):
            state.pop(k, None)
        state["open_series"] = series.key
        first, broken = first_readable(series.files)
        state["broken_files"] = broken
        if first > 0:
            state["nav_file"] = first + 1  # open on the first image that can be shown
    broken = state.get("broken_files") or {}
    if broken:
        st.warning("Cannot be shown: " + "; ".join(f"image {i + 1} ({Path(series.files[i]).name}): {why}"
                                                  for i, why in sorted(broken.items())), icon=":material/warning:")
    if series.duplicates:
        st.warning(f"{series.duplicates} file(s) of this series repeat another file's SOP Instance UID "
                   "(copies or a damaged export): check which one is right.")
    idx = 0
    if len(series.files) > 1:  # defaults go through session state, which the shortcut buttons also set
        state.setdefault("nav_file", 1)
        idx = st.slider("Image", 1, len(series.files), key="nav_file") - 1
    path = series.files[idx]
    name = Path(path).name
    try:
        full = cache.read_image(path, cache.mtime(path))
    except (MedicalIOError, FileNotFoundError) as e:
        st.error(f"Cannot show **{name}**: {getattr(e, 'reason', e)}")
        st.caption("The file is listed but its pixels cannot be read; other images keep working.")
        return None
    n = _n_frames(full)
    shortcuts.remember(n_files=len(series.files), n_frames=n)
    frame: int | None = None
    if n > 1:
        kind = "Slice" if full.axes.startswith("XYZ") else "Frame"
        state.setdefault("nav_frame", n // 2 + 1 if kind == "Slice" else 1)
        frame = st.slider(kind, 1, n, key="nav_frame") - 1
    try:
        image = cache.image_2d(path, frame)
    except (MedicalIOError, IndexError, ValueError) as e:
        st.error(f"Cannot show {name}, frame {frame}: {getattr(e, 'reason', e)}")
        return None
    image_key = f"{path}|{frame}"
    if state.get("open_image") != image_key:  # a new image starts with an empty feedback form
        for k in [k for k in state if str(k).startswith("fb_verdict_") or str(k).startswith("fb_comment_")]:
            del state[k]
        state["open_image"] = image_key
    uids = image.uids
    shown = Shown(path=path, frame=frame, study_key=uids.get("StudyInstanceUID") or series.study_key,
                  series_uid=uids.get("SeriesInstanceUID") or series.key,
                  instance_uid=uids.get("SOPInstanceUID") or path, modality=image.modality or series.modality)
    return Opened(image, shown, series, idx, 0 if frame is None else frame, n)


def keep_series_display(old: str | None, new: str) -> None:
    """Remember the display choices (window, invert, zoom, pan: the ``disp_*`` state) of series ``old`` and restore
    those of ``new`` when it was open before (else the file window): the window is kept per series."""
    state = st.session_state
    saved: dict[str, dict[str, Any]] = state.setdefault("series_display", {})
    if old:
        saved[old] = {k: state[k] for k in list(state) if str(k).startswith("disp_")}
    shortcuts.reset_display()
    for k, v in saved.get(new, {}).items():
        state[k] = v


def _date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def corners(o: Opened, window: str, zoom: float, reveal: bool, heat: str = "") -> dict[str, list[str]]:
    """Four-corner overlay text (OHIF layout): patient/study, series/modality, window/zoom and the heatmap's
    finding (``heat``, e.g. ``"heatmap: Pleural effusion (Grad-CAM)"``), image/frame."""
    m = o.image.meta
    patient = redacted("PatientName", str(m.get("PatientName", "")), reveal)
    pid = redacted("PatientID", str(m.get("PatientID", "")), reveal)
    h, w = o.image.pixels.shape[:2]
    n_files = len(o.series.files)
    return {
        "top_left": [f"{patient}" + (f"  ID {pid}" if pid else ""), _date(str(m.get("StudyDate", ""))),
                     str(m.get("StudyDescription", ""))],
        "top_right": [" ".join(x for x in (o.image.modality, str(m.get("ViewPosition", "")),
                                           str(m.get("BodyPartExamined", ""))) if x),
                      str(m.get("SeriesDescription", "") or Path(o.shown.path).name)],
        "bottom_left": [window, f"Zoom {zoom:g}×", heat],
        "bottom_right": [f"Im {o.file_index + 1}/{n_files}" if n_files > 1 else "",
                         f"Frame {o.frame_index + 1}/{o.n_frames}" if o.n_frames > 1 else "", f"{w}×{h}"],
    }
