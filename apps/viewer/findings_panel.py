"""Model picker, provenance banner, findings table, heatmap controls and the feedback form.

Prediction and heatmaps are medvit's (:mod:`medvit.infer`, :mod:`medvit.visualize`) behind the caches of
:mod:`apps.viewer.cache`; the operating thresholds and label names come from the model's weight contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from apps.viewer import cache, feedback

OTHER = "Other (checkpoint folder or weight tag)…"
METHOD_LABELS = {"gradcam": "Grad-CAM (per finding)", "rollout": "Attention rollout (class-agnostic)"}
VERDICT_LABELS = {"—": None, "Agree": "agree", "Disagree": "disagree"}


@dataclass
class Shown:
    """The image the findings refer to."""

    path: str  # file on the server
    frame: int | None  # frame / slice index passed to medvit.io (None = default)
    study_key: str  # StudyInstanceUID, or the file key for non-DICOM
    series_uid: str
    instance_uid: str  # SOPInstanceUID, or the file key for non-DICOM
    modality: str


def model_picker(default: str | None) -> str | None:
    """Sidebar widgets choosing the model reference (checkpoint folder or registered weight tag)."""
    tags = _local_tags()
    choices = ([default] if default else []) + [t for t in tags if t != default] + [OTHER]
    pick = st.sidebar.selectbox("Model", choices, key="model_choice",
                                help="default: the demo model (`medvit viewer --model` to change)")
    if pick == OTHER:
        ref = st.sidebar.text_input("Checkpoint folder or weight tag", key="model_other").strip()
        return ref or None
    return pick


def _local_tags() -> list[str]:
    """Registered weight tags with a classifier contract whose weights are on this machine."""
    from medvit.models.pretrained import resolve_weight_file
    from medvit.registry import REGISTRY

    out = []
    for tag in REGISTRY.names("weight"):
        try:
            if REGISTRY.get("weight", tag).contract.label_names:
                resolve_weight_file(tag)
                out.append(tag)
        except (FileNotFoundError, KeyError, AttributeError):
            continue
    return out


def load(ref: str | None) -> tuple[cache.LoadedModel | None, str | None]:
    """(loaded model, None) or (None, readable error)."""
    if not ref:
        return None, None
    try:
        return cache.load_model(ref), None
    except (ValueError, KeyError, FileNotFoundError, OSError) as e:
        return None, f"Model {ref!r} could not be loaded: {e}"


#: shown on every page, model or not (material icons ship with Streamlit: no dependence on an emoji font)
RESEARCH_BANNER = "**RESEARCH USE ONLY — NOT FOR DIAGNOSIS.**"


def banner(lm: cache.LoadedModel | None, error: str | None) -> None:
    """The research-use banner (always), then the model's name, version and checksum, or why there is none."""
    if lm is None or lm.info.research_only:
        st.error(RESEARCH_BANNER + ("" if lm is None else " " + _model_text(lm)), icon=":material/science:")
    else:
        st.caption(_model_text(lm))
    if error:
        st.error(error, icon=":material/warning:")
    elif lm is None:
        st.info("No model loaded: pick one in the sidebar (or start with `medvit viewer --model DIR`). "
                "Images can still be viewed.")


def _model_text(lm: cache.LoadedModel) -> str:
    i, p = lm.info, lm.predictor
    return (f"**Model** {i.name} · version {i.version} · {i.architecture} · sha256 `{i.sha256[:12]}…` · "
            f"runs in {p.precision} as `medvit infer` ({p.precision_reason})")


def _contract_warnings(lm: cache.LoadedModel, shown: Shown, image: Any) -> list[str]:
    c = lm.contract
    out = []
    if not c.modalities:
        out.append("the model's contract declares no modalities, views or body parts it was made for")
    if c.modalities and shown.modality and shown.modality.upper() not in {m.upper() for m in c.modalities}:
        out.append(f"the model was made for {', '.join(c.modalities)}; this image is {shown.modality}")
    vp = str(image.meta.get("ViewPosition", "") or "")
    if c.view_positions and vp and vp.upper() not in {v.upper() for v in c.view_positions}:
        out.append(f"the model expects view {', '.join(c.view_positions)}; this image is {vp}")
    return out


