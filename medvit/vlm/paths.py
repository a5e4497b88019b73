"""Paths of a saved VLM (:mod:`medvit.vlm.model`): checkpoints copied into the model directory and recorded
relative to it (so the directory can be moved), and the rule for reading them back — a value read from
``vlm_config.json`` stays inside the model directory (no absolute path, no ``..`` out of it)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medvit.io.safe_write import resolved_inside

CONFIG_NAME = "vlm_config.json"
VISION_DIR = "vision"


def inside_model_dir(model_dir: str | Path, value: Any, key: str) -> Path:
    """``model_dir / value`` for a path recorded in ``vlm_config.json``: it must be a relative path that stays
    inside the model directory (no absolute path, no ``..`` out of it, no symlink leading out). Raises
    ``ValueError`` naming the file and key otherwise (a value read from a file never becomes an arbitrary path:
    pass such a checkpoint explicitly instead)."""
    root = Path(model_dir)
    cf = root / CONFIG_NAME
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{cf}: key {key!r} must be a path relative to the model directory, got {value!r:.80}")
    p = Path(value)
    try:
        ok = not p.is_absolute() and resolved_inside(root, root / p, shown=repr(value))[1]
    except ValueError as e:  # a link loop or a NUL byte
        raise ValueError(f"{cf}: key {key!r}: {e}") from None
    if not ok:
        raise ValueError(f"{cf}: key {key!r} is {value!r}, outside the model directory {root} (an absolute path or "
                         "one leading out of it is not followed); pass that checkpoint explicitly")
    return root / p


def refuse_output_inside(out_dir: str | Path, checkpoint: str | Path, key: str) -> None:
    """Raise ``ValueError`` when the output folder ``out_dir`` is the checkpoint folder ``checkpoint`` or lies
    inside it (symbolic links resolved, :func:`medvit.io.safe_write.resolved_inside`): saving the model copies the
    checkpoint into ``out_dir`` (:func:`bundle_checkpoint`), which would copy its own copy without end. The
    message names ``key`` (the config key or argument holding the checkpoint). Training entry points call it
    before any work, :func:`bundle_checkpoint` before any copy."""
    try:
        inside = resolved_inside(checkpoint, out_dir)[1]
    except ValueError as e:  # a link loop / NUL byte in either path
        raise ValueError(f"output folder {out_dir} vs {key} {checkpoint}: {e}") from None
    if inside:
        raise ValueError(f"output folder {out_dir} lies inside {key} {checkpoint}: the saved model copies that "
                         "checkpoint into its own folder; choose an output folder outside the checkpoint")


def bundle_checkpoint(src: str | Path, out_dir: Path, rel: str, key: str = "checkpoint") -> str:
    """Copy the checkpoint directory ``src`` (regular files and sub-folders; symlinks copied as the files they
    point to) to ``out_dir / rel`` unless it is that directory already; returns ``rel`` (POSIX) for the config.
    Raises ``FileNotFoundError`` when ``src`` is not a directory and ``ValueError`` when ``src`` lies inside the
    destination or ``out_dir`` inside ``src`` (:func:`refuse_output_inside`, naming ``key``); nothing is copied
    then."""
    s, dst = Path(src), out_dir / rel
    if not s.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {s}")
    if s.resolve() != dst.resolve():
        if resolved_inside(dst, s)[1]:
            raise ValueError(f"cannot copy checkpoint {s} into {dst}: it lies inside the destination")
        refuse_output_inside(out_dir, s, key)
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(s, dst, symlinks=False)
    return Path(rel).as_posix()


#: expert kind → the spec key holding its checkpoint path(s) (``checkpoints`` is a list)
EXPERT_PATH_KEYS = {"cxr": "checkpoints", "segmentation": "checkpoint", "monai_bundle": "bundle_dir"}


def spec_with_paths(spec: dict[str, Any], key: str, paths: Sequence[Any]) -> dict[str, Any]:
    """``spec`` with its checkpoint key ``key`` (:data:`EXPERT_PATH_KEYS`) set from ``paths``: the list for
    ``checkpoints`` (an ensemble), the one path otherwise. ``ValueError`` when a single-path key gets another
    count than one (the inverse of reading a spec's paths as a list), or an empty path (``cxr=A,`` / ``cxr=A,,B``:
    ``''`` would read as the current directory)."""
    if any(not str(p).strip() for p in paths):
        raise ValueError(f"an empty path in {list(paths)!r:.200} (a trailing or doubled comma?): name each {key} "
                         "directory")
    if key == "checkpoints":
        return {**spec, key: list(paths)}
    if len(paths) != 1:
        raise ValueError(f"expert kind {spec.get('kind')!r} takes one {key}, got {len(paths)}: {list(paths)!r:.200}")
    return {**spec, key: paths[0]}


def _spec_paths(spec: Any, i: int, where: str) -> tuple[str, list[Any]]:
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"{where}: experts[{i}] must be an object with a 'kind'")
    key = EXPERT_PATH_KEYS.get(str(spec["kind"]))
    if key is None:
        raise ValueError(f"{where}: experts[{i}].kind {spec['kind']!r} unknown; kinds: {', '.join(EXPERT_PATH_KEYS)}")
    v = spec.get(key)
    return key, (list(v) if key == "checkpoints" and isinstance(v, list | tuple) else [v])


def bundle_expert_specs(specs: Sequence[dict[str, Any]], out_dir: Path) -> list[dict[str, Any]]:
    """Copy each expert's checkpoint(s) into ``out_dir/experts/<kind>_<i>[_<j>]`` and return the specs with
    those paths relative to ``out_dir`` (what ``vlm_config.json`` records: the model directory stays
    self-contained)."""
    out = []
    for i, spec in enumerate(specs):
        key, paths = _spec_paths(spec, i, str(out_dir))
        rel = [bundle_checkpoint(pth, out_dir, f"experts/{spec['kind']}_{i}" + (f"_{j}" if len(paths) > 1 else ""),
                                 f"experts[{i}].{key}") for j, pth in enumerate(paths)]
        out.append(spec_with_paths(spec, key, rel))
    return out


def recorded_expert_specs(specs: Any, model_dir: Path) -> list[dict[str, Any]]:
    """The expert specs read from a model's ``vlm_config.json`` with their checkpoint paths resolved inside the
    model directory (:func:`inside_model_dir`); an absolute path or one leading out of the
    directory is refused (``ValueError`` naming the key — pass such experts explicitly, e.g. ``medvit chat
    --expert cxr=DIR``)."""
    if not isinstance(specs, list):
        raise ValueError(f"{model_dir / CONFIG_NAME}: key 'experts' must be a list, got {type(specs).__name__}")
    out = []
    for i, spec in enumerate(specs):
        key, paths = _spec_paths(spec, i, str(model_dir / CONFIG_NAME))
        res = []
        for pth in paths:
            try:
                res.append(str(inside_model_dir(model_dir, pth, f"experts[{i}].{key}")))
            except ValueError as e:
                raise ValueError(f"{e} (e.g. `medvit chat --expert {spec['kind']}=DIR`)") from e
        out.append(spec_with_paths(spec, key, res))
    return out
