"""Resumable training checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint directory ``step_000123/`` holds

- ``model.safetensors``: the (unwrapped) model's state dict;
- ``train_state.safetensors``: optimizer tensors (``optim.<param index>.<name>``) and RNG states
  (``rng.torch``, ``rng.cuda.<i>``, ``rng.numpy``);
- ``state.json``: step, data position, optimizer hyper-parameters per group, Python/numpy RNG scalars,
  best-so-far metric and any extra JSON the caller adds.

It is written to a temporary directory and renamed, so a killed run never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
JSON_FILE = "state.json"


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON) capturing torch CPU/CUDA, numpy and Python RNG states."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    py_version, py_state, py_gauss = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
            "python": [py_version, list(py_state), py_gauss]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    v, st, g = meta["python"]
    random.setstate((v, tuple(st), g))


def _optimizer_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_unflat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if not k.startswith("optim."):
            continue
        _, pid, name = k.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    for pid, sc in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def save_train_state(
    ckpt_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
) -> Path:
    """Write a resumable checkpoint to ``ckpt_dir`` atomically; returns the directory."""
    from safetensors.torch import save_file

    final = Path(ckpt_dir)
    tmp = final.with_name(final.name + ".tmp")  # may already hold other ranks' RNG files
    tmp.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(tmp / MODEL_FILE))
    opt_t, opt_meta = _optimizer_flat(optimizer)
    rng_t, rng_meta = rng_state()
    save_file({**opt_t, **rng_t}, str(tmp / STATE_FILE))
    (tmp / JSON_FILE).write_text(json.dumps({**meta, "optimizer": opt_meta, "rng": rng_meta}))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def load_train_state(
    ckpt_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, restore_rng: bool = True
) -> dict[str, Any]:
    """Load model (strict), optimizer and RNG states from :func:`save_train_state` output; returns the JSON meta."""
    from safetensors.torch import load_file

    d = Path(ckpt_dir)
    for f in (MODEL_FILE, STATE_FILE, JSON_FILE):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d} is not a resumable checkpoint: {f} is missing")
    sd = load_file(str(d / MODEL_FILE))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {d} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}; "
                         "resume with the same model config")
    meta = json.loads((d / JSON_FILE).read_text())
    tensors = load_file(str(d / STATE_FILE))
    if optimizer is not None:
        osd = _optimizer_unflat(tensors, meta["optimizer"])
        if len(osd["param_groups"]) != len(optimizer.param_groups):
            raise ValueError(f"checkpoint {d} has {len(osd['param_groups'])} optimizer groups, the run has "
                             f"{len(optimizer.param_groups)}; resume with the same trainable parameters")
        optimizer.load_state_dict(osd)
    if restore_rng:
        set_rng_state(tensors, meta["rng"])
    return meta


def save_rank_rng(tmp_dir: str | Path, rank: int) -> None:
    """Write this rank's RNG state as ``rng_rank<r>.safetensors`` (JSON scalars in its metadata)."""
    from safetensors.torch import save_file

    tensors, meta = rng_state()
    save_file(tensors, str(Path(tmp_dir) / f"rng_rank{rank}.safetensors"), metadata={"rng": json.dumps(meta)})


def load_rank_rng(ckpt_dir: str | Path, rank: int) -> None:
    """Restore this rank's RNG state written by :func:`save_rank_rng` (missing file: left as is, logged)."""
    from safetensors import safe_open

    f = Path(ckpt_dir) / f"rng_rank{rank}.safetensors"
    if not f.is_file():
        logger.warning("%s missing: rank %d keeps its fresh RNG state", f, rank)
        return
    with safe_open(str(f), framework="pt") as h:
        tensors = {k: h.get_tensor(k) for k in h.keys()}  # noqa: SIM118
        meta = json.loads(h.metadata()["rng"])
    set_rng_state(tensors, meta)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest complete ``checkpoints/step_*`` directory under ``run_dir`` (None if there is none)."""
    base = Path(run_dir) / "checkpoints"
    if not base.is_dir():
        return None
    done = [p for p in base.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp") and (p / JSON_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("_")[1])) if done else None


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints."""
    base = Path(run_dir) / "checkpoints"
    done = sorted((p for p in base.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")),
                  key=lambda p: int(p.name.split("_")[1]))
    for p in done[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)
