"""PTP: position-guided text prompts for image–text pretraining (Wang et al., CVPR'23).

Data-side only: the image is split into a ``grid × grid`` block grid (PTP: 3 × 3); one annotated object
(a lesion / finding box, or a detector's output) is sampled, the block holding its box centre is
``row · grid + col``, and the caption gets ``". The block {b} has a {label} ."`` appended (no object: ``"."``),
following ``sail-sg/ptp`` ``pretrain_dataset_concated_pred_tsv.py`` (general-vision notes, entry 30).
The model trains on these captions with its usual objectives (ITC / ITM / LM); no detector is needed at
inference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

Box = Sequence[float]  # (x0, y0, x1, y1) in pixels, x to the right, y downwards


def block_index(box: Box, image_size: tuple[int | float, int | float], grid: int = 3) -> int:
    """Grid block (row-major, 0 = top-left, grid²-1 = bottom-right) holding the centre of ``box``.

    Args:
        box: (x0, y0, x1, y1) pixels, x0 ≤ x1, y0 ≤ y1.
        image_size: (height, width) in pixels.
        grid: blocks per side.
    Raises:
        ValueError: grid < 1, non-positive image size, a malformed box or a centre outside the image.
    """
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    h, w = image_size
    if not (h > 0 and w > 0):
        raise ValueError(f"image_size must be positive (height, width), got {image_size}")
    if len(box) != 4 or not all(math.isfinite(float(v)) for v in box):
        raise ValueError(f"box must be 4 finite numbers (x0, y0, x1, y1), got {box}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box {tuple(box)} has x1 < x0 or y1 < y0 (expected (x0, y0, x1, y1))")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if not (0 <= cx <= w and 0 <= cy <= h):
        raise ValueError(f"box {tuple(box)} has its centre ({cx}, {cy}) outside the {w}×{h} image")
    col = min(int(cx * grid / w), grid - 1)  # a centre on the right / bottom edge belongs to the last block
    row = min(int(cy * grid / h), grid - 1)
    return row * grid + col


def position_prompt(
    caption: str,
    boxes: Sequence[Box],
    labels: Sequence[str],
    image_size: tuple[int | float, int | float],
    grid: int = 3,
    generator: torch.Generator | None = None,
) -> str:
    """``caption`` with PTP's position prompt for one object sampled uniformly from ``boxes``.

    Args:
        caption: the report / caption text (a trailing full stop is not doubled).
        boxes: (x0, y0, x1, y1) pixel boxes; may be empty.
        labels: one object name per box (e.g. "nodule").
        image_size: (height, width) in pixels of the image the boxes refer to.
        grid: blocks per side (PTP: 3).
        generator: seeds the object choice (deterministic given the seed).
    Returns:
        ``"<caption>. The block <b> has a <label> ."``, or ``"<caption>."`` when there is no box.
    Raises:
        ValueError: ``boxes`` and ``labels`` differ in length, an empty label, or a bad box (see
        :func:`block_index`).
    """
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels; give one label per box")
    base = caption.rstrip().rstrip(".")
    if not boxes:
        return base + "."
    i = int(torch.randint(len(boxes), (1,), generator=generator))
    label = str(labels[i]).strip()
    if not label:
        raise ValueError(f"label of box {i} is empty")
    return f"{base}. The block {block_index(boxes[i], image_size, grid)} has a {label} ."


def boxes_from_masks(masks: dict[str, Any], labels: Sequence[str], min_pixels: int = 1
                     ) -> tuple[list[tuple[float, float, float, float]], list[str]]:
    """PTP objects from segmentation masks: one (x0, y0, x1, y1) pixel box per mask whose name starts with a label.

    Args:
        masks: name -> (H, W) bool / 0-1 array or tensor (e.g. a phantom's ``masks``: ``nodule``, ``effusion_left``).
        labels: object names (e.g. the finding labels); a mask named ``<label lower-cased>[_...]`` is that object.
        min_pixels: masks with fewer foreground pixels are skipped.
    Returns:
        (boxes, names): boxes span the foreground pixels (x1, y1 exclusive), in mask order; names are the labels.
    """
    import numpy as np

    boxes, names = [], []
    by_prefix = {str(lab).lower(): str(lab) for lab in labels}
    for name, m in masks.items():
        key = str(name).lower()
        lab = next((v for p, v in by_prefix.items() if key == p or key.startswith(p + "_")), None)
        if lab is None:
            continue
        a = np.asarray(m.detach().cpu() if hasattr(m, "detach") else m) > 0.5
        if a.ndim != 2:
            raise ValueError(f"mask {name!r} must be 2D (H, W), got shape {a.shape}")
        if int(a.sum()) < min_pixels:
            continue
        ys, xs = np.nonzero(a)
        boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
        names.append(lab.lower())
    return boxes, names
