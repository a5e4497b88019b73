"""Multi-window chest phantoms: each chest radiograph phantom shown in C intensity windows, one per channel.

Windowing is how CT and digital radiographs are read: one acquisition displayed through several
(centre, width) windows, each saturating what lies outside it (the lung window clips dense bone and
mediastinum, the bone window clips the lungs). Each channel therefore carries part of the information,
which makes the set a test bed for multi-channel models and for robustness to a missing channel
(ChannelViT + HCS, general-vision notes entry 4). Labels and splits are those of ``cxr_phantom``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from medvit.data.datasets import ItemDataset
from medvit.data.phantom_cxr import CXR_LABELS
from medvit.data.phantom_datasets import (
    PhantomDataset,
    call_name,
    check_wrapper_args,
    refuse_unknown_wrapper_args,
)
from medvit.registry import register

#: window name -> (centre, width) on the phantom's [0, 1] radiograph intensity scale
CXR_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (0.35, 0.5),
    "soft_tissue": (0.65, 0.3),
    "bone": (0.85, 0.2),
}


def apply_window(image: torch.Tensor, centre: float, width: float) -> torch.Tensor:
    """Linear window: (x − (centre − width/2)) / width clipped to [0, 1] (DICOM PS3.3 C.11.2.1.2 'LINEAR' shape)."""
    if not width > 0:
        raise ValueError(f"window width must be > 0, got {width}")
    return ((image - (centre - width / 2)) / width).clamp(0.0, 1.0)


#: the chest phantom arguments the multi-window set passes on (its images are the grey phantoms, one channel)
_FORWARDS = frozenset({"n", "seed", "image_size"})


def check_windows(args: dict[str, Any], name: Callable[[str], str] = str) -> None:
    """``windows`` (when in ``args``): a non-empty list of :data:`CXR_WINDOWS` names; ``ValueError`` naming
    ``name('windows')`` otherwise (the constructor's and ``medvit run --dry-run``'s check)."""
    if "windows" not in args:
        return
    windows = args["windows"]
    ok = isinstance(windows, list | tuple) and all(isinstance(w, str) for w in windows)
    unknown = [w for w in windows if w not in CXR_WINDOWS] if ok else windows
    if unknown or not windows:
        raise ValueError(f"{name('windows')}: unknown windows {unknown or windows!r}; choose from "
                         f"{list(CXR_WINDOWS)}")


class MultiWindowPhantomDataset(ItemDataset):
    """Chest phantoms as (C, H, W) images, channel c = window ``windows[c]`` of the radiograph.

    Items: ``{"image": (C, S, S) in [0, 1], "label": (7,), "label_mask", "id", "patient_id", "channels": (C,)}``
    where ``channels`` gives the channel ids (positions in :data:`CXR_WINDOWS` order) for ChannelViT.
    """

    def __init__(self, split: str = "train", n: int = 1000, seed: int = 0, image_size: int = 224,
                 windows: tuple[str, ...] = tuple(CXR_WINDOWS), transform: Any = None):
        check_windows({"windows": windows}, call_name("cxr_multiwindow_phantom"))
        self.base = PhantomDataset("cxr", split, n=n, seed=seed, image_size=image_size, in_chans=1)
        self.windows = tuple(windows)
        self.channel_ids = torch.tensor([list(CXR_WINDOWS).index(w) for w in windows])
        self.label_names = list(CXR_LABELS)
        self.classification = False
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def _item(self, i: int) -> dict[str, Any]:
        item = dict(self.base._item(i))
        grey = item["image"][0]
        item["image"] = torch.stack([apply_window(grey, *CXR_WINDOWS[w]) for w in self.windows])
        item["channels"] = self.channel_ids.clone()
        return item


# mean/std per window: measured over 400 in-memory phantoms (seed 0, 224 px, all splits)
@register("dataset", "cxr_multiwindow_phantom", mean=(0.696, 0.429, 0.106), std=(0.388, 0.418, 0.223),
          label_names=list(CXR_LABELS), task="multilabel",
          in_chans=len(CXR_WINDOWS), check_args=lambda args: check_wrapper_args(
              "cxr_multiwindow_phantom", args, MultiWindowPhantomDataset.__init__, _FORWARDS, check_windows),
          description="Chest phantoms in lung / soft-tissue / bone intensity windows, "
          "one per channel (multi-channel and missing-channel studies)")
def cxr_multiwindow_phantom(split: str = "train", n: int = 1000, seed: int = 0, image_size: int = 224,
                            windows: tuple[str, ...] = tuple(CXR_WINDOWS), **kw: Any) -> ItemDataset:
    """Multi-window chest phantoms, in memory (``n``, ``seed``, ``image_size``, ``windows``). ``ValueError`` naming a
    keyword neither this set nor the phantoms take, or a value they refuse."""
    refuse_unknown_wrapper_args("cxr_multiwindow_phantom", kw, MultiWindowPhantomDataset.__init__, _FORWARDS)
    return MultiWindowPhantomDataset(split, n=n, seed=seed, image_size=image_size, windows=tuple(windows), **kw)
