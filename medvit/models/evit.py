"""EViT backbones: a ViT whose chosen blocks keep the attentive tokens and fuse the rest.

Liang et al., ICLR 2022 (general-vision notes, entry 19). The parameters are exactly those of the
plain :class:`~medvit.models.vit.VisionTransformer` (same names), so a medvit ViT checkpoint loads
into an EViT backbone for the fine-tune the paper uses; ``keep_rate = 1`` computes the plain ViT.
"""

from __future__ import annotations

from typing import Any

import torch

from medvit.models.factory import register_sizes
from medvit.models.family import default_block_indices, vit_signature
from medvit.models.vit import BlockState, VisionTransformer
from medvit.nn.flops import patch_embed_macs, vit_macs
from medvit.nn.token_reorganize import FUSED_INDEX, block_forward_reorganize, keep_rate_schedule, num_kept


class EViT(VisionTransformer):
    """ViT with EViT token reorganisation.

    Args:
        keep_rate: r in (0, 1], fraction of attentive patch tokens kept at each reorganising block;
            may be changed during training (``model.keep_rate = keep_rate_schedule(...)``).
        keep_locs: 0-based indices of the reorganising blocks; None → depth/4, depth/2, 3·depth/4
            ((3, 6, 9) for depth 12, the paper's default).
        fuse_token: fuse the inattentive tokens into one extra token (the paper's default).
        keep_rate_warmup: ``(start, end)`` as fractions of the training steps: the training loop's
            :meth:`on_train_step` hook lowers r from 1 to ``keep_rate`` between them with
            :func:`~medvit.nn.token_reorganize.keep_rate_schedule` (the paper's fine-tuning warm-up);
            None = r fixed at ``keep_rate``. Evaluation and serving always use ``keep_rate``'s schedule
            end point once training has passed ``end``.
        **vit_kwargs: every :class:`VisionTransformer` argument; ``class_token`` must stay True
            (the scores are CLS attention).
    Raises:
        ValueError: keep_rate outside (0, 1], block indices outside the depth, no class token.
    """

    plain_blocks = False

    @vit_signature
    def __init__(
        self,
        *,
        keep_rate: float = 0.7,
        keep_locs: tuple[int, ...] | list[int] | None = None,
        fuse_token: bool = True,
        keep_rate_warmup: tuple[float, float] | list[float] | None = None,
        **vit_kwargs: Any,
    ):
        super().__init__(**vit_kwargs)
        if not self.num_prefix_tokens:
            raise ValueError("EViT scores tokens by the CLS token's attention; it needs class_token=True")
        depth = len(self.blocks)
        locs = default_block_indices(depth) if keep_locs is None else tuple(int(i) for i in keep_locs)
        if any(not 0 <= i < depth for i in locs):
            raise ValueError(f"keep_locs {locs} must be block indices in [0, {depth})")
        num_kept(1, keep_rate)  # validates the range
        self.keep_rate = float(keep_rate)
        self.target_keep_rate = float(keep_rate)
        self.keep_locs = locs
        self.fuse_token = fuse_token
        self.keep_rate_warmup: tuple[float, float] | None = None
        if keep_rate_warmup is not None:
            start, end = (float(v) for v in keep_rate_warmup)
            if not 0.0 <= start <= end <= 1.0:
                raise ValueError(f"keep_rate_warmup {keep_rate_warmup!r} must be (start, end) fractions with "
                                 "0 <= start <= end <= 1")
            self.keep_rate_warmup = (start, end)

    def on_train_step(self, step: int, total_steps: int) -> None:
        """Training-loop hook (called before every optimiser step): apply the keep-rate warm-up, if configured."""
        if self.keep_rate_warmup is None:
            return
        start, end = (int(round(f * total_steps)) for f in self.keep_rate_warmup)
        self.keep_rate = keep_rate_schedule(step, self.target_keep_rate, start, end)

    # ------------------------------------------------------------------ token bookkeeping (walk hooks)
    def walk_start(self, tokens: torch.Tensor, start: int = 0, grid: tuple[int, ...] | None = None,
                   **kwargs: Any) -> BlockState:
        """Every non-prefix token starts as its own patch: index (B, T - P) = 0..T-P-1."""
        P = self.num_prefix_tokens
        index = torch.arange(tokens.shape[1] - P, device=tokens.device).expand(tokens.shape[0], -1)
        return BlockState(start - 1, tokens, P, patch_index=index)

    def block_step(self, state: BlockState, i: int, attention: bool = False, keep_rate: float | None = None,
                   **kwargs: Any) -> BlockState:
        """Block i, reorganising the tokens at r (``keep_rate``, default the model's) when i is in ``keep_locs``."""
        r = self.keep_rate if keep_rate is None else keep_rate
        rate = r if i in self.keep_locs else 1.0
        P = self.num_prefix_tokens
        tokens, index, probs = block_forward_reorganize(self.blocks[i], state.tokens, rate, P, self.fuse_token,
                                                        state.patch_index, attention)
        return BlockState(i, tokens, P, probs, index)

    def forward_tokens(self, tokens: torch.Tensor, keep_rate: float | None = None) -> torch.Tensor:
        """(B, P + N, D) -> (B, P + N', D) after all blocks and the final norm (N' ≤ N)."""
        return self.norm(self.run_blocks(tokens, keep_rate=keep_rate).tokens)

    def forward_features(self, x: torch.Tensor, keep_rate: float | None = None) -> torch.Tensor:
        """(B, C, *S) -> normalised tokens (B, P + N', D); N' from :meth:`num_output_tokens`."""
        return self.forward_tokens(self.embed(x), keep_rate)

    def num_output_tokens(self, num_patches: int, keep_rate: float | None = None) -> int:
        """Tokens ``forward_features`` returns for ``num_patches`` patches."""
        return self.tokens_per_block(num_patches, keep_rate)[-1][1]

    def tokens_per_block(self, num_patches: int, keep_rate: float | None = None) -> list[tuple[int, int]]:
        """(tokens entering attention, tokens entering the MLP) of each block, prefix included."""
        r = self.keep_rate if keep_rate is None else keep_rate
        P, n, out = self.num_prefix_tokens, num_patches, []
        for i in range(len(self.blocks)):
            n_in = n
            if i in self.keep_locs:
                k = num_kept(n, r)
                if k < n:
                    n = k + (1 if self.fuse_token else 0)
            out.append((P + n_in, P + n))
        return out

    def analytic_macs(self, num_patches: int | None = None, keep_rate: float | None = None) -> int:
        """MACs of one image (patch embed, blocks, head) by the shared formula in :mod:`medvit.nn.flops`."""
        n = self.patch_embed.num_patches if num_patches is None else num_patches
        pe = patch_embed_macs(n, self.in_chans, self.patch_size, self.embed_dim)
        mlp_ratio = self.blocks[0].mlp.fc1.out_features / self.embed_dim
        per_block = self.tokens_per_block(n, keep_rate)
        blocks = vit_macs(per_block, self.embed_dim, mlp_ratio, num_classes=self.num_classes)
        r = self.keep_rate if keep_rate is None else keep_rate
        # a reorganising block also forms the CLS attention row explicitly: T_in·D
        cls_rows = sum(per_block[i][0] * self.embed_dim for i in self.keep_locs) if r < 1.0 else 0
        return blocks + pe + cls_rows

    @torch.no_grad()
    def keep_stage_map(self, x: torch.Tensor, keep_rate: float | None = None) -> torch.Tensor:
        """Per-patch count of the reorganisation stages each patch survived as its own token, for display.

        x: (B, C, *S) -> int64 (B, *grid) (grid = S / patch, e.g. (B, H/p, W/p)) with values in
        0 .. ``len(keep_locs)``: 0 = dropped (fused) at the first reorganising block, ``len(keep_locs)`` =
        kept to the end. Read from the walk's index bookkeeping (``BlockState.patch_index`` after each
        block in ``keep_locs``), so a dropped patch never counts again. At r = 1 every patch scores
        ``len(keep_locs)``. With ``fuse_token=False`` the patches alive after stage s number exactly
        ``tokens_per_block(N)[keep_locs[s]][1] - 1`` (with fusion, fused slots that were kept take some of those).
        Source: EViT (Liang et al., ICLR 2022) Fig. 4, the kept-token visualisation.
        """
        grid = self.patch_embed.dynamic_grid(tuple(x.shape[2:]))
        B, n = x.shape[0], int(torch.tensor(grid).prod())
        survived = torch.zeros(B, n, dtype=torch.long, device=x.device)

        def count(state: BlockState) -> None:
            if state.index in self.keep_locs:
                alive = torch.zeros(B, n + 1, dtype=torch.bool, device=x.device)
                alive.scatter_(1, torch.where(state.patch_index == FUSED_INDEX, n, state.patch_index), True)
                survived.add_(alive[:, :n].long())

        self.run_blocks(self.embed(x), grid=grid, on_block=count, keep_rate=keep_rate)
        return survived.reshape(B, *grid)

    @torch.no_grad()
    def kept_token_map(self, x: torch.Tensor, keep_rate: float | None = None) -> torch.Tensor:
        """Which patches survive every reorganisation as themselves: (B, C, *S) -> bool (B, *grid)."""
        return self.keep_stage_map(x, keep_rate) == len(set(self.keep_locs))

    def intermediate(
        self, tokens: torch.Tensor, state: BlockState, grid: tuple[int, ...], output_fmt: str,
        return_prefix_tokens: bool,
    ) -> torch.Tensor:
        """"NLC": (B, [P +] N_i, D), the tokens alive after block i. "NCHW": (B, D, *grid) with each
        surviving patch token at its original position and zeros at dropped ones (the fused token has
        no position and is left out)."""
        if output_fmt != "NCHW":
            return super().intermediate(tokens, state, grid, output_fmt, return_prefix_tokens)
        B, P, n = tokens.shape[0], state.num_prefix, int(torch.tensor(grid).prod())
        full = tokens.new_zeros(B, n + 1, tokens.shape[-1])
        slot = torch.where(state.patch_index == FUSED_INDEX, n, state.patch_index)
        full.scatter_(1, slot[..., None].expand(-1, -1, tokens.shape[-1]), tokens[:, P:])
        return full[:, :n].transpose(1, 2).reshape(B, -1, *grid)

    def extra_repr(self) -> str:
        own = f", keep_rate={self.keep_rate}, keep_locs={self.keep_locs}, fuse={self.fuse_token}"
        return super().extra_repr() + own


register_sizes("evit_{size}_patch16_224", EViT, "EViT-{S}/16: ViT with token reorganisation, r=0.7 at blocks 4/7/10",
               img_size=224, patch_size=16, keep_rate=0.7)
