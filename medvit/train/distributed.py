"""torchrun / DDP helpers: process-group setup from the environment, rank queries, reductions.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set) :func:`init_distributed` starts a process group
(gloo on CPU, nccl on CUDA). Without them everything degrades to a single process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Start (or join) the process group described by torchrun's environment; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local)
        store = _restart_store(rank, world)
        if store is None:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world)
        logger.info("process group %s: rank %d / %d", backend, rank, world)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def _restart_store(rank: int, world: int) -> dist.Store | None:
    """After a torchrun restart (``--max-restarts``), a key space of this attempt in the agent's store; else None.

    torchrun's c10d rendezvous keeps one TCP store across restarts (``TORCHELASTIC_USE_AGENT_STORE``) and the
    workers' ``env://`` initialisation writes the same keys each attempt, so a restarted rank can read the
    address a dead rank published before (gloo then fails with "connection refused"). Prefixing the keys with
    ``TORCHELASTIC_RESTART_COUNT`` gives every attempt its own. Single-attempt runs keep ``env://`` unchanged.
    """
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from datetime import timedelta

    tcp = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                        timeout=timedelta(minutes=10))
    return dist.PrefixStore(f"medvit/attempt_{attempt}", tcp)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda:LOCAL_RANK when CUDA is available, else cpu; other strings as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use device='cpu'")
    return dev


def all_reduce_min(value: float, info: DistInfo, device: torch.device) -> float:
    """Minimum of ``value`` over ranks (identity without a process group)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return float(t.item())


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (copy; identity without a process group)."""
    if not info.enabled:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def finish_distributed() -> None:
    """End this process's part of a torchrun job in order: wait for every rank (rank 0 may still be writing the
    final checkpoint), then destroy the process group while Python is fully alive.

    Without it each rank leaves at its own time and the process group (gloo's I/O threads, the attempt's TCP store
    client after a restart) is torn down by interpreter exit; a rank leaving while another still uses the group can
    then abort with ``terminate called without an active exception`` (SIGABRT), which torchrun reports as a failed
    job although the work finished. No-op without a process group. PyTorch's docs ask for
    ``destroy_process_group()`` at the end of every distributed program."""
    if not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()
    logger.debug("process group destroyed")
