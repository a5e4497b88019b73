"""Segmentation masks from the annotations of the BenchX datasets: boxes, ellipses, polygons, SIIM RLE, and
multi-reader boxes fused by weighted boxes fusion.

Pixel conventions (all masks are (H, W) bool, row = y, column = x, origin at the top-left pixel):

- boxes / ellipses / polygons are rasterised by Pillow's ``ImageDraw`` (``rectangle``, ``ellipse``, ``polygon``)
  with outline and fill, so a box ``(x1, y1, x2, y2)`` covers columns ``x1..x2`` and rows ``y1..y2`` inclusive
  after Pillow rounds the coordinates; an ellipse is the one inscribed in its bounding box (Object-CXR's
  ``1 x1 y1 x2 y2``);
- SIIM-ACR run-length encoding (``train-rle.csv``; the challenge's ``mask_functions.py``): pairs ``start length``
  where each start is relative to the end of the previous run, counted over the image in column-major order;
  ``-1`` means no pneumothorax;
- VinDr-CXR boxes of several readers are fused with ``ensemble_boxes.weighted_boxes_fusion`` (Solovyev et al.,
  2021), as BenchX's ``preprocess_vindr.py`` does, before rasterising.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


def _canvas(shape: tuple[int, int]):  # noqa: ANN202 - PIL types stay local
    from PIL import Image, ImageDraw

    img = Image.new("1", (int(shape[1]), int(shape[0])), 0)
    return img, ImageDraw.Draw(img)


def boxes_to_mask(boxes: Sequence[Box], shape: tuple[int, int]) -> np.ndarray:
    """Union of axis-aligned boxes ``(x1, y1, x2, y2)`` (pixels, inclusive) -> (H, W) bool mask of ``shape``."""
    img, draw = _canvas(shape)
    for b in boxes:
        x1, y1, x2, y2 = (float(v) for v in b)
        if x2 < x1 or y2 < y1:
            raise ValueError(f"box {b} has x2 < x1 or y2 < y1")
        draw.rectangle((x1, y1, x2, y2), fill=1, outline=1)
    return np.array(img, dtype=bool)


def ellipses_to_mask(boxes: Sequence[Box], shape: tuple[int, int]) -> np.ndarray:
    """Union of the ellipses inscribed in bounding boxes ``(x1, y1, x2, y2)`` -> (H, W) bool mask."""
    img, draw = _canvas(shape)
    for b in boxes:
        x1, y1, x2, y2 = (float(v) for v in b)
        draw.ellipse((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)), fill=1, outline=1)
    return np.array(img, dtype=bool)


def polygons_to_mask(polygons: Sequence[Sequence[tuple[float, float]]], shape: tuple[int, int]) -> np.ndarray:
    """Union of filled polygons (each a list of >= 3 ``(x, y)`` vertices) -> (H, W) bool mask."""
    img, draw = _canvas(shape)
    for poly in polygons:
        if len(poly) < 3:
            raise ValueError(f"a polygon needs at least 3 vertices, got {len(poly)}")
        draw.polygon([(float(x), float(y)) for x, y in poly], fill=1, outline=1)
    return np.array(img, dtype=bool)


def siim_rle_decode(rle: str, width: int, height: int) -> np.ndarray:
    """SIIM-ACR relative run-length string -> (height, width) bool mask (``-1`` / empty -> all False).

    Raises ValueError for an odd number of values, negative values or runs past the image.
    """
    text = rle.strip()
    flat = np.zeros(width * height, dtype=bool)
    if text in ("", "-1"):
        return flat.reshape(width, height).T
    try:
        vals = [int(v) for v in text.split()]
    except ValueError as e:
        raise ValueError(f"RLE must be integers: {e}") from e
    if len(vals) % 2:
        raise ValueError(f"RLE has an odd number of values ({len(vals)}); expected start/length pairs")
    pos = 0
    for start, length in zip(vals[0::2], vals[1::2]):
        if start < 0 or length < 0:
            raise ValueError(f"RLE values must be >= 0, got start {start} length {length}")
        pos += start
        if pos + length > flat.size:
            raise ValueError(f"RLE run ends at pixel {pos + length}, past the {width}x{height} image")
        flat[pos : pos + length] = True
        pos += length
    return flat.reshape(width, height).T


def fuse_reader_boxes(
    readers: Sequence[Sequence[tuple[Box, int]]],
    shape: tuple[int, int],
    iou_thr: float = 0.5,
    skip_box_thr: float = 0.0,
) -> list[tuple[Box, int]]:
    """Weighted boxes fusion of several readers' boxes of one image.

    Args:
        readers: per reader, its ``((x1, y1, x2, y2), class_index)`` boxes in pixels.
        shape: image (H, W), to normalise coordinates to [0, 1] as the package expects.
        iou_thr: boxes of one class overlapping by more than this are fused (0.5 chosen; see the notes).
        skip_box_thr: boxes with a lower score are dropped (all readers score 1.0).
    Returns:
        fused ``((x1, y1, x2, y2), class_index)`` boxes in pixels.
    """
    from ensemble_boxes import weighted_boxes_fusion

    h, w = float(shape[0]), float(shape[1])
    boxes_list, scores_list, labels_list = [], [], []
    for boxes in readers:
        if not boxes:
            continue
        arr = np.array([[b[0] / w, b[1] / h, b[2] / w, b[3] / h] for b, _ in boxes], dtype=np.float64)
        boxes_list.append(np.clip(arr, 0.0, 1.0))
        scores_list.append(np.ones(len(boxes)))
        labels_list.append(np.array([c for _, c in boxes]))
    if not boxes_list:
        return []
    fused, _, labels = weighted_boxes_fusion(boxes_list, scores_list, labels_list, iou_thr=iou_thr,
                                             skip_box_thr=skip_box_thr)
    return [((b[0] * w, b[1] * h, b[2] * w, b[3] * h), int(c)) for b, c in zip(fused, labels)]
