"""``cxr_phantom_benchx``: the chest phantoms with everything the four BenchX tasks need in one item.

Items (phantoms of :class:`medvit.data.phantom_datasets.PhantomDataset`, generated with masks): ``image``
(1, H, W) in [0, 1]; ``label`` (7,) + ``label_mask`` (multi-label findings, :data:`CXR_LABELS`); ``mask`` (1, H, W)
float 0/1 — the union of the phantom masks whose names start with one of ``mask_of`` (default both lungs, the
segmentation target of the CPU preset); ``report`` (the phantom's template report); ``boxes`` /
``box_labels`` (pixel boxes of the finding masks and their lower-case names: PTP position prompts,
:mod:`medvit.data.ptp`). Splits ``train``/``val``/``test`` are patient-disjoint (80/10/10 % of patients); label
fractions are drawn by the harness.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from medvit.data.datasets import ItemDataset, check_split
from medvit.data.phantom_cxr import CXR_LABELS
from medvit.data.phantom_datasets import (
    PhantomDataset,
    call_name,
    check_wrapper_args,
    refuse_unknown_wrapper_args,
)
from medvit.data.ptp import boxes_from_masks
from medvit.registry import register

#: the chest phantom arguments PhantomBenchX passes on (it draws them with masks, one grey channel)
_FORWARDS = frozenset({"n", "seed", "image_size"})


def check_mask_of(args: dict[str, Any], name: Callable[[str], str] = str) -> None:
    """``mask_of`` (when in ``args``): a non-empty list of phantom mask-name prefixes (a bare string was split into
    its letters); ``ValueError`` naming ``name('mask_of')`` otherwise (the constructor's and the dry run's check)."""
    if "mask_of" not in args:
        return
    m = args["mask_of"]
    if isinstance(m, str) or not isinstance(m, Sequence) or not m or not all(isinstance(x, str) and x for x in m):
        raise ValueError(f"{name('mask_of')} must name at least one phantom mask prefix as a list (e.g. ['lung_'], "
                         f"['heart']), got {m!r}")


class PhantomBenchX(ItemDataset):
    """Chest phantoms with label, mask and report (see the module docstring)."""

    def __init__(self, split: str = "train", n: int = 1000, seed: int = 0, image_size: int = 64,
                 mask_of: Sequence[str] = ("lung_",), transform: Any = None):
        check_split(split, ("train", "val", "test", "all"), "cxr_phantom_benchx")
        check_mask_of({"mask_of": mask_of}, call_name("cxr_phantom_benchx"))
        self.base = PhantomDataset("cxr", split, n=n, seed=seed, image_size=image_size, with_masks=True)
        self.mask_of = tuple(mask_of)
        self.label_names = list(CXR_LABELS)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def patient_ids(self) -> list[str]:
        return self.base.patient_ids()

    def _item(self, i: int) -> dict[str, Any]:
        it = self.base[i]
        h, w = it["image"].shape[-2:]
        m = np.zeros((h, w), bool)
        masks = it["masks"]
        it["boxes"], it["box_labels"] = boxes_from_masks(masks, CXR_LABELS)  # finding boxes (PTP prompts)
        for name, mk in it.pop("masks").items():
            if name.startswith(self.mask_of):
                m |= mk.numpy().astype(bool)
        it["mask"] = torch.from_numpy(m.astype(np.float32))[None]
        return it


@register("dataset", "cxr_phantom_benchx", mean=(0.524,), std=(0.290,), label_names=list(CXR_LABELS),
          task="multilabel", in_chans=1, benchx=True,
          benchx_tasks=("classification", "segmentation", "report_generation", "retrieval"),
          splits=("train", "val", "test"),
          check_args=lambda args: check_wrapper_args("cxr_phantom_benchx", args, PhantomBenchX.__init__, _FORWARDS,
                                                     check_mask_of),
          description="chest phantoms with labels, lung masks and reports for the BenchX CPU preset")
def cxr_phantom_benchx(split: str = "train", **kw: Any) -> PhantomBenchX:
    """Chest phantoms for the four BenchX tasks (``n``, ``seed``, ``image_size``, ``mask_of``). ``ValueError`` naming a
    keyword neither this set nor the phantoms take, or a value they refuse."""
    refuse_unknown_wrapper_args("cxr_phantom_benchx", kw, PhantomBenchX.__init__, _FORWARDS)
    return PhantomBenchX(split, **kw)
