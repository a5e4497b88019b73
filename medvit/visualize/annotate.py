"""Drawing reading results on a display image: segmentation labels (per-label colour, opacity, visibility) and
measurement graphics (lines, angle arms, rectangles, ellipses) at the stored pixel grid, before zoom/resize."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_rgb(display: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> (H, W, 3) uint8 (grey repeated)."""
    if display.ndim == 2:
        return np.repeat(display[..., None], 3, axis=2)
    return display


def blend_labels(display: np.ndarray, masks: np.ndarray, colors: Sequence[tuple[int, int, int]],
                 opacity: float = 0.4, visible: Sequence[bool] | None = None, outline: bool = True) -> np.ndarray:
    """Blend label masks onto ``display`` (H, W[, 3]) uint8; returns (H, W, 3) uint8.

    ``masks`` (K, H, W): bool or fractional [0, 1] (the blend weight is ``opacity`` x value); labels later in
    the list are drawn over earlier ones. ``outline`` draws each label's border at full colour so thin or
    overlapping structures stay visible. Raises ValueError when shapes disagree.
    """
    rgb = to_rgb(display).astype(np.float32)
    if masks.ndim != 3 or masks.shape[1:] != rgb.shape[:2] or len(colors) != masks.shape[0]:
        raise ValueError(f"masks {masks.shape} / {len(colors)} colours do not fit the image {rgb.shape[:2]}")
    show = [True] * masks.shape[0] if visible is None else list(visible)
    for k, (m, c) in enumerate(zip(masks, colors, strict=True)):
        if not show[k]:
            continue
        a = np.clip(m.astype(np.float32), 0, 1)[..., None] * float(opacity)
        rgb = rgb * (1 - a) + np.asarray(c, np.float32) * a
        if outline:
            b = m > 0.5
            edge = b & ~(np.roll(b, 1, 0) & np.roll(b, -1, 0) & np.roll(b, 1, 1) & np.roll(b, -1, 1))
            rgb[edge] = c
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def draw_measurements(display: np.ndarray, shapes: Sequence[tuple[str, Sequence[tuple[float, float]]]],
                      color: tuple[int, int, int] = (255, 220, 0)) -> np.ndarray:
    """Draw ``(kind, points)`` shapes (``distance`` / ``angle`` polylines, ``rectangle`` / ``ellipse`` boxes; points
    in pixel coordinates (x, y)) on ``display``; line width scales with the image (~1/300 of its longer side)."""
    from PIL import Image, ImageDraw

    rgb = to_rgb(display)
    im = Image.fromarray(np.ascontiguousarray(rgb))
    d = ImageDraw.Draw(im)
    lw = max(1, round(max(rgb.shape[:2]) / 300))
    for kind, pts in shapes:
        p = [(float(x), float(y)) for x, y in pts]
        if kind in ("distance", "angle"):
            d.line(p, fill=color, width=lw)
            r = 2 * lw
            for x, y in p:
                d.ellipse((x - r, y - r, x + r, y + r), outline=color, width=lw)
        elif kind in ("rectangle", "ellipse"):
            (x0, y0), (x1, y1) = p
            box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            (d.rectangle if kind == "rectangle" else d.ellipse)(box, outline=color, width=lw)
        else:
            raise ValueError(f"unknown measurement kind {kind!r}")
    return np.asarray(im)