def findings_table(lm: cache.LoadedModel, probs: list[float]) -> pd.DataFrame:
    """Findings sorted by probability, with the contract's operating threshold and the positive flag."""
    c = lm.contract
    df = pd.DataFrame({"Finding": c.label_names, "Probability": probs, "Threshold": c.thresholds})
    df["Result"] = np.where(df["Probability"] >= df["Threshold"], "POSITIVE", "negative")
    return df.sort_values("Probability", ascending=False, kind="stable").reset_index(drop=True)


Heat = tuple[np.ndarray | None, float]  # (heatmap (h, w) in [0, 1] on the source grid, or None; opacity)


def findings(lm: cache.LoadedModel | None, shown: Shown, image: Any,
             auto_default: bool = False) -> tuple[pd.DataFrame | None, Heat]:
    """The findings tab body; returns ``(table, (heat, opacity))`` — table None until the model has run.
    ``auto_default``: start with "run automatically" on (the demo: findings on the first page)."""
    if lm is None:
        st.info("Load a model to see findings.")
        return None, (None, 0.0)
    from medvit.infer.decode import NON_IMAGE_MODALITIES

    if (shown.modality or "").upper() in NON_IMAGE_MODALITIES:
        st.info(f"{shown.modality} objects (segmentations, reports, presentation states, RT) are never scored.")
        return None, (None, 0.0)
    for w in _contract_warnings(lm, shown, image):
        st.warning(f"Out of scope: {w}. Findings may be meaningless.")
    image_key = f"{lm.info.sha256}|{shown.path}|{shown.frame}"
    ran = st.session_state.setdefault("runs", set())
    st.session_state.setdefault("auto_run", auto_default)
    auto = st.toggle("Run automatically on every image", key="auto_run")
    if st.button("Run model on this image", type="primary", key="run_model") or auto:
        ran.add(image_key)
    if image_key not in ran:
        st.caption("The model has not been run on this image yet.")
        return None, (None, 0.0)
    try:
        res = cache.predict(lm.ref, lm.info.sha256, shown.path, cache.mtime(shown.path), shown.frame)
    except (ValueError, IndexError, RuntimeError) as e:
        st.error(f"The model could not run on this image: {e}")
        return None, (None, 0.0)
    ood = res.get("ood")
    if ood and ood["flag"]:
        st.warning(f"**Out of distribution**: this image is unlike the model's training data (OOD score "
                   f"{ood['score']:.1f} ≥ threshold {ood['threshold']:.1f}). The findings below are unreliable.",
                   icon=":material/block:")
    elif ood:
        st.caption(f"In distribution: OOD score {ood['score']:.1f} < threshold {ood['threshold']:.1f} "
                   f"(flags about {100 * lm.contract.ood.get('target_fpr', 0):.0f} % of validation images)")
    else:
        st.caption("The model carries no out-of-distribution reference: unusual images are not flagged.")
    df = findings_table(lm, res["probabilities"])
    st.dataframe(df, hide_index=True, width="stretch", key="findings_table", column_config={
        "Probability": st.column_config.ProgressColumn("Probability", format="%.3f", min_value=0.0, max_value=1.0),
        "Threshold": st.column_config.NumberColumn("Threshold", format="%.3f",
                                                   help="operating threshold from the model's contract"),
    })
    n_pos = int((df["Result"] == "POSITIVE").sum())
    st.caption(f"{n_pos} positive at the model's operating thresholds · preprocessing: "
               f"{res['notes'].get('intensity', '')} · model precision: {res.get('precision', '')}")
    if lm.contract.segmentation is not None:  # masks instead of heatmaps (seg_panel.from_model draws them)
        st.caption("Segmentation model: probability = highest pixel probability of each label; its masks are "
                   "drawn on the image (computed here; `medvit infer` writes them as DICOM SEG).")
        return df, (None, 0.0)
    return df, heatmap_controls(lm, shown, df)


def heat_label(on: bool) -> str:
    """``"heatmap: <finding> (<method>)"`` for the heatmap on screen (from the widgets' state),
    ``"kept-token map (EViT)"`` for that overlay, else ``""``."""
    if not on:
        return ""
    if st.session_state.get("evit_keep"):
        return "kept-token map (EViT)"
    target = st.session_state.get("heat_target", "")
    method = st.session_state.get("heat_method", "")
    return f"heatmap: {target} ({METHOD_LABELS.get(method, method).split(' (')[0]})"


