"""The BenchX chest X-ray datasets, read in their native (published) layouts; registry kind ``dataset``.

BenchX (Zhou et al., NeurIPS 2024 D&B; medical-notes §3.2) evaluates on nine datasets. Each adapter below reads the
folder as the dataset's publisher ships it (the layout is in each class docstring), builds the BenchX split named
by ``split`` (``train_1`` / ``train_10`` / ``train`` / ``val`` / ``test``; :mod:`medvit.data.benchx_splits`: the
fixed split files of ``split_dir`` when present, else patient-disjoint splits of the paper's sizes written there)
and returns items in medvit's format (:mod:`medvit.data.datasets`):

- ``image``: (C, H, W) float in [0, 1] (DICOM through :mod:`medvit.io` with the file's VOI LUT/window; PNG/JPEG at
  their stored bit range); ``id``; ``patient_id``;
- classification: ``label`` (K,) float + ``label_mask`` (K,) bool for multi-label sets (VinDr-CXR), or a long
  class index for the binary ones (COVIDx, RSNA, SIIM, Object-CXR, TBX11K: 0 = negative, 1 = positive);
- ``with_mask=True`` (segmentation sets): ``mask`` (1, H, W) float 0/1 on the image's grid
  (:mod:`medvit.data.benchx_masks`: boxes, WBF-fused reader boxes, ellipses/polygons, SIIM RLE);
- IU X-Ray: ``image`` (frontal), ``image_lateral``, ``report`` (str); 5×200 sets: ``label`` (class index of 5),
  ``report`` (str, when the CSV has one).

Errors name the file, the row (CSV line number) or line, and what was expected. Nothing read from a file becomes a
path outside the dataset root: image names are joined under the root's image folder and must stay inside it, by
the rule of :func:`medvit.data.own.inside` (no ``..`` or absolute name, and no symbolic link on the way that leads
outside the folder, unless ``follow_links=True``: for a mirror that stores its images as links, e.g. git-annex, DVC
or a Hugging Face cache; a dataset root that is itself a link is fine).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvit.data.benchx_masks import (
    boxes_to_mask,
    ellipses_to_mask,
    fuse_reader_boxes,
    polygons_to_mask,
    siim_rle_decode,
)
from medvit.data.benchx_splits import SPLIT_NAMES, resolve_splits, split_name
from medvit.data.datasets import ItemDataset, to_chw
from medvit.io.jsonfile import read_json
from medvit.registry import register

logger = logging.getLogger(__name__)

#: BenchX's normalisation for every dataset (``NIHTransforms``: mean 0.4978, std 0.2449)
BENCHX_MEAN, BENCHX_STD = (0.4978,), (0.2449,)

#: VinDr-CXR labels in BenchX's (sorted) order, with the column name of ``image_labels_*.csv`` each comes from
VINDR_LABELS: tuple[tuple[str, str], ...] = (
    ("Aortic enlargement", "Aortic enlargement"),
    ("Atelectasis", "Atelectasis"),
    ("Calcification", "Calcification"),
    ("Cardiomegaly", "Cardiomegaly"),
    ("Consolidation", "Consolidation"),
    ("ILD", "ILD"),
    ("Infiltration", "Infiltration"),
    ("Lung Opacity", "Lung Opacity"),
    ("Nodule/Mass", "Nodule/Mass"),
    ("Lesion", "Other lesion"),
    ("Effusion", "Pleural effusion"),
    ("Pleural_Thickening", "Pleural thickening"),
    ("Pneumothorax", "Pneumothorax"),
    ("Pulmonary Fibrosis", "Pulmonary fibrosis"),
)
#: the five classes of the MIMIC-CXR / CheXpert 5×200 zero-shot sets (GLoRIA / BenchX)
CLASSES_5X200: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


@dataclass
class Record:
    """One image of a dataset: its id, patient, file, label and raw annotation."""

    id: str
    patient: str
    path: Path
    label: Any  # int class index, or (K,) float array
    ann: Any = None  # boxes / RLE strings / shapes, read by the adapter's _mask
    extra: dict[str, Any] = field(default_factory=dict)


def read_csv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a CSV whose header has ``required`` (header names stripped of spaces).

    Raises FileNotFoundError naming the file, ValueError naming the file and the missing column.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}: column {missing[0]!r} missing (header: {', '.join(header) or 'empty'})")
        rows = []
        for row in reader:
            if not any(v.strip() for v in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(header)}")
            rows.append((reader.line_num, {h: v.strip() for h, v in zip(header, row)}))
    return rows


def _float(path: Path, line: int, row: dict[str, str], col: str) -> float:
    try:
        v = float(row[col])
    except ValueError:
        raise ValueError(f"{path}:{line}: column {col!r} must be a number, got {row[col]!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{path}:{line}: column {col!r} must be a finite number, got {row[col]!r}")
    return v


def _binary(path: Path, line: int, value: str, col: str) -> int:
    v = value.strip().lower()
    if v in ("1", "1.0", "true", "positive"):
        return 1
    if v in ("0", "0.0", "false", "negative", ""):
        return 0
    raise ValueError(f"{path}:{line}: column {col!r} must be 0/1 (or positive/negative), got {value!r}")


#: added to the refusal of an image path that leads outside its folder through a symbolic link
LINK_HINT = ("set dataset_args.follow_links=true if this dataset mirror stores its images as links (git-annex, DVC, "
             "a Hugging Face cache)")


def _inside(root: Path, rel: str, where: str, follow_links: bool = False) -> Path:
    """``root / rel`` for an image name read from a dataset file: :func:`medvit.data.own.inside` (the one rule:
    no empty, absolute or ``..`` name, no NUL, and unless ``follow_links`` no symbolic link leading outside
    ``root``); ``ValueError`` naming ``where``."""
    from medvit.data.own import inside

    return inside(root, rel, where, follow_links, hint=LINK_HINT)


class BenchXDataset(ItemDataset):
    """Base of the BenchX adapters: records -> split -> items (see the module docstring)."""

    dataset_key = ""  # key of PAPER_SIZES
    class_names: list[str]
    label_names: list[str]
    task = "binary"  # "binary" | "multilabel" | "multiclass"

    def __init__(self, root: str | Path, split: str = "train", split_dir: str | Path | None = None,
                 split_seed: int = 0, image_size: int | None = None, in_chans: int = 1,
                 max_short_side: int | None = None, with_mask: bool = False, transform: Any = None,
                 intensity: dict[str, str] | None = None, follow_links: bool = False):
        self.root = Path(root)
        self.follow_links = bool(follow_links)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{type(self).__name__}: dataset folder {self.root} not found")
        self.split = split_name(split) if split != "all" else split
        self.image_size, self.in_chans, self.max_short_side = image_size, int(in_chans), max_short_side
        self.with_mask, self.transform, self.intensity = with_mask, transform, intensity
        records = self._records()
        if not records:
            raise ValueError(f"{type(self).__name__}: no images found under {self.root}")
        by_id = {r.id: r for r in records}
        if self.split == "all":
            chosen = [r.id for r in records]
        else:
            sd = Path(split_dir) if split_dir is not None else self.root / "benchx_splits"
            splits = resolve_splits(self.dataset_key, [r.id for r in records], [r.patient for r in records], sd,
                                    split_seed, self._fixed(records))
            chosen = splits[self.split]
        self.records = [by_id[i] for i in chosen]

    # -- hooks -------------------------------------------------------------------------------------------------
    def _records(self) -> list[Record]:
        raise NotImplementedError

    def _fixed(self, records: list[Record]) -> dict[str, list[str]]:
        """Official split membership kept when splits are drawn (``extra['official']``)."""
        out: dict[str, list[str]] = {}
        for r in records:
            if r.extra.get("official") in ("train", "val", "test") and r.extra.get("fixed", False):
                out.setdefault(r.extra["official"], []).append(r.id)
        return out

    def _mask(self, rec: Record, shape: tuple[int, int]) -> np.ndarray:
        raise ValueError(f"{type(self).__name__} has no segmentation masks")

    # -- items -------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def patient_ids(self) -> list[str]:
        return [r.patient for r in self.records]

    @property
    def labels(self) -> np.ndarray:
        """(N,) class indices or (N, K) label matrix of the split."""
        return np.stack([np.asarray(r.label) for r in self.records])

    def _image(self, path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
        from medvit.data.imageload import load_gray01

        img = load_gray01(path, self.intensity)
        return to_chw(img, self.in_chans, self.image_size, self.max_short_side), (img.shape[0], img.shape[1])

    def _label(self, rec: Record) -> dict[str, torch.Tensor]:
        if self.task == "multilabel":
            y = torch.as_tensor(np.asarray(rec.label, np.float32))
            return {"label": y, "label_mask": torch.ones(len(y), dtype=torch.bool)}
        return {"label": torch.tensor(int(rec.label), dtype=torch.long)}

    def _item(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        image, shape = self._image(rec.path)
        item: dict[str, Any] = {"image": image, "id": rec.id, "patient_id": rec.patient, **self._label(rec)}
        if self.with_mask:
            m = torch.from_numpy(self._mask(rec, shape).astype(np.float32))[None, None]
            if tuple(m.shape[-2:]) != tuple(image.shape[-2:]):
                m = torch.nn.functional.interpolate(m, size=tuple(image.shape[-2:]), mode="nearest")
            item["mask"] = m[0]
        return item


# --------------------------------------------------------------------------------------------------------- VinDr
class VinDrCXR(BenchXDataset):
    """VinDr-CXR 1.0.0 (PhysioNet) layout::

        annotations/image_labels_train.csv   image_id, rad_id, <28 labels incl. the 14 of BenchX> (0/1 per reader)
        annotations/image_labels_test.csv    same, one consensus row per image
        annotations/annotations_train.csv    image_id, rad_id, class_name, x_min, y_min, x_max, y_max
        annotations/annotations_test.csv     same (boxes empty for "No finding")
        train/<image_id>.dicom, test/<image_id>.dicom

    Label: positive when at least one reader marks it. Mask: the boxes of each reader fused across readers by
    weighted boxes fusion, then rasterised (all 14 lesion classes as one foreground). Official test images stay
    in ``test`` when splits are drawn. Patient = image id (the release has no patient ID, BenchX issue #5).
    """

    dataset_key = "vindr"
    task = "multilabel"
    label_names = [n for n, _ in VINDR_LABELS]

    def _records(self) -> list[Record]:
        ann_dir = self.root / "annotations"
        records: list[Record] = []
        for part in ("train", "test"):
            f = ann_dir / f"image_labels_{part}.csv"
            if not f.is_file():
                if part == "test":
                    continue
                raise FileNotFoundError(f"{f} not found: root must be the VinDr-CXR 1.0.0 folder (annotations/, "
                                        "train/, test/)")
            rows = read_csv(f, ("image_id", *(c for _, c in VINDR_LABELS)))
            labels: dict[str, np.ndarray] = {}
            for line, r in rows:
                y = np.array([_binary(f, line, r[c], c) for _, c in VINDR_LABELS], np.float32)
                labels[r["image_id"]] = np.maximum(labels.get(r["image_id"], y), y)
            boxes = self._boxes(ann_dir / f"annotations_{part}.csv")
            for image_id, y in labels.items():
                path = _inside(self.root / part, f"{image_id}.dicom", str(f), self.follow_links)
                records.append(Record(image_id, image_id, path, y, boxes.get(image_id, {}),
                                      {"official": part, "fixed": part == "test"}))
        return records

    @staticmethod
    def _boxes(f: Path) -> dict[str, dict[str, list[tuple[tuple[float, float, float, float], int]]]]:
        """image id -> reader -> boxes (class index among the 14)."""
        out: dict[str, dict[str, list]] = {}
        if not f.is_file():
            return out
        cls = {src: k for k, (_, src) in enumerate(VINDR_LABELS)}
        for line, r in read_csv(f, ("image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max")):
            if r["class_name"] == "No finding":
                continue
            if r["class_name"] not in cls:
                raise ValueError(f"{f}:{line}: unknown class_name {r['class_name']!r}")
            b = tuple(_float(f, line, r, c) for c in ("x_min", "y_min", "x_max", "y_max"))
            if b[2] < b[0] or b[3] < b[1]:
                raise ValueError(f"{f}:{line}: box {b} has x_max < x_min or y_max < y_min")
            out.setdefault(r["image_id"], {}).setdefault(r["rad_id"], []).append((b, cls[r["class_name"]]))
        return out

    def _mask(self, rec: Record, shape: tuple[int, int]) -> np.ndarray:
        fused = fuse_reader_boxes(list(rec.ann.values()), shape)
        return boxes_to_mask([b for b, _ in fused], shape)


# ---------------------------------------------------------------------------------------------------------- RSNA
class RSNAPneumonia(BenchXDataset):
    """RSNA Pneumonia Detection, stage 2 (Kaggle) layout::

        stage_2_train_labels.csv     patientId, x, y, width, height, Target (one row per box; empty box if 0)
        stage_2_train_images/<patientId>.dcm

    Label: Target (binary). Mask: the union of the image's boxes. Patient = patientId (one image each).
    """

    dataset_key = "rsna"
    class_names = ["normal", "pneumonia"]
    label_names = ["Pneumonia"]

    def _records(self) -> list[Record]:
        f = self.root / "stage_2_train_labels.csv"
        rows = read_csv(f, ("patientId", "x", "y", "width", "height", "Target"))
        recs: dict[str, Record] = {}
        for line, r in rows:
            pid = r["patientId"]
            target = _binary(f, line, r["Target"], "Target")
            rec = recs.setdefault(pid, Record(pid, pid, _inside(self.root / "stage_2_train_images", f"{pid}.dcm",
                                                                 str(f), self.follow_links), target, []))
            if rec.label != target:
                raise ValueError(f"{f}:{line}: Target {target} of {pid} disagrees with an earlier row")
            if target:
                x, y, w, h = (_float(f, line, r, c) for c in ("x", "y", "width", "height"))
                if w <= 0 or h <= 0:
                    raise ValueError(f"{f}:{line}: box width and height must be > 0, got {w:g} x {h:g}")
                rec.ann.append((x, y, x + w - 1, y + h - 1))
        return list(recs.values())

    def _mask(self, rec: Record, shape: tuple[int, int]) -> np.ndarray:
        return boxes_to_mask(rec.ann, shape)


# ---------------------------------------------------------------------------------------------------------- SIIM
class SIIMPneumothorax(BenchXDataset):
    """SIIM-ACR Pneumothorax, stage 1 (Kaggle) layout::

        train-rle.csv                ImageId, EncodedPixels (" EncodedPixels" in the original header; -1 = none;
                                     several rows for several regions)
        dicom-images-train/<study>/<series>/<ImageId>.dcm

    Label: any region. Mask: the union of the rows' RLE masks (:func:`~medvit.data.benchx_masks.siim_rle_decode`).
    Patient = ImageId (the DICOM PatientID is not read at index time).
    """

    dataset_key = "siim"
    class_names = ["no pneumothorax", "pneumothorax"]
    label_names = ["Pneumothorax"]

    def _records(self) -> list[Record]:
        f = self.root / "train-rle.csv"
        rows = read_csv(f, ("ImageId", "EncodedPixels"))
        files = {p.stem: p for p in (self.root / "dicom-images-train").rglob("*.dcm")}
        recs: dict[str, Record] = {}
        for line, r in rows:
            iid = r["ImageId"]
            if iid not in files:
                raise FileNotFoundError(f"{f}:{line}: no dicom-images-train/**/{iid}.dcm under {self.root}")
            rle = r["EncodedPixels"]
            if rle != "-1":
                vals = rle.split()
                if len(vals) % 2 or not all(v.isdigit() for v in vals):
                    raise ValueError(f"{f}:{line}: EncodedPixels must be '-1' or start/length integer pairs")
            rec = recs.setdefault(iid, Record(iid, iid, files[iid], 0, []))
            if rle != "-1":
                rec.label = 1
                rec.ann.append((line, rle))
        return list(recs.values())

    def _mask(self, rec: Record, shape: tuple[int, int]) -> np.ndarray:
        m = np.zeros(shape, bool)
        for line, rle in rec.ann:
            try:
                m |= siim_rle_decode(rle, shape[1], shape[0])
            except ValueError as e:
                raise ValueError(f"{self.root / 'train-rle.csv'}:{line}: {e}") from None
        return m


# -------------------------------------------------------------------------------------------------------- COVIDx
class COVIDxCXR4(BenchXDataset):
    """COVIDx CXR-4 (Kaggle) layout::

        train.txt, val.txt, test.txt   lines "<patient id> <file name> <positive|negative> <source>"
        train/, val/, test/            the images

    Label: positive = 1. The official ``val``/``test`` lists stay as they are when splits are drawn.
    """

    dataset_key = "covidx"
    class_names = ["negative", "positive"]
    label_names = ["COVID-19"]

    def _records(self) -> list[Record]:
        recs: list[Record] = []
        for part in ("train", "val", "test"):
            f = self.root / f"{part}.txt"
            if not f.is_file():
                raise FileNotFoundError(f"{f} not found: root must be the COVIDx CXR-4 folder ({part}.txt, {part}/)")
            for k, line in enumerate(f.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) < 3 or parts[2].lower() not in ("positive", "negative"):
                    raise ValueError(f"{f}:{k}: expected '<patient id> <file> <positive|negative> <source>', got "
                                     f"{line[:80]!r}")
                recs.append(Record(parts[1], parts[0],
                                   _inside(self.root / part, parts[1], f"{f}:{k}", self.follow_links),
                                   int(parts[2].lower() == "positive"), None,
                                   {"official": part, "fixed": part in ("val", "test")}))
        return recs


# ---------------------------------------------------------------------------------------------------- Object-CXR
class ObjectCXR(BenchXDataset):
    """Object-CXR (JF Healthcare, MIDL 2020) layout::

        train.csv, dev.csv (and test.csv when present)   image_name, annotation
        train/, dev/ (test/)                               the images

    ``annotation``: empty for no foreign object, else shapes separated by ``;``, each ``<type> <coords>``: type 0 =
    box ``x1 y1 x2 y2``, 1 = ellipse given by its bounding box ``x1 y1 x2 y2``, 2 = polygon ``x1 y1 x2 y2 ...``.
    Label: any shape. Mask: union of the shapes. Patient = image name.
    """

    dataset_key = "object_cxr"
    class_names = ["no foreign object", "foreign object"]
    label_names = ["Foreign object"]

    def _records(self) -> list[Record]:
        recs: list[Record] = []
        for part in ("train", "dev", "test"):
            f = self.root / f"{part}.csv"
            if not f.is_file():
                if part == "test":
                    continue
                raise FileNotFoundError(f"{f} not found: root must be the Object-CXR folder (train.csv, dev.csv, "
                                        "train/, dev/)")
            for line, r in read_csv(f, ("image_name", "annotation")):
                shapes = self._parse(f, line, r["annotation"])
                recs.append(Record(r["image_name"], r["image_name"],
                                   _inside(self.root / part, r["image_name"], f"{f}:{line}", self.follow_links),
                                   int(bool(shapes)), shapes))
        return recs

    @staticmethod
    def _parse(f: Path, line: int, text: str) -> list[tuple[int, list[float]]]:
        shapes = []
        for part in (p.strip() for p in text.split(";")):
            if not part:
                continue
            try:
                vals = [float(v) for v in part.split()]
            except ValueError:
                raise ValueError(f"{f}:{line}: annotation {part!r} must be numbers") from None
            kind, coords = int(vals[0]), vals[1:]
            ok = (kind in (0, 1) and len(coords) == 4) or (kind == 2 and len(coords) >= 6 and len(coords) % 2 == 0)
            if not ok:
                raise ValueError(f"{f}:{line}: annotation {part!r}: expected '0 x1 y1 x2 y2' (box), "
                                 "'1 x1 y1 x2 y2' (ellipse) or '2 x1 y1 x2 y2 x3 y3 ...' (polygon)")
            shapes.append((kind, coords))
        return shapes

    def _mask(self, rec: Record, shape: tuple[int, int]) -> np.ndarray:
        m = np.zeros(shape, bool)
        for kind, c in rec.ann:
            if kind == 0:
                m |= boxes_to_mask([tuple(c)], shape)  # type: ignore[list-item]
            elif kind == 1:
                m |= ellipses_to_mask([tuple(c)], shape)  # type: ignore[list-item]
            else:
                m |= polygons_to_mask([list(zip(c[0::2], c[1::2]))], shape)
        return m


# ------------------------------------------------------------------------------------------------------- TBX11K
class TBX11K(BenchXDataset):
    """TBX11K (Liu et al., CVPR 2020) layout::

        imgs/<group>/<name>.png           groups health/, sick/, tb/ (and test/ unlabelled: ignored)
        annotations/xml/<name>.xml        Pascal VOC boxes (<object><bndbox><xmin>… of the TB images)

    Label: the image has at least one box. Mask: the union of its boxes. Patient = image name.
    """

    dataset_key = "tbx11k"
    class_names = ["no TB", "TB"]
    label_names = ["Tuberculosis"]

    def _records(self) -> list[Record]:
        imgs = self.root / "imgs"
        if not imgs.is_dir():
            raise FileNotFoundError(f"{imgs} not found: root must be the TBX11K folder (imgs/, annotations/xml/)")
        recs = []
        for group in ("health", "sick", "tb"):
            for p in sorted((imgs / group).glob("*.png")):
                boxes = self._xml(self.root / "annotations" / "xml" / f"{p.stem}.xml")
                if group == "tb" and not boxes:
                    raise ValueError(f"{self.root / 'annotations' / 'xml' / (p.stem + '.xml')}: a tb/ image needs "
                                     "its XML boxes")
                recs.append(Record(f"{group}/{p.name}", p.stem, p, int(bool(boxes)), boxes))
        return recs

    @staticmethod
    def _xml(f: Path) -> list[tuple[float, float, float, float]]:
        if not f.is_file():
            return []
        import xml.etree.ElementTree as ET  # noqa: N817 - the standard alias

        try:
            tree = ET.parse(f)
        except ET.ParseError as e:
            raise ValueError(f"{f}: not valid XML ({e})") from None
        boxes = []
        for k, obj in enumerate(tree.getroot().iter("object"), 1):
            bb = obj.find("bndbox")
            try:
                vals = tuple(float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr,arg-type]
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"{f}: object {k} needs <bndbox> with numeric xmin, ymin, xmax, ymax") from None
            if not all(math.isfinite(v) for v in vals) or vals[2] < vals[0] or vals[3] < vals[1]:
                raise ValueError(f"{f}: object {k}: box {vals} must be finite with xmax >= xmin and ymax >= ymin")
            boxes.append(vals)
        return boxes

    def _mask(self, rec: Record, shape: tuple[int, int]) -> np.ndarray:
        return boxes_to_mask(rec.ann, shape)


# ------------------------------------------------------------------------------------------------------ IU X-Ray
class IUXRay(BenchXDataset):
    """IU X-Ray as preprocessed by R2Gen (Chen et al., EMNLP 2020)::

        annotation.json    {"train": [{"id", "report", "image_path": [frontal, lateral], "split"}, …], "val", "test"}
        images/<image_path>

    Items: ``image`` (frontal), ``image_lateral``, ``report``. Splits: R2Gen's (annotation.json); ``train_1`` and
    ``train_10`` are drawn from its training studies. Patient = study id.
    """

    dataset_key = "iu_xray"
    label_names: list[str] = []
    task = "report"

    def _records(self) -> list[Record]:
        f = self.root / "annotation.json"
        data = read_json(f, missing="root must be R2Gen's iu_xray folder (annotation.json, images/)")
        recs = []
        for part in ("train", "val", "test"):
            for k, e in enumerate(data.get(part, [])):
                where = f"{f}: {part}[{k}]"
                if not isinstance(e, dict) or not isinstance(e.get("report"), str) or \
                        not isinstance(e.get("image_path"), list) or len(e["image_path"]) != 2:
                    raise ValueError(f"{where}: expected {{'id', 'report': str, 'image_path': [frontal, lateral]}}")
                sid = str(e.get("id", f"{part}{k}"))
                paths = [_inside(self.root / "images", str(p), where, self.follow_links) for p in e["image_path"]]
                recs.append(Record(sid, sid, paths[0], 0, None,
                                   {"official": part, "fixed": True, "lateral": paths[1], "report": e["report"]}))
        return recs

    def _label(self, rec: Record) -> dict[str, Any]:
        return {"report": rec.extra["report"]}

    def _item(self, i: int) -> dict[str, Any]:
        item = super()._item(i)
        item["image_lateral"] = self._image(self.records[i].extra["lateral"])[0]
        return item



# -------------------------------------------------------------------------------------------------------- 5 x 200
class FiveByTwoHundred(ItemDataset):
    """MIMIC-CXR 5×200 / CheXpert 5×200 (GLoRIA, BenchX ``test_zeroshot.py``): one CSV under ``root``::

        <csv_name>   Path, Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion[, Report]

    ``Path`` is relative to ``root``; exactly one of the five class columns is 1 per row. Items: ``image``,
    ``label`` (class index, :data:`CLASSES_5X200` order), ``report`` (when a Report/report column exists).
    Evaluation-only sets: ``split`` must be ``test`` (or ``all``).
    """

    task = "multiclass"

    def __init__(self, root: str | Path, csv_name: str, split: str = "test", image_size: int | None = None,
                 in_chans: int = 1, max_short_side: int | None = None, transform: Any = None,
                 intensity: dict[str, str] | None = None, follow_links: bool = False):
        if split not in ("test", "all"):
            raise ValueError(f"{csv_name}: a zero-shot set has only the 'test' split, got {split!r}")
        self.root, self.follow_links = Path(root), bool(follow_links)
        f = self.root / csv_name
        rows = read_csv(f, ("Path", *CLASSES_5X200))
        self.class_names = list(CLASSES_5X200)
        self.label_names = list(CLASSES_5X200)
        self.records: list[Record] = []
        for line, r in rows:
            onehot = [_binary(f, line, r[c], c) for c in CLASSES_5X200]
            if sum(onehot) != 1:
                raise ValueError(f"{f}:{line}: exactly one of {', '.join(CLASSES_5X200)} must be 1, got {onehot}")
            report = r.get("Report", r.get("report", ""))
            self.records.append(Record(r["Path"], r["Path"],
                                       _inside(self.root, r["Path"], f"{f}:{line}", self.follow_links),
                                       onehot.index(1), None, {"report": report}))
        if not self.records:
            raise ValueError(f"{f}: no rows")
        self.image_size, self.in_chans, self.max_short_side = image_size, int(in_chans), max_short_side
        self.transform, self.intensity = transform, intensity

    def __len__(self) -> int:
        return len(self.records)

    def patient_ids(self) -> list[str]:
        return [r.patient for r in self.records]

    def _item(self, i: int) -> dict[str, Any]:
        from medvit.data.imageload import load_gray01

        rec = self.records[i]
        img = load_gray01(rec.path, self.intensity)
        return {"image": to_chw(img, self.in_chans, self.image_size, self.max_short_side), "id": rec.id,
                "patient_id": rec.patient, "label": torch.tensor(rec.label, dtype=torch.long),
                "report": rec.extra["report"]}


# ---------------------------------------------------------------------------------------------------- registry
def _need_root(name: str, root: str | Path | None) -> Path:
    if root is None:
        raise ValueError(f"{name} needs root=DIR (the dataset folder in its native layout)")
    return Path(root)


_COMMON = {"mean": BENCHX_MEAN, "std": BENCHX_STD, "in_chans": 1, "benchx": True}


def _register(name: str, cls: type[BenchXDataset], tasks: tuple[str, ...], description: str) -> None:
    def build(split: str = "train", root: str | Path | None = None, **kw: Any) -> BenchXDataset:
        return cls(_need_root(name, root), split, **kw)

    build.__doc__ = f"{description}: ``root=DIR`` in the native layout ({cls.__name__})."
    meta: dict[str, Any] = {**_COMMON, "task": cls.task, "benchx_tasks": tasks, "splits": SPLIT_NAMES,
                            "mask_arg": "segmentation" in tasks,  # build_dataset(..., with_mask=True) gives masks
                            "label_names": list(cls.label_names), "description": description}
    if hasattr(cls, "class_names"):
        meta["class_names"] = list(cls.class_names)
    register("dataset", name, **meta)(build)


_register("vindr_cxr", VinDrCXR, ("classification", "segmentation"),
          "VinDr-CXR (DICOM + multi-reader CSVs; 14 labels; WBF-fused boxes as masks)")
_register("rsna_pneumonia", RSNAPneumonia, ("classification", "segmentation"),
          "RSNA Pneumonia stage 2 (DICOM + box CSV; binary; box masks)")
_register("siim_pneumothorax", SIIMPneumothorax, ("classification", "segmentation"),
          "SIIM-ACR Pneumothorax stage 1 (DICOM + train-rle.csv; binary; RLE masks)")
_register("covidx_cxr4", COVIDxCXR4, ("classification",), "COVIDx CXR-4 (train/val/test.txt; binary)")
_register("object_cxr", ObjectCXR, ("classification", "segmentation"),
          "Object-CXR (train/dev CSV with box/ellipse/polygon annotations; binary; shape masks)")
_register("tbx11k", TBX11K, ("segmentation", "classification"), "TBX11K (imgs/ + Pascal VOC XML boxes; box masks)")
_register("iu_xray", IUXRay, ("report_generation",), "IU X-Ray, R2Gen annotation.json (frontal + lateral + report)")


def _register_5x200(name: str, csv_name: str, description: str) -> None:
    def build(split: str = "test", root: str | Path | None = None, csv_name: str = csv_name,
              **kw: Any) -> FiveByTwoHundred:
        return FiveByTwoHundred(_need_root(name, root), csv_name, split, **kw)

    build.__doc__ = f"{description} (``root=DIR`` holding ``{csv_name}``)."
    register("dataset", name, **_COMMON, task="multiclass", benchx_tasks=("zeroshot", "retrieval"),
             splits=("test",), class_names=list(CLASSES_5X200), label_names=list(CLASSES_5X200),
             description=description)(build)


_register_5x200("mimic_5x200", "mimic_5x200.csv", "MIMIC-CXR 5x200 zero-shot / retrieval set")
_register_5x200("chexpert_5x200", "chexpert_5x200.csv", "CheXpert 5x200 zero-shot / retrieval set")
