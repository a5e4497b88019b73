"""TinyViT's sparse teacher-logit store (Wu et al., ECCV 2022, §3.2 "fast pretraining distillation").

The teacher runs once over the training set, for each (epoch, image) on the image augmented exactly as the
student will see it; only its top-K probabilities are kept. One record per (epoch, image) in a memory-mapped file
``logits.bin``, packed without padding: augmentation seed int32 ‖ K class indices int16 ‖ K probabilities fp16,
4 + 4K bytes (44 at K = 10, the paper's setting); ``meta.json`` beside it records K, the class count, the run
seed, image count, epochs, probability kind and the teacher.

Seed replay: medvit's training loop already gives every (epoch, image) its own augmentation seed
(:func:`medvit.train.sampler.sample_seed`) and applies the train transform with ``Generator(seed)``. The teacher
pass applies the same transform with the same 63-bit seeds; the record keeps their low 31 bits. During the
student run the loop hands each sample's seed to the loss (``batch["aug_seed"]``), the record is found by that
seed and its stored seed is checked against it, so the student's augmentation is the teacher's, bit for bit
(tested), without storing any image.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medvit.io.jsonfile import read_json
from medvit.train.sampler import sample_seed

logger = logging.getLogger(__name__)

FORMAT = "medvit-logit-store/1"
PROBE_PARTS = 16  # chunk means of the teacher's first input kept in meta.json (input_probe)
PROBE_ATOL = 1e-3  # a run's recomputed probe may differ by this much (float ops across machines) and still match
DATA_NAME = "logits.bin"
META_NAME = "meta.json"
SEED_MASK = 0x7FFFFFFF  # the stored augmentation seed: the loop's 63-bit seed, low 31 bits (int32, non-negative)


def record_dtype(k: int) -> np.dtype:
    """Packed record (no padding): ``seed`` int32, ``index`` int16[K], ``value`` float16[K] -> 4 + 4K bytes."""
    if not 1 <= k <= 32767:
        raise ValueError(f"top-K must be in [1, 32767], got {k}")
    return np.dtype([("seed", "<i4"), ("index", "<i2", (k,)), ("value", "<f2", (k,))], align=False)


@dataclass(frozen=True)
class StoreMeta:
    """What ``meta.json`` holds. ``probs``: ``"softmax"`` (single-label, the paper) or ``"sigmoid"`` (multi-label:
    per-label probabilities, top-K labels kept)."""

    k: int
    num_classes: int
    n: int  # images per epoch (the training set the loop indexes)
    epochs: int
    seed: int  # the training run's seed (TrainConfig.seed): the augmentation seeds derive from it
    probs: str = "softmax"
    teacher: str = ""
    transform: str = ""  # free-text description of the train transform (checked on open when given)
    failed: tuple[int, ...] = ()  # record rows whose image could not be read / augmented (index -1, ignored)
    teacher_sha256: str = ""  # SHA-256 of the teacher's weights file ("" = unknown, e.g. an in-memory teacher)
    # what the teacher saw: record row, shape and PROBE_PARTS chunk means of the augmented input of that row (the
    # first readable image of epoch 0) — a later run recomputes it to check image size / normalisation / transform
    input_row: int = -1
    input_shape: tuple[int, ...] = ()
    input_probe: tuple[float, ...] = ()
    # batch-level Mixup / CutMix the teacher saw (0, 0 = none) and the loop batch size its batches were formed with
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_batch_size: int = 0

    def to_json(self) -> str:
        d = {"format": FORMAT, **self.__dict__, "failed": list(self.failed), "input_shape": list(self.input_shape),
             "input_probe": list(self.input_probe)}
        return json.dumps(d, indent=2)


class LogitStore:
    """Read (and fill) a store folder. ``records`` is the ``np.memmap`` of shape ``(epochs * n,)``; row
    ``epoch * n + index``."""

    def __init__(self, root: str | Path, meta: StoreMeta, mode: str = "r"):
        self.root, self.meta = Path(root), meta
        self.dtype = record_dtype(meta.k)
        rows = meta.epochs * meta.n
        f = self.root / DATA_NAME
        if mode == "r":
            want = rows * self.dtype.itemsize
            if not f.is_file() or f.stat().st_size != want:
                have = f.stat().st_size if f.is_file() else "missing"
                raise ValueError(f"{f}: expected {want} bytes ({rows} records of {self.dtype.itemsize}), got {have}")
        self.records = np.memmap(f, dtype=self.dtype, mode=mode, shape=(rows,))
        self._row_of_seed: dict[int, int] | None = None
        if mode == "r":
            self.check_records()

    def check_records(self, chunk: int = 1 << 20) -> None:
        """Validate every record once (chunked): each row's K indices all -1 (a failed image) or all in
        ``[0, num_classes)``; the values of valid rows finite and in [0, 1]. ``ValueError`` naming ``logits.bin``,
        the first bad record and the reason (a corrupt store must not crash the loss or train on garbage)."""
        f, c = self.root / DATA_NAME, self.meta.num_classes
        for start in range(0, len(self.records), chunk):
            rec = self.records[start:start + chunk]
            idx, val = rec["index"].astype(np.int64), rec["value"].astype(np.float32)
            failed = (idx == -1).all(axis=1)
            bad_idx = ~failed & ((idx < 0) | (idx >= c)).any(axis=1)
            if bad_idx.any():
                r = int(np.flatnonzero(bad_idx)[0])
                raise ValueError(f"{f}: record {start + r} holds class indices {idx[r].tolist()}: each must be in "
                                 f"[0, {c}) (num_classes in {META_NAME}), or all -1 for a failed image")
            bad_val = ~failed & ~(np.isfinite(val) & (val >= 0) & (val <= 1)).all(axis=1)
            if bad_val.any():
                r = int(np.flatnonzero(bad_val)[0])
                raise ValueError(f"{f}: record {start + r} holds probabilities {val[r].tolist()}: each must be finite "
                                 "and in [0, 1]")

    # ------------------------------------------------------------------ open / create
    @classmethod
    def create(cls, root: str | Path, meta: StoreMeta) -> LogitStore:
        root = Path(root)
        if meta.probs not in ("softmax", "sigmoid"):
            raise ValueError(f"probs must be 'softmax' or 'sigmoid', got {meta.probs!r}")
        if not 1 <= meta.k <= meta.num_classes:
            raise ValueError(f"top-K {meta.k} must be in [1, num_classes={meta.num_classes}]")
        if meta.n < 1 or meta.epochs < 1:
            raise ValueError(f"a store needs n >= 1 images and epochs >= 1, got n={meta.n}, epochs={meta.epochs}")
        root.mkdir(parents=True, exist_ok=True)  # after the checks: a refused store leaves no empty folder
        (root / META_NAME).write_text(meta.to_json())
        return cls(root, meta, mode="w+")

    @classmethod
    def open(cls, root: str | Path) -> LogitStore:
        """Open a store folder read-only; ValueError naming the file when it is not a complete store."""
        root = Path(root)
        mf = root / META_NAME
        d = read_json(mf, format_id=FORMAT, missing=f"is {root} a teacher-logit store (tinyvit_kd teacher pass)?")
        d.pop("format")
        meta = StoreMeta(**_checked_meta(d, mf))
        if meta.probs not in ("softmax", "sigmoid") or not 1 <= meta.k <= meta.num_classes or meta.n < 1 \
                or meta.epochs < 1:
            raise ValueError(f"{mf}: needs probs softmax|sigmoid, 1 <= k <= num_classes, n >= 1, epochs >= 1; got "
                             f"probs={meta.probs!r}, k={meta.k}, num_classes={meta.num_classes}, n={meta.n}, "
                             f"epochs={meta.epochs}")
        bad = [r for r in meta.failed if not 0 <= r < meta.n * meta.epochs]
        if bad:
            raise ValueError(f"{mf}: key 'failed' lists rows outside [0, {meta.n * meta.epochs}): {bad[:5]}")
        return cls(root, meta, mode="r")

    def write_meta(self, meta: StoreMeta) -> None:
        self.meta = meta
        (self.root / META_NAME).write_text(meta.to_json())

    # ------------------------------------------------------------------ records
    def write(self, rows: np.ndarray, seeds: np.ndarray, index: torch.Tensor, value: torch.Tensor) -> None:
        """Write records ``rows``: seeds (B,) int, top-K class indices (B, K), probabilities (B, K)."""
        r = self.records
        r["seed"][rows] = (np.asarray(seeds, dtype=np.int64) & SEED_MASK).astype(np.int32)
        r["index"][rows] = index.detach().cpu().numpy().astype(np.int16)
        r["value"][rows] = value.detach().float().cpu().numpy().astype(np.float16)

    def flush(self) -> None:
        self.records.flush()

    def row_of_seed(self, seed: int) -> int:
        """Record row of the loop's augmentation seed ``seed`` (epochs past the stored ones wrap around)."""
        if self._row_of_seed is None:
            m, table = self.meta, {}
            for e in range(m.epochs):
                for i in range(m.n):
                    table[sample_seed(m.seed, e, i)] = e * m.n + i
            self._row_of_seed = table
        row = self._row_of_seed.get(int(seed))
        if row is None:
            raise KeyError(f"{self.root}: no record for augmentation seed {seed}: the student run must use the "
                           f"store's training set ({self.meta.n} images), train.seed={self.meta.seed} and at most "
                           f"{self.meta.epochs} epochs (rerun the teacher pass with more epochs)")
        return row

    def lookup(self, aug_seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Records of a batch by the loop's seeds (B,) -> (stored seed (B,) int64, index (B, K) long, value (B, K)
        float32). ValueError when a stored seed differs from the seed the loop augmented with."""
        seeds = [int(s) for s in aug_seeds.reshape(-1).tolist()]
        rows = np.array([self.row_of_seed(s) for s in seeds], dtype=np.int64)
        rec = self.records[rows]
        stored = torch.from_numpy(rec["seed"].astype(np.int64))
        want = torch.tensor([s & SEED_MASK for s in seeds], dtype=torch.int64)
        if not torch.equal(stored, want):
            bad = int(rows[(stored != want).nonzero()[0, 0]])
            raise ValueError(f"{self.root / DATA_NAME}: record {bad} holds seed {int(stored[0])}, the loop augmented "
                             "with another: the store was written for a different run")
        return (stored, torch.from_numpy(rec["index"].astype(np.int64)),
                torch.from_numpy(rec["value"].astype(np.float32)))


def _checked_meta(d: dict[str, Any], mf: Path) -> dict[str, Any]:
    """``meta.json`` fields type-checked against :class:`StoreMeta`; ``ValueError`` naming the file and key."""
    import dataclasses

    kinds = {"k": int, "num_classes": int, "n": int, "epochs": int, "seed": int, "probs": str, "teacher": str,
             "transform": str, "teacher_sha256": str, "input_row": int, "mix_batch_size": int}
    fields = {f.name for f in dataclasses.fields(StoreMeta)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ValueError(f"{mf}: unknown key(s) {unknown} (a {FORMAT} meta.json has {sorted(fields)})")
    out = dict(d)
    for key, value in d.items():
        if key in ("failed", "input_shape"):
            if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ValueError(f"{mf}: key {key!r} must be a list of integers, got {value!r}")
            out[key] = tuple(value)
        elif key == "input_probe":
            if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      and math.isfinite(v) for v in value):
                raise ValueError(f"{mf}: key 'input_probe' must be a list of finite numbers, got {value!r}")
            out[key] = tuple(float(v) for v in value)
        elif key in ("mixup", "cutmix"):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{mf}: key {key!r} must be a number >= 0, got {value!r}")
            out[key] = float(value)
        elif key in kinds:
            want = kinds[key]
            if not isinstance(value, want) or isinstance(value, bool):
                raise ValueError(f"{mf}: key {key!r} must be {'an integer' if want is int else 'a string'}, got "
                                 f"{value!r}")
        elif not isinstance(value, (str, int, float, list, dict)) or isinstance(value, bool):
            raise ValueError(f"{mf}: key {key!r} has a value of the wrong type: {value!r}")
    missing = sorted({"k", "num_classes", "n", "epochs", "seed"} - set(d))
    if missing:
        raise ValueError(f"{mf}: missing key(s) {missing}")
    return out


def input_probe(x: torch.Tensor) -> tuple[float, ...]:
    """A compact fingerprint of one model input (any shape): the means of :data:`PROBE_PARTS` consecutive chunks of
    its flattened values. Changes with image size, normalisation, channel count or the augmentation drawn."""
    flat = x.detach().float().cpu().reshape(-1)
    return tuple(round(float(c.mean()), 6) for c in torch.tensor_split(flat, min(PROBE_PARTS, flat.numel())))


def check_input(store: LogitStore, train_set: Any, transform: Any) -> None:
    """Recompute the augmented input of record ``meta.input_row`` with this run's training set and transform and
    compare it with what the teacher saw (shape exactly, :func:`input_probe` within :data:`PROBE_ATOL`).
    ``ValueError`` naming the store when they differ (another image size, normalisation or train transform: the
    stored teacher outputs would describe other images). Stores without a probe (older format) are only logged."""
    from medvit.train.sampler import SeededTransformDataset

    m = store.meta
    if m.input_row < 0 or not m.input_shape:
        logger.warning("%s: store records no teacher input probe (older format); image size / transform of this run "
                       "cannot be checked against the teacher pass", store.root)
        return
    e, i = divmod(m.input_row, m.n)
    x = SeededTransformDataset(train_set, transform)[(i, sample_seed(m.seed, e, i))]["image"]
    probe = input_probe(x)
    if tuple(x.shape) != m.input_shape:
        raise ValueError(f"{store.root / META_NAME}: the teacher saw inputs of shape {list(m.input_shape)}, this run's "
                         f"train transform gives {list(x.shape)} (image_size / in_chans changed): rewrite the store "
                         "for this input (new loss.args.store) or train at the teacher pass's size")
    diff = max((abs(a - b) for a, b in zip(probe, m.input_probe)), default=0.0)
    if len(probe) != len(m.input_probe) or diff > PROBE_ATOL:
        raise ValueError(f"{store.root / META_NAME}: record {m.input_row}'s input differs from the one the teacher saw "
                         f"(input_probe max difference {diff:.4g} > {PROBE_ATOL}): normalisation, dataset or train "
                         "transform changed; rewrite the store for this run (new loss.args.store)")


def topk_probs(logits: torch.Tensor, k: int, probs: str = "softmax") -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits (B, C) -> (top-K class indices (B, K) long, their probabilities (B, K) float32), by
    decreasing probability; ``probs`` "softmax" (single-label) or "sigmoid" (per-label, multi-label)."""
    p = torch.softmax(logits.float(), -1) if probs == "softmax" else torch.sigmoid(logits.float())
    val, idx = p.topk(k, dim=-1)
    return idx, val


