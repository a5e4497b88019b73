"""The chat tab: ask a vision-language model (``medvit viewer --vlm DIR``, a ``vila_m3`` checkpoint) about the
open image. Expert calls are shown as such (name, args, result text, overlay image); an expert's caution (its
out-of-distribution flag) is shown as a warning after the answer, whatever the model said. Only the image's pixels and
the typed question go to the model: no DICOM header text, no patient identifiers. Research use only.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

CHAT_BANNER = ("**RESEARCH USE ONLY — NOT FOR DIAGNOSIS.** The model sees only this image's pixels and your "
               "question; do not type patient identifiers.")


@st.cache_resource(show_spinner="Loading the vision-language model…")
def _chat(vlm_dir: str) -> Any:
    from medvit.vlm.chat import load_chat

    return load_chat(vlm_dir, max_new_tokens=96)


def load(vlm_dir: str | None) -> tuple[Any, str | None]:
    """(VLMChat, None) or (None, readable error)."""
    if not vlm_dir:
        return None, None
    try:
        return _chat(vlm_dir), None
    except (ValueError, KeyError, FileNotFoundError, OSError) as e:
        return None, f"Vision-language model {vlm_dir!r} could not be loaded: {e}"


def _show(turn: dict[str, Any]) -> None:
    role = turn["role"]
    if role == "user":
        with st.chat_message("user"):
            st.text(turn["text"])
    elif role == "assistant":
        with st.chat_message("assistant", avatar=":material/smart_toy:"):
            st.text(turn["text"])
    elif role == "expert":
        with st.chat_message("assistant", avatar=":material/biotech:"):
            st.caption(f"Expert call: {turn['expert']}({turn['args'] or ''})")
            st.text(turn["text"])
            if turn.get("overlay") is not None:
                st.image(turn["overlay"], caption=f"{turn['expert']} overlay", width=256)
    elif role == "caution":  # an expert's caution (OOD flag), after the answer whatever the model said
        st.warning(turn["text"], icon=":material/warning:")
    else:
        with st.chat_message("assistant", avatar=":material/block:"):
            st.caption("Expert call refused")
            st.text(turn["text"])


def panel(vlm_dir: str | None, image: Any, image_key: str) -> None:
    """The chat for the open 2D image (``medvit.io.MedicalImage``); the conversation is kept per ``image_key``."""
    st.error(CHAT_BANNER, icon=":material/science:")
    chat, error = load(vlm_dir)
    if error:
        st.error(error, icon=":material/warning:")
        return
    if chat is None:
        st.info("No vision-language model: start the viewer with `medvit viewer --vlm DIR` (a checkpoint written "
                "by `medvit run pipelines/vila_m3/tiny_cpu.yaml`).")
        return
    names = ", ".join(e.name for e in chat.experts) or "none"
    st.caption(f"Experts the model may call: {names}")
    history: list[dict[str, Any]] = st.session_state.setdefault("vlm_chat", {}).setdefault(image_key, [])
    for turn in history:
        _show(turn)
    with st.form("vlm_chat_form", clear_on_submit=True):
        question = st.text_input("Question about this image", key="vlm_question")
        asked = st.form_submit_button("Ask")
    if asked and question.strip():
        with st.spinner("The model is answering…"):
            resp = chat.respond([image], question.strip())
        history.extend({"role": t.role, "text": t.text, "expert": t.expert, "args": t.args, "overlay": t.overlay}
                       for t in resp.turns)
        history.extend({"role": "caution", "text": c} for c in resp.cautions)
        st.rerun()
