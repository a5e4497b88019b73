"""Priors: the same patient's earlier studies of the same modality, shown beside the current image with the same
window, zoom and pan (one display state drives both views, so they stay synchronised)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from apps.viewer.sources import Catalog, Series, Study

NONE = "No prior"


def priors_of(cat: Catalog, series: Series) -> list[tuple[Study, Series]]:
    """(study, series) of the patient's earlier studies with a series of the same modality, newest first."""
    current = next((s for s in cat.studies if series in s.series), None)
    if current is None or not current.patient_id:
        return []
    out = []
    for s in cat.studies:
        if s is current or s.patient_id != current.patient_id or not s.date or not current.date \
                or s.date >= current.date:
            continue
        same = [x for x in s.series if x.modality == series.modality]
        if same:
            out.append((s, same[0]))
    return sorted(out, key=lambda p: p[0].date, reverse=True)


def pick(cat: Catalog, series: Series) -> Series | None:
    """A selectbox of the priors (none selected by default); returns the chosen prior series."""
    priors = priors_of(cat, series)
    if not priors:
        return None
    labels = [NONE] + [f"Prior {st_.date[:4]}-{st_.date[4:6]}-{st_.date[6:]} · {se.label}" for st_, se in priors]
    i = st.selectbox("Compare with prior (same patient, same modality)", range(len(labels)),
                     format_func=labels.__getitem__, key="prior_idx")
    return None if not i else priors[i - 1][1]


def prior_image(series: Series, frame_fraction: float) -> Any:
    """The prior's image at the same relative position in its series (files, then frames/slices)."""
    from apps.viewer import cache

    files = series.files
    path = files[min(len(files) - 1, int(frame_fraction * len(files)))]
    full = cache.read_image(path, cache.mtime(path))
    n = int(full.pixels.shape[2]) if full.axes.startswith("XYZ") else int(full.n_frames)
    frame = min(n - 1, int(frame_fraction * n)) if n > 1 else None
    return cache.image_2d(path, frame), path
