"""Composition of the on-screen view from an already rendered 8-bit image (no Streamlit, no DICOM here).

The pixels come from :func:`medvit.io.render` (VOI LUT, MONOCHROME1, presets); this module only does what a
screen needs: the zoom box, an efficient downsample to the display size, the heatmap blend and the four-corner
text overlay. Shapes: ``display`` (H, W) or (H, W, 3) uint8; ``heat`` (h, w) float in [0, 1] covering the same
field of view as ``display`` (any resolution); the result is (h', w') uint8 for a grey view without heatmap, else
(h', w', 3), with max(h', w') == ``max_side``. Grey views stay single-channel: a third of the bytes to encode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Box = tuple[int, int, int, int]  # top, left, bottom, right in source pixels
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def zoom_box(h: int, w: int, zoom: float = 1.0, cx: float = 0.5, cy: float = 0.5) -> Box:
    """Box of a ``zoom``-times magnified view centred at fractions (``cx``, ``cy``), kept inside the image."""
    if zoom < 1.0:
        raise ValueError(f"zoom must be >= 1, got {zoom}")
    bh, bw = max(1, round(h / zoom)), max(1, round(w / zoom))
    top = int(np.clip(round(cy * h - bh / 2), 0, h - bh))
    left = int(np.clip(round(cx * w - bw / 2), 0, w - bw))
    return top, left, top + bh, left + bw


def fit(h: int, w: int, max_side: int, max_h: int | None = None) -> tuple[int, int]:
    """(h', w') with the aspect ratio kept, max(h', w') <= max_side and h' <= max_h, touching one limit."""
    s = min(max_side / max(h, w), (max_h or max_side) / h)
    return max(1, round(h * s)), max(1, round(w * s))


def compose(display: np.ndarray, box: Box | None = None, max_side: int = 1024, heat: np.ndarray | None = None,
            opacity: float = 0.4, max_h: int | None = None) -> np.ndarray:
    """Crop ``display`` to ``box``, resize to fit ``max_side`` (and ``max_h``), blend ``heat`` with ``opacity``.

    Downsampling uses PIL's reducing resize (a box pre-reduction then bilinear), which keeps a 2,048² DX well under
    0.1 s; magnification (zoom past 1:1) uses bilinear interpolation. The blend is
    :func:`medvit.visualize.overlay.overlay` (the same colours as ``medvit infer --heatmaps``) on the grey view; colour
    images are shown in grey under a map.
    """
    from PIL import Image

    if display.dtype != np.uint8 or display.ndim not in (2, 3):
        raise ValueError(f"display must be (H, W) or (H, W, 3) uint8, got {display.dtype} {display.shape}")
    h, w = display.shape[:2]
    top, left, bottom, right = box or (0, 0, h, w)
    im = Image.fromarray(np.ascontiguousarray(display[top:bottom, left:right]))
    out_h, out_w = fit(bottom - top, right - left, max_side, max_h)
    im = im.resize((out_w, out_h), Image.BILINEAR, reducing_gap=2.0)
    if heat is None or opacity <= 0:
        return np.asarray(im)
    hh, hw = heat.shape
    sy, sx = hh / h, hw / w  # heat may be at another resolution than display
    crop = np.asarray(heat, dtype=np.float32)[int(top * sy):max(int(top * sy) + 1, int(bottom * sy)),
                                              int(left * sx):max(int(left * sx) + 1, int(right * sx))]
    from medvit.data.preprocess import resize_array
    from medvit.visualize.overlay import overlay

    hm = resize_array(np.clip(crop, 0, 1).astype(np.float32), (out_h, out_w))
    return overlay(np.asarray(im.convert("L")), hm, float(np.clip(opacity, 0, 1)))


def overlay_font_path() -> Path:
    """The bundled overlay font (:func:`medvit.visualize.overlay.font_path`, DejaVu Sans from matplotlib)."""
    from medvit.visualize.overlay import font_path

    return font_path()


def draw_corners(rgb: np.ndarray, corners: dict[str, list[str]], size: int | None = None) -> np.ndarray:
    """Write text lines in the four corners (keys of :data:`CORNERS`), white on a dark outline, OHIF style.

    ``rgb`` is (h, w) grey or (h, w, 3) uint8; the result has the same shape.
    """
    from PIL import Image, ImageDraw, ImageFont

    unknown = set(corners) - set(CORNERS)
    if unknown:
        raise KeyError(f"unknown overlay corners {sorted(unknown)}; use {CORNERS}")
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    h, w = rgb.shape[:2]
    font = ImageFont.truetype(str(overlay_font_path()), size=size or max(11, min(h, w) // 48))
    pad = 6
    fill, stroke = ((235, 235, 235), (0, 0, 0)) if rgb.ndim == 3 else (235, 0)
    for corner, lines in corners.items():
        text = "\n".join(x for x in lines if x)
        if not text:
            continue
        left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, stroke_width=2)
        x = pad if corner.endswith("left") else w - (right - left) - pad
        y = pad if corner.startswith("top") else h - (bottom - top) - pad
        draw.multiline_text((x, y), text, font=font, fill=fill, stroke_width=2, stroke_fill=stroke,
                            align="left" if corner.endswith("left") else "right")
    return np.asarray(im)


def to_png(rgb: np.ndarray) -> bytes:
    """Lossless PNG bytes of an (H, W, 3) / (H, W) uint8 array, for the screen and for downloads.

    zlib level 1: on a noisy 1,024² radiograph it encodes ~4x faster than the default level 6 for a file about
    10 % larger, which is what keeps a view change well under the 2 s budget.
    """
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
