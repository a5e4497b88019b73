"""A toolbar with OHIF's keyboard shortcuts: ↑/↓ previous/next image, Home/End first/last, PageUp/PageDown
previous/next series, I invert, Space reset, 1–5 window presets (file, lung, mediastinum, bone, brain).

Each button has a Streamlit keyboard ``shortcut``; its callback edits the session state of the widgets it drives
(sliders, the invert box, the preset box, the open series) before the next run. Limits come from the previous
run: :func:`remember` is called by the widgets' owners.
"""

from __future__ import annotations

import streamlit as st

#: preset shortcut digit -> medvit.io preset names, the first one the image offers wins ("file" = the file's
#: first window / LUT / min-max; CT presets exist only for CT, so 2 and 3 give full / minmax on radiographs)
PRESET_KEYS = {"1": ("file",), "2": ("lung", "full"), "3": ("mediastinum", "minmax"), "4": ("bone",),
               "5": ("brain",)}


def remember(**values: object) -> None:
    """Store what the callbacks need (``n_files``, ``n_frames``, ``series_order``, ``preset_labels``)."""
    st.session_state.setdefault("sc", {}).update(values)


def _get(name: str, default: object) -> object:
    return st.session_state.get("sc", {}).get(name, default)


def _step(delta: int | None, to: str | None = None) -> None:
    """Move through frames when the file has several, else through the series' files."""
    key, n = ("nav_frame", int(_get("n_frames", 1))) if int(_get("n_frames", 1)) > 1 else \
        ("nav_file", int(_get("n_files", 1)))
    if n <= 1:
        return
    cur = int(st.session_state.get(key, 1))
    new = 1 if to == "first" else n if to == "last" else cur + int(delta or 0)
    st.session_state[key] = min(max(new, 1), n)


def _series(delta: int) -> None:
    order = list(_get("series_order", []))  # type: ignore[arg-type]
    cur = st.session_state.get("series_key")
    if cur in order:
        st.session_state["series_key"] = order[(order.index(cur) + delta) % len(order)]


def _invert() -> None:
    st.session_state["disp_invert"] = not st.session_state.get("disp_invert", False)


def reset_display() -> None:
    """Forget display choices (the ``disp_*`` widgets' state): the reset key, and when another series opens."""
    for k in [k for k in st.session_state if str(k).startswith("disp_")]:
        del st.session_state[k]


def _preset(*names: str) -> None:
    labels: dict[str, str | None] = _get("preset_labels", {})  # type: ignore[assignment]
    if names[0] == "file":
        label = next(iter(labels), None)  # the first option is the file's own window (or the default)
    else:
        label = next((lab for name in names for lab, p in labels.items() if p == name), None)
    if label is not None:
        st.session_state["disp_preset"] = label


def toolbar() -> None:
    """Compact buttons in a collapsed expander; their shortcuts work anywhere on the page."""
    spec = [("previous image", "Up", "previous image / frame", _step, (-1,)),
            ("next image", "Down", "next image / frame", _step, (1,)),
            ("first", "Home", "first image / frame", _step, (None, "first")),
            ("last", "End", "last image / frame", _step, (None, "last")),
            ("previous series", "PageUp", "previous series in the study", _series, (-1,)),
            ("next series", "PageDown", "next series in the study", _series, (1,)),
            ("invert", "I", "invert black and white", _invert, ()),
            ("reset view", "Space", "reset window, invert and zoom", reset_display, ())]
    spec += [(f"{' / '.join(names)} window", k, f"window: {' or '.join(names)} (the first this image offers)",
              _preset, names) for k, names in PRESET_KEYS.items()]
    with st.expander("⌨ Keyboard shortcuts (OHIF keys)", expanded=False):
        per_row = 4
        for r in range(0, len(spec), per_row):
            cols = st.columns(per_row, gap="xxsmall")
            for col, (label, key, hint, fn, args) in zip(cols, spec[r:r + per_row], strict=False):
                col.button(label, key=f"sc_{key}", help=f"{hint} (key: {key})", on_click=fn, args=args,
                           type="tertiary", shortcut=key, width="stretch")
