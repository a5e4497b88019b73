"""Exports: the current view as PNG, the findings as JSON, and the batch job's DICOM SR for this study."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from apps.viewer.cache import mtime

SR_FOLDER = "sr"  # `medvit infer --sr` writes OUTPUT/sr/


@st.cache_data(max_entries=8, show_spinner=False)
def sr_files(results_dir: str, modified: float) -> dict[str, list[str]]:
    """StudyInstanceUID -> SR files under ``results_dir/sr``; ``modified`` (the folder's mtime) keys the cache,
    so SRs written by a batch run while the viewer is open show up on the next rerun."""
    from medvit.io import MedicalIOError, read_dicom_header

    out: dict[str, list[str]] = {}
    folder = Path(results_dir) / SR_FOLDER
    if not folder.is_dir():
        return out
    for p in sorted(folder.rglob("*.dcm")):
        try:
            ds = read_dicom_header(p)
        except (MedicalIOError, OSError):
            continue
        if str(ds.get("Modality", "")) == "SR" and ds.get("StudyInstanceUID"):
            out.setdefault(str(ds.StudyInstanceUID), []).append(str(p))
    return out


def findings_document(lm: Any, shown: Any, df: pd.DataFrame | None, window: str, heatmap: str = "") -> dict[str, Any]:
    """JSON-able findings of the shown image (UIDs and file name, no patient identifiers)."""
    return {
        "format": "medvit-viewer-findings/1",
        "research_use_only": bool(lm.info.research_only) if lm else True,
        "model": lm.info.to_dict() if lm else None,
        "image": {"file": Path(shown.path).name, "frame": shown.frame, "study_instance_uid": shown.study_key,
                  "series_instance_uid": shown.series_uid, "sop_instance_uid": shown.instance_uid},
        "display_window": window,
        "heatmap": heatmap or None,  # which finding (and method) the exported view's heatmap shows
        "findings": [] if df is None else [
            {"finding": r.Finding, "probability": round(float(r.Probability), 6), "threshold": float(r.Threshold),
             "positive": r.Result == "POSITIVE"} for r in df.itertuples()],
    }


def export(png: bytes, lm: Any, shown: Any, df: pd.DataFrame | None, window: str, results_dir: str,
           heatmap: str = "") -> None:
    """Download buttons for the view and the findings; the SR of this study when the batch job wrote one.

    ``png`` is the encoded view already on screen; SR bytes are read only when clicked (deferred download).
    """
    stem = Path(shown.path).stem + (f"_f{shown.frame}" if shown.frame else "")
    st.download_button("Download view (PNG)", png, file_name=f"{stem}_view.png",
                       mime="image/png", on_click="ignore", key="dl_view",
                       help="exactly what is on screen: window, zoom, heatmap and corner text")
    doc = findings_document(lm, shown, df, window, heatmap)
    st.download_button("Download findings (JSON)", json.dumps(doc, indent=2), file_name=f"{stem}_findings.json",
                       mime="application/json", key="dl_findings", disabled=df is None, on_click="ignore",
                       help="run the model first" if df is None else None)
    srs = sr_files(results_dir, mtime(Path(results_dir) / SR_FOLDER)).get(shown.study_key, [])
    if srs:
        for i, p in enumerate(srs):
            st.markdown(f"DICOM SR from the batch run: `{p}`")
            st.download_button("Download DICOM SR", Path(p).read_bytes, file_name=Path(p).name,
                               mime="application/dicom", key=f"dl_sr_{i}", on_click="ignore")
    else:
        st.caption(f"No DICOM SR for this study in {Path(results_dir) / SR_FOLDER} "
                   "(`medvit infer --sr` writes one per study).")
