"""Sidebar: choose the source (server folder, uploads or a DICOMweb server), then a study and a series."""

from __future__ import annotations

import os

import streamlit as st

from apps.viewer import access, cache, shortcuts, sources
from apps.viewer.config import ViewerConfig

FOLDER = "Folder on this server"
UPLOAD = "Upload files"
PACS = "DICOMweb (PACS)"
UPLOAD_TYPES = None  # DICOM files often have no suffix: accept anything and report what is not an image


@st.cache_data(ttl=600, max_entries=8, show_spinner="Indexing studies…")
def scan(folder: str) -> sources.Catalog:
    """Catalog of ``folder`` (headers only), cached for ten minutes or until *Rescan folder*."""
    return sources.catalog(folder)


def _uploads() -> sources.Catalog | None:
    files = st.sidebar.file_uploader("DICOM, NIfTI, PNG/JPEG files or a ZIP", accept_multiple_files=True,
                                     type=UPLOAD_TYPES, key="uploads")
    if not files:
        return None
    state = st.session_state
    if "upload_dir" not in state:  # removed when the session ends (its state is dropped) or the server exits
        state["upload_dir"] = access.UploadDir()
    folder = str(state["upload_dir"])
    done: dict[str, list[tuple[str, str]]] = state.setdefault("uploaded", {})
    new = [f for f in files if f.file_id not in done]
    for f in new:  # each upload is written once; its problems are remembered for display
        done[f.file_id] = sources.save_uploads([(f.name, f.getvalue())], folder)
    cat = sources.catalog(folder, ignore_results=False)
    cat.skipped += [p for f in files for p in done.get(f.file_id, [])]
    return cat


def _pacs() -> sources.Catalog | None:
    """DICOMweb: query studies (QIDO-RS), open one (WADO-RS into a session cache), catalog it like a folder."""
    from pathlib import Path

    from apps.viewer import pacs_source
    from medvit.pacs import PacsError

    state = st.session_state
    configured = os.environ.get(pacs_source.ENV_DICOMWEB, "")
    if not configured:
        st.sidebar.info("Start the viewer with `--dicomweb dicomweb://HOST:PORT/PATH` to browse a PACS.")
        return None
    address = st.sidebar.text_input("DICOMweb server", value=configured,
                                    key="pacs_address", placeholder="dicomweb://localhost:8042/dicom-web?Modality=DX",
                                    help="the server given with --dicomweb; QIDO-RS query keys after '?': Modality, "
                                    "StudyDate, AccessionNumber, PatientID")
    try:
        address = pacs_source.allowed_address(address.strip(), configured)
    except (ValueError, PermissionError) as e:
        st.sidebar.error(str(e))
        return None
    if st.sidebar.button("Search", key="pacs_search") or state.get("pacs_query") != address:
        try:
            state["pacs_studies"] = pacs_source.query_studies(address)
            state["pacs_query"] = address
        except (ValueError, PermissionError, PacsError) as e:
            st.sidebar.error(str(e))
            return None
    refs = state.get("pacs_studies") or []
    if not refs:
        st.sidebar.info("No study matches this query.")
        return None
    labels = [f"{r.study_date} · {'/'.join(r.modalities)} · {r.accession_number or r.study_instance_uid[-12:]}"
              for r in refs]
    i = st.sidebar.selectbox(f"Studies on the server ({len(refs)})", range(len(refs)),
                             format_func=labels.__getitem__, key="pacs_idx")
    ref = refs[min(i or 0, len(refs) - 1)]
    if "pacs_cache" not in state:  # like uploads: removed when the session ends or the server exits
        state["pacs_cache"] = access.UploadDir()
    fetched: dict[str, list[str]] = state.setdefault("pacs_fetched", {})
    if ref.study_instance_uid not in fetched:
        with st.spinner("Retrieving the study (WADO-RS)…"):
            try:
                _, problems = pacs_source.fetch_study(address, ref.study_instance_uid,
                                                      str(state["pacs_cache"]))
            except (ValueError, PacsError) as e:
                st.sidebar.error(str(e))
                return None
        fetched[ref.study_instance_uid] = problems
    study_dir = Path(str(state["pacs_cache"])) / ref.study_instance_uid
    state["pacs_study_dir"] = str(study_dir)
    cat = sources.catalog(study_dir, ignore_results=False)
    cat.skipped += [("(retrieve)", p) for p in fetched[ref.study_instance_uid]]
    return cat


