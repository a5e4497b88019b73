"""Your own labelled images without adapter code: registered datasets ``csv`` and ``folder``.

``csv`` (:class:`LabelledCSV`): a CSV file (default ``ROOT/labels.csv``) with

- an image-path column (``path``): a path relative to ``ROOT`` (DICOM, PNG/JPEG/TIFF, NIfTI, .npy; anything
  :func:`medvit.io.read_image` reads); absolute paths and ``..`` are refused, so no value of the file points outside
  the dataset folder; a symbolic link whose target lies outside ``ROOT`` is refused too unless ``follow_links``
  (as ``medvit infer --follow-links``);
- a patient column (``patient``): images of one patient always land in the same split (missing column: each image
  is its own patient, logged as a warning);
- one column per label, holding ``1`` (present), ``0`` (absent) or nothing (unknown: masked out of the loss and the
  metrics; ``label_mask`` False). ``1.0`` / ``0.0`` / ``true`` / ``false`` are accepted; any other value is a
  ValueError naming the file, the CSV line and the column. Label columns default to every column that is not the
  path, patient or split column;
- optionally a split column (``split``: ``train`` / ``val`` / ``test``); without it the split is drawn per patient:
  a deterministic hash of (``split_seed``, patient) puts ``test_fraction`` of the patients in ``test`` and
  ``val_fraction`` in ``val``. A split column that puts one patient in several splits is a ValueError naming the
  patients and their CSV lines (splits must be patient-disjoint, else validation and test leak training
  patients); ``allow_patient_overlap=True`` accepts it with a warning naming them.

``folder`` (:class:`ClassFolder`): one folder per class, ``ROOT/<class>/.../<image>``; the labels are the class
names (sorted), one-hot and all known, so multi-label fine-tuning trains a softmax-free one-vs-rest head. The
patient of an image is the first folder below its class folder (``ROOT/<class>/<patient>/<image>``) or, for
images directly in the class folder, the file name. Image files that are symbolic links leading outside ``ROOT``
are refused unless ``follow_links``.

Both check every listed image before training starts (ValueError naming the CSV line or the file, and the reason,
for every bad one): the file must not be empty and its header must parse for its kind (DICOM header, PIL image
header, NIfTI header, .npy header) — an unreadable file is an error at dataset construction, as a missing one is,
never a traceback mid-training. A file whose header parses but whose pixel data is broken still fails when its
item is read; that error names the CSV line (or the file) too.

Both: items as in :mod:`medvit.data.datasets` (``image`` (C, H, W) in [0, 1] read through
:func:`medvit.data.imageload.load_unit` with the contract's intensity rules, ``label`` (K,) float, ``label_mask``
(K,) bool, ``id`` = the relative path, ``patient_id``); ``label_names`` = the CSV label columns / the class folder
names, which fine-tuning writes into the weight contract. Normalisation defaults (registry meta) are mean 0.5 and
std 0.25: set the task's ``mean`` / ``std`` to your data's values when you know them.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvit.data.datasets import ItemDataset, check_split, to_chw
from medvit.data.nih import patient_hash_fraction
from medvit.io.errors import file_problem, printable_path
from medvit.io.jsonfile import name_list_problem
from medvit.io.safe_write import resolved_inside
from medvit.registry import register

logger = logging.getLogger(__name__)

_SPLITS = ("train", "val", "test", "all")
#: file name endings the class-folder layout reads (other files are skipped)
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz", ".npy")
_TRUE, _FALSE = ("1", "1.0", "true", "yes"), ("0", "0.0", "false", "no")


def inside(root: Path, rel: str, where: str, follow_links: bool = False, hint: str = "") -> Path:
    """``root / rel`` for a relative path read from a file (a value read from a file never points outside the
    dataset folder). ValueError naming ``where`` for an empty, absolute or ``..`` path, and, unless
    ``follow_links``, for one that resolves outside ``root`` through a symbolic link (the file itself or a folder
    on its way; ``hint`` is added to that message) or cannot be resolved (a link loop). A ``root`` that is itself
    reached through a link is fine: both sides are resolved."""
    if "\x00" in rel:  # Path.resolve / os.stat: a bare "embedded null byte" naming nothing
        raise ValueError(f"{where}: image path '{printable_path(rel)}' contains a NUL byte")
    p = Path(rel)
    if not rel or p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{where}: image path {rel!r} must be a relative path inside {root}")
    path = root / p
    if not follow_links:
        try:
            target, ok = resolved_inside(root, path, shown=f"image path {rel!r}")
        except ValueError as e:  # a link loop
            raise ValueError(f"{where}: {e}") from None
        if not ok:
            raise ValueError(f"{where}: {rel} leads through a symbolic link to {target}, outside {root} (refused"
                             f"{'; ' + hint if hint else ''})")
    return path


def _unreadable(p: Path) -> str | None:
    """Why ``p`` cannot be an image (empty, or its header does not parse for its kind), or None. Reads headers
    only (pixel data is decoded later, when the item is read)."""
    from medvit.io import NIFTI_SUFFIXES
    from medvit.io.raster import RASTER_SUFFIXES

    if p.stat().st_size == 0:
        return "empty file (0 bytes)"
    name = p.name.lower()
    try:
        if name.endswith(NIFTI_SUFFIXES):
            import nibabel

            nibabel.load(str(p))
        elif name.endswith(RASTER_SUFFIXES):
            from PIL import Image

            with Image.open(p) as im:
                im.verify()
        elif name.endswith(".npy"):
            np.load(p, mmap_mode="r", allow_pickle=False)
        else:
            from medvit.io.dicom import read_dicom_header

            read_dicom_header(p)
    except Exception as e:  # noqa: BLE001 - any reader failure makes the file unusable; reported with its reason
        return f"{type(e).__name__}: {e}"
    return None


def _check_links_and_headers(root: Path, items: list[tuple[str, str]], follow_links: bool) -> None:
    """ValueError listing every ``(where, relative path)`` that leads outside ``root`` (:func:`inside`; unless
    ``follow_links``) or whose file is unreadable (:func:`_unreadable`)."""
    bad = []
    for where, rel in items:
        try:
            p = inside(root, rel, where, follow_links, hint="set dataset_args.follow_links=true to read it")
        except ValueError as e:
            bad.append(str(e))
            continue
        why = _unreadable(p)
        if why is not None:
            bad.append(f"{where}: cannot read {rel} as an image ({why})")
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(f"{len(bad)} bad image file(s): " + "; ".join(bad[:5]) + more)


def _check_patient_disjoint(f: Path, seen: dict[str, dict[str, int]], split_column: str, allow: bool) -> None:
    """ValueError (warning when ``allow``) naming the patients that the split column puts in several splits."""
    shared = {p: s for p, s in seen.items() if len(s) > 1}
    if not shared:
        return
    shown = "; ".join(f"{p!r} in " + ", ".join(f"{s} (line {ln})" for s, ln in sorted(v.items(), key=lambda x: x[1]))
                      for p, v in list(shared.items())[:5])
    more = f" (and {len(shared) - 5} more)" if len(shared) > 5 else ""
    msg = (f"{f}: column {split_column!r} puts {len(shared)} patient(s) in more than one split: {shown}{more}; "
           "validation/test would then score patients seen in training")
    if not allow:
        raise ValueError(msg + " (set dataset_args.allow_patient_overlap=true to accept it)")
    logger.warning("%s (accepted: allow_patient_overlap)", msg)


def split_of(patient: str, val_fraction: float, test_fraction: float, seed: int) -> str:
    """``train`` / ``val`` / ``test`` of a patient by a deterministic hash (same answer on every machine)."""
    u = patient_hash_fraction(patient, f"medvit-own-{seed}-")
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in [0, 1) with a "
                         "sum below 1")


class _Rows(ItemDataset):
    """Shared item reading of the two layouts: rows of (relative path, patient, labels, mask)."""

    rows: list[tuple[str, str, np.ndarray, np.ndarray]]
    where: dict[str, str]  # relative path -> where it was listed (``labels.csv:LINE``), for error messages

    def __init__(self, root: str | Path, image_size: int | None, in_chans: int, max_short_side: int | None,
                 intensity: dict[str, str] | None, transform: Any) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.root}")
        self.image_size, self.in_chans, self.max_short_side = image_size, int(in_chans), max_short_side
        self.intensity, self.transform = intensity, transform

    def __len__(self) -> int:
        return len(self.rows)

    def patient_ids(self) -> list[str]:
        return [r[1] for r in self.rows]

    def source_file(self, i: int) -> Path:
        """The file item ``i`` is read from (disk-cache key: :mod:`medvit.data.monai_data`)."""
        return self.root / self.rows[i][0]

    @property
    def labels(self) -> np.ndarray:
        """(N, K) labels (unknown entries 0; see ``label_mask`` of the items)."""
        return np.stack([r[2] for r in self.rows]) if self.rows else np.zeros((0, len(self.label_names)), np.float32)

    def _item(self, i: int) -> dict[str, Any]:
        from medvit.data.imageload import load_unit

        rel, pid, y, known = self.rows[i]
        try:
            img = load_unit(self.root / rel, self.intensity)
        except (ValueError, FileNotFoundError) as e:
            if rel not in self.where:
                raise
            raise ValueError(f"{self.where[rel]}: {e}") from e
        return {"image": to_chw(img, self.in_chans, self.image_size, self.max_short_side),
                "label": torch.from_numpy(y.copy()), "label_mask": torch.from_numpy(known.copy()),
                "id": rel, "patient_id": pid}


class LabelledCSV(_Rows):
    """Images listed in a CSV with patient and per-label 1/0/empty columns (see the module docstring)."""

    def __init__(self, root: str | Path, split: str = "train", csv_file: str | Path = "labels.csv",
                 path_column: str = "path", patient_column: str = "patient", label_columns: list[str] | None = None,
                 split_column: str = "split", val_fraction: float = 0.1, test_fraction: float = 0.1,
                 split_seed: int = 0, image_size: int | None = None, in_chans: int = 1,
                 max_short_side: int | None = None, intensity: dict[str, str] | None = None, transform: Any = None,
                 follow_links: bool = False, allow_patient_overlap: bool = False):
        check_split(split, _SPLITS, "csv")
        _check_fractions(val_fraction, test_fraction)
        super().__init__(root, image_size, in_chans, max_short_side, intensity, transform)
        f = Path(csv_file) if Path(csv_file).is_absolute() else self.root / csv_file
        if not f.is_file():
            raise FileNotFoundError(f"label CSV not found: {f} (give dataset_args.csv_file, relative to {self.root})")
        with open(f, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            if path_column not in header:
                raise ValueError(f"{f}: no image-path column {path_column!r} (columns: {', '.join(header)}); set "
                                 "dataset_args.path_column")
            has_patient = patient_column in header
            if not has_patient:
                logger.warning("%s: no patient column %r; each image is its own patient in the splits", f,
                               patient_column)
            has_split = split_column in header
            reserved = {path_column, patient_column, split_column}
            names = list(label_columns) if label_columns else [h for h in header if h and h not in reserved]
            missing = [n for n in names if n not in header]
            if missing:
                raise ValueError(f"{f}: label columns {missing} not in the header ({', '.join(header)})")
            if not names:
                raise ValueError(f"{f}: no label columns (every column but {sorted(reserved)} is a label)")
            if problem := name_list_problem(names):  # a repeated header column: DictReader keeps only the last
                where = "dataset_args.label_columns" if label_columns else "the header's label columns"
                raise ValueError(f"{f}: {where} {problem}")
            self.label_names = names
            rows, where_of = [], {}
            seen: dict[str, dict[str, int]] = {}  # patient -> {split: first CSV line} (split column only)
            for line, r in enumerate(reader, start=2):
                rel = (r.get(path_column) or "").strip()
                where = f"{f}:{line}"
                inside(self.root, rel, where, follow_links=True)  # links: checked with the headers below
                pid = (r.get(patient_column) or "").strip() if has_patient else rel
                if not pid:
                    raise ValueError(f"{where}: empty patient in column {patient_column!r}")
                if has_split:
                    s = (r.get(split_column) or "").strip().lower()
                    if s not in ("train", "val", "test"):
                        raise ValueError(f"{where}: column {split_column!r} must be train, val or test, got {s!r}")
                    seen.setdefault(pid, {}).setdefault(s, line)
                else:
                    s = split_of(pid, val_fraction, test_fraction, split_seed)
                if split != "all" and s != split:
                    continue
                y = np.zeros(len(names), np.float32)
                known = np.zeros(len(names), bool)
                for k, n in enumerate(names):
                    v = (r.get(n) or "").strip().lower()
                    if v in _TRUE:
                        y[k], known[k] = 1.0, True
                    elif v in _FALSE:
                        known[k] = True
                    elif v:
                        raise ValueError(f"{where}: column {n!r} must be 1, 0 or empty (unknown), got {r.get(n)!r}")
                rows.append((rel, pid, y, known))
                where_of[rel] = where
        _check_patient_disjoint(f, seen, split_column, allow_patient_overlap)
        why = {rel: w for rel, *_ in rows if (w := file_problem(self.root / rel))}
        absent = [rel for rel, w in why.items() if w == "not found"]
        if absent:
            raise FileNotFoundError(f"{f}: {len(absent)} listed images of split {split!r} are missing under "
                                    f"{self.root} (e.g. {absent[:3]})")
        if why:  # there, but a directory / FIFO / device / link loop: never opened
            rel, w = next(iter(why.items()))
            raise ValueError(f"{where_of[rel]}: {printable_path(rel)} {w}, not an image file"
                             + (f" ({len(why) - 1} more such rows)" if len(why) > 1 else ""))
        _check_links_and_headers(self.root, [(where_of[r[0]], r[0]) for r in rows], follow_links)
        self.rows, self.csv_file, self.where = rows, f, where_of


class ClassFolder(_Rows):
    """One folder per class under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path, split: str = "train", val_fraction: float = 0.1, test_fraction: float = 0.1,
                 split_seed: int = 0, image_size: int | None = None, in_chans: int = 1,
                 max_short_side: int | None = None, intensity: dict[str, str] | None = None, transform: Any = None,
                 follow_links: bool = False):
        check_split(split, _SPLITS, "folder")
        _check_fractions(val_fraction, test_fraction)
        super().__init__(root, image_size, in_chans, max_short_side, intensity, transform)
        classes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if len(classes) < 2:
            raise ValueError(f"{self.root}: the class-folder layout needs at least 2 class folders, found {classes}")
        self.label_names = classes
        rows = []
        for k, c in enumerate(classes):
            for p in sorted((self.root / c).rglob("*")):
                if not p.is_file() or not p.name.lower().endswith(IMAGE_SUFFIXES) or p.name.startswith("."):
                    continue
                rel = p.relative_to(self.root)
                pid = rel.parts[1] if len(rel.parts) > 2 else p.name
                if split != "all" and split_of(pid, val_fraction, test_fraction, split_seed) != split:
                    continue
                y = np.zeros(len(classes), np.float32)
                y[k] = 1.0
                rows.append((rel.as_posix(), pid, y, np.ones(len(classes), bool)))
        _check_links_and_headers(self.root, [(str(self.root / r[0]), r[0]) for r in rows], follow_links)
        self.rows, self.where = rows, {}  # reader errors name the file already


@register("dataset", "csv", mean=(0.5,), std=(0.25,), task="multilabel", in_chans=1,
          description="your own images: a CSV of path, patient and 1/0/empty label columns (root=DIR)")
def own_csv(split: str = "train", root: str | Path | None = None, **kw: Any) -> LabelledCSV:
    """:class:`LabelledCSV` under ``root`` (``--data DIR``)."""
    if root is None:
        raise ValueError("dataset csv needs root=DIR (--data DIR): the folder holding labels.csv and the images")
    return LabelledCSV(root, split, **kw)


@register("dataset", "folder", mean=(0.5,), std=(0.25,), task="multilabel", in_chans=1,
          description="your own images: one folder per class (root=DIR)")
def own_folder(split: str = "train", root: str | Path | None = None, **kw: Any) -> ClassFolder:
    """:class:`ClassFolder` under ``root`` (``--data DIR``)."""
    if root is None:
        raise ValueError("dataset folder needs root=DIR (--data DIR): the folder holding one folder per class")
    return ClassFolder(root, split, **kw)
