"""medvit clinician viewer — the Streamlit entry script (``medvit viewer`` runs ``streamlit run`` on this file).

Layout: sidebar = source, studies and series thumbnails, model, identifier reveal; main = provenance banner,
image with display controls and corner overlays (left), findings / DICOM tags / export / chat (vision-language
model) tabs (right).
"""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="medvit viewer", page_icon=":material/radiology:", layout="wide")

import os  # noqa: E402

from apps.viewer import (  # noqa: E402  (set_page_config must come first)
    access,  # noqa: E402
    cache,
    chat_panel,
    display_panel,
    export_panel,
    findings_panel,
    measure_panel,
    navigation,
    priors_panel,
    seg_panel,
    shortcuts,
    study_browser,
    tags_panel,
    view,
    worklist_panel,
)
from apps.viewer.config import PHANTOMS, from_env  # noqa: E402

_refused = access.refusal(dict(st.context.headers or {}), st.query_params.get("token"), os.environ)
if _refused:  # wrong Host header (DNS rebinding) or no token: nothing is read or shown
    st.error(_refused)
    st.stop()


@st.cache_resource
def _startup_cleanup() -> int:
    """Once per server process: remove upload folders left by viewer processes that died."""
    return len(access.remove_stale_uploads())


_startup_cleanup()
cfg = from_env()
if cfg.data_dir is None:  # neither --data nor `make demo` studies: show generated phantoms
    try:
        cfg = cfg.with_data(cache.phantom_studies(str(PHANTOMS)), "phantoms")
    except (OSError, ValueError) as e:
        st.sidebar.warning(f"Could not generate phantom studies in {PHANTOMS}: {e}")
st.sidebar.title("medvit viewer")
reveal = st.sidebar.toggle("Reveal patient identifiers", key="reveal",
                           help="names, IDs, birth date and other identifiers are hidden by default")
catalog = study_browser.open_source(cfg)
order = worklist_panel.worklist(cfg.results_dir) if catalog is not None else None
series = study_browser.browse(catalog, reveal, order) if catalog is not None else None
st.sidebar.subheader("Model")
lm, model_error = findings_panel.load(findings_panel.model_picker(cfg.model))
findings_panel.banner(lm, model_error)

if series is None:
    st.info("Open a folder, upload DICOM / NIfTI / PNG files (or a ZIP), or query a DICOMweb server in the sidebar.")
    st.stop()

left, right = st.columns([3, 2], gap="medium")
with left:
    opened = navigation.open_image(series)
if opened is None:
    st.stop()
with left:
    state = display_panel.controls(opened.image)
    shortcuts.toolbar()
    prior = priors_panel.pick(catalog, opened.series) if catalog is not None else None
with right:
    tab_findings, tab_seg, tab_measure, tab_tags, tab_export, tab_chat = st.tabs(
        ["Findings", "Segmentation", "Measure", "DICOM tags", "Export", "Chat"])
    with tab_seg:
        seg = seg_panel.controls(opened.shown.instance_uid, opened.image.pixels.shape[:2],
                                 [cfg.results_dir, cfg.data_dir, st.session_state.get("pacs_study_dir")])
    with tab_measure:
        shapes = measure_panel.controls(opened.image, opened.shown, str(cfg.results_dir))
    with tab_findings:
        study_browser.pacs_findings(opened.shown.instance_uid)
        table, (heat, opacity) = findings_panel.findings(lm, opened.shown, opened.image,
                                                         auto_default=cfg.data_source == "demo")
        if table is not None and lm is not None:
            findings_panel.feedback_form(lm, opened.shown, table, str(cfg.results_dir))
    if seg is None and table is not None and lm is not None and lm.contract.segmentation is not None:
        seg = seg_panel.from_model(lm, opened.shown)  # a segmentation model's masks, computed on open
    with tab_tags:
        tags_panel.tags(opened.shown.path, reveal)
    with tab_chat:
        chat_panel.panel(cfg.vlm, opened.image, f"{opened.shown.path}#{opened.shown.frame}")
with left:
    window = display_panel.window_text(opened.image, state)
    heat_label = findings_panel.heat_label(heat is not None)  # which finding the heatmap shows, in the export
    corners = navigation.corners(opened, window, state.zoom, reveal, heat=heat_label)
    seg_label = ("segmentation: " + ", ".join(n for n, v in zip(seg.labels, seg.visible, strict=True) if v)
                 if seg is not None else "")
    half = display_panel.VIEW_MAX_W // 2 if prior is not None else display_panel.VIEW_MAX_W
    shown_view = display_panel.render_view(opened.image, state, heat, opacity, corners, max_side=half,
                                           seg=seg, shapes=shapes)
    png = view.to_png(shown_view)
    position = " ".join(x for x in corners["bottom_right"][:2] if x)  # "Im 3/12", "Frame 2/5"
    alt = f"{opened.shown.modality or 'image'} view, {window}" + "".join(
        f", {x}" for x in (heat_label, seg_label, position) if x)
    # our lossless PNG is served as it is (its width is the element width; the browser shrinks it if needed)
    cur_col, prior_col = st.columns(2) if prior is not None else (st.container(), None)
    cur_col.image(png, width=int(shown_view.shape[1]), output_format="PNG", alt=alt)
    if prior is not None and prior_col is not None:
        frac = (opened.frame_index / max(opened.n_frames, 1)) if opened.n_frames > 1 else \
            opened.file_index / max(len(opened.series.files), 1)
        try:
            p_img, p_path = priors_panel.prior_image(prior, frac)
            p_corners = {"top_left": [f"PRIOR {p_img.meta.get('StudyDate', '')}"], "bottom_left": [
                display_panel.window_text(p_img, state), f"Zoom {state.zoom:g}×"]}
            p_view = display_panel.render_view(p_img, state, None, 0.0, p_corners, max_side=half)
            prior_col.image(view.to_png(p_view), width=int(p_view.shape[1]), output_format="PNG",
                            alt=f"prior {p_img.modality or 'image'} view, {display_panel.window_text(p_img, state)}")
        except Exception as e:  # an unreadable prior must not cost the current image
            prior_col.error(f"Cannot show the prior: {getattr(e, 'reason', e)}")
    st.caption(" · ".join(x for x in (window, f"zoom {state.zoom:g}×", "inverted" if state.invert else "",
                                      heat_label, seg_label, corners["bottom_right"][-1]) if x),
               help="window in use, zoom, and the image size in pixels")
    if order is not None:
        worklist_panel.mark_read_button(cfg.results_dir, opened.shown.study_key)
with tab_export:
    export_panel.export(png, lm, opened.shown, table, window, str(cfg.results_dir), heat_label)
