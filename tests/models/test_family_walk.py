"""The shared encoder walk (``VisionTransformer.run_blocks`` + the ``walk_start``/``block_step`` hooks)
computes exactly what each token-changing family computed with its own loop before the refactor.

The reference loops below are the families' former per-class code paths (fixed seeds, tiny configs);
outputs must be bit-identical (``torch.equal``), not merely close.
"""

from __future__ import annotations

import pytest
import torch

from medvit.models import create_model
from medvit.models.vit import intermediate_output
from medvit.nn.token_reorganize import FUSED_INDEX, block_forward_reorganize

CFG = dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=4, num_classes=3)
FAMILIES = {
    "vit_tiny_patch16_224": {},
    "evit_tiny_patch16_224": dict(keep_rate=0.6, keep_locs=(1, 2)),
    "lookupvit_small_patch16_224": dict(compressed_grid=2),
    "lgvit_small_patch16_224": dict(exit_layers=(0, 1, 2)),
    "convit_tiny_patch16_224": dict(local_up_to_layer=2),
    "channelvit_tiny_patch16_224": dict(hcs=False),
    "fmvit_tiny_patch16_224": {},
}


def _model(name):
    torch.manual_seed(0)
    m = create_model(name, **CFG, **FAMILIES[name]).eval()
    return m, torch.randn(2, m.in_chans, 32, 32)


def _reference_walk(m, x, attention=False):
    """Per-block (tokens, prefix count, attention, patch index) by each family's former loop."""
    name = type(m).__name__
    P = m.num_prefix_tokens
    t = m.embed(x)
    out = []
    if name == "EViT":
        index = torch.arange(t.shape[1] - P).expand(t.shape[0], -1)
        for i, blk in enumerate(m.blocks):
            rate = m.keep_rate if i in m.keep_locs else 1.0
            t, index, probs = block_forward_reorganize(blk, t, rate, P, m.fuse_token, index, attention)
            out.append((t, P, probs, index))
    elif name == "LookupViT":
        z = m.compress(t, m.patch_embed.grid_size)
        for blk in m.blocks:
            t, z, logits = blk.forward_with_attention(t, z)
            out.append((t, 0, logits.softmax(-1), None))
    elif name == "ConViT":
        for i, blk in enumerate(m.blocks):
            if i == m.local_up_to_layer:
                t = torch.cat([m.prefix_tokens(t.shape[0]), t], dim=1)
            t, probs = blk.forward_with_attention(t) if attention else (blk(t), None)
            out.append((t, P if i >= m.local_up_to_layer else 0, probs, None))
    else:
        for blk in m.blocks:
            t, probs = blk.forward_with_attention(t) if attention else (blk(t), None)
            out.append((t, P, probs, None))
    return out


def _equal(a, b):
    assert a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_walk_equals_the_former_loops(name):
    m, x = _model(name)
    grid = m.patch_embed.grid_size
    with torch.no_grad():
        ref = _reference_walk(m, x)
        _equal(m.forward_features(x), m.norm(ref[-1][0]))
        for norm in (False, True):
            for prefix in (False, True):
                got = m.forward_intermediates(x, [1, -1], norm=norm, return_prefix_tokens=prefix)
                for o, (t, p, _, _) in zip(got, [ref[1], ref[-1]]):
                    _equal(o, intermediate_output(m.norm(t) if norm else t, grid, p, "NLC", prefix))
        if type(m).__name__ not in ("EViT", "ChannelViT"):  # those two have their own map layouts (below)
            for o, (t, p, _, _) in zip(m.forward_intermediates(x, [0, 2], output_fmt="NCHW"), [ref[0], ref[2]]):
                _equal(o, intermediate_output(t, grid, p, "NCHW", False))
    for a, (_, _, probs, _) in zip(m.attention_maps(x), _reference_walk(m, x, attention=True)):
        _equal(a, probs)


def test_evit_maps_and_kept_tokens_follow_the_patch_index():
    m, x = _model("evit_tiny_patch16_224")
    ref = _reference_walk(m, x)
    t, _, _, index = ref[-1]
    maps = m.forward_intermediates(x, [-1], output_fmt="NCHW")[0].flatten(2).transpose(1, 2)  # (B, N, D)
    for b in range(2):
        for slot, patch in enumerate(index[b].tolist()):
            if patch != FUSED_INDEX:
                _equal(maps[b, patch], t[b, 1 + slot])
    kept = m.kept_token_map(x).flatten(1)
    for b in range(2):
        assert set(torch.nonzero(kept[b]).flatten().tolist()) == set(index[b].tolist()) - {FUSED_INDEX}


@pytest.mark.parametrize("name", ["evit_tiny_patch16_224", "convit_tiny_patch16_224", "channelvit_tiny_patch16_224"])
def test_forward_until_from_split_the_family_anywhere(name):
    """Before the shared walk, EViT's forward_until/forward_from ran the plain ViT blocks (no reorganisation)."""
    m, x = _model(name)
    with torch.no_grad():
        full = m.forward_features(x)
        for k in range(len(m.blocks) + 1):
            _equal(m.forward_from(m.forward_until(x, k), k), full)


def test_lgvit_exits_see_the_walk_states():
    m, x = _model("lgvit_small_patch16_224")
    with torch.no_grad():
        ref = _reference_walk(m, x)
        outs = m.forward_exits(x)
        for j, layer in enumerate(m.exit_layers):
            _equal(outs[j], m._exit_logits(j, ref[layer][0], m.patch_embed.grid_size))
        _equal(outs[-1], m.forward_head(m.norm(ref[-1][0])))


def test_run_blocks_range_errors():
    m, x = _model("vit_tiny_patch16_224")
    with pytest.raises(ValueError, match="blocks 3..2 out of range"):
        m.run_blocks(m.embed(x), 3, 2)
    with pytest.raises(ValueError, match="a walk from block > 0 needs the tokens of forward_until"):
        lk, _ = _model("lookupvit_small_patch16_224")
        lk.run_blocks(lk.embed(x), 1)
