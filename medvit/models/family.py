"""Helpers for backbone families built on :class:`~medvit.models.vit.VisionTransformer`.

A family subclass adds its own keyword arguments and forwards the rest to the base class. The
registry checks registered defaults and overrides against ``inspect.signature(cls.__init__)``, so
:func:`vit_signature` publishes the union (the family's own arguments, then every base argument).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from medvit.models.vit import VisionTransformer

F = TypeVar("F", bound=Callable[..., Any])


def vit_signature(init: F) -> F:
    """Decorate a family ``__init__(self, *, own args..., **vit_kwargs)`` to expose the base arguments."""
    own = inspect.signature(init)
    params = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    names = {p.name for p in params}
    base = inspect.signature(VisionTransformer.__init__)
    for p in base.parameters.values():
        if p.name != "self" and p.name not in names:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    init.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    return init


def default_block_indices(depth: int, fractions: tuple[float, ...] = (0.25, 0.5, 0.75)) -> tuple[int, ...]:
    """Block indices at fractions of the depth: depth 12 → (3, 6, 9) (EViT's 4th, 7th and 10th)."""
    return tuple(sorted({min(depth - 1, int(f * depth)) for f in fractions}))
