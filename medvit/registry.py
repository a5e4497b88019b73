"""One registry for everything medvit creates by name.

Kinds (``backbone``, ``weights``, ``peft``, ``task``, ``dataset``, ``expert``, ``metric``, ...) each
hold a name → object table. Registering a name twice raises; looking up an unknown name raises a
``KeyError`` that lists the closest registered names.

Modules register their entries when imported. So that ``import medvit`` stays cheap, each kind
names the modules that provide it (:data:`PROVIDERS`); they are imported on the first lookup.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """``"did you mean 'a', 'b'?"`` for the registered/valid ``choices`` closest to a mistyped ``name``
    (``difflib`` ratio ≥ 0.5, at most ``n``); ``""`` when none is close. The one suggestion used by every error
    that names an unknown key, name or argument (registry lookups, config keys, constructor arguments, presets).
    """
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""

#: kind -> modules whose import registers that kind's entries. Extend when adding a provider module.
#: older spellings of a kind, accepted everywhere a kind is named (the kind ``weights`` became ``weight``)
KIND_ALIASES: dict[str, str] = {"weights": "weight"}

PROVIDERS: dict[str, list[str]] = {
    "backbone": ["medvit.models"],
    "weight": ["medvit.models"],
    "task": ["medvit.tasks", "medvit.vlm.train"],
    "peft": ["medvit.peft"],
    "dataset": ["medvit.data"],
    "expert": ["medvit.vlm"],
    "projector": ["medvit.vlm"],
    "metric": ["medvit.eval"],
    "transform": ["medvit.data"],
    "preset": ["medvit.tasks.presets"],
    "segmentation": ["medvit.models"],
    "schedule": ["medvit.vlm.retina.schedules"],
    "loss": ["medvit.train.losses", "medvit.train.distill", "medvit.train.ssl_losses"],
}


@dataclass
class Entry:
    """A registered object plus free-form metadata (e.g. a description or a default config)."""

    name: str
    kind: str
    obj: Any
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        doc = self.meta.get("description") or (getattr(self.obj, "__doc__", None) or "")
        return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry:
    """Name → object tables, one per kind."""

    def __init__(self, kinds: list[str]):
        self._tables: dict[str, dict[str, Entry]] = {k: {} for k in kinds}
        self._loaded: set[str] = set()

    # -- kinds -----------------------------------------------------------------------------------
    @property
    def kinds(self) -> list[str]:
        return list(self._tables)

    def _table(self, kind: str) -> dict[str, Entry]:
        kind = KIND_ALIASES.get(kind, kind)
        if kind not in self._tables:
            raise KeyError(f"unknown registry kind {kind!r}; known kinds: {', '.join(self._tables)}")
        return self._tables[kind]

    def _load_providers(self, kind: str) -> None:
        kind = KIND_ALIASES.get(kind, kind)
        if kind in self._loaded:
            return
        self._loaded.add(kind)
        for mod in PROVIDERS.get(kind, []):
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:  # provider not written yet (or optional): nothing registered
                if e.name is not None and (mod == e.name or mod.startswith(e.name + ".")):
                    logger.debug("registry provider %s for kind %r not present", mod, kind)
                else:
                    raise

    # -- registration ----------------------------------------------------------------------------
    def add(self, kind: str, name: str, obj: Any, **meta: Any) -> Entry:
        """Register ``obj`` under ``kind``/``name``; raises ``ValueError`` if the name is taken."""
        table = self._table(kind)
        if not name or not isinstance(name, str):
            raise ValueError(f"registry name must be a non-empty string, got {name!r}")
        if name in table:
            prev = table[name].obj
            where = getattr(prev, "__module__", type(prev).__module__)
            raise ValueError(f"{kind} {name!r} is already registered (by {where}); choose another name")
        entry = Entry(name=name, kind=KIND_ALIASES.get(kind, kind), obj=obj, meta=meta)
        table[name] = entry
        return entry

    def register(self, kind: str, name: str | None = None, **meta: Any) -> Callable[[Any], Any]:
        """Decorator form: ``@REGISTRY.register("backbone")`` (name defaults to ``obj.__name__``)."""

        def deco(obj: Any) -> Any:
            self.add(kind, name or obj.__name__, obj, **meta)
            return obj

        return deco

    def remove(self, kind: str, name: str) -> None:
        """Unregister (for tests and plugins that replace an entry deliberately)."""
        self._table(kind).pop(name, None)

    # -- lookup ----------------------------------------------------------------------------------
    def entry(self, kind: str, name: str) -> Entry:
        kind = KIND_ALIASES.get(kind, kind)
        table = self._table(kind)
        if name not in table:
            self._load_providers(kind)
        if name not in table:
            hint = did_you_mean(name, table, n=5)
            hint = f"; {hint}" if hint else ""
            plural = f"{kind}es" if kind.endswith("s") else f"{kind}s"
            known = f" Registered {plural}: {', '.join(sorted(table)) or '(none)'}."
            if len(table) > 30:
                known = f" Run `medvit list {kind}` to see all {len(table)}."
            raise KeyError(f"unknown {kind} {name!r}{hint}{known}")
        return table[name]

    def get(self, kind: str, name: str) -> Any:
        return self.entry(kind, name).obj

    def __contains__(self, key: tuple[str, str]) -> bool:
        kind, name = key
        self._load_providers(kind)
        return name in self._table(kind)

    def names(self, kind: str) -> list[str]:
        self._load_providers(kind)
        return sorted(self._table(kind))

    def entries(self, kind: str) -> Iterator[Entry]:
        for n in self.names(kind):
            yield self._table(kind)[n]


REGISTRY = Registry(
    ["backbone", "weight", "peft", "task", "dataset", "expert", "projector", "metric", "transform", "preset",
     "segmentation", "schedule", "loss"]
)


def register(kind: str, name: str | None = None, **meta: Any) -> Callable[[Any], Any]:
    """Module-level decorator: ``@register("backbone", "vit_small_patch16_224")``."""
    return REGISTRY.register(kind, name, **meta)


def get(kind: str, name: str) -> Any:
    """Look up a registered object; unknown names raise ``KeyError`` with close matches."""
    return REGISTRY.get(kind, name)


def list_names(kind: str) -> list[str]:
    """Sorted names registered under ``kind``."""
    return REGISTRY.names(kind)


@dataclass
class TaskSpec:
    """A task kind: its config dataclass and the function that runs it."""

    name: str
    config_cls: type
    run: Callable[[Any], dict[str, Any]]
    description: str = ""


def register_task(name: str, config_cls: type, description: str = "") -> Callable:
    """Decorator registering ``fn(config) -> summary dict`` as task ``name``."""

    def deco(fn: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
        REGISTRY.add("task", name, TaskSpec(name, config_cls, fn, description or (fn.__doc__ or "")),
                     description=description or (fn.__doc__ or ""))
        return fn

    return deco
