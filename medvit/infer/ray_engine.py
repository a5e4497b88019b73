"""``medvit infer --engine ray``: decoding *and* prediction sharded over Ray workers, results gathered by the run.

The driver (:class:`medvit.infer.runner.InferenceRun`) keeps everything that makes a run's outputs what they are:
the walk, the journal and resume, duplicate detection, the records, the tables, SR and heatmaps, exit codes.
This module only replaces its local source of decoded items (:class:`medvit.infer.runner._Decoder`) by
:class:`RayDecoder`, which yields the same :class:`~medvit.infer.decode.Decoded` items, in input order, with
the model's probabilities (and OOD score) already computed on a worker. The per-file code is the local engine's
(:func:`medvit.infer.decode.decode_file`, :meth:`medvit.infer.predictor.Predictor.predict_with_ood`), so the
outputs are the local engine's outputs.

Ray Core tasks (one task = one shard of ``batch_size`` input files), not Ray Data: a task is the unit Ray
retries when its worker process dies (``max_retries=1``, Ray's lineage-based task retry), and the driver must
consume results in walk order (the first file with a SOP Instance UID keeps the result, as in the local engine).
Failure handling (issue 26):

- a worker that dies (SIGKILL, segfault in a decoder, out of memory) is retried by Ray once;
- a shard that killed its worker twice is split into one task per file, each again with one retry;
- a file whose task killed its worker twice is an ``error`` row (stage ``decode``), never retried further.

Files are read by path on the workers: on a multi-machine cluster INPUT must be mounted at the same path on
every node (the usual NFS/Lustre set-up); the model travels through Ray's object store (no shared path needed).
Decoder messages stay in Ray's worker logs (``/tmp/ray/session_*/logs``), not on the terminal.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from medvit.infer.decode import Decoded, DecodeSpec, decode_file
from medvit.infer.duplicates import image_digest

logger = logging.getLogger(__name__)

#: how many times a task (a shard, or one file) runs before its worker's death is final (1 + Ray's retries)
ATTEMPTS = 2
#: seconds to wait for the cluster's address to answer before giving up with a clear error
CONNECT_TIMEOUT_S = 5.0
WORKER_DIED_REASON = ("the Ray worker process died twice on this file ({error}); not retried further "
                      "(a crash in a decoder library or out of memory)")


class ClusterUnreachableError(ConnectionError):
    """``--address`` names a Ray cluster that does not answer (the CLI exits 5, as for an unreachable PACS)."""


def require_ray() -> Any:
    """The ``ray`` module; ``ValueError`` (a usage error) with the install line when the extra is missing."""
    try:
        import ray
    except ImportError as e:
        raise ValueError("--engine ray needs Ray, an optional extra: pip install 'medvit[ray]' (or -c "
                         "constraints.txt ray), or use the default --engine local") from e
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto``/``local``."""
    if address in ("auto", "local"):
        return None
    url = urlsplit(address if "://" in address else f"gcs://{address}")
    if not url.hostname or url.port is None:
        raise ValueError(f"--address {address!r}: expected auto, HOST:PORT (a Ray head's GCS port, 6379 by "
                         "default) or ray://HOST:PORT (Ray Client, 10001)")
    return url.hostname, url.port


