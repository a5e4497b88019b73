"""The DICOM tag panel: every header element, with patient identifiers hidden unless revealed (see redact)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.viewer.redact import tag_rows


def tags(path: str, reveal: bool) -> None:
    """Tag table of ``path`` (header only, via :func:`medvit.io.read_dicom_header`), filterable by text."""
    from medvit.io import MedicalIOError, read_dicom_header

    try:
        ds = read_dicom_header(path)
    except MedicalIOError:
        st.info("Not a DICOM file: no tags to show.")
        return
    rows = tag_rows(ds, reveal)
    query = st.text_input("Filter tags", key="tag_filter", placeholder="keyword, tag or value").strip().lower()
    df = pd.DataFrame(rows, columns=["Tag", "Keyword", "VR", "Value"])
    if query:
        df = df[df.apply(lambda r: any(query in str(v).lower() for v in r.values), axis=1)]
    if not reveal:
        st.caption("Patient identifiers are hidden (PS3.15 basic profile; dates, UIDs and descriptions shown). "
                   "Tick *Reveal patient identifiers* in the sidebar to show them.")
    st.dataframe(df, hide_index=True, width="stretch", height=420, key="tag_table", column_config={
        "Tag": st.column_config.TextColumn("Tag", width="small"),
        "Keyword": st.column_config.TextColumn("Keyword", width="medium"),
        "VR": st.column_config.TextColumn("VR", width=40),
        "Value": st.column_config.TextColumn("Value", width="large", help="long values: widen the column or "
                                             "hover the cell to read them in full"),
    })
