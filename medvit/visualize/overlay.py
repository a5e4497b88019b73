"""Heatmap colours: a (h, w) map in [0, 1] coloured with matplotlib's ``jet`` and blended over a grey image.

Used by ``medvit infer --heatmaps`` (PNG and DICOM secondary captures) and the viewer, so both show the same colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def colormap(heat: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) uint8 through matplotlib's ``jet`` (blue → cyan → yellow → red)."""
    import matplotlib

    v = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    return matplotlib.colormaps["jet"](v, bytes=True)[..., :3]


def overlay(grey: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a (h, w) grey image (uint8, or float in [0, 1]) with a (h, w) heatmap in [0, 1] -> (h, w, 3) uint8.

    The heat colour's weight grows with the heat value (``alpha * heat``), so cold areas show the image.
    """
    g = np.asarray(grey)
    g = g.astype(np.float32) / 255.0 if g.dtype == np.uint8 else np.clip(g.astype(np.float32), 0.0, 1.0)
    if g.shape != heat.shape:
        raise ValueError(f"overlay: image {g.shape} and heatmap {heat.shape} differ in shape")
    w = (alpha * np.clip(heat, 0.0, 1.0))[..., None]
    rgb = (1.0 - w) * g[..., None] + w * (colormap(heat).astype(np.float32) / 255.0)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def font_path() -> Path:
    """DejaVu Sans as shipped inside matplotlib (Bitstream Vera licence): the same glyphs on every machine
    ("×", "·", "…", "–", accented Latin, Greek, Cyrillic); Pillow's default font lacks some of them."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def caption(rgb: np.ndarray, text: str) -> np.ndarray:
    """``rgb`` (h, w, 3) uint8 with ``text`` burned in at the top left, white on a dark outline (same shape)."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(np.ascontiguousarray(rgb))
    h, w = rgb.shape[:2]
    font = ImageFont.truetype(str(font_path()), size=max(10, min(h, w) // 40))
    ImageDraw.Draw(im).text((4, 4), text, font=font, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(im)