def pacs_findings(instance_uid: str) -> None:
    """Findings medvit stored in the PACS (its SR in this study) for the image on screen, when there are any."""
    from apps.viewer import pacs_source

    study_dir = st.session_state.get("pacs_study_dir")
    if not study_dir:
        return
    found = pacs_source.medvit_findings(study_dir).get(instance_uid)
    if not found:
        st.caption("No medvit SR in the PACS for this image.")
        return
    st.markdown("**Stored in the PACS by medvit** (DICOM SR)")
    rows = sorted(found, key=lambda g: -g.get("probability", 0.0))
    st.dataframe([{"finding": g.get("label", ""), "probability": round(g.get("probability", 0.0), 4),
                   "present": "yes" if g.get("present") else "no"} for g in rows], hide_index=True)


def open_source(cfg: ViewerConfig) -> sources.Catalog | None:
    """Source widgets; returns the catalog to browse (None when nothing is open)."""
    st.sidebar.subheader("Open")
    src = st.sidebar.radio("Source", [FOLDER, UPLOAD, PACS], horizontal=True, key="source",
                           label_visibility="collapsed")
    if src != PACS:
        st.session_state.pop("pacs_study_dir", None)
    if src == UPLOAD:
        cat = _uploads()
    elif src == PACS:
        cat = _pacs()
    else:
        folder = st.sidebar.text_input("Folder", value=str(cfg.data_dir or ""), key="folder",
                                       help="a folder on the machine running the viewer; searched recursively")
        if st.sidebar.button("Rescan folder", key="rescan"):
            scan.clear()
        if not folder.strip():
            return None
        from apps.viewer.config import PHANTOMS

        try:
            allowed = access.check_folder(folder.strip(), access.allowed_roots(
                [cfg.data_dir, cfg.results_dir, PHANTOMS], os.environ))
            cat = scan(str(allowed))
        except (FileNotFoundError, PermissionError, ValueError) as e:  # ValueError: a link loop / NUL byte, named
            st.sidebar.error(str(e))
            return None
    if cat is not None and cat.skipped:
        msg = f"{len(cat.skipped)} file(s) are not images the viewer can open"
        with st.sidebar.expander(msg, expanded=src == UPLOAD):
            for rel, reason in cat.skipped[:200]:
                st.markdown(f"- `{rel}`: {reason}")
    return cat


def browse(cat: sources.Catalog, reveal: bool, order: list[str] | None = None) -> sources.Series | None:
    """Study picker and a thumbnail grid of its series; returns the open series.

    ``order``: study keys in worklist order; those studies come first, in that order (the others follow).
    """
    if not cat.studies:
        st.sidebar.info("No images found here.")
        return None
    studies = cat.studies
    if order:
        rank = {k: i for i, k in enumerate(order)}
        studies = sorted(studies, key=lambda s: rank.get(s.key, len(rank)))
    st.sidebar.subheader(f"Studies ({len(studies)})" + (" · worklist order" if order else ""))
    labels = [s.label(reveal) for s in studies]
    i = st.sidebar.selectbox("Study", range(len(labels)), format_func=labels.__getitem__, key="study_idx",
                             label_visibility="collapsed")
    study = studies[min(i or 0, len(studies) - 1)]
    state = st.session_state
    if cat.find_series(state.get("series_key", "")) not in study.series:
        state["series_key"] = study.series[0].key
    shortcuts.remember(series_order=[s.key for s in study.series])
    for j, s in enumerate(study.series):  # one series per row: the button gets the sidebar's width for its label
        with st.sidebar:
            mid = s.files[len(s.files) // 2]
            thumb = cache.thumbnail(mid, cache.mtime(mid))
            if thumb is None:
                st.caption("unreadable thumbnail")
            else:
                st.image(thumb, width=120)
            chosen = s.key == state["series_key"]
            if st.button(s.label, key=f"open_series_{j}", type="primary" if chosen else "secondary",
                         width="stretch", help=s.label):
                state["series_key"] = s.key
                st.rerun()
    return cat.find_series(state["series_key"])
