"""FIBER: fusion in the backbone (Dou et al., NeurIPS'22) for a medvit ViT and a BERT-family text encoder.

The last ``num_fused`` blocks of the image backbone and of the text encoder run in lockstep; after
fused block i each stream takes a gated cross-attention step into the other stream's tokens of the same
depth (image → text tokens under the text padding mask; text → image tokens). Every gate ``α`` starts at
0, so at initialisation both outputs are the unimodal backbones' outputs exactly (general-vision notes,
entry 6). The paper inserts the cross-attention inside each block (after self-attention, before the
MLP); here it sits after the block, which keeps both backbones' blocks untouched modules (the same
identity-at-init property; fused-block capacity differs by where the residual joins).

Text encoders: huggingface BERT-family models exposing ``embeddings`` and ``encoder.layer`` (BERT,
RoBERTa, PubMedBERT/BiomedBERT, CXR-BERT's BERT body); they are switched to eager attention, whose
layers take the additive (B, 1, 1, L) padding mask. Not implemented: FIBER's Swin windowing of the text
keys, its pretraining objectives (ITC/ITM/MLM) and the fine-grained grounding stage.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medvit.nn.gated_cross_attention import GatedCrossAttention


class FiberFusion(nn.Module):
    """Image backbone + text encoder with gated cross-attention in their last ``num_fused`` blocks.

    Args:
        image_backbone: a medvit ViT (``embed``, ``blocks``, ``norm``).
        text_encoder: a huggingface BERT-family encoder (``embeddings``, ``encoder.layer``).
        num_fused: K, blocks fused at the top of each stream (FIBER: 6); at most either depth.
        num_heads: heads of every cross-attention.
    Forward:
        ``images`` (B, C, *S), ``input_ids`` (B, L) long, ``attention_mask`` (B, L) 1 = token, 0 = padding.
        Returns (image tokens (B, P + N, D) after the final norm, text tokens (B, L, Dt) — the encoder's
        ``last_hidden_state``).
    Raises:
        ValueError: ``num_fused`` out of range or a text encoder without ``embeddings`` / ``encoder.layer``.
    """

    def __init__(self, image_backbone: nn.Module, text_encoder: nn.Module, num_fused: int = 6,
                 num_heads: int = 4) -> None:
        super().__init__()
        layers = getattr(getattr(text_encoder, "encoder", None), "layer", None)
        if layers is None or not hasattr(text_encoder, "embeddings"):
            raise ValueError(f"text encoder {type(text_encoder).__name__} has no embeddings / encoder.layer "
                             "(FIBER fusion supports BERT-family huggingface encoders)")
        depth_i, depth_t = len(image_backbone.blocks), len(layers)
        if not 1 <= num_fused <= min(depth_i, depth_t):
            raise ValueError(f"num_fused={num_fused} must be in [1, {min(depth_i, depth_t)}] "
                             f"(image depth {depth_i}, text depth {depth_t})")
        if hasattr(text_encoder, "set_attn_implementation"):
            text_encoder.set_attn_implementation("eager")
        self.image, self.text, self.num_fused = image_backbone, text_encoder, num_fused
        d_img = image_backbone.embed_dim if hasattr(image_backbone, "embed_dim") else image_backbone.norm.weight.numel()
        d_txt = text_encoder.config.hidden_size
        self.i2t = nn.ModuleList(GatedCrossAttention(d_img, d_txt, num_heads) for _ in range(num_fused))
        self.t2i = nn.ModuleList(GatedCrossAttention(d_txt, d_img, num_heads) for _ in range(num_fused))

    def gates(self) -> list[nn.Parameter]:
        """Every fusion gate α (image side then text side)."""
        return [m.alpha for m in self.i2t] + [m.alpha for m in self.t2i]

    def _text_mask(self, attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids "
                             f"{tuple(input_ids.shape)}")
        blocks, layers = self.image.blocks, self.text.encoder.layer
        ki, kt = len(blocks) - self.num_fused, len(layers) - self.num_fused
        x = self.image.embed(images)
        for blk in blocks[:ki]:
            x = blk(x)
        t = self.text.embeddings(input_ids=input_ids)
        ext = self._text_mask(attention_mask, t.dtype)
        for layer in layers[:kt]:
            t = _layer_out(layer(t, attention_mask=ext))
        keep = attention_mask.bool()
        for j in range(self.num_fused):
            x = blocks[ki + j](x)
            t = _layer_out(layers[kt + j](t, attention_mask=ext))
            x, t = self.i2t[j](x, t, keep), self.t2i[j](t, x)
        return self.image.norm(x), t


def _layer_out(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


class FiberRetrieval(nn.Module):
    """Image–text retrieval on a medvit ViT and a BERT-family encoder, with FIBER fusion for matching.

    Coarse-grained FIBER: image–text contrastive (ITC) embeddings from the *unfused* streams (what retrieval ranks
    all pairs with, cheaply) and, with ``num_fused > 0``, an image–text matching (ITM) head on the *fused* streams
    that re-ranks each image's top candidates (:meth:`rerank`). With ``num_fused = 0`` it is a plain dual encoder.

    Args:
        image_backbone: medvit ViT (``forward_features``, ``num_prefix_tokens``; ``embed``/``blocks``/``norm`` when
            fused). text_encoder: huggingface BERT-family encoder. embed_dim: joint embedding width.
        num_fused: FIBER blocks (0 = no fusion, no ITM head). num_heads: cross-attention heads.
    Shapes:
        :meth:`image` (B, C, H, W) → (B, E) unit vectors; :meth:`text` (B, L) ids (0 = padding) → (B, E);
        :meth:`itm_logits` (B, C, H, W), (B, L) → (B,) matching logits.
    """

    def __init__(self, image_backbone: nn.Module, text_encoder: nn.Module, embed_dim: int, num_fused: int = 0,
                 num_heads: int = 4) -> None:
        super().__init__()
        if num_fused < 0:
            raise ValueError(f"num_fused must be >= 0, got {num_fused}")
        if hasattr(text_encoder, "set_attn_implementation"):
            text_encoder.set_attn_implementation("eager")
        # each tower is registered once (inside the fusion when there is one): checkpoints hold no shared tensors
        self.fusion = FiberFusion(image_backbone, text_encoder, num_fused, num_heads) if num_fused else None
        self.towers = nn.ModuleDict({"image": image_backbone, "text": text_encoder}) if not num_fused else None
        d_img, d_txt = int(image_backbone.embed_dim), int(text_encoder.config.hidden_size)
        self.img_proj = nn.Linear(d_img, embed_dim)
        self.txt_proj = nn.Linear(d_txt, embed_dim)
        self.itm = nn.Linear(d_img + d_txt, 1) if num_fused else None

    @property
    def image_backbone(self) -> nn.Module:
        return self.fusion.image if self.fusion is not None else self.towers["image"]  # type: ignore[index]

    @property
    def text_encoder(self) -> nn.Module:
        return self.fusion.text if self.fusion is not None else self.towers["text"]  # type: ignore[index]

    @staticmethod
    def _masked_mean(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[..., None].to(t.dtype)
        return (t * m).sum(1) / m.sum(1).clamp(min=1.0)

    def _patches(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.image_backbone.num_prefix_tokens:].mean(1)

    def image(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.img_proj(self._patches(self.image_backbone.forward_features(images))),
                                       dim=-1)

    def text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = (input_ids != 0).long() if attention_mask is None else attention_mask
        h = self.text_encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return nn.functional.normalize(self.txt_proj(self._masked_mean(h, mask)), dim=-1)

    def itm_logits(self, images: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.fusion is None or self.itm is None:
            raise ValueError("itm_logits needs FIBER fusion (num_fused > 0)")
        mask = (input_ids != 0).long() if attention_mask is None else attention_mask
        x, t = self.fusion(images, input_ids, mask)
        return self.itm(torch.cat([self._patches(x), self._masked_mean(t, mask)], dim=-1))[:, 0]

    @torch.no_grad()
    def rerank(self, sim: torch.Tensor, images: torch.Tensor, input_ids: torch.Tensor, k: int,
               batch_size: int = 64) -> torch.Tensor:
        """``sim`` (N_img, N_txt) ITC scores with each image's top-``k`` texts re-ordered by ITM (placed above the
        rest, ordered by matching probability). Without fusion ``sim`` is returned unchanged."""
        if self.fusion is None:
            return sim
        k = min(k, sim.shape[1])
        top = sim.topk(k, dim=1).indices  # (N, k)
        pairs = [(i, int(j)) for i in range(sim.shape[0]) for j in top[i]]
        probs = []
        for s in range(0, len(pairs), batch_size):
            chunk = pairs[s:s + batch_size]
            ii = torch.tensor([p[0] for p in chunk])
            jj = torch.tensor([p[1] for p in chunk])
            probs.append(torch.sigmoid(self.itm_logits(images[ii], input_ids[jj])).float().cpu())
        out = sim.clone().float().cpu()
        lift = float(out.max()) + 1.0
        out[torch.arange(sim.shape[0])[:, None], top.cpu()] = lift + torch.cat(probs).view(-1, k)
        return out