def heatmap_controls(lm: cache.LoadedModel, shown: Shown, df: pd.DataFrame) -> Heat:
    """Heatmap finding / method / opacity widgets; returns (heat (h, w) in [0, 1] or None, opacity)."""
    from medvit.visualize.attribution import METHODS

    st.markdown("**Heatmap**")
    c1, c2 = st.columns([3, 2])
    target = c1.selectbox("Heatmap for", ["Off", *df["Finding"]], key="heat_target")
    method = c2.radio("Method", list(METHODS), format_func=lambda m: METHOD_LABELS.get(m, m), key="heat_method")
    opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="heat_opacity")
    if hasattr(lm.model, "keep_stage_map") and st.toggle(
            "Kept-token map (EViT)", key="evit_keep",
            help="which patches the model kept at each token-reorganisation stage (replaces the heatmap)"):
        return keep_map_view(lm, shown), opacity
    if target == "Off":
        return None, opacity
    idx = lm.contract.label_names.index(target)
    try:
        heat = cache.heatmap(lm.ref, lm.info.sha256, shown.path, cache.mtime(shown.path), shown.frame, idx, method)
    except (ValueError, RuntimeError) as e:
        st.error(f"Heatmap failed: {e}")
        return None, opacity
    st.caption("Heatmaps are approximate attributions for research use, not evidence of a finding.")
    return heat, opacity


def keep_map_view(lm: cache.LoadedModel, shown: Shown) -> np.ndarray | None:
    """The EViT kept-token overlay ((h, w) in [0, 1]: stages survived / stages) and its caption, or None on error."""
    try:
        heat, alive = cache.keep_map(lm.ref, lm.info.sha256, shown.path, cache.mtime(shown.path), shown.frame)
    except (ValueError, RuntimeError) as e:
        st.error(f"Kept-token map failed: {e}")
        return None
    total = int(np.prod(lm.model.patch_embed.grid_size)) if not alive else None
    stages = " → ".join(str(a) for a in alive) or f"{total} (no reorganising block)"
    st.caption(f"Kept-token map (keep rate r = {lm.model.keep_rate:g}): brightest patches stayed tokens through all "
               f"{len(alive)} reorganisation stages; each darker step was fused one stage earlier. "
               f"Patches kept after each stage: {stages}.")
    return heat


def feedback_form(lm: cache.LoadedModel, shown: Shown, df: pd.DataFrame, results_dir: str) -> None:
    """Agree / disagree and a comment per finding, saved to ``results_dir/feedback/<study>.json``.

    Widget keys are ``fb_verdict_<finding>`` / ``fb_comment_<finding>``; they are cleared when the image changes.
    """
    with st.form("feedback_form", enter_to_submit=False):  # no "Press Enter to submit form" over the comment
        st.markdown("**Your assessment**")
        reader = st.text_input("Reader (initials, optional)", key="fb_reader")
        rows = []
        for _, r in df.iterrows():
            c1, c2 = st.columns([3, 2])  # room for the three verdicts on one line
            verdict = c1.radio(f"{r['Finding']} ({r['Probability']:.2f}, {r['Result']})", list(VERDICT_LABELS),
                               horizontal=True, key=f"fb_verdict_{r['Finding']}")
            comment = c2.text_input("Comment", key=f"fb_comment_{r['Finding']}", label_visibility="collapsed",
                                    placeholder=f"comment on {r['Finding']}")
            rows.append({"finding": r["Finding"], "probability": round(float(r["Probability"]), 6),
                         "threshold": float(r["Threshold"]), "positive": r["Result"] == "POSITIVE",
                         "verdict": VERDICT_LABELS[verdict], "comment": comment})
        submitted = st.form_submit_button("Save feedback")
    if submitted:
        entry = {"reader": reader, "series": shown.series_uid, "instance": shown.instance_uid,
                 "frame": shown.frame, "model": {"name": lm.info.name, "version": lm.info.version,
                                                 "sha256": lm.info.sha256, "precision": lm.predictor.precision},
                 "findings": rows}
        try:
            path = feedback.save(results_dir, shown.study_key, entry)
        except (OSError, ValueError, KeyError) as e:
            st.error(f"Feedback not saved: {e}")
        else:
            st.success(f"Feedback saved to {path}")
