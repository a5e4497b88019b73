"""The segmentation contract: what a segmentation model's output channels mean and how they are stored.

One :class:`SegmentLabel` per output channel (name, display colour, coded concepts: segmented property category
and type as DICOM PS3.16 CID 7150 / CID 7151 use them, SNOMED CT), the activation and the DICOM SEG type
(PS3.3 C.8.20.2) `medvit infer` writes. Carried as ``WeightContract.segmentation`` (its JSON form); see
:mod:`medvit.models.segmentation` for the registered kind. Imports nothing else of medvit.models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEG_TYPES = ("BINARY", "FRACTIONAL")

#: (code value, coding scheme designator, code meaning) of common segmented property categories (CID 7150)
CATEGORY_ANATOMY = ("91723000", "SCT", "Anatomical Structure")
CATEGORY_MORPHOLOGY = ("49755003", "SCT", "Morphologically Altered Structure")

#: label name -> (category, type, RGB colour) for the labels the chest phantoms' masks provide. Types from
#: CID 7151/7166 (SNOMED CT): right/left lung, heart, pneumothorax, pleural effusion, nodule, consolidation,
#: atelectasis. Used by :func:`phantom_segment_labels`; other models state their own concepts in the contract.
KNOWN_CONCEPTS: dict[str, tuple[tuple[str, str, str], tuple[str, str, str], tuple[int, int, int]]] = {
    "lung_right": (CATEGORY_ANATOMY, ("3341006", "SCT", "Right lung"), (80, 160, 255)),
    "lung_left": (CATEGORY_ANATOMY, ("44029006", "SCT", "Left lung"), (80, 220, 140)),
    "heart": (CATEGORY_ANATOMY, ("80891009", "SCT", "Heart"), (230, 80, 80)),
    "pneumothorax": (CATEGORY_MORPHOLOGY, ("36118008", "SCT", "Pneumothorax"), (255, 200, 0)),
    "effusion": (CATEGORY_MORPHOLOGY, ("60046008", "SCT", "Pleural effusion"), (170, 90, 230)),
    "nodule": (CATEGORY_MORPHOLOGY, ("27925004", "SCT", "Nodule"), (255, 120, 200)),
    "consolidation": (CATEGORY_MORPHOLOGY, ("95436008", "SCT", "Lung consolidation"), (255, 150, 60)),
    "atelectasis": (CATEGORY_MORPHOLOGY, ("46621007", "SCT", "Atelectasis"), (120, 200, 200)),
}


def _concept(v: Any, where: str) -> tuple[str, str, str]:
    if (not isinstance(v, list | tuple) or len(v) != 3
            or not all(isinstance(x, str) and x.strip() for x in v)):
        raise ValueError(f"{where} must be [code value, coding scheme, code meaning] (e.g. "
                         f"{list(CATEGORY_ANATOMY)}), got {v!r:.80}")
    return (str(v[0]), str(v[1]), str(v[2]))


@dataclass(frozen=True)
class SegmentLabel:
    """One output channel: its name, display colour (RGB 0-255) and coded concepts (PS3.3 C.8.20.2)."""

    name: str  # segment label (also the label name in tables)
    category: tuple[str, str, str]  # segmented property category (CID 7150), (value, scheme, meaning)
    type: tuple[str, str, str]  # segmented property type (CID 7151 ...), (value, scheme, meaning)
    color: tuple[int, int, int] = (255, 255, 0)  # recommended display colour, RGB 0-255

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "category": list(self.category), "type": list(self.type),
                "color": list(self.color)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "segmentation label") -> SegmentLabel:
        """Raises ValueError naming ``where`` and the key for a missing or malformed value."""
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be an object with name, category, type, color; got {d!r:.80}")
        unknown = set(d) - {"name", "category", "type", "color"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: name, category, type, color")
        name = d.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise ValueError(f"{where}: 'name' must be a non-empty string of at most 64 characters, got {name!r:.80}")
        color = d.get("color", [255, 255, 0])
        if (not isinstance(color, list | tuple) or len(color) != 3
                or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)):
            raise ValueError(f"{where} {name!r}: 'color' must be [r, g, b] integers 0-255, got {color!r:.80}")
        return cls(name, _concept(d.get("category"), f"{where} {name!r} 'category'"),
                   _concept(d.get("type"), f"{where} {name!r} 'type'"), tuple(int(c) for c in color))


@dataclass
class SegmentationContract:
    """What a segmentation model's output channels mean and how they are stored (see module doc)."""

    labels: list[SegmentLabel] = field(default_factory=list)
    activation: str = "sigmoid"  # per pixel and label (labels may overlap)
    seg_type: str = "BINARY"  # DICOM SEG Segmentation Type written by `medvit infer`: BINARY | FRACTIONAL

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("segmentation contract: 'labels' must list at least one label")
        names = [lab.name for lab in self.labels]
        if len(set(names)) != len(names):
            raise ValueError(f"segmentation contract: label names must be unique, got {names}")
        if self.activation != "sigmoid":
            raise ValueError(f"segmentation contract: 'activation' must be 'sigmoid', got {self.activation!r}")
        if self.seg_type not in SEG_TYPES:
            raise ValueError(f"segmentation contract: 'seg_type' must be one of {SEG_TYPES}, got {self.seg_type!r}")

    @property
    def names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    def to_dict(self) -> dict[str, Any]:
        return {"labels": [lab.to_dict() for lab in self.labels], "activation": self.activation,
                "seg_type": self.seg_type}

    @classmethod
    def from_dict(cls, d: Any, source: str = "") -> SegmentationContract:
        """From the JSON form; errors name ``source`` (the config file) and the key."""
        where = f"{source}: contract 'segmentation'" if source else "contract 'segmentation'"
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be an object, got {type(d).__name__}")
        unknown = set(d) - {"labels", "activation", "seg_type"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: labels, activation, seg_type")
        labels = d.get("labels")
        if not isinstance(labels, list):
            raise ValueError(f"{where}: 'labels' must be a list of label objects, got {labels!r:.80}")
        try:
            return cls([SegmentLabel.from_dict(x, f"{where} labels[{i}]") for i, x in enumerate(labels)],
                       d.get("activation", "sigmoid"), d.get("seg_type", "BINARY"))
        except ValueError as e:
            raise ValueError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None


def phantom_segment_labels(names: list[str]) -> list[SegmentLabel]:
    """:class:`SegmentLabel` s for chest-phantom mask names from :data:`KNOWN_CONCEPTS`; KeyError for others."""
    out = []
    for n in names:
        if n not in KNOWN_CONCEPTS:
            raise KeyError(f"no coded concept known for segmentation label {n!r}; known: {sorted(KNOWN_CONCEPTS)}")
        cat, typ, rgb = KNOWN_CONCEPTS[n]
        out.append(SegmentLabel(n, cat, typ, rgb))
    return out
