"""DICOM SEG overlays: segmentations (from `medvit infer` or from the PACS / the study folder) that reference the
image on screen, with a colour, an opacity and a toggle per label. Reading is medvit's (:mod:`medvit.io.seg`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st


@dataclass
class SegOverlay:
    masks: np.ndarray  # (K, H, W) float32 in [0, 1]
    colors: list[tuple[int, int, int]]
    visible: list[bool]
    opacity: float
    labels: list[str]


@st.cache_data(ttl=600, max_entries=4, show_spinner="Looking for segmentations…")
def _index(folders: tuple[str, ...]) -> dict[str, list[str]]:
    from medvit.io.seg import segmentation_index

    return segmentation_index(*folders)


@st.cache_data(max_entries=32, show_spinner="Reading the segmentation…")
def _read(path: str, modified: float):
    from medvit.io.seg import read_segmentation

    return read_segmentation(path)


def controls(instance_uid: str, shape: tuple[int, int], folders: list[str | Path | None]) -> SegOverlay | None:
    """Widgets for the SEGs referencing ``instance_uid``; the overlay to draw (None: none / all hidden)."""
    roots = tuple(sorted({str(Path(f)) for f in folders if f and Path(f).is_dir()}))
    if st.button("Rescan segmentations", key="seg_rescan"):
        _index.clear()
    paths = _index(roots).get(instance_uid, [])
    if not paths:
        st.caption("No DICOM SEG references this image.")
        return None
    names = [Path(p).name for p in paths]
    i = st.selectbox("Segmentation", range(len(paths)), format_func=names.__getitem__, key="seg_pick") \
        if len(paths) > 1 else 0
    try:
        seg = _read(paths[i], Path(paths[i]).stat().st_mtime)
    except (OSError, ValueError) as e:
        st.error(str(e))
        return None
    masks = seg.masks.get(instance_uid)
    if masks is None or masks.shape[1:] != tuple(shape):
        st.warning(f"{names[i]}: its frames do not match this image ({None if masks is None else masks.shape[1:]} "
                   f"vs {tuple(shape)})")
        return None
    show = st.toggle("Show segmentation", value=True, key="seg_show")
    opacity = st.slider("Opacity", 0.0, 1.0, 0.4, 0.05, key="seg_opacity")
    visible = []
    for k, s in enumerate(seg.segments):
        hexc = "#{:02x}{:02x}{:02x}".format(*s.color)
        area = int((masks[k] > 0.5).sum())
        visible.append(st.checkbox(f"{s.label} ({s.type_meaning}) · {area} px", value=True, key=f"seg_lab_{k}",
                                   help=f"display colour {hexc}"))
    # colour swatches only (the labels come from files and are shown as plain text by the checkboxes)
    st.markdown(" ".join("<span style='color:#{:02x}{:02x}{:02x}'>■</span>".format(*s.color)
                         for s in seg.segments),
                unsafe_allow_html=True)
    st.caption(f"{seg.seg_type} segmentation, {len(seg.segments)} labels · {names[i]}")
    if not show or not any(visible):
        return None
    return SegOverlay(masks, [s.color for s in seg.segments], visible, float(opacity), [s.label for s in seg.segments])


def from_model(lm, shown) -> SegOverlay | None:
    """The masks a segmentation model computed on open for ``shown`` (after *Run model*), as an overlay with the
    contract's colours (opacity from the Segmentation tab's slider); None when it has not run."""
    from apps.viewer import cache

    seg = lm.contract.segmentation_contract()
    try:
        res = cache.predict(lm.ref, lm.info.sha256, shown.path, cache.mtime(shown.path), shown.frame)
    except (ValueError, IndexError, RuntimeError):
        return None
    masks = res.get("masks")
    if seg is None or masks is None:
        return None
    thr = np.asarray(lm.contract.thresholds, np.float32)[:, None, None]
    return SegOverlay((masks >= thr).astype(np.float32), [lab.color for lab in seg.labels], [True] * len(seg.labels),
                      float(st.session_state.get("seg_opacity", 0.4)), seg.names)
