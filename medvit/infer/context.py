"""The typed seam between a run and the writers of its derived objects (heatmaps, per-study SR).

The writers get a :class:`RunOutputs` — where outputs go, where the sources are, which model, how to de-identify —
never the runner itself, so they depend on these fields and nothing else of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medvit.infer.predictor import ModelInfo
    from medvit.io.deidentify import Deidentifier


@dataclass(frozen=True)
class RunOutputs:
    """What the heatmap and SR writers need of one inference run."""

    out: Path  # OUTPUT root; every write is checked to stay inside it
    root: Path  # input root: a folder (records hold paths relative to it) or a single file
    info: ModelInfo  # the model's identity (name, version, weights SHA-256, architecture, research-only flag)
    deid: Deidentifier | None = None  # PS3.15 de-identification of everything written (None: off)
    geometry: str | None = None  # preprocessing geometry the heatmaps are mapped back through
    heatmap_method: str = "gradcam"  # gradcam | rollout (named in the PNG and the Secondary Capture)

    def source_header(self, rel: str) -> Any:
        """The header of source ``rel`` (a pydicom Dataset) for derived objects; de-identified when the run
        de-identifies."""
        from medvit.io import read_dicom_header

        ds = read_dicom_header(self.root / rel if self.root.is_dir() else self.root)
        return self.deid.dataset(ds) if self.deid is not None else ds
