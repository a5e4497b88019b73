"""The worklist: studies of the batch results (`medvit infer` tables), ordered and filtered for reading.

Rows, order and flags come from :mod:`medvit.infer.worklist` reading ``<results>/predictions.jsonl`` (no model
runs here); reading status from read marks and saved feedback. The study picker in the sidebar follows the
worklist order.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGE = 25
ALL = "All"
SORTS = {"finding": "Finding probability (≥ threshold first)", "top": "Most probable positive finding",
         "date": "Study date (newest first)", "ood": "Out-of-distribution first"}


@st.cache_data(max_entries=8, show_spinner="Reading the worklist…")
def _load(results_dir: str, modified: float) -> list:
    from medvit.infer.worklist import load_worklist

    return load_worklist(results_dir)


def worklist(results_dir: str | Path) -> list[str] | None:
    """Show the worklist (when ``results_dir`` holds infer results); returns the study keys in worklist order."""
    from medvit.infer.worklist import STATUSES, reading_status, select, with_status

    path = Path(results_dir) / "predictions.jsonl"
    if not path.is_file():
        return None
    try:
        rows = _load(str(results_dir), path.stat().st_mtime)
    except (OSError, ValueError) as e:
        st.warning(f"Worklist unavailable: {e}")
        return None
    rows = with_status([r for r in rows], reading_status(results_dir))
    findings = sorted({k for r in rows for k in r.probabilities})
    modalities = sorted({m for r in rows for m in r.modalities})
    with st.expander(f"Worklist · {len(rows)} studies from the batch results", expanded=True):
        c1, c2, c3, c4, c5, c6 = st.columns([3, 2, 2, 2, 2, 3])
        finding = c1.selectbox("Triage by finding", findings, key="wl_finding") if findings else None
        thr_text = c2.text_input("Threshold", key="wl_threshold", placeholder="model's",
                                 help="probability threshold for 'finding first' (empty: the model's operating "
                                      "threshold)")
        modality = c3.selectbox("Modality", [ALL, *modalities], key="wl_modality")
        status = c4.selectbox("Status", [ALL, *STATUSES], key="wl_status")
        since = c5.date_input("Since", value=None, key="wl_since", help="studies on or after this date")
        sort = c6.selectbox("Order", list(SORTS), format_func=SORTS.__getitem__, key="wl_sort")
        try:
            threshold = float(thr_text) if thr_text.strip() else None
        except ValueError:
            st.error(f"Threshold {thr_text!r} is not a number")
            threshold = None
        try:
            chosen = select(rows, finding, threshold, None if modality == ALL else modality,
                            date_from=since.strftime("%Y%m%d") if since else "",
                            status=None if status == ALL else status, sort=sort if finding or sort != "finding"
                            else "date")
        except ValueError as e:
            st.error(str(e))
            return None
        pages = max(1, -(-len(chosen) // PAGE))
        page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="wl_page") if pages > 1 else 1
        start = (int(page) - 1) * PAGE
        table = []
        for i, r in enumerate(chosen[start:start + PAGE], start + 1):
            row = {"#": i, **r.to_row()}
            if finding:
                row = {"#": i, finding: f"{r.probabilities.get(finding, 0.0):.3f}", **r.to_row()}
            table.append(row)
        if table:
            st.table(table)
        else:
            st.caption("No study matches these filters.")
    return [r.study_uid for r in chosen]


def mark_read_button(results_dir: str | Path, study_key: str) -> None:
    """A button recording that the open study was read (worklist status ``read``)."""
    from medvit.infer.worklist import mark_read

    if st.button("Mark study as read", key="wl_mark_read", help="sets the worklist status to 'read'"):
        try:
            mark_read(results_dir, study_key, st.session_state.get("fb_reader", ""))
        except OSError as e:
            st.error(f"Not saved: {e}")
        else:
            st.toast("Marked as read")
            st.rerun()  # the worklist above was drawn before the click: show the new status
