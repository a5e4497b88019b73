"""Reconstruction figure of an MAE: one row per image — original, masked input, reconstruction, and the
reconstruction with the visible patches pasted back (the MAE paper's figure). 3D volumes show the middle slice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medvit.models.mae import MaskedAutoencoder


@torch.no_grad()
def reconstruct(
    mae: MaskedAutoencoder, imgs: torch.Tensor, noise: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Images (B, C, *S) -> {"original", "masked", "reconstruction", "pasted"} images (B, C, *S) and "loss".

    With ``norm_pix_loss`` the predicted patches are de-normalised with each patch's own mean/std (as in the
    MAE demo), so the reconstruction is shown in image intensities.
    """
    was = mae.training
    mae.eval()
    out = mae(imgs, noise=noise)
    mae.train(was)
    pred = out["pred"].float()
    if mae.norm_pix_loss:
        t = mae.patchify(imgs).float()
        pred = pred * (t.var(dim=-1, keepdim=True) + 1e-6) ** 0.5 + t.mean(dim=-1, keepdim=True)
    grid = tuple(s // p for s, p in zip(imgs.shape[2:], mae.patch_size))
    m = out["mask"].float().unsqueeze(-1).expand(-1, -1, pred.shape[-1])  # 1 = removed
    mask_img = mae.unpatchify(m, grid)
    rec = mae.unpatchify(pred, grid)
    return {"original": imgs.float(), "masked": imgs.float() * (1 - mask_img), "reconstruction": rec,
            "pasted": imgs.float() * (1 - mask_img) + rec * mask_img, "mask": mask_img, "loss": out["loss"]}


def _show(x: torch.Tensor) -> Any:
    """(C, *S) -> 2D array for imshow (middle slice of volumes; first channel or RGB)."""
    if x.ndim == 4:
        x = x[:, x.shape[1] // 2]
    x = x.permute(1, 2, 0) if x.shape[0] == 3 else x[0]
    return x.clamp(0, 1).cpu().numpy()


def reconstruction_figure(
    mae: MaskedAutoencoder,
    imgs: torch.Tensor,
    path: str | Path,
    mean: tuple[float, ...] = (0.0,),
    std: tuple[float, ...] = (1.0,),
    noise: torch.Tensor | None = None,
    max_rows: int = 8,
) -> Path:
    """Write a PNG grid (rows = images; columns = original / masked / reconstruction / visible + reconstruction).

    ``imgs`` are the normalised model inputs; ``mean``/``std`` undo the normalisation for display.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imgs = imgs[:max_rows]
    r = reconstruct(mae, imgs, None if noise is None else noise[:max_rows])
    c = imgs.shape[1]
    shape = (1, c) + (1,) * (imgs.ndim - 2)
    m = torch.as_tensor(list(mean) * (c if len(mean) == 1 else 1), dtype=torch.float32).reshape(shape)
    s = torch.as_tensor(list(std) * (c if len(std) == 1 else 1), dtype=torch.float32).reshape(shape)
    cols = [("original", r["original"]), ("masked", r["masked"] * (1 - r["mask"]) + (-m / s) * r["mask"]),
            ("reconstruction", r["reconstruction"]), ("visible + reconstruction", r["pasted"])]
    n = imgs.shape[0]
    fig, axes = plt.subplots(n, 4, figsize=(8, 2 * n + 0.4), squeeze=False)
    for i in range(n):
        for j, (title, t) in enumerate(cols):
            ax = axes[i][j]
            ax.imshow(_show(t[i].cpu() * s[0] + m[0]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
    fig.suptitle(f"MAE mask ratio {mae.mask_ratio:.2f}, loss {float(r['loss']):.4f}", fontsize=10)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
