"""VideoMAE V2 dual masking: generator ratios and structure, decoder token count, loss vs a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from medvit.models.videomae import (
    DualMaskedAutoencoder,
    create_dual_mae,
    dual_masked_mse,
    running_cell_mask,
    running_cell_patterns,
    tube_mask,
)

TINY = dict(img_size=(8, 16, 16), patch_size=(2, 4, 4), embed_dim=48, depth=1, num_heads=4, in_chans=1,
            decoder_dim=48, decoder_depth=1, decoder_heads=4)


def test_tube_mask_is_one_spatial_mask_repeated_with_the_stated_ratio():
    g = torch.Generator().manual_seed(0)
    m = tube_mask(5, (4, 4, 4), 0.9, g).reshape(5, 4, 16)
    assert m.dtype == torch.bool
    assert (m.sum(-1) == int(0.9 * 16)).all()  # 14 masked per frame, every frame
    assert torch.equal(m, m[:, :1].expand_as(m))  # identical in every temporal index
    assert not torch.equal(m[0], m[1])  # samples draw their own masks
    # over many draws every spatial position is masked ~90 % of the time (uniform choice)
    freq = tube_mask(4000, (1, 4, 4), 0.9, g).float().mean(0)
    assert torch.allclose(freq, torch.full_like(freq, 14 / 16), atol=0.03)


def test_running_cell_keeps_half_shifts_each_frame_and_covers_every_position():
    pats = running_cell_patterns((4, 4, 6), 0.5).reshape(4, 4, 4, 6)
    for p in pats:
        assert (p.reshape(4, -1).sum(-1) == 12).all()  # exactly 50 % per frame
        for t in range(4):
            cells = p[t].reshape(2, 2, 3, 2).permute(0, 2, 1, 3).reshape(6, 4)
            assert (cells == cells[0]).all() and cells[0].sum() == 2  # the same 2x2 cell tiled, 2 of 4 masked
        assert all(not torch.equal(p[t], p[t + 1]) for t in range(3))  # the pattern moves every frame
        for t in range(3):  # the cell's queue moves by one slot per frame
            assert torch.equal(p[t + 1][:2, :2].reshape(-1), p[t][:2, :2].reshape(-1).roll(-1))
        assert (~p).any(0).all()  # union of decoded positions over 4 frames = every position
    # hand-checked first phase: queue [1,1,0,0] read from pointer 1 -> [1,0,0,1]
    assert pats[0, 0, :2, :2].tolist() == [[True, False], [False, True]]
    m = running_cell_mask(8, (2, 4, 4), 0.5, torch.Generator().manual_seed(1))
    assert m.shape == (8, 32) and all(any(torch.equal(r, q) for q in running_cell_patterns((2, 4, 4), 0.5))
                                      for r in m)


@pytest.mark.parametrize("ratio, masked", [(0.25, 1), (0.75, 3)])
def test_running_cell_other_ratios(ratio, masked):
    pats = running_cell_patterns((3, 2, 2), ratio)
    assert (pats.reshape(4, 3, 4).sum(-1) == masked).all()


def test_bad_grids_and_ratios_are_refused():
    with pytest.raises(ValueError, match="even"):
        running_cell_patterns((2, 3, 4), 0.5)
    with pytest.raises(ValueError, match="1..3"):
        running_cell_patterns((2, 4, 4), 0.1)
    with pytest.raises(ValueError, match="keep at least one"):
        tube_mask(1, (2, 2, 2), 0.1)
    with pytest.raises(ValueError, match="3D"):
        create_dual_mae("vit_tiny_patch16_224", img_size=64, patch_size=16, embed_dim=48, depth=1, num_heads=4,
                        spatial_dims=2, decoder_dim=48, decoder_depth=1, decoder_heads=4)


def test_decoder_sequence_and_loss_equal_a_hand_computation():
    torch.manual_seed(0)
    mae = create_dual_mae(**TINY)
    assert isinstance(mae, DualMaskedAutoencoder) and mae.grid_size == (4, 4, 4)
    x = torch.randn(2, 1, 8, 16, 16)
    enc, dec = mae.make_masks(2, mae.grid_size, x.device, torch.Generator().manual_seed(3))
    lengths = []
    hook = mae.decoder_blocks[0].register_forward_hook(lambda m, i, o: lengths.append(i[0].shape[1]))
    out = mae(x, enc, dec)
    hook.remove()
    n, n_vis = 64, 4 * (16 - int(0.9 * 16))
    assert lengths == [1 + n_vis + n // 2]  # CLS + encoder-visible + half of the grid (vs 1 + N for MAE)
    assert out["pred"].shape == (2, n // 2, 2 * 4 * 4)
    # hand computation: per-patch normalised targets at the decoded positions, mean over encoder-masked ones
    patches = mae.patchify(x)
    t = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6) ** 0.5
    total, count = 0.0, 0
    for b in range(2):
        decoded = [i for i in range(n) if not dec[b, i]]
        assert decoded == out["decode_ids"][b].tolist()
        for k, i in enumerate(decoded):
            if enc[b, i]:
                total += ((out["pred"][b, k] - t[b, i]) ** 2).mean().item()
                count += 1
    assert out["weight"].sum() == count
    assert out["loss"].item() == pytest.approx(total / count, rel=1e-5)
    out["loss"].backward()
    assert mae.mask_token.grad is not None and mae.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_loss_on_decoded_and_v1_fallback():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 16, 16)
    mae = create_dual_mae(**TINY, loss_on="decoded")
    out = mae(x)
    assert out["weight"].all()
    assert out["loss"].item() == pytest.approx(((out["pred"] - out["target"]) ** 2).mean().item(), rel=1e-5)
    v1 = create_dual_mae(**TINY, decoder_mask_ratio=0.0)
    o = v1(x)
    # VideoMAE V1: the decoder predicts exactly the encoder-masked tokens
    assert torch.equal(o["decoder_mask"], ~o["mask"]) and o["weight"].all()
    assert o["pred"].shape[1] == 4 * int(0.9 * 16)


def test_dual_masked_mse_reference():
    pred = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]])
    target = torch.zeros(1, 2, 2)
    assert dual_masked_mse(pred, target).item() == pytest.approx((5.0 + 0.0) / 2)
    assert dual_masked_mse(pred, target, torch.tensor([[1, 0]])).item() == pytest.approx(5.0)
    assert dual_masked_mse(pred, target, torch.tensor([[0, 0]])).item() == 0.0
    with pytest.raises(ValueError, match="weight"):
        dual_masked_mse(pred, target, torch.ones(2))


def test_tiny_dual_mae_loss_falls():
    torch.manual_seed(0)
    from medvit.data import build_dataset

    ds = build_dataset("cine_phantom", "train", n=24, image_size=16, depth=8)
    x = (torch.stack([ds[i]["image"] for i in range(len(ds))]) - 0.35) / 0.22
    mae = create_dual_mae(**{**TINY, "img_size": (8, 16, 16)})
    opt = torch.optim.AdamW(mae.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(20):
        out = mae(x[:8], *mae.make_masks(8, mae.grid_size, x.device, g))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert math.fsum(losses[-5:]) < 0.8 * math.fsum(losses[:5])
