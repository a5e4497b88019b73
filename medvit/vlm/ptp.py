"""PTP position-guided text prompts for medvit.vlm (the functions live in :mod:`medvit.data.ptp`, where the BenchX
retrieval protocol uses them too)."""

from medvit.data.ptp import block_index, boxes_from_masks, position_prompt

__all__ = ["block_index", "boxes_from_masks", "position_prompt"]