def probe_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast when ``address``'s host:port does not accept a TCP connection within ``timeout`` seconds.

    ``ray.init`` itself retries an unreachable GCS for minutes before it gives up; this check turns that into one
    error line naming the address. Raises :class:`ClusterUnreachableError`.
    """
    hp = _host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise ClusterUnreachableError(
            f"Ray cluster at {address} cannot be reached ({why} after at most {timeout:.0f} s). Start one with "
            "`ray start --head --port PORT` (and `ray start --address HEAD:PORT` on the other machines), check "
            "the address and firewall, or run without --engine ray") from e


@dataclass
class RayEngineInfo:
    """How a Ray run was executed (``run.json`` ``engine``)."""

    address: str
    started_cluster: bool  # True when this run started a local Ray instance (no --address)
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    nodes: int
    ray_version: str
    worker_deaths: int = 0  # tasks whose worker died (each retried; see ATTEMPTS)
    files_failed_by_worker_death: int = 0
    shards: int = 0
    driver_wait_seconds: float = 0.0  # time the driver spent waiting for workers (the rest of the run is its own work)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "ray", **self.__dict__}


def connect(address: str | None, num_cpus: int | None = None) -> tuple[Any, bool]:
    """(ray module, started_here): join the cluster at ``address`` or start a local Ray instance (None).

    An already initialised Ray (a test's cluster, a notebook) is used as it is. Raises
    :class:`ClusterUnreachableError` for an address that does not answer, ``ValueError`` without Ray.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    if address == "local":
        address = None
    if address:
        probe_address(address)
    kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
    if address:
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as e:
            raise ClusterUnreachableError(f"Ray cluster at {address}: {e}") from e
    else:  # "local": a new instance even when RAY_ADDRESS or a `ray start` cluster of this machine exists
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
    return ray, True


# ---------------------------------------------------------------------- worker side
_PREDICTORS: dict[str, Any] = {}  # per worker process: model object id -> Predictor (loaded once, reused)


def _worker_predictor(model_box: list[Any], predictor_kwargs: dict[str, Any]) -> Any:
    import ray

    from medvit.infer.predictor import Predictor

    key = model_box[0].hex()
    if key not in _PREDICTORS:
        _PREDICTORS.clear()  # one model per worker process: a new run's model replaces the last one
        _PREDICTORS[key] = Predictor(ray.get(model_box[0]), **predictor_kwargs)
    return _PREDICTORS[key]


def predict_shard(spec: DecodeSpec, model_box: list[Any], predictor_kwargs: dict[str, Any], paths: list[str],
                  keep_x: bool) -> list[Decoded]:
    """Ray task body: decode ``paths`` (as the local engine does) and predict the decodable ones in one batch.

    Each ``ok`` item gets ``probs`` (K,), ``ood`` (or None) and ``digest`` (:func:`image_digest` of its input);
    its model input ``x`` is dropped unless ``keep_x`` (heatmaps are drawn by the driver). ``model_box`` is a
    one-element list holding the model's ObjectRef (boxed so Ray does not fetch the model for every task).
    """
    items = [decode_file(p, spec) for p in paths]
    ok = [d for d in items if d.status == "ok"]
    if ok:
        probs, ood = _worker_predictor(model_box, predictor_kwargs).predict_with_ood(np.stack([d.x for d in ok]))
        for i, d in enumerate(ok):
            d.probs = probs[i]
            d.ood = None if ood is None else float(ood[i])
            d.digest = image_digest(d.x)
            if not keep_x:
                d.x = None
    return items


# ---------------------------------------------------------------------- driver side
@dataclass
class _Slot:
    """One shard in input order: one part (the shard) or, after the shard killed its worker twice, one per file."""

    parts: list[list[str]]
    refs: list[Any] = field(default_factory=list)  # ObjectRef per part (None: not submitted yet)
    results: list[list[Decoded] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.refs = [None] * len(self.parts)
        self.results = [None] * len(self.parts)

    @property
    def done(self) -> bool:
        return all(r is not None for r in self.results)


class RayDecoder:
    """Drop-in for the local engine's decoder: ``run(paths)`` yields :class:`Decoded` items in input order, ``ok``
    ones carrying ``probs``/``ood``/``digest`` computed on Ray workers.

    At most ``num_workers`` tasks run at once (each with ``cpus_per_worker`` CPUs, ``gpus_per_worker`` GPUs);
    finished shards wait in the object store until their turn: at most 2 × ``num_workers`` + 1 shards in all, or
    ``max_pending`` (the runner's in-flight memory budget) when results carry model inputs (``keep_x``).
    """

    def __init__(self, ray: Any, spec: DecodeSpec, model: Any, predictor_kwargs: dict[str, Any], info: RayEngineInfo,
                 shard_size: int, keep_x: bool, max_pending: int) -> None:
        self.ray, self.spec, self.info = ray, spec, info
        self.shard_size, self.keep_x = shard_size, keep_x
        # results carry no model inputs unless keep_x: let finished shards queue behind a slow one (2 per worker);
        # with model inputs (heatmaps) the runner's in-flight memory budget (max_pending) bounds them
        self.max_pending = max(max_pending, info.num_workers + 1) if keep_x else 2 * info.num_workers + 1
        self.model_box = [ray.put(model)]
        self.spec_ref = ray.put(spec)
        self.predictor_kwargs = predictor_kwargs
        self.task = ray.remote(predict_shard).options(
            num_cpus=info.cpus_per_worker, num_gpus=info.gpus_per_worker, max_retries=ATTEMPTS - 1,
            retry_exceptions=False)

    def _submit(self, paths: list[str]) -> Any:
        return self.task.remote(self.spec_ref, self.model_box, self.predictor_kwargs, paths, self.keep_x)

    def run(self, paths: Iterator[Path]) -> Iterator[Decoded]:
        source = iter(paths)
        slots: deque[_Slot] = deque()
        owner: dict[Any, tuple[_Slot, int]] = {}  # running task -> (slot, part)
        exhausted = False
        try:
            while True:
                # submit: parts waiting for a worker first (split shards), then new shards
                for slot in slots:
                    for i, part in enumerate(slot.parts):
                        if len(owner) < self.info.num_workers and slot.refs[i] is None:
                            slot.refs[i] = self._submit(part)
                            owner[slot.refs[i]] = (slot, i)
                while not exhausted and len(owner) < self.info.num_workers and len(slots) < self.max_pending:
                    shard = [str(p) for _, p in zip(range(self.shard_size), source, strict=False)]
                    if not shard:
                        exhausted = True
                        break
                    slot = _Slot([shard])
                    slot.refs[0] = self._submit(shard)
                    owner[slot.refs[0]] = (slot, 0)
                    slots.append(slot)
                    self.info.shards += 1
                while slots and slots[0].done:  # in input order
                    for part in slots.popleft().results:
                        yield from part or []
                if not owner:
                    if exhausted and not slots:
                        return
                    continue
                t0 = time.perf_counter()
                ready, _ = self.ray.wait(list(owner), num_returns=1)
                self.info.driver_wait_seconds += time.perf_counter() - t0
                for ref in ready:
                    self._collect(ref, *owner.pop(ref))
        finally:
            for ref in owner:
                self.ray.cancel(ref, force=True)

    def _collect(self, ref: Any, slot: _Slot, i: int) -> None:
        """Store a finished part's items; a part whose worker died ``ATTEMPTS`` times is split or becomes an error.

        Only the death of the worker process (or of its node, or Ray's out-of-memory kill) is an input's failure;
        any other Ray error (a Python exception in medvit's code, a broken runtime environment, the driver's raylet
        gone) propagates and fails the run as it would locally (run.json ``failed``; a re-run resumes).
        """
        from ray.exceptions import NodeDiedError, ObjectLostError, OutOfMemoryError, WorkerCrashedError

        try:
            slot.results[i] = self.ray.get(ref)
            return
        except (WorkerCrashedError, NodeDiedError, OutOfMemoryError, ObjectLostError) as e:
            err = type(e).__name__
        self.info.worker_deaths += ATTEMPTS
        part = slot.parts[i]
        if len(slot.parts) == 1 and len(part) > 1:  # find the culprit: one task per file
            logger.warning("a Ray worker died twice on a shard of %d files (%s); retrying them one by one",
                           len(part), err)
            slot.parts = [[p] for p in part]
            slot.refs, slot.results = [None] * len(part), [None] * len(part)
            return
        from medvit.infer.decode import _rel

        self.info.files_failed_by_worker_death += 1
        slot.results[i] = [Decoded(_rel(Path(part[0]), self.spec.root), "error", "decode",
                                   WORKER_DIED_REASON.format(error=err))]


def plan_workers(ray: Any, num_workers: int | None, cpus_per_worker: float, device: str) -> tuple[int, float, int]:
    """(workers, gpus per worker, nodes): ``num_workers`` or as many as the cluster's CPUs (GPUs with CUDA) allow."""
    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    gpus = 1.0 if device.startswith("cuda") else 0.0
    if gpus and res.get("GPU", 0) < 1:
        raise ValueError(f"--device {device} with --engine ray: the Ray cluster has no GPU; use --device cpu")
    if num_workers is None:
        by_cpu = int(res.get("CPU", 1) // cpus_per_worker)
        num_workers = max(1, min(by_cpu, int(res.get("GPU", 0))) if gpus else by_cpu)
    return num_workers, gpus, nodes
