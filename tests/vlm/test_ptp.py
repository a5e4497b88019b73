"""PTP position-guided prompts: block indices on the grid, scale invariance, seeded determinism."""

from __future__ import annotations

import pytest
import torch

from medvit.vlm.ptp import block_index, boxes_from_masks, position_prompt


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


def test_boxes_from_masks_span_the_foreground_and_name_the_finding():
    import numpy as np

    m = np.zeros((30, 30), bool)
    m[3:7, 20:26] = True  # rows 3..6, cols 20..25
    e = np.zeros((30, 30), bool)
    e[25, 1] = True
    boxes, names = boxes_from_masks({"nodule": m, "effusion_left": e, "lung_left": m, "mass": np.zeros((30, 30))},
                                    ["Nodule", "Effusion", "Mass"])
    assert boxes == [(20.0, 3.0, 26.0, 7.0), (1.0, 25.0, 2.0, 26.0)] and names == ["nodule", "effusion"]
    assert block_index(boxes[0], (30, 30)) == 2 and block_index(boxes[1], (30, 30)) == 6
    with pytest.raises(ValueError, match="must be 2D"):
        boxes_from_masks({"nodule": np.zeros((2, 3, 3))}, ["Nodule"])


def test_vlm_phantom_captions_carry_ptp_prompts_in_training_only(tmp_path):
    """medvit.vlm's image–text data: with ptp_grid the training captions name the block of a finding box taken
    from the phantom's masks; evaluation captions stay plain; off by default."""
    import json

    from medvit.data.phantom_datasets import PhantomDataset
    from medvit.vlm.instruct import phantom_instruction_data

    res = phantom_instruction_data(tmp_path / "p", n=20, seed=5, image_size=32, ptp_grid=3)
    caps = {s: [json.loads(line)["conversations"][1]["value"]
                for line in (tmp_path / "p" / res["files"][s]["caption"]).read_text().splitlines()]
            for s in ("train", "test")}
    with_box = [c for c in caps["train"] if " The block " in c]
    assert with_box and all(c.endswith(" .") for c in with_box)
    assert not any(" The block " in c for c in caps["test"])
    ds = PhantomDataset("cxr", "train", n=20, seed=5, image_size=32, with_masks=True)
    n_with = sum(1 for i in range(len(ds)) if boxes_from_masks(ds.phantom(i).masks, ds.label_names)[0])
    assert len(with_box) == n_with  # every training phantom with a finding mask gets a prompt
    plain = phantom_instruction_data(tmp_path / "q", n=20, seed=5, image_size=32)
    assert " The block " not in (tmp_path / "q" / plain["files"]["train"]["caption"]).read_text()
