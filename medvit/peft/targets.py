"""Resolve which ``nn.Linear`` layers of a medvit ViT a method adapts.

Target specs (``targets`` field of every library-backed method config):

- ``"attention"`` → ``blocks.N.attn.qkv`` and ``blocks.N.attn.proj``
- ``"mlp"`` → ``blocks.N.mlp.fc1`` and ``blocks.N.mlp.fc2``
- ``"all-linear"`` → every ``nn.Linear`` inside ``blocks`` (never the classifier ``head``)
- a module name, full (``blocks.3.attn.qkv``) or a dotted suffix (``qkv``, ``attn.proj``, ``head``)
- ``"re:<regex>"``: a regular expression matched against the full module name

Every spec must match at least one ``nn.Linear``; a spec that matches nothing raises a ``ValueError``
naming it (the silent failure mode of ``target_modules=["query", "value"]`` on transformers 5.x).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

#: named groups -> module-name regexes (relative to the backbone)
TARGET_GROUPS: dict[str, str] = {
    "attention": r"blocks\.\d+\.attn\.(qkv|proj)",
    "mlp": r"blocks\.\d+\.mlp\.(fc1|fc2)",
    "all-linear": r"blocks\.\d+\..+",
}

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` of ``model`` by full module name (exact class, no adapter wrappers)."""
    return {n: m for n, m in model.named_modules() if type(m) is nn.Linear}


def _matches(spec: str, name: str) -> bool:
    if spec in TARGET_GROUPS:
        return re.fullmatch(TARGET_GROUPS[spec], name) is not None
    if spec.startswith("re:"):
        return re.fullmatch(spec[3:], name) is not None
    return name == spec or name.endswith("." + spec)


def resolve_targets(
    model: nn.Module,
    targets: str | Sequence[str],
    layers: Sequence[int] | None = None,
) -> list[str]:
    """Full names of the ``nn.Linear`` modules selected by ``targets`` (restricted to ``layers``).

    Args:
        model: a medvit backbone (module names ``blocks.N.attn.qkv`` ...).
        targets: one spec or a list of specs (see module docstring).
        layers: block indices to keep (negative counts from the end); None keeps all blocks.
            Modules outside ``blocks`` (e.g. ``head``) are kept only when named explicitly.
    Returns:
        module names in model order (at least one).
    Raises:
        ValueError: a spec matches no ``nn.Linear`` (the message names it and lists candidates), a
            regex does not compile, or a layer index is out of range.
    """
    specs = [targets] if isinstance(targets, str) else list(targets)
    if not specs:
        raise ValueError("targets is empty; use 'attention', 'mlp', 'all-linear' or module names")
    linears = linear_layers(model)
    depth = len(getattr(model, "blocks", []))
    keep_blocks: set[int] | None = None
    if layers is not None:
        keep_blocks = set()
        for i in layers:
            j = i + depth if i < 0 else i
            if not 0 <= j < depth:
                raise ValueError(f"layers: block index {i} out of range for a {depth}-block model")
            keep_blocks.add(j)
    chosen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, str) or not spec:
            raise ValueError(f"target {spec!r} must be a non-empty string")
        if spec.startswith("re:"):
            try:
                re.compile(spec[3:])
            except re.error as e:
                raise ValueError(f"target {spec!r} is not a valid regular expression ({e})") from e
        hits = [n for n in linears if _matches(spec, n)]
        if keep_blocks is not None:
            hits = [n for n in hits if (m := _BLOCK_RE.match(n)) is None or int(m.group(1)) in keep_blocks]
        if not hits:
            sample = sorted({_BLOCK_RE.sub("blocks.N.", n) for n in linears})
            raise ValueError(
                f"target module {spec!r} matches no nn.Linear layer"
                + (f" in layers {sorted(keep_blocks)}" if keep_blocks is not None else "")
                + f"; medvit ViT linear layers are {sample} (groups: {', '.join(TARGET_GROUPS)}, "
                "or 're:<regex>')"
            )
        chosen.update(hits)
    return [n for n in linears if n in chosen]  # model order


def check_rank(model: nn.Module, names: Sequence[str], rank: int, field: str = "r") -> None:
    """Raise ``ValueError`` if ``rank`` exceeds min(in, out) features of any targeted layer."""
    if rank < 1:
        raise ValueError(f"{field} must be >= 1, got {rank}")
    mods = dict(model.named_modules())
    for n in names:
        lin = mods[n]
        width = min(lin.in_features, lin.out_features)
        if rank > width:
            raise ValueError(
                f"{field}={rank} is larger than the width of layer {n!r} "
                f"({lin.in_features}→{lin.out_features}, max rank {width}); lower {field}"
            )
