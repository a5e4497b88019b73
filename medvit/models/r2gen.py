"""R2Gen-style report generator: transformer encoder-decoder with relational memory and memory-driven conditional
layer norm (Chen et al., "Generating Radiology Reports via Memory-driven Transformer", EMNLP 2020), restated.

BenchX's report-generation protocol (medical-notes §3.4) puts this decoder on a frozen visual encoder: patch
features of the frontal and lateral views are concatenated, projected to ``d_model`` (512), encoded by a 3-layer
transformer, and decoded by 3 layers whose layer norms are conditioned on a relational memory (3 slots, 8 heads,
``d_ff`` 512) updated token by token; reports are at most 60 tokens; decoding is beam search (beam 3) with trigram
blocking. :class:`ReportTokenizer` builds the vocabulary from the training reports (words seen at least
``min_count`` times; R2Gen uses 3 on IU X-Ray) after :func:`medvit.eval.text_metrics.normalize_report`-style
cleaning done by the caller.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class ReportTokenizer:
    """Word-level vocabulary over whitespace tokens of cleaned reports (ids 0-3: pad, bos, eos, unk)."""

    def __init__(self, words: Sequence[str]):
        self.itos = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, reports: Sequence[str], min_count: int = 3) -> ReportTokenizer:
        """Vocabulary of the words occurring at least ``min_count`` times in ``reports`` (sorted for stability)."""
        counts = Counter(w for r in reports for w in r.split())
        return cls(sorted(w for w, c in counts.items() if c >= min_count))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, report: str, max_len: int) -> list[int]:
        """``[bos] tokens… [eos]`` truncated to ``max_len`` tokens after bos (unknown words -> unk)."""
        ids = [self.stoi.get(w, UNK) for w in report.split()][: max_len - 1]
        return [BOS, *ids, EOS]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.itos[i] if 0 <= i < len(self.itos) else "<unk>")
        return " ".join(out)

    def batch(self, reports: Sequence[str], max_len: int) -> torch.Tensor:
        """(B, L) long tensor of encoded reports, padded with ``PAD``."""
        enc = [self.encode(r, max_len) for r in reports]
        out = torch.full((len(enc), max(len(e) for e in enc)), PAD, dtype=torch.long)
        for i, e in enumerate(enc):
            out[i, : len(e)] = torch.tensor(e)
        return out


class RelationalMemory(nn.Module):
    """Memory M (B, S, D) updated from each input token: attention over [M; y], MLP, LSTM-style input/forget
    gates (R2Gen §2.2)."""

    def __init__(self, d_model: int, slots: int, heads: int):
        super().__init__()
        self.slots, self.d_model = slots, d_model
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        self.w_gate = nn.Linear(d_model, 2 * d_model)
        self.u_gate = nn.Linear(d_model, 2 * d_model)

    def init_memory(self, batch: int, device: torch.device) -> torch.Tensor:
        m = torch.zeros(self.slots, self.d_model, device=device)
        k = min(self.slots, self.d_model)
        m[:k, :k] = torch.eye(k, device=device)
        return m.expand(batch, -1, -1)

    def step(self, memory: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        kv = torch.cat([memory, y[:, None]], 1)
        m = memory + self.attn(memory, kv, kv, need_weights=False)[0]
        m = m + self.mlp(m)
        gates = self.w_gate(y)[:, None] + self.u_gate(torch.tanh(memory))
        i, f = gates.chunk(2, -1)
        return torch.sigmoid(i) * torch.tanh(m) + torch.sigmoid(f) * memory

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, T, D) -> memory after each token, flattened (B, T, S·D)."""
        m = self.init_memory(emb.shape[0], emb.device)
        outs = []
        for t in range(emb.shape[1]):
            m = self.step(m, emb[:, t])
            outs.append(m.reshape(m.shape[0], -1))
        return torch.stack(outs, 1)


