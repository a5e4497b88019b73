"""Conversation data for the VLM: the JSONL schema, tokenisation with assistant-only labels, the dataset.

Schema (LLaVA/VILA style; one JSON object per line)::

    {"id": "phantom-000017",
     "images": ["images/000017.png"],            # relative to the JSONL's folder (or image_root)
     "conversations": [{"from": "human", "value": "<image>\\nIs there an effusion?"},
                       {"from": "gpt", "value": "Yes."}]}

``from``: ``human`` | ``gpt`` | ``system`` | ``expert`` (an expert result, merged into the user turn);
``role``/``content`` are accepted too. Every ``<image>`` in the conversation consumes the next entry of
``images`` (their counts must match; an image without ``<image>`` gets one prepended to the first user
turn, LLaVA's convention, only when the conversation has no ``<image>`` at all). Image paths are names under
the image root: absolute paths and ``..`` are refused (a value read from a file never escapes the root).

Tokenisation (:func:`encode_conversation`): the template's segments are tokenised one by one; labels are the
token ids inside assistant segments and -100 elsewhere (system, user, headers, image placeholders). Truncation
to ``max_length``: tokens past it are dropped; an image whose placeholder block would be cut is dropped with
everything after it; a sample left without any assistant token is skipped (and reported).

Packing (:class:`PackedConversationDataset`, :func:`collate_packed`): several whole conversations share one
sequence of at most ``max_length`` tokens (first-fit over a seeded shuffle; a conversation is never split — one
longer than ``max_length`` is truncated by the rule above and packed alone). Each conversation keeps its own
``position_ids`` (0, 1, …) and attends only to itself: the batch carries ``segment_ids`` (1, 2, … per
conversation, 0 on padding) from which :meth:`medvit.vlm.model.VisionLanguageModel.forward` builds a
block-diagonal causal 4D mask; the first label of every conversation is -100, so no loss crosses a boundary.
With these rules the summed token loss of a packed row equals the sum of the conversations' separate losses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medvit.vlm.templates import IGNORE_INDEX, IMAGE_TOKEN, encode_conversation, normalize_messages

logger = logging.getLogger(__name__)


class ConversationError(ValueError):
    """A malformed conversation record (the message names the file, line and key)."""


def validate_record(rec: Any, where: str) -> dict[str, Any]:
    """Check one record against the schema; returns it with ``images`` defaulted to []. Raises
    :class:`ConversationError` naming ``where`` and the key."""
    if not isinstance(rec, dict):
        raise ConversationError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise ConversationError(f"{where}: key 'conversations' must be a non-empty list")
    images = rec.get("images", [] if "image" not in rec else [rec["image"]])
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise ConversationError(f"{where}: key 'images' must be a list of file names")
    try:
        msgs = normalize_messages(conv, where)
    except ValueError as e:
        raise ConversationError(str(e)) from e
    if not any(m["role"] == "assistant" for m in msgs):
        raise ConversationError(f"{where}: key 'conversations' has no 'gpt' (assistant) turn to learn from")
    n_tok = sum(m["content"].count(IMAGE_TOKEN) for m in msgs)
    if n_tok and n_tok != len(images):
        raise ConversationError(f"{where}: {n_tok} '<image>' markers but {len(images)} entries in 'images'")
    return {**rec, "images": images}


def with_image_markers(messages: list[dict[str, str]], n_images: int) -> list[dict[str, str]]:
    """Prepend ``n_images`` ``<image>\\n`` markers to the first user turn when the conversation has none."""
    if n_images == 0 or any(IMAGE_TOKEN in m["content"] for m in messages):
        return messages
    out = [dict(m) for m in messages]
    for m in out:
        if m["role"] == "user":
            m["content"] = (IMAGE_TOKEN + "\n") * n_images + m["content"]
            break
    return out


def safe_image_path(root: Path, name: str, where: str) -> Path:
    """``root / name`` for a relative name without ``..``; raises :class:`ConversationError` otherwise."""
    pp = PurePosixPath(name.replace("\\", "/"))
    if pp.is_absolute() or ".." in pp.parts or not name or ":" in pp.parts[0]:
        raise ConversationError(f"{where}: image {name!r} must be a relative path inside {root} (no '..')")
    return root / Path(*pp.parts)


@dataclass
class VLMProcessor:
    """Image preprocessing for the VLM: file → (C, S, S) float32 normalised (medvit's one preprocessing:
    per-file-kind intensity rule, pad to square, resize, mean/std)."""

    image_size: int
    in_chans: int
    mean: Sequence[float]
    std: Sequence[float]

    @classmethod
    def for_model(cls, model: Any) -> VLMProcessor:
        c = model.cfg
        return cls(int(c.image_size), int(c.in_chans), list(c.mean), list(c.std))

    def _pre(self) -> Any:
        from medvit.data.preprocess import Preprocessor

        return Preprocessor(self.in_chans, (self.image_size, self.image_size), tuple(self.mean), tuple(self.std),
                            geometry="pad", interpolation="bilinear")

    def from_array(self, unit: np.ndarray) -> torch.Tensor:
        """(h, w) or (h, w, 3) float in [0, 1] → (C, S, S) float32 tensor."""
        x, _ = self._pre().from_unit(np.asarray(unit, dtype=np.float32))
        return torch.from_numpy(np.ascontiguousarray(x))

    def from_image(self, image: Any) -> torch.Tensor:
        """A ``medvit.io.MedicalImage`` already read (the viewer's open image, or one :meth:`respond
        <medvit.vlm.chat.VLMChat.respond>` read once) → (C, S, S), exactly as :meth:`load_image` turns its file
        (display slice, intensity rule per file kind, colour → luma; pixels only)."""
        from medvit.data.imageload import load_unit

        return self.from_array(load_unit(image))

    def load_image(self, path: str | Path) -> torch.Tensor:
        """Image file (DICOM, PNG/JPEG, NIfTI, .npy) → (C, S, S). Errors name the file."""
        from medvit.data.imageload import load_unit

        return self.from_array(load_unit(path))


def read_conversations(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Read a conversation JSONL. Returns (valid records, problems [{"line", "reason"}]); bad lines are
    skipped and logged, never fatal. Raises ``FileNotFoundError`` when the file is missing."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"conversation file not found: {p}")
    recs, bad = [], []
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{p}:{i}"
            try:
                recs.append(validate_record(json.loads(line), where))
            except json.JSONDecodeError as e:
                bad.append({"line": where, "reason": f"not valid JSON ({e.msg})"})
            except ConversationError as e:
                bad.append({"line": where, "reason": str(e).removeprefix(where + ": ")})
    for b in bad:
        logger.warning("skipped %s: %s", b["line"], b["reason"])
    return recs, bad


class ConversationDataset(Dataset):
    """Conversations from JSONL files (or in-memory records), tokenised for a :class:`VisionLanguageModel`.

    Items: dict ``input_ids``/``labels`` (L,) long, ``image_mask`` (L,) bool, ``pixel_values`` (n, C, S, S),
    ``id``. Images are read through :class:`VLMProcessor` when the item is fetched; records that cannot be
    used (unreadable image, nothing left to learn after truncation) are reported in ``problems`` and replaced
    by the next good item (a long job continues past bad items).
    """

    def __init__(self, model: Any, sources: Sequence[str | Path] | None = None,
                 records: Sequence[dict[str, Any]] | None = None, image_root: str | Path | None = None,
                 max_length: int | None = None, repeat: Sequence[int] | None = None):
        self.tokenizer, self.template = model.tokenizer, model.template
        self.num_image_tokens = model.num_image_tokens
        self.processor = VLMProcessor.for_model(model)
        self.max_length = int(max_length or model.cfg.max_length)
        self.items: list[tuple[dict[str, Any], Path]] = []
        self.problems: list[dict[str, str]] = []
        for k, src in enumerate(sources or []):
            recs, bad = read_conversations(src)
            self.problems += bad
            root = Path(image_root) if image_root else Path(src).parent
            rep = int(repeat[k]) if repeat else 1
            self.items += [(r, root) for r in recs] * rep
        root0 = Path(image_root or ".")
        for i, r in enumerate(records or []):
            self.items.append((validate_record(r, f"record {i}"), root0))
        if not self.items:
            raise ValueError("conversation dataset is empty (no valid records)")

    def __len__(self) -> int:
        return len(self.items)

    def encode(self, rec: dict[str, Any], root: Path) -> dict[str, Any]:
        where = str(rec.get("id", "?"))
        msgs = with_image_markers(normalize_messages(rec["conversations"], where), len(rec["images"]))
        enc = encode_conversation(self.tokenizer, self.template, msgs, self.num_image_tokens,
                                  max_length=self.max_length)
        if not any(lab != IGNORE_INDEX for lab in enc["labels"]):
            raise ConversationError(f"{where}: no assistant token left after truncation to {self.max_length}")
        pix = [self.processor.load_image(safe_image_path(root, n, where)) for n in rec["images"][: enc["n_images"]]]
        c, s = self.processor.in_chans, self.processor.image_size
        return {"id": where, "input_ids": torch.tensor(enc["input_ids"]), "labels": torch.tensor(enc["labels"]),
                "image_mask": torch.tensor(enc["image_mask"], dtype=torch.bool),
                "pixel_values": torch.stack(pix) if pix else torch.zeros(0, c, s, s)}

    def token_length(self, i: int) -> int:
        """Tokens of item ``i`` after truncation (tokenisation only, no image read); 0 if it cannot be encoded."""
        rec, _ = self.items[i]
        try:
            msgs = with_image_markers(normalize_messages(rec["conversations"], str(rec.get("id", "?"))),
                                      len(rec["images"]))
            enc = encode_conversation(self.tokenizer, self.template, msgs, self.num_image_tokens,
                                      max_length=self.max_length)
        except ValueError:
            return 0
        return len(enc["input_ids"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        for k in range(len(self.items)):
            rec, root = self.items[(i + k) % len(self.items)]
            try:
                return self.encode(rec, root)
            except (ValueError, OSError) as e:
                self.problems.append({"line": str(rec.get("id", "?")), "reason": str(e)})
                logger.warning("skipped conversation %s: %s", rec.get("id", "?"), e)
        raise ValueError("no usable conversation in the dataset (see the warnings)")


def collate_conversations(batch: list[dict[str, Any]], pad_id: int = 0) -> dict[str, Any]:
    """Pad on the right: input_ids (B, L) pad_id, labels -100, image_mask False, attention_mask (B, L) long;
    pixel_values (N, C, S, S) concatenated in batch order (matches the splice order)."""
    n = max(len(b["input_ids"]) for b in batch)

    def pad(t: torch.Tensor, v: Any) -> torch.Tensor:
        return torch.cat([t, torch.full((n - len(t),), v, dtype=t.dtype)])

    return {"input_ids": torch.stack([pad(b["input_ids"], pad_id) for b in batch]),
            "labels": torch.stack([pad(b["labels"], IGNORE_INDEX) for b in batch]),
            "image_mask": torch.stack([pad(b["image_mask"], False) for b in batch]),
            "attention_mask": torch.stack([pad(torch.ones(len(b["input_ids"]), dtype=torch.long), 0) for b in batch]),
            "pixel_values": torch.cat([b["pixel_values"] for b in batch]),
            "ids": [b["id"] for b in batch]}


def pack_by_length(lengths: Sequence[int], max_length: int, seed: int = 0) -> list[list[int]]:
    """Group item indices into bins whose total length is ≤ ``max_length`` (first fit over a seeded shuffle of the
    items; an item longer than ``max_length`` gets a bin of its own). Items of length 0 (unusable) are left out.
    Returns the bins, each a list of indices in packing order."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    order = np.random.default_rng(seed).permutation(len(lengths))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = int(lengths[i])
        if n <= 0:
            continue
        for b, r in enumerate(room):
            if n <= r:
                bins[b].append(int(i))
                room[b] -= n
                break
        else:
            bins.append([int(i)])
            room.append(max(max_length - n, 0))
    return bins


class PackedConversationDataset(Dataset):
    """Several conversations of a :class:`ConversationDataset` per sequence (module docstring, "Packing").

    ``max_length``: tokens per packed sequence (default: the base dataset's). Items: lists of the base items
    (dicts as :class:`ConversationDataset` gives); :func:`collate_packed` turns a batch of them into tensors.
    Packing is fixed at construction (``seed``); the training loop shuffles the packed sequences.
    """

    def __init__(self, base: ConversationDataset, max_length: int | None = None, seed: int = 0):
        self.base = base
        self.max_length = int(max_length or base.max_length)
        lengths = [base.token_length(i) for i in range(len(base))]
        self.bins = pack_by_length(lengths, self.max_length, seed)
        if not self.bins:
            raise ValueError("packed conversation dataset is empty (no conversation could be encoded)")
        n = sum(len(b) for b in self.bins)
        logger.info("packed %d conversations into %d sequences of <= %d tokens (fill %.0f %%)", n, len(self.bins),
                    self.max_length, 100 * sum(lengths) / max(len(self.bins) * self.max_length, 1))

    @property
    def problems(self) -> list[dict[str, str]]:
        return self.base.problems

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, i: int) -> list[dict[str, Any]]:
        return [self.base[j] for j in self.bins[i]]


def collate_packed(batch: list[list[dict[str, Any]]], pad_id: int = 0) -> dict[str, Any]:
    """Concatenate each list of conversation items into one row, pad rows on the right.

    Returns input_ids (B, L), labels (B, L) (-100 on padding and on each conversation's first token),
    image_mask (B, L) bool, position_ids (B, L) (restarting at 0 for each conversation; padding continues from 0),
    segment_ids (B, L) (k = 1, 2, … for the k-th conversation of the row, 0 on padding), attention_mask (B, L)
    (1 on tokens, 0 on padding), pixel_values (N, C, S, S) in row-major order, ids (list of lists)."""
    rows = []
    for items in batch:
        ids, labs, img, pos, seg = [], [], [], [], []
        for k, it in enumerate(items, 1):
            n = len(it["input_ids"])
            lab = it["labels"].clone()
            lab[0] = IGNORE_INDEX
            ids.append(it["input_ids"])
            labs.append(lab)
            img.append(it["image_mask"])
            pos.append(torch.arange(n))
            seg.append(torch.full((n,), k, dtype=torch.long))
        rows.append([torch.cat(x) for x in (ids, labs, img, pos, seg)])
    n = max(len(r[0]) for r in rows)

    def pad(t: torch.Tensor, v: Any) -> torch.Tensor:
        return torch.cat([t, torch.full((n - len(t),), v, dtype=t.dtype)])

    return {"input_ids": torch.stack([pad(r[0], pad_id) for r in rows]),
            "labels": torch.stack([pad(r[1], IGNORE_INDEX) for r in rows]),
            "image_mask": torch.stack([pad(r[2], False) for r in rows]),
            "position_ids": torch.stack([torch.cat([r[3], torch.arange(n - len(r[3]))]) for r in rows]),
            "segment_ids": torch.stack([pad(r[4], 0) for r in rows]),
            "attention_mask": torch.stack([pad(torch.ones(len(r[0]), dtype=torch.long), 0) for r in rows]),
            "pixel_values": torch.cat([it["pixel_values"] for items in batch for it in items]),
            "ids": [[it["id"] for it in items] for items in batch]}
