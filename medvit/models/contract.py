"""The contract a set of weights carries: what input it expects and what its outputs mean.

Every checkpoint's ``config.json`` holds one; preprocessing (batch inference, the viewer,
fine-tuning) is derived from it, never retyped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class WeightContract:
    """Input expectations and output meaning of a set of weights."""

    in_chans: int = 3  # channels the model expects (1 for X-ray)
    input_size: tuple[int, ...] = (224, 224)  # spatial size the model was trained at
    mean: tuple[float, ...] = (0.5,)  # per-channel mean after scaling intensities to [0, 1]
    std: tuple[float, ...] = (0.5,)  # per-channel std after scaling intensities to [0, 1]
    intensity_window: tuple[float, float] | None = None  # (center, width) applied before scaling; None = file VOI
    label_names: list[str] = field(default_factory=list)  # output index -> finding name
    thresholds: list[float] = field(default_factory=list)  # operating threshold per label (probabilities)
    multilabel: bool = True  # sigmoid per label (True) or softmax over labels (False)
    modalities: list[str] = field(default_factory=list)  # e.g. ["CR", "DX"]; empty = any
    view_positions: list[str] = field(default_factory=list)  # e.g. ["PA", "AP"]; empty = any
    body_parts: list[str] = field(default_factory=list)  # e.g. ["CHEST"]; empty = any
    source: str = ""  # where the weights come from (paper, URL, training command)
    license: str = ""  # licence of the weights
    version: str = "0"  # version string shown to users
    research_only: bool = True  # shows "research use only — not for diagnosis" wherever outputs appear
    description: str = ""

    def __post_init__(self) -> None:
        self.input_size = tuple(int(s) for s in self.input_size)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if self.intensity_window is not None:
            self.intensity_window = (float(self.intensity_window[0]), float(self.intensity_window[1]))
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
        if not self.thresholds and self.label_names:
            self.thresholds = [0.5] * len(self.label_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        if self.intensity_window is not None:
            d["intensity_window"] = list(self.intensity_window)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WeightContract:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise KeyError(f"unknown weight-contract keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)