@torch.no_grad()
def save_teacher_logits(teacher: nn.Module, train_set: Any, transform: Any, out_dir: str | Path, *, k: int,
                        epochs: int, seed: int, probs: str = "softmax", batch_size: int = 64,
                        device: str | torch.device = "cpu", teacher_name: str = "",
                        transform_desc: str = "", teacher_sha256: str = "", mixup: float = 0.0,
                        cutmix: float = 0.0, mix_batch_size: int = 0) -> LogitStore:
    """Run ``teacher`` once per (epoch, image) of ``train_set`` on ``transform(item, Generator(s))`` with ``s`` the
    loop's augmentation seed (:func:`medvit.train.sampler.sample_seed` of ``seed``), keep the top-``k``
    probabilities. Items that fail to load or augment are logged, left as index -1 records (the loss ignores
    them) and listed in ``meta.json`` ``failed``; the pass goes on. Returns the store (read-only).

    With ``mixup`` or ``cutmix`` > 0 the pass forms the training loop's batches (:class:`ResumableBatchSampler` of
    ``mix_batch_size``, seed ``seed``, one process), mixes each with :func:`medvit.train.mixing.mix_images` drawn
    from :func:`~medvit.train.mixing.batch_mix_seed` of its seeds, and stores the teacher's outputs on the mixed
    images; a batch with a failing item is failed as a whole (the loop could not form it either); images the loop
    never uses (the tail that does not fill a batch) keep index -1 without being listed as failed."""
    from medvit.train.mixing import batch_mix_seed, mix_images
    from medvit.train.sampler import ResumableBatchSampler, SeededTransformDataset

    mixing = mixup > 0 or cutmix > 0
    if mixing and mix_batch_size < 1:
        raise ValueError("teacher pass with Mixup/CutMix needs the training loop's batch size (train.batch_size)")
    teacher = teacher.to(device).eval()
    n = len(train_set)
    data = SeededTransformDataset(train_set, transform)
    store: LogitStore | None = None
    num_classes: int | None = None
    failed: list[int] = []
    probe: tuple[int, tuple[int, ...], tuple[float, ...]] = (-1, (), ())

    def flush_batch(rows: list[int], seeds: list[int], xs: list[torch.Tensor]) -> None:
        nonlocal store, num_classes
        x = torch.stack(xs)
        if mixing:
            x, _ = mix_images(x, mixup, cutmix, np.random.default_rng(batch_mix_seed(seeds)))
        out = teacher(x.to(device))
        logits = out if isinstance(out, torch.Tensor) else torch.stack([o.float() for o in out]).mean(0)
        if store is None:
            num_classes = int(logits.shape[-1])
            store = LogitStore.create(out_dir, StoreMeta(k, num_classes, n, epochs, seed, probs, teacher_name,
                                                         transform_desc))
            store.records["index"][:] = -1
        idx, val = topk_probs(logits, k, probs)
        store.write(np.array(rows), np.array(seeds), idx, val)

    def load(e: int, i: int, s: int) -> torch.Tensor | None:
        nonlocal probe
        try:
            x = data[(i, s)]["image"]
        except Exception as err:  # noqa: BLE001 - a bad image must not end the pass; it is reported
            logger.warning("teacher pass: epoch %d image %d skipped: %s", e, i, err)
            failed.append(e * n + i)
            return None
        if probe[0] < 0:
            probe = (e * n + i, tuple(x.shape), input_probe(x))
        return x

    for e in range(epochs):
        if mixing:
            sampler = ResumableBatchSampler(n, mix_batch_size, seed)
            sampler.set_epoch(e)
            for batch in sampler:
                xs = [load(e, i, s) for i, s in batch]
                rows = [e * n + i for i, _ in batch]
                if any(x is None for x in xs):
                    failed.extend(r for r, x in zip(rows, xs) if x is not None)
                    continue
                flush_batch(rows, [s for _, s in batch], xs)  # type: ignore[arg-type]
        else:
            pending: list[tuple[int, int, torch.Tensor]] = []
            for i in range(n):
                s = sample_seed(seed, e, i)
                x = load(e, i, s)
                if x is None:
                    continue
                pending.append((e * n + i, s, x))
                if len(pending) == batch_size:
                    flush_batch(*map(list, zip(*pending)))
                    pending = []
            if pending:
                flush_batch(*map(list, zip(*pending)))
        logger.info("teacher pass: epoch %d/%d done", e + 1, epochs)
    if store is None:
        raise ValueError(f"teacher pass: no image of the {n} could be read")
    written = np.zeros(n * epochs, dtype=bool)
    written[(store.records["index"][:, 0] >= 0)] = True
    for row in np.flatnonzero(~written):  # failed or never batched: seed kept so lookups check it
        store.records["seed"][row] = sample_seed(seed, int(row) // n, int(row) % n) & SEED_MASK
    store.flush()
    store.write_meta(StoreMeta(k, int(num_classes or 0), n, epochs, seed, probs, teacher_name, transform_desc,
                               tuple(sorted(failed)), teacher_sha256, *probe, float(mixup), float(cutmix),
                               int(mix_batch_size) if mixing else 0))
    del store
    if failed:
        logger.warning("teacher pass: %d of %d records failed (listed in %s)", len(failed), n * epochs,
                       Path(out_dir) / META_NAME)
    return LogitStore.open(out_dir)


def dense_from_topk(index: torch.Tensor, value: torch.Tensor, num_classes: int,
                    probs: str = "softmax") -> torch.Tensor:
    """Rebuild the teacher distribution from top-K records: (B, K) indices, (B, K) probabilities -> (B, C).

    softmax (TinyViT): the K stored classes take their values, every other class ``(1 - Σv) / (C - K)`` (clamped
    at 0), so each row sums to 1 (up to fp16 rounding of the values). sigmoid: stored labels take their values,
    the others 0 (the teacher ranked them lowest). Records with index -1 (failed images) give an all-zero row.
    """
    b, k = index.shape
    valid = (index >= 0).all(-1, keepdim=True)
    idx = index.clamp(min=0)
    if probs == "softmax":
        rest = (1.0 - value.sum(-1, keepdim=True)).clamp(min=0.0) / max(num_classes - k, 1)
        dense = rest.expand(b, num_classes).clone() if num_classes > k else value.new_zeros(b, num_classes)
    elif probs == "sigmoid":
        dense = value.new_zeros(b, num_classes)
    else:
        raise ValueError(f"probs must be 'softmax' or 'sigmoid', got {probs!r}")
    dense.scatter_(1, idx, value)
    return dense * valid
