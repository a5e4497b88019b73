"""Per-image heatmap outputs of a run: a PNG overlay at source resolution and a DICOM Secondary Capture of it."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medvit.infer.context import RunOutputs
from medvit.infer.decode import Decoded
from medvit.infer.preprocess import unmap_heatmap
from medvit.io.safe_write import atomic_write

logger = logging.getLogger(__name__)


def heatmap_paths(out_dir: Path, rec: dict[str, Any]) -> tuple[Path, Path]:
    """(png, dcm) paths for a record: ``heatmaps/<study uid>/<sop uid>.png|.dcm`` (de-identified UIDs if so).

    The UIDs come from file headers: a value that is not a valid UID is hashed
    (:func:`medvit.io.safe_write.path_component`) and the result is checked to stay inside ``out_dir``.
    """
    from medvit.io.safe_write import checked_path, path_component

    d = Path(out_dir) / "heatmaps" / path_component(rec.get("study_instance_uid"), "unknown-study")
    sop = path_component(rec.get("sop_instance_uid"), "unknown-instance")
    return checked_path(out_dir, d / f"{sop}.png"), checked_path(out_dir, d / f"{sop}.dcm")


def write_heatmap_outputs(run: RunOutputs, d: Decoded, heat: np.ndarray, rec: dict[str, Any]) -> str:
    """Write the PNG overlay and the Secondary Capture for one image; returns the PNG path relative to OUTPUT.

    ``heat``: (H, W) in [0, 1] on the model input; mapped back through the recorded pad/crop + resize.
    """
    from PIL import Image

    from medvit.io.secondary_capture import write_overlay_sc
    from medvit.visualize.overlay import caption, overlay

    if d.unit is None:
        raise ValueError(f"{d.rel}: no display image kept for the overlay")
    src_heat = unmap_heatmap(heat, display_notes(d.notes, d.unit.shape[:2], run.geometry), run.geometry)
    target = rec["heatmap_target"]
    p, thr = rec["probabilities"][target], rec["thresholds"][target]
    label = (f"{run.heatmap_method} heatmap: {target} p={p:.2f} "
             + ("POSITIVE" if p >= thr else f"negative (< {thr:.2f}; no positive finding)")
             + (" · research use only" if run.info.research_only else ""))
    rgb = caption(overlay(d.unit.astype(np.float32), src_heat), label)
    from medvit.io.safe_write import make_dirs

    png, dcm = heatmap_paths(run.out, rec)
    make_dirs(run.out, png.parent)
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()  # provenance and intended use travel inside the PNG (tEXt chunks)
    info.add_text("Software", f"medvit infer; model {run.info.name} {run.info.version} sha256 {run.info.sha256}")
    info.add_text("Description", label.replace(" · research use only", "")
                  + ("; research use only - not for diagnosis" if run.info.research_only else ""))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", pnginfo=info)
    atomic_write(png, buf.getvalue(), run.out)
    note = f"{run.heatmap_method} heatmap for {target} (p={p:.3f}, " + \
        ("positive" if p >= thr else f"negative: below the threshold {thr:.3f}; no finding was positive") + ")"
    try:
        write_overlay_sc(dcm, run.source_header(d.rel), rgb, run.info.name, run.info.sha256, note,
                         run.info.research_only, deidentified=run.deid is not None, root=run.out,
                         deidentifier=run.deid)
    except Exception as e:  # the PNG stands; the record says why there is no Secondary Capture
        from medvit.io.errors import printable_path, redact_values

        rec["heatmap_sc_error"] = f"{type(e).__name__}: {redact_values(str(e))}"
        logger.info("%s: heatmap Secondary Capture not written (%s)", printable_path(d.rel), rec["heatmap_sc_error"])
    return png.relative_to(run.out).as_posix()


def display_notes(notes: dict[str, Any], display_size: tuple[int, int], geometry: str | None) -> dict[str, Any]:
    """Preprocessing ``notes`` rescaled from the source size to ``display_size`` (the worker shrank the display
    image; see :func:`medvit.infer.decode.shrink_display`), so the heatmap is mapped straight onto it and never
    materialised at source resolution."""
    h, w = notes["source_size"]
    dh, dw = display_size
    if (h, w) == (dh, dw):
        return notes
    fy, fx = dh / h, dw / w
    if "box" in notes:
        top, lft, bot, rgt = notes["box"]
    else:
        t, b, lft0, r = notes[geometry or "pad"]
        top, lft, bot, rgt = -t, -lft0, h + b, w + r
    out = dict(notes)
    out["source_size"] = [dh, dw]
    out["box"] = [top * fy, lft * fx, bot * fy, rgt * fx]
    return out
