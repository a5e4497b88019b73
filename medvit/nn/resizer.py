"""Learnable resizers placed before the patch embed: MULLER, the multilayer Laplacian resizer (2D/3D).

Tu et al., "MULLER: Multilayer Laplacian Resizer for Vision", ICCV 2023 (general-vision notes,
entry 9). With R the base resize (bilinear / trilinear) and G a separable Gaussian blur::

    net = R(x);  u = x
    for l in 1..L:  b = G(u);  net += tanh(w_l · R(b − u) + b_l);  u = b

``w_l`` and ``b_l`` are scalars initialised to zero, so at initialisation the resizer is exactly the
base resize; L = 2 gives 4 parameters. Resizers are chosen by name from :data:`RESIZERS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_kernel1d(size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Normalised 1D Gaussian taps (size,), centred."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"Gaussian kernel size must be a positive odd int, got {size}")
    if not sigma > 0:
        raise ValueError(f"Gaussian sigma must be > 0, got {sigma}")
    r = torch.arange(size, dtype=torch.float64) - size // 2
    k = torch.exp(-(r**2) / (2 * sigma**2))
    return (k / k.sum()).float()


def gaussian_blur(x: torch.Tensor, kernel: torch.Tensor, padding_mode: str = "reflect") -> torch.Tensor:
    """Separable blur along every spatial axis: (B, C, *S) -> (B, C, *S), S 2D or 3D.

    Each axis is a weighted sum of ``len(kernel)`` shifted views of the padded input (padding by
    index gathering: on CPU this is far cheaper than a depthwise convolution or ``F.pad(reflect)``).
    """
    nd = x.ndim - 2
    n, r = kernel.numel(), kernel.numel() // 2
    k = kernel.to(x.dtype)
    for axis in range(nd):
        length = x.shape[2 + axis]
        xp = x.index_select(2 + axis, _pad_index(length, r, padding_mode, x.device))
        if padding_mode == "constant":
            xp = xp * _pad_mask(length, r, x.device).reshape([-1 if d == 2 + axis else 1 for d in range(x.ndim)])
        x = sum(k[i] * xp.narrow(2 + axis, i, length) for i in range(n))
    return x


def _pad_index(length: int, r: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source index of each position of an axis padded by r on both sides (reflect / replicate / zeros)."""
    i = torch.arange(-r, length + r, device=device)
    if mode == "reflect":
        if r >= length:
            raise ValueError(f"reflect padding of {r} needs an axis longer than {r}, got {length}")
        i = i.abs()
        return torch.where(i > length - 1, 2 * (length - 1) - i, i)
    return i.clamp(0, length - 1)  # replicate; constant masks the border afterwards


def _pad_mask(length: int, r: int, device: torch.device) -> torch.Tensor:
    i = torch.arange(-r, length + r, device=device)
    return ((i >= 0) & (i < length)).float()


class BaseResizer(nn.Module):
    """Plain (bi/tri)linear resize to ``size``: (B, C, *S) -> (B, C, *size). No parameters."""

    def __init__(self, size: int | Sequence[int], spatial_dims: int = 2, antialias: bool = False):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if antialias and spatial_dims == 3:
            raise ValueError("antialias is only available for 2D (torch has no antialiased trilinear resize)")
        self.size = (int(size),) * spatial_dims if isinstance(size, int) else tuple(int(s) for s in size)
        if len(self.size) != spatial_dims or min(self.size) < 1:
            raise ValueError(f"size must be {spatial_dims} positive ints, got {size!r}")
        self.spatial_dims = spatial_dims
        self.antialias = antialias

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected (B, C, {self.spatial_dims} spatial axes), got shape {tuple(x.shape)}")
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        return F.interpolate(x, size=self.size, mode=mode, align_corners=False, antialias=self.antialias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resize(x)


class MullerResizer(BaseResizer):
    """MULLER: base resize plus L learned, tanh-squashed Laplacian (band-pass) residuals.

    Args:
        size: output spatial size (int or per-axis).
        spatial_dims: 2 (bilinear) or 3 (trilinear, separable 3D Gaussian).
        num_layers: L, the number of Laplacian levels (2 in the paper: 4 parameters).
        kernel_size, sigma: the Gaussian blur G (5, 1.0 in the paper).
        antialias: antialiased base resize (2D only).
        padding_mode: border handling of the blur ("reflect"; the paper's code pads with zeros,
            which darkens borders — "constant" reproduces it).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        spatial_dims: int = 2,
        num_layers: int = 2,
        kernel_size: int = 5,
        sigma: float = 1.0,
        antialias: bool = False,
        padding_mode: str = "reflect",
    ):
        super().__init__(size, spatial_dims, antialias)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if padding_mode not in ("reflect", "replicate", "constant"):
            raise ValueError(f"padding_mode must be reflect, replicate or constant, got {padding_mode!r}")
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.biases = nn.Parameter(torch.zeros(num_layers))
        self.register_buffer("kernel", gaussian_kernel1d(kernel_size, sigma), persistent=False)
        self.padding_mode = padding_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, C, *size); equals the base resize while every w_l = b_l = 0."""
        net = self.resize(x)
        u = x
        for w, b in zip(self.weights, self.biases):
            blurred = gaussian_blur(u, self.kernel, self.padding_mode)
            net = net + torch.tanh(w * self.resize(blurred - u) + b)
            u = blurred
        return net

    def extra_repr(self) -> str:
        return f"size={self.size}, layers={self.weights.numel()}, sigma≈{_sigma(self.kernel):.2f}"


def _sigma(kernel: torch.Tensor) -> float:
    r = torch.arange(kernel.numel(), dtype=kernel.dtype) - kernel.numel() // 2
    return math.sqrt(float((kernel * r**2).sum()))


#: string table of resizers (name -> class taking ``size``, ``spatial_dims`` and its own options)
RESIZERS: dict[str, type[BaseResizer]] = {"bilinear": BaseResizer, "muller": MullerResizer}


def create_resizer(name: str, size: int | Sequence[int], spatial_dims: int = 2, **kwargs: object) -> BaseResizer:
    """Build a resizer by name ("bilinear" = the plain base resize, "muller")."""
    if name not in RESIZERS:
        raise KeyError(f"unknown resizer {name!r}; choose one of {sorted(RESIZERS)}")
    return RESIZERS[name](size, spatial_dims, **kwargs)  # type: ignore[arg-type]
