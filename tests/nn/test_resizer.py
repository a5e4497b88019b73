"""MULLER multilayer Laplacian resizer (ICCV'23): general-vision notes, entry 9."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvit.nn.resizer import create_resizer, gaussian_blur, gaussian_kernel1d


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_exactly_the_base_resize_at_init(spatial_dims):
    shape = (2, 3, 40, 36) if spatial_dims == 2 else (1, 2, 20, 18, 16)
    size = 16 if spatial_dims == 2 else 8
    r = create_resizer("muller", size, spatial_dims)
    x = torch.randn(*shape)
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    ref = F.interpolate(x, size=(size,) * spatial_dims, mode=mode, align_corners=False)
    torch.testing.assert_close(r(x), ref, rtol=0, atol=0)
    assert sum(p.numel() for p in r.parameters()) == 4


def test_gradients_reach_every_scalar():
    r = create_resizer("muller", 8)
    x = torch.randn(2, 1, 32, 32)
    (r(x) * torch.randn(2, 1, 8, 8)).sum().backward()
    assert (r.weights.grad.abs() > 0).all() and (r.biases.grad.abs() > 0).all()


def test_blur_is_separable_gaussian_and_preserves_constants():
    k = gaussian_kernel1d(5, 1.0)
    assert k.sum().item() == pytest.approx(1.0) and k.argmax() == 2
    const = torch.full((1, 2, 9, 9, 9), 3.0)
    torch.testing.assert_close(gaussian_blur(const, k), const)
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1
    torch.testing.assert_close(gaussian_blur(x, k)[0, 0, 2:7, 2:7], torch.outer(k, k))


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only add contention on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_learned_resizer_beats_bilinear_on_fine_stripes(one_thread):
    """4x downsampling aliases 2-pixel stripes away; a linear probe on MULLER's output does better."""
    torch.manual_seed(0)
    n, size = 32, 32

    def batch(g):
        y = torch.randint(0, 2, (n,), generator=g)
        xs = torch.arange(size).float()
        vertical = ((xs // 2) % 2)[None, :].expand(size, size)
        img = torch.where(y[:, None, None].bool(), vertical, vertical.T) + 0.1 * torch.randn(n, size, size, generator=g)
        return img[:, None], y

    def train(resizer_name):
        torch.manual_seed(0)
        r = create_resizer(resizer_name, 8)
        probe = torch.nn.Linear(64, 2)
        opt = torch.optim.Adam([*r.parameters(), *probe.parameters()], lr=0.05)
        g = torch.Generator().manual_seed(1)
        for _ in range(50):
            x, y = batch(g)
            loss = F.cross_entropy(probe(r(x).flatten(1)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        x, y = batch(torch.Generator().manual_seed(99))
        return F.cross_entropy(probe(r(x).flatten(1)), y).item()

    assert train("muller") < 0.5 * train("bilinear")


def test_bad_arguments():
    with pytest.raises(KeyError, match="muller"):
        create_resizer("lanczos", 8)
    with pytest.raises(ValueError):
        create_resizer("muller", 8, spatial_dims=3, antialias=True)
    with pytest.raises(ValueError):
        gaussian_kernel1d(4)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "constant"])
def test_blur_padding_matches_torch_pad(mode):
    k = gaussian_kernel1d(5, 1.0)
    x = torch.randn(1, 2, 7, 9)
    ref = F.conv2d(F.pad(x, [2, 2, 2, 2], mode=mode), torch.outer(k, k).expand(2, 1, 5, 5), groups=2)
    torch.testing.assert_close(gaussian_blur(x, k, mode), ref)
