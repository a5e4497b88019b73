"""InternLM-XComposer2-4KHD dynamic tiling: general-vision notes, entry 25 (pure-function invariants)."""

from __future__ import annotations

import math

import pytest
import torch

from medvit.nn.dynamic_tiling import TileTokenLayout, hd_layout, hd_tiles, merge_2x2


def test_notes_example_1000x300():
    lay = hd_layout(height=300, width=1000, hd_num=16)
    assert lay.scale == 6 and lay.resized_hw == (604, 2016) and lay.padded_hw == (672, 2016)
    assert (lay.rows, lay.cols, lay.num_crops) == (2, 6, 12)


@pytest.mark.parametrize("hd_num", [1, 4, 9, 16, 25, 55])
@pytest.mark.parametrize("hw", [(300, 1000), (1000, 300), (336, 336), (4000, 3000), (50, 2000), (3328, 2560)])
def test_invariants(hd_num, hw):
    lay = hd_layout(*hw, hd_num=hd_num)
    assert 1 <= lay.num_crops <= hd_num
    assert all(s % 336 == 0 for s in lay.padded_hw)
    assert lay.padded_hw == (lay.rows * 336, lay.cols * 336)
    # orientation kept: a portrait input stays portrait (the long side is the tiled one)
    h, w = hw
    assert lay.transposed == (w < h)
    long_axis = 0 if lay.transposed else 1
    assert lay.resized_hw[long_axis] == 336 * lay.scale
    # aspect ratio kept by the resize (up to the floor of the short side)
    ratio = max(h, w) / min(h, w)
    assert lay.resized_hw[1 - long_axis] == max(1, int(336 * lay.scale / ratio))
    # s is the largest scale that fits
    s = lay.scale
    assert (s + 1) * math.ceil((s + 1) / ratio) > hd_num


def test_tiles_cover_the_padded_image_in_reading_order():
    img = torch.rand(1, 90, 40)  # portrait
    glob, crops, lay = hd_tiles(img, hd_num=6, tile=28)
    assert lay.transposed and glob.shape == (1, 28, 28)
    assert crops.shape == (lay.num_crops, 1, 28, 28) and lay.rows > lay.cols
    rebuilt = crops.reshape(lay.rows, lay.cols, 1, 28, 28).permute(2, 0, 3, 1, 4).reshape(1, *lay.padded_hw)
    ph = lay.padded_hw[0] - lay.resized_hw[0]
    pw = lay.padded_hw[1] - lay.resized_hw[1]
    assert rebuilt[:, : ph // 2].abs().sum() == 0 and rebuilt[:, :, : pw // 2].abs().sum() == 0
    inner = rebuilt[:, ph // 2 : ph // 2 + lay.resized_hw[0], pw // 2 : pw // 2 + lay.resized_hw[1]]
    assert inner.shape[1:] == lay.resized_hw and inner.min() >= 0 and inner.mean() > 0.3


def test_token_layout_count_and_newlines():
    lay = hd_layout(300, 1000, hd_num=16)
    g, D = 12, 8
    merged = merge_2x2(torch.randn(lay.num_crops, 24, 24, 2))
    assert merged.shape == (12, 12, 12, 8)
    layout = TileTokenLayout(D)
    seq = layout(torch.randn(g, g, D), merged, lay)
    n = TileTokenLayout.num_tokens(g, lay)
    assert seq.shape == (n, D) and n == 144 * lay.num_crops + 144 + 12 + 1 + lay.rows * 12
    newline_rows = (seq == layout.newline).all(-1).nonzero().flatten()
    assert newline_rows.numel() == g + lay.rows * g
    assert (seq[g * (g + 1)] == layout.separator).all()


def test_merge_2x2_concatenates_neighbours():
    t = torch.arange(16.0).reshape(1, 4, 4, 1)
    assert merge_2x2(t)[0, 0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]
    with pytest.raises(ValueError, match="even"):
        merge_2x2(torch.zeros(1, 3, 4, 1))


def test_bad_input():
    with pytest.raises(ValueError):
        hd_layout(0, 10)
    with pytest.raises(ValueError, match="one image"):
        hd_tiles(torch.zeros(1, 1, 10, 10))
