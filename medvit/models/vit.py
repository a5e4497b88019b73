"""VisionTransformer: one backbone class for 2D and 3D images with any channel count.

Uniform interface (what MAE, PEFT, layer decay, probes and explainers are written against):

- ``forward_features(x)`` → normalised tokens (B, P + N, D), P = ``num_prefix_tokens``
- ``forward_head(tokens, pre_logits=False)`` → logits (B, K) or pooled features (B, D)
- ``forward_intermediates(x, indices)`` → list of per-block outputs
- ``attention_maps(x)`` → list of attention probabilities (B, H, T, T) per block
- ``patch_tokens(x)`` / ``prefix_tokens(B)`` / ``forward_tokens(tokens)``: the embedding and encoder
  stages separately, so a wrapper can drop or add tokens in between (MAE masking, prompts)
- ``forward_until(x, k)`` / ``forward_from(tokens, k)``: the encoder split at block k

Families whose blocks change the token set (EViT, ConViT, LookupViT) override only the two walk
hooks, :meth:`VisionTransformer.walk_start` and :meth:`VisionTransformer.block_step`, which carry a
:class:`BlockState` (tokens, prefix count, surviving-patch index, a second token set); the encoder
loop :meth:`VisionTransformer.run_blocks` and everything built on it (``forward_until``/``forward_from``,
``forward_intermediates``, ``attention_maps``, per-block features for exits) is this class's, written once.
- ``reset_classifier(n)``, ``group_matcher()``, ``no_weight_decay()``
- attributes ``embed_dim``, ``num_prefix_tokens``, ``patch_embed``, ``blocks``, ``num_classes``

The parameter names follow the timm / facebookresearch-MAE layout (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks.N.attn.qkv``, ``norm``, ``fc_norm``, ``head``), so released
checkpoints in that layout load without renaming.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from medvit.nn import Block, PatchEmbed, resample_pos_embed, sincos_pos_embed
from medvit.nn.init import mae_init_

GlobalPool = Literal["token", "avg", ""]
PosEmbedKind = Literal["learn", "sincos", "none"]


def intermediate_output(
    tokens: torch.Tensor, grid: tuple[int, ...], num_prefix: int, output_fmt: str, return_prefix_tokens: bool
) -> torch.Tensor:
    """One block output in ``forward_intermediates`` form (timm convention).

    tokens: (B, P + N, D) with ``num_prefix`` = P prefix tokens and N = prod(grid) patch tokens.
    Returns (B, D, *grid) for "NCHW" (prefix tokens dropped), else (B, [P +] N, D).
    """
    if output_fmt == "NCHW":
        return tokens[:, num_prefix:].transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
    return tokens if return_prefix_tokens else tokens[:, num_prefix:]


@dataclass
class BlockState:
    """The encoder's state after block ``index`` (-1: before the first block run) of a walk.

    tokens: (B, T, D), the first ``num_prefix`` of them prefix tokens. attention: block ``index``'s
    attention probabilities (B, H, T_q, T_k) when asked for, else None. patch_index: (B, T - P) original
    patch index of each non-prefix token for token-reducing families (-1 = a fused token), else None.
    aux: a second token set carried between blocks (LookupViT's compressed tokens), else None.
    """

    index: int
    tokens: torch.Tensor
    num_prefix: int
    attention: torch.Tensor | None = None
    patch_index: torch.Tensor | None = None
    aux: torch.Tensor | None = None


class VisionTransformer(nn.Module):
    """Vision Transformer (Dosovitskiy et al. 2021) with MAE/timm conventions.

    Args:
        img_size: training image size (int or per-axis tuple); other sizes work at inference when
            divisible by the patch size (position embeddings are interpolated).
        patch_size: patch side (int or per-axis tuple).
        in_chans: input channels (1 for X-ray/CT/MR, 3 for RGB).
        num_classes: classifier outputs; 0 gives an identity head (feature extractor).
        global_pool: "token" (CLS), "avg" (mean of patch tokens, MAE fine-tuning), or "" (no pool).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: transformer shape.
        class_token: prepend a learnable CLS token.
        pos_embed: "learn" (trainable, sin-cos initialised), "sincos" (fixed buffer-like parameter
            with requires_grad=False), or "none".
        init_values: LayerScale init (None disables LayerScale).
        fc_norm: LayerNorm after pooling; default True for "avg" pooling (then ``norm`` is Identity).
        drop_rate, pos_drop_rate, attn_drop_rate, drop_path_rate: regularisation; DropPath rates
            rise linearly over depth up to ``drop_path_rate``.
        spatial_dims: 2 for images, 3 for volumes.
        norm_eps: LayerNorm epsilon (1e-6 timm/MAE, 1e-12 HF ViT).
    """

    #: the blocks keep the token set (``forward_tokens`` runs the plain loop that torch.compile/export
    #: and the fused inference kernel see); families overriding the walk hooks set False
    plain_blocks: bool = True

    def __init__(
        self,
        img_size: int | tuple[int, ...] = 224,
        patch_size: int | tuple[int, ...] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: GlobalPool = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        class_token: bool = True,
        pos_embed: PosEmbedKind = "learn",
        init_values: float | None = None,
        fc_norm: bool | None = None,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        spatial_dims: int = 2,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        _check_args(locals())
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = self.num_features = embed_dim
        self.spatial_dims = spatial_dims
        self.in_chans = in_chans
        self.num_prefix_tokens = 1 if class_token else 0
        self.pos_embed_kind = pos_embed
        use_fc_norm = (global_pool == "avg") if fc_norm is None else fc_norm

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, spatial_dims)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        n_pos = self.patch_embed.num_patches + self.num_prefix_tokens
        if pos_embed == "none":
            self.pos_embed = None
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, embed_dim), requires_grad=pos_embed == "learn")
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            [
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[i],
                    init_values=init_values,
                    norm_eps=norm_eps,
                )
                for i in range(depth)
            ]
        )
        self.norm = nn.Identity() if use_fc_norm else nn.LayerNorm(embed_dim, eps=norm_eps)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        """MAE/timm init: sin-cos position table, xavier-uniform linears, N(0, .02) CLS token."""
        if self.pos_embed is not None:
            table = sincos_pos_embed(self.embed_dim, self.patch_embed.grid_size, self.num_prefix_tokens)
            with torch.no_grad():
                self.pos_embed.copy_(table[None])
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for m in self.modules():
            mae_init_(m)

    # ------------------------------------------------------------------ geometry
    @property
    def patch_size(self) -> tuple[int, ...]:
        return self.patch_embed.patch_size

    @property
    def grid_size(self) -> tuple[int, ...]:
        return self.patch_embed.grid_size

    @property
    def img_size(self) -> tuple[int, ...]:
        return self.patch_embed.img_size

    # ------------------------------------------------------------------ stages
    def _pos_for_grid(self, grid: tuple[int, ...]) -> torch.Tensor | None:
        """Position table (1, P + prod(grid), D) for a token grid, interpolated when it differs."""
        if self.pos_embed is None:
            return None
        if tuple(grid) == tuple(self.patch_embed.grid_size):
            return self.pos_embed
        return resample_pos_embed(
            self.pos_embed, grid, self.patch_embed.grid_size, num_prefix_tokens=self.num_prefix_tokens
        )

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with position embedding added, no prefix tokens: (B, C, *S) -> (B, N, D)."""
        grid = self.patch_embed.dynamic_grid(tuple(x.shape[2:]))
        t = self.patch_embed(x)
        pos = self._pos_for_grid(grid)
        if pos is not None:
            t = t + pos[:, self.num_prefix_tokens :]
        return t

    def prefix_tokens(self, batch_size: int) -> torch.Tensor:
        """CLS token(s) with their position embedding: -> (B, P, D); P may be 0."""
        if self.cls_token is None:
            return self.patch_embed.proj.weight.new_zeros(batch_size, 0, self.embed_dim)
        cls = self.cls_token
        if self.pos_embed is not None:
            cls = cls + self.pos_embed[:, : self.num_prefix_tokens]
        return cls.expand(batch_size, -1, -1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> input tokens of the first block: (B, C, *S) -> (B, P + N, D)."""
        t = self.patch_tokens(x)
        t = torch.cat([self.prefix_tokens(x.shape[0]).to(t.dtype), t], dim=1)
        return self.pos_drop(t)

    # ------------------------------------------------------------------ the encoder walk
    def walk_start(self, tokens: torch.Tensor, start: int = 0, grid: tuple[int, ...] | None = None,
                   **kwargs: Any) -> BlockState:
        """State before block ``start`` for ``tokens`` (B, T, D) on the patch ``grid`` (None: training grid)."""
        return BlockState(start - 1, tokens, self.num_prefix_tokens)

    def block_step(self, state: BlockState, i: int, attention: bool = False, **kwargs: Any) -> BlockState:
        """Run block ``i`` on ``state``; with ``attention`` also its probabilities. Token-changing families override."""
        blk = self.blocks[i]
        if attention:
            t, probs = blk.forward_with_attention(state.tokens)
            return BlockState(i, t, state.num_prefix, probs, state.patch_index, state.aux)
        return BlockState(i, blk(state.tokens), state.num_prefix, None, state.patch_index, state.aux)

    def run_blocks(
        self,
        tokens: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        attention: bool = False,
        grid: tuple[int, ...] | None = None,
        on_block: Callable[[BlockState], None] | None = None,
        **kwargs: Any,
    ) -> BlockState:
        """Run blocks ``start .. stop-1`` (no final norm) through the walk hooks; ``on_block`` sees each state.

        tokens: (B, T, D) as block ``start`` expects them. ``kwargs`` go to the hooks (EViT: ``keep_rate``).
        Returns the state after the last block run (the start state when ``start == stop``).
        Raises ValueError for ``start``/``stop`` outside [0, depth].
        """
        depth = len(self.blocks)
        stop = depth if stop is None else stop
        if not 0 <= start <= stop <= depth:
            raise ValueError(f"blocks {start}..{stop} out of range for a {depth}-block model")
        state = self.walk_start(tokens, start, grid, **kwargs)
        for i in range(start, stop):
            state = self.block_step(state, i, attention, **kwargs)
            if on_block is not None:
                on_block(state)
        return state

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run all blocks and the final norm: (B, T, D) -> (B, T', D) (T' = T unless the family changes it)."""
        if not self.plain_blocks:
            return self.norm(self.run_blocks(tokens).tokens)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> normalised tokens (B, P + N, D)."""
        return self.forward_tokens(self.embed(x))

    def forward_until(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Embed and run blocks 0..k-1 (no final norm): (B, C, *S) -> (B, P + N, D). k = 0: embedding only."""
        if not 0 <= k <= len(self.blocks):
            raise ValueError(f"k must be in [0, {len(self.blocks)}], got {k}")
        return self.run_blocks(self.embed(x), 0, k, grid=self.patch_embed.dynamic_grid(tuple(x.shape[2:]))).tokens

    def forward_from(self, tokens: torch.Tensor, k: int) -> torch.Tensor:
        """Run blocks k.. and the final norm on tokens from :meth:`forward_until`: (B, T, D) -> (B, T', D)."""
        if not 0 <= k <= len(self.blocks):
            raise ValueError(f"k must be in [0, {len(self.blocks)}], got {k}")
        return self.norm(self.run_blocks(tokens, k).tokens)

    def num_output_tokens(self, num_patches: int) -> int:
        """Tokens ``forward_features`` returns for an input of ``num_patches`` patches (P + N here;
        token-reducing or token-adding families override it)."""
        return self.num_prefix_tokens + num_patches

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P + N, D) -> (B, D) by CLS token or mean of patch tokens; "" returns tokens unchanged."""
        if self.global_pool == "avg":
            return tokens[:, self.num_prefix_tokens :].mean(dim=1)
        if self.global_pool == "token":
            return tokens[:, 0]
        return tokens

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, P + N, D) -> logits (B, K), or pooled normalised features (B, D) with ``pre_logits``."""
        x = self.head_drop(self.fc_norm(self.pool(tokens)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> logits (B, num_classes) (features (B, D) when num_classes == 0)."""
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ introspection
    def _resolve_indices(self, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
        depth = len(self.blocks)
        if indices is None:
            return list(range(depth))
        if isinstance(indices, int):  # last n blocks
            if not 0 < indices <= depth:
                raise ValueError(f"asked for the last {indices} blocks of a {depth}-block model")
            return list(range(depth - indices, depth))
        out = []
        for i in indices:
            j = i + depth if i < 0 else i
            if not 0 <= j < depth:
                raise ValueError(f"block index {i} out of range for a {depth}-block model")
            out.append(j)
        return out

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        output_fmt: Literal["NLC", "NCHW"] = "NLC",
        return_prefix_tokens: bool = False,
    ) -> list[torch.Tensor]:
        """Outputs of the chosen blocks (int n = last n; list = block indices, negatives allowed), in block order.

        "NLC": (B, [P +] N, D) per block; "NCHW": patch tokens as a map (B, D, *grid) (for
        dense decoders; prefix tokens are dropped). ``norm`` applies the final norm to each.
        """
        grid = self.patch_embed.dynamic_grid(tuple(x.shape[2:]))
        return self.intermediates_from(self.embed(x), grid, indices, norm, output_fmt, return_prefix_tokens)

    def intermediates_from(
        self,
        tokens: torch.Tensor,
        grid: tuple[int, ...],
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        output_fmt: Literal["NLC", "NCHW"] = "NLC",
        return_prefix_tokens: bool = False,
        **kwargs: Any,
    ) -> list[torch.Tensor]:
        """:meth:`forward_intermediates` on embedded ``tokens`` of a patch ``grid`` (``kwargs`` to the walk hooks)."""
        wanted = set(self._resolve_indices(indices))
        outs: list[torch.Tensor] = []

        def keep(state: BlockState) -> None:
            if state.index in wanted:
                o = self.norm(state.tokens) if norm else state.tokens
                outs.append(self.intermediate(o, state, grid, output_fmt, return_prefix_tokens))

        self.run_blocks(tokens, 0, max(wanted) + 1, grid=grid, on_block=keep, **kwargs)
        return outs

    def intermediate(
        self, tokens: torch.Tensor, state: BlockState, grid: tuple[int, ...], output_fmt: str,
        return_prefix_tokens: bool,
    ) -> torch.Tensor:
        """One block output (B, T, D) in ``forward_intermediates`` form; families with other token layouts override."""
        return intermediate_output(tokens, grid, state.num_prefix, output_fmt, return_prefix_tokens)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Attention probabilities of every block: list of depth tensors (B, H, T_i, T_i)."""
        return self.attention_maps_from(self.embed(x), self.patch_embed.dynamic_grid(tuple(x.shape[2:])))

    @torch.no_grad()
    def attention_maps_from(self, tokens: torch.Tensor, grid: tuple[int, ...], **kwargs: Any) -> list[torch.Tensor]:
        """:meth:`attention_maps` on embedded ``tokens`` of a patch ``grid`` (``kwargs`` to the walk hooks)."""
        maps: list[torch.Tensor] = []
        self.run_blocks(tokens, attention=True, grid=grid, on_block=lambda s: maps.append(s.attention), **kwargs)
        return maps

    def reset_classifier(self, num_classes: int, global_pool: GlobalPool | None = None) -> None:
        """Replace the head with a fresh ``num_classes`` linear layer (0: identity)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if global_pool is not None:
            if global_pool not in ("token", "avg", ""):
                raise ValueError(f"global_pool must be 'token', 'avg' or '', got {global_pool!r}")
            if global_pool == "token" and self.cls_token is None:
                raise ValueError("global_pool='token' needs a class token")
            self.global_pool = global_pool
        self.num_classes = num_classes
        dev = self.patch_embed.proj.weight.device
        self.head = nn.Linear(self.embed_dim, num_classes, device=dev) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.weight, std=2e-5)
            nn.init.zeros_(self.head.bias)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter-name regexes grouping the stem and each block (for layer-wise LR decay).

        Returns {"stem": regex, "blocks": [(regex, suffix)]}: a name matching the stem gets layer
        id 0, ``blocks.i`` gets i + 1, and ``norm`` (suffix (99999,)) comes after the last block.
        """
        return {
            "stem": r"^cls_token|^pos_embed|^patch_embed",
            "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        }

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay (besides biases and norms)."""
        return {"pos_embed", "cls_token"}

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, in_chans={self.in_chans}, "
            f"grid={self.patch_embed.grid_size}, prefix={self.num_prefix_tokens}, pool={self.global_pool!r}"
        )


def _check_args(a: dict[str, Any]) -> None:
    """Reject impossible constructor arguments before any tensor is allocated."""
    if a["spatial_dims"] not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {a['spatial_dims']}")
    for k in ("embed_dim", "depth", "num_heads", "in_chans"):
        if not isinstance(a[k], int) or a[k] < 1:
            raise ValueError(f"{k} must be a positive int, got {a[k]!r}")
    if a["embed_dim"] % a["num_heads"]:
        raise ValueError(f"embed_dim {a['embed_dim']} must be divisible by num_heads {a['num_heads']}")
    if not isinstance(a["num_classes"], int) or a["num_classes"] < 0:
        raise ValueError(f"num_classes must be an int >= 0, got {a['num_classes']!r}")
    if a["global_pool"] not in ("token", "avg", ""):
        raise ValueError(f"global_pool must be 'token', 'avg' or '', got {a['global_pool']!r}")
    if a["global_pool"] == "token" and not a["class_token"]:
        raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg'")
    if a["pos_embed"] not in ("learn", "sincos", "none"):
        raise ValueError(f"pos_embed must be 'learn', 'sincos' or 'none', got {a['pos_embed']!r}")
    if a["pos_embed"] != "none":
        div = 4 if a["spatial_dims"] == 2 else 6
        if a["embed_dim"] % div:
            raise ValueError(
                f"sin-cos position init needs embed_dim divisible by {div} in {a['spatial_dims']}D, "
                f"got {a['embed_dim']}"
            )
    for k in ("mlp_ratio", "drop_rate", "pos_drop_rate", "attn_drop_rate", "drop_path_rate", "norm_eps"):
        v = a[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{k} must be a finite number, got {v!r}")
    if a["mlp_ratio"] <= 0:
        raise ValueError(f"mlp_ratio must be > 0, got {a['mlp_ratio']}")
    for k in ("drop_rate", "pos_drop_rate", "attn_drop_rate", "drop_path_rate"):
        if not 0.0 <= a[k] < 1.0:
            raise ValueError(f"{k} must be in [0, 1), got {a[k]}")
    if a["norm_eps"] <= 0:
        raise ValueError(f"norm_eps must be a positive float, got {a['norm_eps']}")
