"""BenchX splits: the fixed split files when present, else patient-disjoint splits of the paper's sizes, saved.

BenchX (Zhou et al., NeurIPS 2024 D&B; ``preprocess/datasets/<DS>/``) ships one file per split: ``train_1.txt``,
``train_10.txt``, ``train.txt``, ``val.txt``, ``test.txt`` (1 %, 10 %, 100 % of the training images, validation,
test). :func:`resolve_splits` reads them from ``split_dir`` when all five are there: the first field of each line
(whitespace or comma separated) names an image, matched against the adapter's image ids, their file names or their
stems. Otherwise it draws splits itself: whole patients (sorted by a SHA-256 of ``seed`` and the patient ID) fill
the test split, then validation, then training, to the image counts of :data:`PAPER_SIZES` (scaled to the images
found when the folder holds a different number); the 10 % and 1 % training subsets are nested prefixes of the
training patients; groups the dataset fixes officially (e.g. COVIDx ``val``/``test``) are kept as they are. The
drawn splits are written to ``split_dir`` in the same five-file format, so every later run (and every other
method) uses the very same images.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

#: the split files of BenchX, in the order they are written
SPLIT_NAMES: tuple[str, ...] = ("train_1", "train_10", "train", "val", "test")
#: training fraction (percent of ``train``) of each training split file
TRAIN_PERCENT = {"train_1": 1, "train_10": 10, "train": 100}

#: (train, val, test) image counts of the paper's splits (medical-notes §3.2; BenchX ``datasets/README.md``)
PAPER_SIZES: dict[str, tuple[int, int, int]] = {
    "covidx": (67_862, 8_472, 8_481),
    "nih": (78_468, 11_219, 22_433),
    "object_cxr": (8_000, 1_000, 1_000),
    "rsna": (18_678, 4_003, 4_003),
    "siim": (9_303, 1_372, 1_372),
    "tbx11k": (5_879, 1_260, 1_260),
    "vindr": (12_000, 3_000, 3_000),
    "iu_xray": (2_069, 296, 590),  # R2Gen's split of the 2,955 studies with two views (annotation.json)
}


def split_name(split: str) -> str:
    """Validate a split name (``train_1``, ``train_10``, ``train``, ``val``, ``test``); ValueError otherwise."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}; BenchX splits are {', '.join(SPLIT_NAMES)}")
    return split


def _rank(seed: int, patient: str) -> str:
    return hashlib.sha256(f"benchx-{seed}-{patient}".encode()).hexdigest()


def read_split_files(split_dir: Path, ids: Sequence[str]) -> dict[str, list[str]]:
    """The five split files of ``split_dir`` as lists of image ids (those of ``ids``).

    Raises:
        FileNotFoundError: a split file is missing (names it).
        ValueError: a line names an image that is not in the dataset (names file and line).
    """
    lookup: dict[str, str] = {}
    for i in ids:
        for key in (i, Path(i).name, Path(i).stem):
            lookup.setdefault(key, i)
    out: dict[str, list[str]] = {}
    for name in SPLIT_NAMES:
        f = split_dir / f"{name}.txt"
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: a BenchX split folder holds {', '.join(SPLIT_NAMES)} (.txt)")
        got: list[str] = []
        for k, line in enumerate(f.read_text().splitlines(), 1):
            token = line.replace(",", " ").split()
            if not token:
                continue
            key = token[0]
            hit = lookup.get(key) or lookup.get(Path(key).name) or lookup.get(Path(key).stem)
            if hit is None:
                raise ValueError(f"{f}:{k}: image {key!r} is not in the dataset (check the dataset root and that "
                                 "the split folder belongs to this dataset)")
            got.append(hit)
        out[name] = got
    return out


def _targets(n: int, sizes: tuple[int, int, int]) -> tuple[int, int]:
    """(val, test) image counts for ``n`` images: the paper's when ``n`` matches, else proportional (>= 1 each
    when there are at least 3 images)."""
    total = sum(sizes)
    if n == total:
        return sizes[1], sizes[2]
    val, test = round(n * sizes[1] / total), round(n * sizes[2] / total)
    if n >= 3:
        val, test = max(1, val), max(1, test)
    return val, test


