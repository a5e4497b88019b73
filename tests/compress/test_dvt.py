"""DVT stage 1: on features = smooth field(global coords) + fixed artefact(local position) seen through random
crops, the fitted artefact map matches the injected one and denoising removes the cross-view disagreement."""

from __future__ import annotations

import torch

from medvit.compress.dvt import fit_dvt, global_coords, random_boxes, vit_view_features

D, H = 6, 8


def synthetic():
    torch.manual_seed(0)
    art = torch.randn(D, H, H)  # injected position artefact, one value per view-local patch position
    w = torch.randn(D, 2)

    def field(c):  # smooth feature field over global coords (h, w, 2) -> (D, h, w)
        return torch.sin(1.5 * torch.einsum("dk,hwk->dhw", w, c))

    def view(box, flip):
        return field(global_coords(box, flip, H, H)) + art

    return art, field, view


def test_fitted_artefact_correlates_with_injected_and_denoising_aligns_views():
    art, field, view = synthetic()
    fit = fit_dvt(view, D, (H, H), steps=200, views_per_step=2, seed=0)
    g = fit.model.artifact_at(H, H).detach()
    corr = torch.corrcoef(torch.stack([(g - g.mean((1, 2), keepdim=True)).flatten(),
                                       (art - art.mean((1, 2), keepdim=True)).flatten()]))[0, 1]
    assert corr > 0.9
    assert fit.losses[-1] < 0.2 * fit.losses[0]
    # two views' features at the same global points: raw features disagree by the artefact, denoised agree
    boxes = random_boxes(20, generator=torch.Generator().manual_seed(5))
    raw_err, clean_err = [], []
    for box, flip in boxes:
        raw = view(box, flip)
        truth = field(global_coords(box, flip, H, H))  # what any view shows at these global points, no artefact
        raw_err.append(float(((raw - truth) - (raw - truth).mean((1, 2), keepdim=True)).pow(2).mean()))
        clean = fit.model.denoise(raw).detach()
        clean_err.append(float(((clean - truth) - (clean - truth).mean((1, 2), keepdim=True)).pow(2).mean()))
    assert sum(clean_err) < 0.5 * sum(raw_err)  # per-channel offsets are not identifiable: removed


def test_vit_view_features_shape():
    import medvit

    m = medvit.create_model("vit_small_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                            in_chans=1, num_classes=0).eval()
    fn = vit_view_features(m, torch.rand(1, 64, 64))
    assert fn((-1.0, -1.0, 0.0, 0.0), True).shape == (32, 4, 4)
