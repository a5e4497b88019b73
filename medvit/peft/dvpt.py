"""DVPT: Dynamic Visual Prompt Tuning (He et al., arXiv 2307.09787; Neural Networks 2025).

Reconstructed from the paper's abstract and the released code (see shared/papers/medical-notes.md §2).
For the tokens X = [prefix | prompts | patches] entering block ℓ, with F = [prefix | patches] the
frozen features (B, T, D) and one :class:`DVPTModule` shared by each group of k consecutive DVPT blocks::

    Z     = GELU(F W_d + b_d)               (B, T, r)   bottleneck: domain-specific features
    A     = softmax(Q Zᵀ / √r)              (B, N, T)   N learnable prompts Q (N, r) = dynamic queries
    P_dyn = A Z                              (B, N, r)   sample-specific prompts
    Δ_p   = g · (P_dyn W_u + b_u)            (B, N, D)   up-projection behind a zero-initialised gate g
    Δ_f   = g · (Z W_u + b_u)                (B, T, D)   token-wise branch of the released code (optional)
    out   = Block_ℓ(X) + [Δ_f(prefix) | Δ_p | Δ_f(patches)]   aggregated with the frozen block output

The N prompt slots in the sequence start as learnable tokens (N, D) (the released code prepends 50);
with g = 0 the DVPT branches are exactly zero at initialisation. Paper-like default on ViT-B/16
(r = 20, N = 50, k = 1, all 12 blocks): 428,508 trainable parameters = 0.50 % of the backbone
(plus the head); the released code's sharing (k = 3) gives 0.20 %.

Two readings (``DVPTConfig.reading``): "abstract" (medvit's default: insertion "block", k = 1, CLS readout)
and "released" (``insertion="post_attention"``, ``share_every=3``, ``pool="prompts"``: the module in
parallel to the frozen MLP, one module per 3 blocks, readout = mean of CLS and the prompts; preset
``pipelines/dvpt/*_released*.yaml``). With CLS readout the last block's prompt branch gets no gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medvit.config import option
from medvit.peft.base import MethodConfig, register_method
from medvit.peft.prompted import PromptedViT, block_index, device_of, prompt_init_bound


@dataclass
class DVPTConfig(MethodConfig):
    """DVPT module sizes and placement."""

    rank: int = option(20, "r: bottleneck width (D -> r -> D); must not exceed the embedding width D")
    num_prompts: int = option(50, "N: learnable prompts (dynamic queries) and prompt slots in the sequence")
    share_every: int = option(1, "k: one module shared by each group of k consecutive DVPT blocks")
    layers: list[int] | None = option(None, "blocks with a DVPT branch (negative from the end); None = all")
    token_adapter: bool = option(True, "also add the gated bottleneck output to every frozen token (released code)")
    prompt_dropout: float = option(0.0, "dropout on the initial prompt slot tokens")
    query_init_std: float = option(0.02, "std of the query init (small: near-uniform attention at the start)")
    pool: str = option("backbone", '"backbone": pool as the backbone does; "prompts": mean of CLS+prompt tokens '
                                   "(code)")
    insertion: str = option("block", '"block": F = block input, Δ added to the block output (abstract, medvit\'s '
                                     'reading); "post_attention": F = x + Attn(LN1(x)), Δ added in parallel to the '
                                     "MLP: x + MLP(LN2(x)) + Δ (released code, AdaptFormer-like)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for k in ("rank", "num_prompts", "share_every"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise ValueError(f"prompt_dropout must be in [0, 1), got {self.prompt_dropout}")
        if self.pool not in ("backbone", "prompts"):
            raise ValueError(f"pool must be 'backbone' or 'prompts', got {self.pool!r}")
        if self.insertion not in ("block", "post_attention"):
            raise ValueError(f"insertion must be 'block' or 'post_attention', got {self.insertion!r}")

    @property
    def reading(self) -> str:
        """'released' for the released code's choices (post_attention, k = 3, prompt readout), else 'abstract'
        when all three follow the abstract (block, k = 1, backbone readout), else 'custom'."""
        if (self.insertion, self.share_every, self.pool) == ("post_attention", 3, "prompts"):
            return "released"
        if (self.insertion, self.share_every, self.pool) == ("block", 1, "backbone"):
            return "abstract"
        return "custom"


class DVPTModule(nn.Module):
    """Bottleneck + prompt cross-attention + gated up-projection (one per group of k blocks)."""

    def __init__(self, dim: int, rank: int, num_prompts: int, token_adapter: bool = True,
                 query_init_std: float = 0.02):
        super().__init__()
        self.down = nn.Linear(dim, rank)
        self.up = nn.Linear(rank, dim)
        self.queries = nn.Parameter(torch.empty(num_prompts, rank))
        self.gate = nn.Parameter(torch.zeros(1))
        self.token_adapter = token_adapter
        self.scale = 1.0 / math.sqrt(rank)
        nn.init.trunc_normal_(self.queries, std=query_init_std)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frozen features (B, T, D) -> (Δ for the N prompt slots (B, N, D), Δ per token (B, T, D) or None)."""
        z = F.gelu(self.down(feats))  # (B, T, r)
        attn = torch.softmax(torch.einsum("nr,btr->bnt", self.queries.to(z.dtype), z) * self.scale, dim=-1)
        dyn = attn @ z  # (B, N, r)
        d_prompts = self.gate * self.up(dyn)
        d_tokens = self.gate * self.up(z) if self.token_adapter else None
        return d_prompts, d_tokens