def draw_splits(
    ids: Sequence[str],
    patients: Sequence[str],
    sizes: tuple[int, int, int],
    seed: int = 0,
    fixed: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """Patient-disjoint ``train_1 ⊂ train_10 ⊂ train``, ``val``, ``test`` over images ``ids`` (see module doc).

    ``fixed`` maps ``val``/``test``/``train`` to image ids the dataset assigns officially; the other images are
    drawn. Raises ValueError when ``ids`` and ``patients`` differ in length or a fixed id is unknown.
    """
    if len(ids) != len(patients):
        raise ValueError(f"{len(ids)} image ids but {len(patients)} patient ids")
    fixed = {k: list(v) for k, v in (fixed or {}).items()}
    bad = [k for k in fixed if k not in ("train", "val", "test")]
    if bad:
        raise ValueError(f"fixed splits must be train/val/test, got {bad[0]!r}")
    known = set(ids)
    assigned: dict[str, str] = {}
    for k, v in fixed.items():
        for i in v:
            if i not in known:
                raise ValueError(f"fixed {k} image {i!r} is not among the dataset's images")
            assigned[i] = k
    by_patient: dict[str, list[str]] = defaultdict(list)
    for i, p in zip(ids, patients):
        if i not in assigned:
            by_patient[p].append(i)
    order = sorted(by_patient, key=lambda p: _rank(seed, p))
    out: dict[str, list[str]] = {k: [i for i in ids if assigned.get(i) == k] for k in ("train", "val", "test")}
    n_val, n_test = _targets(len(ids), sizes)
    for p in order:
        for k in ("test", "val"):
            if k not in fixed and len(out[k]) < (n_test if k == "test" else n_val):
                out[k].extend(by_patient[p])
                break
        else:
            out["train"].extend(by_patient[p])
    train_patients: list[str] = []
    pid = dict(zip(ids, patients))
    for i in out["train"]:
        if not train_patients or train_patients[-1] != pid[i]:
            train_patients.append(pid[i])
    train_patients = sorted(dict.fromkeys(train_patients), key=lambda p: _rank(seed, p))
    for name in ("train_10", "train_1"):
        want = max(1, round(len(out["train"]) * TRAIN_PERCENT[name] / 100)) if out["train"] else 0
        members: set[str] = set()
        count = 0
        for p in train_patients:
            if count >= want:
                break
            members.add(p)
            count += sum(1 for i in out["train"] if pid[i] == p)
        out[name] = [i for i in out["train"] if pid[i] in members]
    return {k: out[k] for k in SPLIT_NAMES}


def write_split_files(split_dir: Path, splits: Mapping[str, Sequence[str]]) -> None:
    """Write ``<split_dir>/<name>.txt`` (one image id per line) for the five BenchX splits, atomically."""
    from medvit.io.safe_write import atomic_write

    split_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_NAMES:
        atomic_write(split_dir / f"{name}.txt", "".join(f"{i}\n" for i in splits[name]), root=split_dir, mode=0o644)


def resolve_splits(
    dataset: str,
    ids: Sequence[str],
    patients: Sequence[str],
    split_dir: Path,
    seed: int = 0,
    fixed: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """The BenchX split files of ``split_dir`` when all five exist, else drawn (:func:`draw_splits` with
    ``PAPER_SIZES[dataset]``) and written there. Returns split name -> image ids."""
    if all((split_dir / f"{n}.txt").is_file() for n in SPLIT_NAMES):
        return read_split_files(split_dir, ids)
    present = [n for n in SPLIT_NAMES if (split_dir / f"{n}.txt").is_file()]
    if present:
        raise FileNotFoundError(f"{split_dir} holds only {', '.join(present)}.txt of the five BenchX split files "
                                f"({', '.join(SPLIT_NAMES)}); complete it or remove them to let medvit draw splits")
    splits = draw_splits(ids, patients, PAPER_SIZES[dataset], seed, fixed)
    write_split_files(split_dir, splits)
    logger.info("%s: no BenchX split files in %s; drew patient-disjoint splits (%s) and saved them there", dataset,
                split_dir, ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return splits
