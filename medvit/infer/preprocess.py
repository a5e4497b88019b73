"""Model-input preprocessing for batch inference and the viewer: the one implementation in
:mod:`medvit.data.preprocess` (shared with training), re-exported here where the serving code looks for it."""

from __future__ import annotations

from medvit.data.preprocess import (
    GEOMETRIES,
    Geometry,
    Preprocessor,
    file_kind,
    resize_array,
    unmap_heatmap,
)

_resize = resize_array  # name used by earlier callers

__all__ = ["GEOMETRIES", "Geometry", "Preprocessor", "file_kind", "resize_array", "unmap_heatmap"]
