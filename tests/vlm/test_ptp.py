"""PTP position-guided prompts: block indices on the grid, scale invariance, seeded determinism."""

from __future__ import annotations

import pytest
import torch

from medvit.vlm.ptp import block_index, position_prompt


def test_corner_blocks_and_every_block_of_the_grid():
    assert block_index((0, 0, 10, 10), (300, 300)) == 0
    assert block_index((290, 290, 300, 300), (300, 300)) == 8
    assert block_index((0, 0, 300, 300), (300, 300)) == 4  # centre of the image
    assert block_index((295, 0, 300, 4), (300, 300)) == 2  # top-right
    assert block_index((300, 300, 300, 300), (300, 300)) == 8  # centre on the far edge: last block
    # a point box at each block centre of a non-square 4x4 grid lands in that block (row-major)
    h, w, g = 200, 320, 4
    for r in range(g):
        for c in range(g):
            x, y = (c + 0.5) * w / g, (r + 0.5) * h / g
            assert block_index((x, y, x, y), (h, w), grid=g) == r * g + c


def test_scale_invariance_and_prompt_text():
    boxes = [(12.0, 40.0, 30.0, 70.0), (150.0, 10.0, 190.0, 30.0)]
    labels = ["nodule", "effusion"]
    for s in (0.25, 1.0, 3.0):
        got = [block_index([v * s for v in b], (100 * s, 200 * s)) for b in boxes]
        assert got == [3, 2]
    g = torch.Generator().manual_seed(0)
    text = position_prompt("Small left nodule.", boxes[:1], labels[:1], (100, 200), generator=g)
    assert text == "Small left nodule. The block 3 has a nodule ."
    assert position_prompt("No acute findings.", [], [], (100, 200)) == "No acute findings."


def test_seeded_determinism_and_sampling_covers_objects():
    boxes = [(0, 0, 10, 10), (290, 290, 300, 300), (140, 140, 160, 160)]
    labels = ["a", "b", "c"]

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return [position_prompt("x", boxes, labels, (300, 300), generator=g) for _ in range(30)]

    assert draw(5) == draw(5)
    assert set(draw(5)) == {"x. The block 0 has a a .", "x. The block 8 has a b .", "x. The block 4 has a c ."}


@pytest.mark.parametrize(
    "args, match",
    [
        (dict(box=(10, 10, 5, 20), image_size=(100, 100)), "x1 < x0"),
        (dict(box=(10, 10, 20), image_size=(100, 100)), "4 finite numbers"),
        (dict(box=(200, 10, 220, 20), image_size=(100, 100)), "outside"),
        (dict(box=(1, 1, 2, 2), image_size=(0, 100)), "positive"),
        (dict(box=(1, 1, 2, 2), image_size=(100, 100), grid=0), "grid must be"),
    ],
)
def test_block_index_errors(args, match):
    with pytest.raises(ValueError, match=match):
        block_index(**args)


def test_prompt_errors():
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        position_prompt("x", [(0, 0, 1, 1), (0, 0, 1, 1)], ["a"], (10, 10))
    with pytest.raises(ValueError, match="empty"):
        position_prompt("x", [(0, 0, 1, 1)], [" "], (10, 10))
