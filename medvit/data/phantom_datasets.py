"""Phantom datasets ``cxr_phantom`` and ``retina_phantom``: generated in memory or read from a synth folder.

In memory (``n``, ``seed``, ``image_size``): image ``i`` is generated on access, deterministic for
``(seed, i)``; ``n`` counts images over all splits and ``split`` selects the patient-disjoint subset
(80/10/10 % of patients), so train/val/test of one ``(n, seed)`` never share a patient.
From a folder (``root``): reads what ``medvit data synth`` wrote (``labels.csv``, ``splits/*.txt``,
``images/``); ``n``/``seed`` must then be left out.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvit.config import check_arg_types
from medvit.data.datasets import ItemDataset, check_split, to_chw
from medvit.data.own import inside
from medvit.data.phantom_common import (
    PHANTOM_KNOBS,
    SPLIT_KNOB,
    Difficulty,
    check_count,
    check_geometry,
    patient_meta,
    plan_patients,
)
from medvit.data.phantom_cxr import CXR_LABELS, ChestPhantomGenerator
from medvit.data.phantom_retina import AMD_STAGES, RETINA_BIOMARKERS, RetinaPhantomGenerator
from medvit.io.errors import file_problem, printable_path
from medvit.io.jsonfile import json_type_name, name_list_problem, read_json
from medvit.registry import did_you_mean, register

_SPLITS = ("train", "val", "test", "all")


_GENERATORS: dict[str, type] = {"cxr": ChestPhantomGenerator, "retina": RetinaPhantomGenerator}


def generator_class(kind: str) -> Any:
    """The generator class of ``kind`` (``cxr`` or ``retina``); ``ValueError`` for another kind."""
    if kind not in _GENERATORS:
        raise ValueError(f"unknown phantom kind {kind!r}; use 'cxr' or 'retina'")
    return _GENERATORS[kind]


def make_generator(kind: str, image_size: int, seed: int, **kw: Any) -> Any:
    """Generator for ``kind`` (``cxr`` or ``retina``).

    Raises:
        ValueError: an unknown kind, a keyword the generator does not take (naming it, with the nearest name), or a
            value the generator refuses (naming the argument)."""
    gen = generator_class(kind)
    _refuse_unknown(kind, kw, _params(gen.__init__), str)
    return gen(image_size=image_size, seed=seed, **kw)


def _refuse_unknown(kind: str, args: dict[str, Any], known: set[str], name: Callable[[str], str],
                    dataset: str | None = None) -> None:
    """``ValueError`` naming the first key of ``args`` not in ``known``: a chest-only knob for retina, else the
    nearest known name and the list of them (a Python call gave the constructor's bare TypeError); ``dataset``: the
    registered name the message gives (default ``<kind>_phantom``)."""
    for k in args:
        if k in known:
            continue
        if k in PHANTOM_KNOBS and dataset is None:  # prevalence / healthy_fraction on retina
            raise ValueError(f"{name(k)}: {k!r} is a chest-only knob; {kind} phantoms take "
                             f"{[x for x in PHANTOM_KNOBS + (SPLIT_KNOB,) if x in known]}")
        hint = did_you_mean(k, known)
        raise ValueError(f"{name(k)}: {dataset or kind + '_phantom'} takes no argument {k!r}"
                         f"{'; ' + hint if hint else ''} (it takes {sorted(known)})")


def visits(patient_of: np.ndarray) -> np.ndarray:
    """(n,) rank of each image among its patient's images (0 = first study)."""
    out = np.zeros(len(patient_of), np.int64)
    start = np.r_[0, np.flatnonzero(np.diff(patient_of)) + 1]
    for s, e in zip(start, np.r_[start[1:], len(patient_of)]):
        out[s:e] = np.arange(e - s)
    return out


class PhantomDataset(ItemDataset):
    """In-memory phantoms. Items follow :mod:`medvit.data.datasets`; ``with_masks`` adds ``masks`` (dict of
    (H, W) bool tensors) and ``report`` (str) — leave it off for training (faster, collate-friendly).

    ``gen_kw``: the generator's arguments (knobs, ``prevalence``, ``fov_mm``, ...). A synth folder's argument
    (``follow_links``, ``intensity``) set to ``None`` means "not given".

    Raises:
        ValueError: an unknown split or kind, a keyword neither this class nor the generator takes or only a synth
            folder takes, ``in_chans`` other than 1 or 3, ``n`` not a whole number in [1,
            :data:`~medvit.data.phantom_common.MAX_N`], or a value the generator refuses (``seed``, ``with_masks``,
            ``image_size``, ...), naming the argument."""

    def __init__(self, kind: str, split: str = "train", n: int = 1000, seed: int = 0, image_size: int = 224,
                 in_chans: int = 1, with_masks: bool = False, transform: Any = None, **gen_kw: Any):
        check_split(split, _SPLITS, f"{kind}_phantom")
        _memory_only(kind, gen_kw, str)
        gen_kw = {k: v for k, v in gen_kw.items() if k not in _FOLDER_ONLY}  # None: not given
        _refuse_unknown(kind, gen_kw, _params(PhantomDataset.__init__) | _params(generator_class(kind).__init__), str)
        check_geometry(in_chans=in_chans)
        self.plan = plan_patients(n, seed, kind)  # n and seed refused before any texture is drawn
        self.kind, self.split, self.in_chans, self.with_masks = kind, split, int(in_chans), with_masks
        self.gen = make_generator(kind, image_size, seed, with_masks=with_masks, **gen_kw)
        self.indices = self.plan.indices(split)
        self.visit = visits(self.plan.patient_of)
        self.transform = transform
        self.classification = kind == "retina"
        self.label_names = list(self.gen.label_names)
        if self.classification:
            self.class_names = list(self.gen.class_names)

    def __len__(self) -> int:
        return len(self.indices)

    def patient_ids(self) -> list[str]:
        """Patient ID of every item (for split checks)."""
        return [patient_meta(self.gen.seed, self.kind, int(self.plan.patient_of[j]))["PatientID"]
                for j in self.indices]

    def phantom(self, i: int) -> Any:
        """The full :class:`~medvit.data.phantom_cxr.Phantom` of item ``i``."""
        j = int(self.indices[i])
        return self.gen.sample(j, int(self.plan.patient_of[j]), int(self.visit[j]), self.plan.split_of_image(j))

    def _item(self, i: int) -> dict[str, Any]:
        p = self.phantom(i)
        item: dict[str, Any] = {"image": to_chw(p.image, self.in_chans, None), "id": p.meta["ImageID"],
                                "patient_id": p.meta["PatientID"]}
        if self.classification:
            item["label"] = torch.tensor(p.target, dtype=torch.long)
            item["referral"] = torch.tensor(p.meta["referral"], dtype=torch.long)
            item["biomarkers"] = torch.from_numpy(p.labels.astype(np.float32))
        else:
            item["label"] = torch.from_numpy(p.labels.astype(np.float32))
            item["label_mask"] = torch.ones(len(p.labels), dtype=torch.bool)
        if self.with_masks:
            item["masks"] = {k: torch.from_numpy(v) for k, v in p.masks.items()}
            item["report"] = p.report
        return item


class PhantomFolderDataset(ItemDataset):
    """A folder written by ``medvit data synth``: ``manifest.json``, ``labels.csv``, ``splits/``, ``images/``.

    Each ``labels.csv`` ``file`` must be a relative path inside ``root``; one that leads outside it through a
    symbolic link is refused (``ValueError`` naming the line) unless ``follow_links`` (a folder tracked by DVC or
    git-annex stores each image as a link into a cache outside it). Every listed path is checked once, here.
    ``image_size`` (None: the stored size) resizes each image; it and ``in_chans`` are checked first
    (:func:`folder_geometry`, ``ValueError`` naming them)."""

    def __init__(self, root: str | Path, split: str = "train", image_size: int | None = None, in_chans: int = 1,
                 transform: Any = None, kind: str | None = None, intensity: dict[str, str] | None = None,
                 follow_links: bool = False):
        check_split(split, _SPLITS, "phantom folder")
        folder_geometry(image_size, in_chans)
        self.root = Path(root)
        man = self.root / "manifest.json"
        self.manifest = read_json(man, missing=f"is {self.root} a folder written by `medvit data synth`?")
        for key in ("kind", "label_names", "class_names"):
            v = self.manifest.get(key)
            if key != "class_names" and key not in self.manifest:
                raise ValueError(f"{man}: required key {key!r} missing (rerun `medvit data synth`)")
            if key == "kind" and not (isinstance(v, str) and v):
                raise ValueError(f"{man}: 'kind' must be a phantom kind (a string), got {json_type_name(v)}")
            if key != "kind" and key in self.manifest and (problem := name_list_problem(v)):
                raise ValueError(f"{man}: {key!r} {problem}")
        if kind is not None and self.manifest["kind"] != kind:
            raise ValueError(f"{self.root} holds {self.manifest['kind']!r} phantoms, not {kind!r}")
        self.kind = self.manifest["kind"]
        self.label_names = list(self.manifest["label_names"])
        self.classification = "class_names" in self.manifest
        if self.classification:
            self.class_names = list(self.manifest["class_names"])
        with open(self.root / "labels.csv", newline="") as f:
            reader = csv.DictReader(f)
            table = list(reader)
            header = list(reader.fieldnames or [])
        self._check_table(header, table)
        paths = []
        for line, r in enumerate(table, start=2):  # a path read from a file stays inside the folder
            where = f"{self.root / 'labels.csv'} line {line} column 'file'"
            paths.append(inside(self.root, r.get("file") or "", where, follow_links,
                                hint="set dataset_args.follow_links=true if this folder stores its images as links "
                                     "(DVC, git-annex)"))
            why = file_problem(paths[-1])
            if why:  # missing, or a directory / FIFO / device: said here, not when an item is read
                err = FileNotFoundError if why == "not found" else ValueError
                raise err(f"{where}: {printable_path(r['file'])} {why}, not an image file (rerun `medvit data synth`)")
        rows = {r["image_id"]: (r, p) for r, p in zip(table, paths)}
        if split == "all":
            ids = list(rows)
        else:
            sp = self.root / "splits" / f"{split}.txt"
            if not sp.is_file():
                raise FileNotFoundError(f"split file {sp} missing; rerun `medvit data synth`")
            ids = [s for s in sp.read_text().split() if s]
        missing = [i for i in ids if i not in rows]
        if missing:
            raise KeyError(f"{self.root}/splits/{split}.txt lists ids absent from labels.csv, e.g. {missing[:3]}")
        self.rows = [rows[i][0] for i in ids]
        self.paths = [rows[i][1] for i in ids]  # checked above: an item reads its path without a second check
        self.image_size = None if image_size is None else int(image_size)  # checked above: a whole number
        self.in_chans, self.transform = int(in_chans), transform
        self.intensity = intensity  # per-file-kind rules (None: medvit.data.preprocess.TRAINING_DEFAULT_INTENSITY)

    def _check_table(self, header: list[str], table: list[dict[str, str]]) -> None:
        """ValueError naming ``labels.csv`` (and the line and column) for a column the manifest's names need that is
        absent, or a label value the items could not use: a finding other than 0 / 1, a stage outside
        ``class_names`` (retina), a referral that is not a non-negative integer. Checked at construction, so a
        wrong folder fails before training, not on the first item that reads it."""
        f = self.root / "labels.csv"
        need = ["image_id", "patient_id", "file"] + (["stage", "referral"] if self.classification else [])
        absent = [c for c in need if c not in header]
        if absent:
            raise ValueError(f"{f}: required columns {absent} missing (rerun `medvit data synth`)")
        absent = [c for c in self.label_names if c not in header]
        if absent:
            raise ValueError(f"{self.root / 'manifest.json'}: label_names {absent} are not columns of {f} (its "
                             f"columns: {', '.join(header)})")
        for line, r in enumerate(table, start=2):
            for c in self.label_names:
                if (r.get(c) or "").strip() not in ("0", "1"):
                    raise ValueError(f"{f} line {line} column {c!r}: a finding label must be 0 or 1, got {r.get(c)!r}")
            if self.classification:
                stage, ref = (r.get("stage") or "").strip(), (r.get("referral") or "").strip()
                if not (stage.isdigit() and int(stage) < len(self.class_names)):
                    raise ValueError(f"{f} line {line} column 'stage': must be a class index 0.."
                                     f"{len(self.class_names) - 1} (manifest.json class_names "
                                     f"{self.class_names}), got {r.get('stage')!r}")
                if not ref.isdigit():
                    raise ValueError(f"{f} line {line} column 'referral': must be a non-negative integer, got "
                                     f"{r.get('referral')!r}")

    def __len__(self) -> int:
        return len(self.rows)

    def patient_ids(self) -> list[str]:
        return [r["patient_id"] for r in self.rows]

    @property
    def labels(self) -> np.ndarray:
        """Labels from ``labels.csv`` without reading images: (N,) stages (retina) or (N, K) findings (chest)."""
        if self.classification:
            return np.array([int(r["stage"]) for r in self.rows], dtype=np.int64)
        return np.array([[float(r[n]) for n in self.label_names] for r in self.rows],
                        dtype=np.float32).reshape(len(self.rows), len(self.label_names))

    def _item(self, i: int) -> dict[str, Any]:
        from medvit.data.imageload import load_gray01

        r = self.rows[i]
        img = load_gray01(self.paths[i], self.intensity)
        item: dict[str, Any] = {"image": to_chw(img, self.in_chans, self.image_size), "id": r["image_id"],
                                "patient_id": r["patient_id"]}
        if self.classification:
            item["label"] = torch.tensor(int(r["stage"]), dtype=torch.long)
            item["referral"] = torch.tensor(int(r["referral"]), dtype=torch.long)
            item["biomarkers"] = torch.tensor([float(r[n]) for n in self.label_names])
        else:
            item["label"] = torch.tensor([float(r[n]) for n in self.label_names])
            item["label_mask"] = torch.ones(len(self.label_names), dtype=torch.bool)
        return item


def folder_geometry(image_size: Any, in_chans: Any, name: Callable[[str], str] = str) -> None:
    """A synth folder's ``image_size`` (the resize target: None keeps the stored size, else a whole number of pixels
    in [1, :data:`~medvit.data.phantom_common.MAX_IMAGE_SIZE`]: 100000 resized every item to 40 GB) and
    ``in_chans`` (1 or 3), by :func:`~medvit.data.phantom_common.check_geometry`; ``ValueError`` naming
    ``name(key)``. :class:`PhantomFolderDataset`'s check and the dry run's (:func:`check_phantom_args`)."""
    check_geometry(**({} if image_size is None else {"image_size": image_size}), in_chans=in_chans,
                   what="a synth folder's resize target", min_size=1, name=name)


def _phantom(kind: str, split: str, root: str | Path | None, n: int | None, seed: int | None,
             image_size: int | None, **kw: Any) -> ItemDataset:
    if root is not None:  # the dry run's refusals (n / seed, knobs, in-memory arguments), named as call arguments
        _folder_only(kind, {"root": root, "n": n, "seed": seed, **kw}, str)
        folder = _params(PhantomFolderDataset.__init__)  # an in-memory argument set to null: not given
        return PhantomFolderDataset(root, split, image_size=image_size, kind=kind,
                                    **{k: v for k, v in kw.items() if k in folder or v is not None})
    return PhantomDataset(kind, split, n=1000 if n is None else n, seed=0 if seed is None else seed,
                          image_size=224 if image_size is None else image_size, **kw)


def _folder_only(kind: str, args: dict[str, Any], name: Callable[[str], str]) -> None:
    """Refuse what a synth folder (``root``) does not take: ``n`` / ``seed`` and the in-memory arguments (the
    generator's knobs, ``with_masks``). A ``null`` value means "not given" (a preset's in-memory values switched off
    by ``dataset_args.KEY=null``); the builder then drops it."""
    if args.get("n") is not None or args.get("seed") is not None:
        raise ValueError(f"{kind}_phantom: give either root=DIR (a synth folder) or n=/seed= (in memory), not both "
                         f"(set {name('n')}=null {name('seed')}=null to read the folder)")
    folder = {"root", "n", "seed"} | _params(PhantomFolderDataset.__init__)
    for k, v in args.items():
        if k in folder or v is None:
            continue
        if k in PHANTOM_KNOBS or k == SPLIT_KNOB:
            raise ValueError(f"{name(k)}: a synth folder (root={args['root']}) is read as it was drawn, so it takes "
                             f"no knob {k!r}: the knobs are fixed when the folder is drawn (its manifest.json "
                             f"'knobs'; draw another with `medvit data synth --knob {k}=...`). Remove it or set "
                             f"{name(k)}=null")
        takes = sorted(folder - {"n", "seed", "transform"})
        raise ValueError(f"{name(k)}: a synth folder (root={args['root']}) takes no {k!r}, only {takes} (an "
                         f"in-memory argument; remove it or set {name(k)}=null)")


def _memory_only(kind: str, args: dict[str, Any], name: Callable[[str], str]) -> None:
    """Refuse an argument only a synth folder takes (``follow_links``, ``intensity``: they say how its files are
    read) when the phantoms are drawn in memory (no ``root``); ``null`` means "not given"."""
    for k in sorted(_FOLDER_ONLY):
        if args.get(k) is not None:
            raise ValueError(f"{name(k)}: only a synth folder (root=DIR) takes {k!r} (it says how the folder's image "
                             f"files are read); {kind}_phantom in memory reads no file: remove it")


def _params(fn: Any) -> set[str]:
    import inspect

    return {k for k, p in inspect.signature(fn).parameters.items()
            if k not in ("self", "kind", "split") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def check_phantom_args(kind: str, args: dict[str, Any], name: Callable[[str], str] | None = None,
                       where: str = "dataset_args") -> dict[str, Any]:
    """Config-time check of a phantom dataset's ``dataset_args`` (``medvit run --dry-run``, via the registry meta
    ``check_args``; ``medvit data synth`` for its options): ``ValueError`` naming the key (``name(key)``, default
    ``dataset_args.<key>``; ``where`` starts the messages that name no key) for a key neither the in-memory
    generator nor a synth folder (``root``) takes, a chest-only knob for retina, a value of the wrong type, a
    calibration knob outside its range (:class:`Difficulty`); with ``root``, ``n`` / ``seed`` or an in-memory
    argument (a knob: the folder's were fixed when it was drawn); in memory, any value the run's generator and
    patient plan refuse (``n < 1`` or beyond :data:`~medvit.data.phantom_common.MAX_N`, ``image_size`` outside
    [32, 4096], ``fov_mm`` outside [50, 1000], ``prevalence`` outside [0, 1], ``in_chans`` other than 1 or 3,
    ...), by the generator's own checks (``check_args``: nothing is drawn), the plan's
    (:func:`~medvit.data.phantom_common.check_count`) and :func:`~medvit.data.phantom_common.check_geometry`:
    ``--dry-run`` refuses what the run refuses. ``transform`` is the task's, never a config value. Returns ``args``
    with values converted as config fields are (``n: 1e3`` -> 1000)."""
    import dataclasses

    if name is None:
        def name(k: str) -> str:
            return f"dataset_args.{k}"

    gen = generator_class(kind)
    known = {"root"} | _params(PhantomFolderDataset.__init__) | _params(PhantomDataset.__init__) | _params(gen.__init__)
    _refuse_unknown(kind, args, known, name)
    _refuse_transform(args, name)
    if args.get("root") is not None:
        _folder_only(kind, args, name)
        folder = _params(PhantomFolderDataset.__init__)
        unset = {k: v for k, v in args.items() if v is None and k not in folder}  # dropped by the builder
        checked = check_arg_types({k: v for k, v in args.items() if k not in unset},
                                  [PhantomFolderDataset.__init__], name=name)
        folder_geometry(checked.get("image_size"), checked.get("in_chans", 1), name)
        return {**checked, **unset}
    _memory_only(kind, args, name)
    knobs = {f.name: args[f.name] for f in dataclasses.fields(Difficulty) if f.name in args}
    if knobs:
        try:
            Difficulty(**knobs)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    # value types by the builders' annotations (prevalence=abc, n=2.5 were refused only when the run built the data)
    builder = cxr_phantom if kind == "cxr" else retina_phantom
    unset = {k: args[k] for k in _FOLDER_ONLY if k in args}  # all null here: dropped by the builder
    args = check_arg_types({k: v for k, v in args.items() if k not in unset},
                           [builder, PhantomDataset.__init__, PhantomFolderDataset.__init__, gen.__init__], name=name)
    # in memory: the run's own checks (n >= 1, image_size, fov_mm, prevalence, stage_probs, in_chans, ...), by the
    # same code, with nothing drawn (the generator's check_args, not its constructor)
    n, seed = (1000 if args.get(k) is None else args[k] for k in ("n", "seed"))
    check_count(n, name)  # the patient plan's own check (seed: the generator's)
    check_geometry(**{k: args[k] for k in ("in_chans",) if k in args}, name=name)
    gen.check_args(name, **{k: v for k, v in args.items() if k in _params(gen.__init__)} | {
        "image_size": 224 if args.get("image_size") is None else args["image_size"], "seed": seed})
    return {**args, **unset}


def _refuse_transform(args: dict[str, Any], name: Callable[[str], str]) -> None:
    if args.get("transform") is not None:
        raise ValueError(f"{name('transform')}: the transform is set by the task (its augmentation fields), not by "
                         f"a config value; remove it")


def _config_name(k: str) -> str:
    return f"dataset_args.{k}"


def call_name(dataset: str) -> Callable[[str], str]:
    """How errors name key ``k`` of a Python call of the wrapper ``dataset`` (its builder or constructor):
    ``"<dataset>: <k>"``. The dry run (:func:`check_wrapper_args`) names ``dataset_args.<k>`` instead; the value
    checks (``values``) are the same functions, given one or the other."""
    return lambda k: f"{dataset}: {k}"


def refuse_unknown_wrapper_args(dataset: str, args: dict[str, Any], own: Callable[..., Any],
                                forwards: frozenset[str] | None = None, name: Callable[[str], str] = str) -> None:
    """``ValueError`` naming ``name(key)`` and ``dataset`` for a key of ``args`` that neither ``own`` (the wrapper's
    builder or constructor) nor the in-memory chest phantoms it wraps take: ``forwards`` names the phantom
    arguments it passes on (None: all of :class:`PhantomDataset`'s and the generator's, e.g. ``cxr_phantom_lt``'s
    ``**kw``). A Python call gave the constructor's bare TypeError or a message naming ``cxr_phantom``."""
    _refuse_unknown("cxr", args, _params(own) | (_IN_MEMORY if forwards is None else set(forwards)), name, dataset)


def check_wrapper_args(dataset: str, args: dict[str, Any], own: Callable[..., Any],
                       forwards: frozenset[str] | None = None,
                       values: Callable[[dict[str, Any], Callable[[str], str]], None] | None = None) -> dict[str, Any]:
    """Config-time check (registry meta ``check_args``, ``medvit run --dry-run``) of a dataset built on the in-memory
    chest phantoms (``cxr_phantom_lt``, ``cxr_multiwindow_phantom``, ``cxr_phantom_benchx``), so the dry run refuses
    what the run refuses: ``ValueError`` naming ``dataset_args.<key>`` for a key neither takes
    (:func:`refuse_unknown_wrapper_args`), a value of the wrong type (by ``own``'s and the phantoms' annotations), a
    phantom argument :func:`check_phantom_args` refuses (``n`` beyond :data:`~medvit.data.phantom_common.MAX_N`,
    ``image_size`` outside [32, 4096], a knob outside its range, ...) and what ``values(args, name)`` (the wrapper's
    own value check, also run by its builder) refuses. Returns the arguments with values converted as config fields
    are (``n: 1e3`` -> 1000)."""
    refuse_unknown_wrapper_args(dataset, args, own, forwards, _config_name)
    _refuse_transform(args, _config_name)
    checked = check_arg_types(args, [own, PhantomDataset.__init__, ChestPhantomGenerator.__init__],
                              name=_config_name)
    phantom = _IN_MEMORY if forwards is None else forwards
    checked.update(check_phantom_args("cxr", {k: v for k, v in checked.items() if k in phantom}))
    if values is not None:
        values(checked, _config_name)
    return checked


#: the dataset_args a synth folder (``root``) takes (registry meta ``folder_args``: `medvit finetune --data DIR`
#: drops a preset's in-memory arguments)
_FOLDER_ARGS = frozenset({"root"} | _params(PhantomFolderDataset.__init__) - {"transform"})
#: the arguments only a synth folder takes (refused in memory)
_FOLDER_ONLY = frozenset(_params(PhantomFolderDataset.__init__) - _params(PhantomDataset.__init__) - {"root"})
#: the arguments of the in-memory chest phantoms (:class:`PhantomDataset` and its generator)
_IN_MEMORY = frozenset(_params(PhantomDataset.__init__) | _params(ChestPhantomGenerator.__init__))


# mean/std: measured over 2,000 in-memory phantoms (seed 0, 224 px) by tests/data/test_phantom_datasets.py
@register("dataset", "cxr_phantom", mean=(0.524,), std=(0.290,), label_names=list(CXR_LABELS), task="multilabel",
          in_chans=1, check_args=lambda args: check_phantom_args("cxr", args), folder_args=_FOLDER_ARGS,
          description="Synthetic chest X-ray phantoms (7 findings, masks, reports); in memory or from a `medvit "
          "data synth` folder")
def cxr_phantom(split: str = "train", root: str | Path | None = None, n: int | None = None, seed: int | None = None,
                image_size: int | None = None, **kw: Any) -> ItemDataset:
    """Chest X-ray phantoms: ``root=DIR`` (synth folder) or in memory ``n=, seed=, image_size=``."""
    return _phantom("cxr", split, root, n, seed, image_size, **kw)


# mean/std: measured over 2,000 in-memory phantoms (seed 0, 224 px) by tests/data/test_phantom_datasets.py
@register("dataset", "retina_phantom", mean=(0.382,), std=(0.306,), class_names=list(AMD_STAGES),
          label_names=list(RETINA_BIOMARKERS), task="multiclass", in_chans=1,
          check_args=lambda args: check_phantom_args("retina", args), folder_args=_FOLDER_ARGS,
          description="Synthetic foveal OCT B-scans: AMD stage (5), referral (3), 7 biomarkers, masks, reports")
def retina_phantom(split: str = "train", root: str | Path | None = None, n: int | None = None,
                   seed: int | None = None, image_size: int | None = None, **kw: Any) -> ItemDataset:
    """Retina OCT phantoms: ``root=DIR`` (synth folder) or in memory ``n=, seed=, image_size=``."""
    return _phantom("retina", split, root, n, seed, image_size, **kw)