class DVPTViT(PromptedViT):
    """Frozen backbone + prompt slots (N, D) + DVPT modules on the chosen blocks."""

    def __init__(self, backbone: nn.Module, cfg: DVPTConfig):
        super().__init__(backbone, cfg.num_prompts, pool=cfg.pool)  # type: ignore[arg-type]
        depth, dim = len(backbone.blocks), backbone.embed_dim
        if cfg.rank > dim:
            raise ValueError(f"rank={cfg.rank} is larger than the embedding width D={dim}; lower rank")
        chosen = sorted({block_index(i, depth) for i in (cfg.layers if cfg.layers is not None else range(depth))})
        if not chosen:
            raise ValueError("layers is empty; give at least one block index or None for all blocks")
        n_mod = math.ceil(len(chosen) / cfg.share_every)
        self.dvpt = nn.ModuleList(
            DVPTModule(dim, cfg.rank, cfg.num_prompts, cfg.token_adapter, cfg.query_init_std) for _ in range(n_mod)
        )
        self.module_of_block = {b: pos // cfg.share_every for pos, b in enumerate(chosen)}
        self.prompt_tokens = nn.Parameter(torch.empty(1, cfg.num_prompts, dim))
        bound = prompt_init_bound(backbone)
        nn.init.uniform_(self.prompt_tokens, -bound, bound)
        self.prompt_drop = nn.Dropout(cfg.prompt_dropout)
        self.insertion = cfg.insertion
        self.reading = cfg.reading

    def initial_prompts(self, batch_size: int) -> torch.Tensor:
        return self.prompt_drop(self.prompt_tokens).expand(batch_size, -1, -1)

    def block_forward(self, index: int, block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, P + N + L, D) -> block output plus the DVPT deltas (same shape).

        insertion "block": Δ from the block input, added to the block output; "post_attention": h = x +
        Attn(LN1(x)) (timm Block, with LayerScale/DropPath), out = h + MLP(LN2(h)) + Δ(h) (released code).
        """
        m = self.module_of_block.get(index)
        if m is None:
            return block(tokens)
        if self.insertion == "post_attention":
            tokens = tokens + block.drop_path1(block.ls1(block.attn(block.norm1(tokens))))
            out = tokens + block.drop_path2(block.ls2(block.mlp(block.norm2(tokens))))
        else:
            out = block(tokens)
        p, n = self.num_prefix_tokens, self.num_prompts
        d_prompts, d_tokens = self.dvpt[m](self.strip_prompts(tokens))
        if d_tokens is None:
            d_tokens = d_prompts.new_zeros(tokens.shape[0], tokens.shape[1] - n, tokens.shape[2])
        delta = torch.cat([d_tokens[:, :p], d_prompts, d_tokens[:, p:]], dim=1)
        return out + delta.to(out.dtype)



def dvpt_param_count(dim: int, depth: int, cfg: DVPTConfig) -> int:
    """Trainable DVPT parameters (head excluded) for width ``dim`` and ``depth`` blocks, in closed form."""
    n_layers = depth if cfg.layers is None else len({block_index(i, depth) for i in cfg.layers})
    per_module = dim * cfg.rank + cfg.rank + cfg.rank * dim + dim + cfg.num_prompts * cfg.rank + 1
    return math.ceil(n_layers / cfg.share_every) * per_module + cfg.num_prompts * dim


@register_method("dvpt", DVPTConfig, "DVPT: bottleneck + prompts as dynamic queries, gated, shared per k blocks")
def inject(model: nn.Module, cfg: DVPTConfig) -> nn.Module:
    """Wrap the frozen backbone; ``prompt_tokens`` and the ``dvpt`` modules train."""
    return DVPTViT(model, cfg).to(device_of(model))
