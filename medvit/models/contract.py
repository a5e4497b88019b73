"""The contract a set of weights carries: what input it expects and what its outputs mean.

Every checkpoint's ``config.json`` holds one; preprocessing (batch inference, the viewer,
fine-tuning evaluation) is derived from it by :class:`medvit.data.preprocess.Preprocessor`, never retyped.

Checkpoints written before a field existed load with its default, which is what they were served with:
``intensity`` = file VOI window (min-max without one) for every file kind, ``crop_mode`` pad,
``crop_pct`` 1.0, ``resize_size`` none, ``interpolation`` bilinear.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from medvit.data.preprocess import FILE_KINDS, INTENSITY_RULES, INTERPOLATIONS
from medvit.data.preprocess import GEOMETRIES as CROP_MODES  # preprocessing vocabulary, one definition
from medvit.io.jsonfile import name_list_problem


@dataclass
class WeightContract:
    """Input expectations and output meaning of a set of weights."""

    in_chans: int = 3  # channels the model expects (1 for X-ray)
    input_size: tuple[int, ...] = (224, 224)  # spatial size the model was trained at
    mean: tuple[float, ...] = (0.5,)  # per-channel mean after scaling intensities to [0, 1]
    std: tuple[float, ...] = (0.5,)  # per-channel std after scaling intensities to [0, 1]
    intensity_window: tuple[float, float] | None = None  # (center, width) for grey images; None = the intensity rule
    # how each file kind is scaled to [0, 1]: voi (file VOI window/LUT, else min-max) | minmax | full (stored bit
    # range) | identity (values already in [0, 1]); kinds missing here use "voi" (what pre-rule checkpoints got)
    intensity: dict[str, str] = field(default_factory=dict)
    crop_mode: str = "pad"  # to the input's aspect: pad (keep the field of view) | crop (centre) | squash (ignore)
    crop_pct: float = 1.0  # timm crop_pct: resize to input_size / crop_pct, centre crop input_size (0.875 = 256->224)
    resize_size: tuple[int, ...] | None = None  # explicit size before the centre crop (overrides crop_pct's)
    interpolation: str = "bilinear"  # resize filter (PIL, antialiased): bilinear | bicubic
    label_names: list[str] = field(default_factory=list)  # output index -> finding name
    thresholds: list[float] = field(default_factory=list)  # operating threshold per label (probabilities)
    multilabel: bool = True  # sigmoid per label (True) or softmax over labels (False)
    modalities: list[str] = field(default_factory=list)  # e.g. ["CR", "DX"]; empty = any
    view_positions: list[str] = field(default_factory=list)  # e.g. ["PA", "AP"]; empty = any
    body_parts: list[str] = field(default_factory=list)  # e.g. ["CHEST"]; empty = any
    # out-of-distribution reference (medvit.eval.ood): method, threshold on the Mahalanobis distance of the pooled
    # features, target / measured false-positive rates, SHA-256 of ood.safetensors beside the weights; None = none
    ood: dict[str, Any] | None = None
    name: str = ""  # model name shown to users (SR algorithm name, tables, viewer); "" = the checkpoint folder name
    source: str = ""  # where the weights come from (paper, URL, training command)
    license: str = ""  # licence of the weights
    version: str = "0"  # version string shown to users
    research_only: bool = True  # shows "research use only — not for diagnosis" wherever outputs appear
    description: str = ""
    # segmentation models only: the JSON form of medvit.models.segmentation.SegmentationContract (one label per
    # output channel: name, colour, coded concepts; DICOM SEG type); label_names are then the segment names and
    # thresholds the per-pixel probability thresholds. None = a classifier.
    segmentation: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self._check_types()
        if self.segmentation is not None:
            from medvit.models.seg_contract import SegmentationContract

            seg = SegmentationContract.from_dict(self.segmentation)
            self.segmentation = seg.to_dict()
            if not self.label_names:
                self.label_names = seg.names
            if list(self.label_names) != seg.names:
                raise ValueError(f"contract label_names {self.label_names} differ from the segmentation labels "
                                 f"{seg.names} (one per output channel, same order)")
        self.input_size = tuple(int(s) for s in self.input_size)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if self.intensity_window is not None:
            self.intensity_window = (float(self.intensity_window[0]), float(self.intensity_window[1]))
        self.intensity = {**{k: "voi" for k in FILE_KINDS}, **dict(self.intensity or {})}
        bad = {k: v for k, v in self.intensity.items() if k not in FILE_KINDS or v not in INTENSITY_RULES}
        if bad:
            raise ValueError(f"contract intensity {bad} invalid: kinds {list(FILE_KINDS)}, "
                             f"rules {list(INTENSITY_RULES)}")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"contract crop_mode must be one of {CROP_MODES}, got {self.crop_mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"contract interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        self.crop_pct = float(self.crop_pct)
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"contract crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.resize_size is not None:
            self.resize_size = tuple(int(s) for s in self.resize_size)
        if self.in_chans < 1:
            raise ValueError(f"contract in_chans must be >= 1, got {self.in_chans}")
        for name, v in (("mean", self.mean), ("std", self.std)):
            if len(v) not in (1, self.in_chans):
                raise ValueError(f"contract {name} has {len(v)} values; expected 1 or in_chans={self.in_chans}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"contract std must be > 0, got {self.std}")
        if self.thresholds and len(self.thresholds) != len(self.label_names):
            raise ValueError(
                f"contract has {len(self.thresholds)} thresholds for {len(self.label_names)} labels"
            )
        if not all(0.0 <= t <= 1.0 for t in self.thresholds):  # NaN fails too: `p >= NaN` never calls a finding
            raise ValueError(f"contract key 'thresholds' must hold probabilities in [0, 1], got {self.thresholds}")
        if not self.thresholds and self.label_names:
            self.thresholds = [0.5] * len(self.label_names)

    def _check_types(self) -> None:
        """Refuse values of the wrong JSON type before they are used (``"modalities": "DX"`` would otherwise be
        iterated letter by letter into a scope that selects nothing)."""
        for key in ("modalities", "view_positions", "body_parts"):
            v = getattr(self, key)
            if not isinstance(v, list | tuple) or not all(isinstance(x, str) and x.strip() for x in v):
                raise ValueError(f"contract key {key!r} must be a list of non-empty strings (e.g. "
                                 f"{_EXAMPLES[key]}), got {type(v).__name__} {v!r:.80}")
        if problem := name_list_problem(self.label_names, allow_empty=True):  # one distinct name per output
            raise ValueError(f"contract key 'label_names' {problem} (e.g. {_EXAMPLES['label_names']})")
        for key in ("input_size", "mean", "std", "thresholds"):
            v = getattr(self, key)
            if not isinstance(v, list | tuple) or not all(_is_number(x) for x in v) or (key != "thresholds"
                                                                                         and not v):
                raise ValueError(f"contract key {key!r} must be a list of finite numbers, got {type(v).__name__} "
                                 f"{v!r:.80}")
        for key in ("intensity_window", "resize_size"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, list | tuple) or not all(_is_number(x) for x in v)):
                raise ValueError(f"contract key {key!r} must be null or a list of finite numbers, got {v!r:.80}")
        if self.intensity_window is not None and len(self.intensity_window) != 2:
            raise ValueError(f"contract key 'intensity_window' must be [center, width], got {self.intensity_window}")
        for key in ("in_chans",):
            if not isinstance(getattr(self, key), numbers.Integral) or isinstance(getattr(self, key), bool):
                raise ValueError(f"contract key {key!r} must be an integer, got {getattr(self, key)!r:.80}")
        if not _is_number(self.crop_pct):
            raise ValueError(f"contract key 'crop_pct' must be a finite number, got {self.crop_pct!r:.80}")
        for key in ("multilabel", "research_only"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"contract key {key!r} must be true or false, got {getattr(self, key)!r:.80}")
        for key in ("crop_mode", "interpolation", "name", "source", "license", "version", "description"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"contract key {key!r} must be a string, got {getattr(self, key)!r:.80}")
        if not isinstance(self.intensity, dict | None):
            raise ValueError(f"contract key 'intensity' must be an object {{file kind: rule}}, got "
                             f"{self.intensity!r:.80}")
        if self.segmentation is not None and not isinstance(self.segmentation, dict):
            raise ValueError(f"contract key 'segmentation' must be an object or null, got {self.segmentation!r:.80}")
        if self.ood is not None and not isinstance(self.ood, dict):
            raise ValueError(f"contract key 'ood' must be an object or null, got {self.ood!r:.80}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        if self.intensity_window is not None:
            d["intensity_window"] = list(self.intensity_window)
        if self.resize_size is not None:
            d["resize_size"] = list(self.resize_size)
        return d

    def segmentation_contract(self) -> Any:
        """The :class:`medvit.models.segmentation.SegmentationContract`, or None for a classifier."""
        if self.segmentation is None:
            return None
        from medvit.models.seg_contract import SegmentationContract

        return SegmentationContract.from_dict(self.segmentation)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "") -> WeightContract:
        """Contract from its JSON form; ``source`` (the config file) prefixes every error.

        Raises KeyError for unknown keys, ValueError for a value of the wrong type or out of range.
        """
        where = f"{source}: " if source else ""
        if not isinstance(d, dict):
            raise ValueError(f"{where}'contract' must be an object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise KeyError(f"{where}unknown weight-contract keys {sorted(unknown)}; known: {sorted(known)}")
        try:
            return cls(**d)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where}{e}") from e


_EXAMPLES = {"modalities": '["CR", "DX"]', "view_positions": '["PA", "AP"]', "body_parts": '["CHEST"]',
             "label_names": '["Effusion", "Nodule"]'}


def _is_number(x: Any) -> bool:
    """A finite real number (not a bool; NaN / ±inf refused)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)