class MCLN(nn.Module):
    """Memory-driven conditional layer norm: LayerNorm whose gain and bias are shifted by MLPs of the memory."""

    def __init__(self, d_model: int, mem_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, elementwise_affine=True)
        self.dg = nn.Sequential(nn.Linear(mem_dim, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        self.db = nn.Sequential(nn.Linear(mem_dim, d_model), nn.ReLU(), nn.Linear(d_model, d_model))

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        h = F.layer_norm(x, x.shape[-1:], eps=self.norm.eps)
        return h * (self.norm.weight + self.dg(mem)) + self.norm.bias + self.db(mem)


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int, mem_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.n1, self.n2, self.n3 = MCLN(d_model, mem_dim), MCLN(d_model, mem_dim), MCLN(d_model, mem_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, enc: torch.Tensor, mem: torch.Tensor, causal: torch.Tensor,
                pad: torch.Tensor | None) -> torch.Tensor:
        h = self.n1(x, mem)
        x = x + self.drop(self.self_attn(h, h, h, attn_mask=causal, key_padding_mask=pad, need_weights=False)[0])
        h = self.n2(x, mem)
        x = x + self.drop(self.cross_attn(h, enc, enc, need_weights=False)[0])
        return x + self.drop(self.ff(self.n3(x, mem)))


class R2GenDecoder(nn.Module):
    """Visual features (B, N, C) + report tokens -> next-token logits; :meth:`generate` decodes by beam search.

    Args:
        feat_dim: width C of the frozen encoder's features.
        vocab_size: :class:`ReportTokenizer` size.
        d_model, d_ff, num_layers, heads, slots, max_len, dropout: BenchX's 512, 512, 3, 8, 3, 60, 0.1.
    """

    def __init__(self, feat_dim: int, vocab_size: int, d_model: int = 512, d_ff: int = 512, num_layers: int = 3,
                 heads: int = 8, slots: int = 3, max_len: int = 60, dropout: float = 0.1):
        super().__init__()
        self.max_len, self.d_model = max_len, d_model
        self.proj = nn.Sequential(nn.Linear(feat_dim, d_model), nn.ReLU(), nn.Dropout(dropout))
        layer = nn.TransformerEncoderLayer(d_model, heads, d_ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.memory = RelationalMemory(d_model, slots, heads)
        mem_dim = slots * d_model
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, d_ff, mem_dim, dropout) for _ in range(num_layers))
        self.final = MCLN(d_model, mem_dim)
        self.out = nn.Linear(d_model, vocab_size)
        self.register_buffer("pe", self._positions(max_len + 2, d_model), persistent=False)

    @staticmethod
    def _positions(n: int, d: int) -> torch.Tensor:
        pos = torch.arange(n, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
        pe = torch.zeros(n, d)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        return pe

    def encode(self, feats: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.proj(feats))

    def decode(self, enc: torch.Tensor, tokens: torch.Tensor, mem: torch.Tensor | None = None) -> torch.Tensor:
        """Encoded visual tokens (B, N, D), input tokens (B, T) -> logits (B, T, V). ``mem``: the relational
        memory after each token (B, T, S·D), computed here when not given (generation passes it incrementally)."""
        t = tokens.shape[1]
        emb = self.embed(tokens)
        mem = self.memory(emb) if mem is None else mem
        x = emb * math.sqrt(self.d_model) + self.pe[:t]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=tokens.device), 1)
        pad = tokens == PAD
        for layer in self.layers:
            x = layer(x, enc, mem, causal, pad)
        return self.out(self.final(x, mem))

    def forward(self, feats: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (B, N, C), (B, T) -> logits (B, T, V) predicting ``tokens`` shifted by one."""
        return self.decode(self.encode(feats), tokens)

    def loss(self, feats: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the next token (padding ignored)."""
        logits = self(feats, tokens[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=PAD)

    @torch.no_grad()
    def generate(self, feats: torch.Tensor, beam: int = 3, max_len: int | None = None,
                 block_trigrams: bool = True) -> list[list[int]]:
        """Batched beam search: (B, N, C) -> B token-id lists (no bos/eos), best hypothesis by length-normalised
        log-probability. Trigram blocking forbids a token that would repeat a trigram already in the hypothesis
        (R2Gen's ``block_trigrams``). The relational memory advances one token per step (no recomputation)."""
        max_len = max_len or self.max_len
        b, k, dev = feats.shape[0], beam, feats.device
        enc = self.encode(feats).repeat_interleave(k, 0)  # (B·k, N, D)
        seqs = torch.full((b * k, 1), BOS, dtype=torch.long, device=dev)
        state = self.memory.init_memory(b * k, dev)
        state = self.memory.step(state, self.embed(seqs[:, 0]))
        mem = state.reshape(b * k, 1, -1)
        scores = torch.full((b, k), -math.inf, device=dev)
        scores[:, 0] = 0.0
        finished = torch.zeros(b * k, dtype=torch.bool, device=dev)
        lengths = torch.zeros(b * k, device=dev)
        for _ in range(max_len):
            logp = F.log_softmax(self.decode(enc, seqs, mem)[:, -1].float(), -1)  # (B·k, V)
            logp[:, PAD] = logp[:, BOS] = -math.inf
            if block_trigrams and seqs.shape[1] >= 3:
                rows = seqs.tolist()
                for r, q in enumerate(rows):
                    blocked = [q[i + 2] for i in range(1, len(q) - 2) if q[i] == q[-2] and q[i + 1] == q[-1]]
                    if blocked:
                        logp[r, blocked] = -math.inf
            done_row = torch.full_like(logp, -math.inf)
            done_row[:, PAD] = 0.0  # a finished hypothesis only extends with padding, at no cost
            logp = torch.where(finished[:, None], done_row, logp)
            cand = (scores.reshape(-1, 1) + logp).reshape(b, -1)  # (B, k·V)
            top_v, top_i = cand.topk(k, -1)
            src = (top_i // logp.shape[1]) + torch.arange(b, device=dev)[:, None] * k  # (B, k) rows of origin
            tok = top_i % logp.shape[1]
            src, tok = src.reshape(-1), tok.reshape(-1)
            seqs = torch.cat([seqs[src], tok[:, None]], 1)
            was_done = finished[src]
            finished = was_done | (tok == EOS)
            lengths = lengths[src] + (~was_done).float()
            scores = top_v
            state = self.memory.step(state[src], self.embed(tok))
            mem = torch.cat([mem[src], state.reshape(b * k, 1, -1)], 1)
            if bool(finished.all()):
                break
        norm = (scores.reshape(-1) / lengths.clamp(min=1)).reshape(b, k)
        norm = torch.where(torch.isfinite(norm), norm, torch.full_like(norm, -math.inf))
        best = norm.argmax(-1) + torch.arange(b, device=dev) * k
        out = []
        for r in best.tolist():
            ids = []
            for t in seqs[r, 1:].tolist():
                if t in (EOS, PAD):
                    break
                ids.append(t)
            out.append(ids)
        return out
