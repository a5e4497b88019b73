"""Vision → language projectors, registered under kind ``projector``.

Each maps image tokens ``(N, T, D_vision)`` to language-model embeddings ``(N, T', D_lm)``:

- ``linear``: one ``nn.Linear`` (LLaVA-1 projector; T' = T).
- ``mlp2x_gelu``: Linear → GELU → Linear (LLaVA-1.5 ``mm_projector_type: mlp2x_gelu``; T' = T).
- ``resampler``: a Perceiver-style resampler (Flamingo's Perceiver Resampler, Alayrac et al. 2022 §2.1 /
  Qwen-VL's cross-attention adapter): ``num_queries`` learned queries cross-attend to the image tokens in
  ``depth`` layers (pre-norm cross-attention + MLP, residual); T' = ``num_queries``.

Build one with :func:`build_projector`; ``out_tokens(T)`` gives T' for T input tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from medvit.registry import REGISTRY, register


class Projector(nn.Module):
    """Base class: ``forward((N, T, D_in)) -> (N, T', D_out)``."""

    def out_tokens(self, in_tokens: int) -> int:
        return in_tokens


@register("projector", "linear", description="one linear layer (LLaVA-1)")
class LinearProjector(Projector):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@register("projector", "mlp2x_gelu", description="Linear-GELU-Linear (LLaVA-1.5 mlp2x_gelu)")
class MLP2xGeluProjector(Projector):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class _ResamplerLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        kv_n = self.norm_kv(kv)
        # Flamingo: keys/values are the image tokens concatenated with the queries
        kv_n = torch.cat([kv_n, self.norm_q(q)], dim=1)
        q = q + self.attn(self.norm_q(q), kv_n, kv_n, need_weights=False)[0]
        return q + self.mlp(self.norm_mlp(q))


@register("projector", "resampler", description="Perceiver resampler: N learned queries cross-attend to the "
          "image tokens (Flamingo)")
class ResamplerProjector(Projector):
    """Perceiver resampler. Args: ``num_queries`` (T'), ``depth`` layers, ``num_heads`` (must divide
    ``out_dim``), ``mlp_ratio``. The image tokens are first mapped to ``out_dim`` by a linear layer."""

    def __init__(self, in_dim: int, out_dim: int, num_queries: int = 32, depth: int = 2, num_heads: int = 4,
                 mlp_ratio: float = 2.0):
        super().__init__()
        if num_queries < 1 or depth < 1:
            raise ValueError(f"resampler needs num_queries >= 1 and depth >= 1, got {num_queries}, {depth}")
        if out_dim % num_heads:
            raise ValueError(f"resampler num_heads={num_heads} must divide the LM hidden size {out_dim}")
        self.num_queries = int(num_queries)
        self.inp = nn.Linear(in_dim, out_dim)
        self.queries = nn.Parameter(torch.randn(1, num_queries, out_dim) * out_dim**-0.5)
        self.layers = nn.ModuleList(_ResamplerLayer(out_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(out_dim)

    def out_tokens(self, in_tokens: int) -> int:
        return self.num_queries

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kv = self.inp(x)
        q = self.queries.expand(x.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, kv)
        return self.norm(q)


def build_projector(name: str, in_dim: int, out_dim: int, **kwargs: object) -> Projector:
    """Build the registered projector ``name`` (``linear`` | ``mlp2x_gelu`` | ``resampler`` | a plugin's)."""
    cls = REGISTRY.get("projector", name)
    try:
        return cls(in_dim, out_dim, **kwargs)
    except TypeError as e:
        raise TypeError(f"projector {name!r}: bad arguments {sorted(kwargs)}: {e}") from e
