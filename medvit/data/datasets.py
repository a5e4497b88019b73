"""Dataset construction by registered name, and the shared item format.

Multi-label items: ``{"image": FloatTensor (C, H, W) in [0, 1], "label": FloatTensor (K,),
"label_mask": BoolTensor (K,), "id": str, "patient_id": str}``; classification items have
``"label": LongTensor ()`` instead (no mask). Datasets expose ``label_names`` (multi-label) or
``class_names`` (classification). Mean/std normalisation is NOT applied here: it is a task config field
whose default is the dataset's registry meta (:func:`dataset_normalization`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from medvit.registry import REGISTRY


def build_dataset(name: str, split: str, **kwargs: Any) -> torch.utils.data.Dataset:
    """Build registered dataset ``name`` for ``split`` (``train``/``val``/``test``, some accept ``all``).

    Keyword arguments go to the dataset's constructor (e.g. ``root=...`` or ``n=..., seed=...``).
    """
    entry = REGISTRY.entry("dataset", name)
    return entry.obj(split=split, **kwargs)


def check_dataset_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Config-time check of ``dataset_args`` for registered dataset ``name`` (``medvit run --dry-run``):
    ``ValueError`` naming ``dataset_args.<key>``. A dataset registering ``check_args`` (meta, a callable on the
    mapping, returning the mapping with converted values or None) checks itself; otherwise a key the builder's
    signature does not take is refused (builders taking ``**kwargs`` without ``check_args``: not checked here,
    the run checks). Returns the arguments the run should use (``args`` or the check's converted copy)."""
    import inspect

    from medvit.registry import did_you_mean

    entry = REGISTRY.entry("dataset", name)
    check = entry.meta.get("check_args")
    if callable(check):
        checked = check(args)
        return args if checked is None else checked
    params = inspect.signature(entry.obj).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return args
    known = [k for k in params if k != "split"]
    for k in args:
        if k not in known:
            hint = did_you_mean(k, known)
            raise ValueError(f"dataset_args.{k}: dataset {name!r} takes no argument {k!r}"
                             f"{'; ' + hint if hint else ''} (it takes {sorted(known)})")
    return args


def dataset_normalization(name: str, in_chans: int = 1) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Default (mean, std) per channel for dataset ``name`` (applied after [0, 1] scaling), ``in_chans`` long.

    Uses the registry meta ``mean``/``std`` (grey) or, for 3 channels, ``mean_rgb``/``std_rgb`` when
    registered; a grey value is repeated for 3 channels.
    """
    meta = REGISTRY.entry("dataset", name).meta
    if "mean" not in meta or "std" not in meta:
        raise KeyError(f"dataset {name!r} registers no mean/std; set the task's normalization fields explicitly")
    if in_chans == 3 and "mean_rgb" in meta:
        return tuple(meta["mean_rgb"]), tuple(meta["std_rgb"])
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    if len(mean) == in_chans:
        return mean, std
    if len(mean) == 1:
        return mean * in_chans, std * in_chans
    raise ValueError(f"dataset {name!r} registers {len(mean)}-channel mean/std; cannot use them for {in_chans}")


def to_chw(img: np.ndarray, in_chans: int, image_size: int | None,
           max_short_side: int | None = None) -> torch.Tensor:
    """(H, W) float array in [0, 1] → (in_chans, H', W') float tensor.

    ``image_size``: resize to (image_size, image_size) (aspect not kept; the old square pre-resize).
    ``max_short_side`` (used only when ``image_size`` is None): shrink so the shorter side is at most this many
    pixels, aspect kept (H' = round(H·f), W' = round(W·f)); smaller images and ``None`` keep the stored resolution.
    Both resizes are antialiased bilinear. Raises ValueError for a size < 1.
    """
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    size: tuple[int, int] | None = None
    if image_size is not None:
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        size = (image_size, image_size)
    elif max_short_side is not None:
        if max_short_side < 1:
            raise ValueError(f"max_short_side must be >= 1, got {max_short_side}")
        h, w = t.shape
        if min(h, w) > max_short_side:
            f = max_short_side / min(h, w)
            size = (max(1, round(h * f)), max(1, round(w * f)))
    if size is not None and tuple(t.shape) != size:
        t = torch.nn.functional.interpolate(t[None, None], size=size, mode="bilinear",
                                            antialias=True, align_corners=False)[0, 0].clamp_(0, 1)
    return t[None].expand(in_chans, -1, -1).contiguous() if in_chans > 1 else t[None]


def check_split(split: str, allowed: tuple[str, ...], dataset: str) -> None:
    if split not in allowed:
        raise ValueError(f"{dataset}: unknown split {split!r}; use one of {', '.join(allowed)}")


class ItemDataset(torch.utils.data.Dataset):
    """Base: subclasses implement ``__len__`` and ``_item(i)``; an optional ``transform(item) -> item`` runs last."""

    label_names: list[str]
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def _item(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{type(self).__name__}: index {i} out of range for {len(self)} items")
        item = self._item(int(i) % len(self))
        return self.transform(item) if self.transform is not None else item
