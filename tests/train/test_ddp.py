"""Two DDP ranks on CPU (gloo), launched as torchrun would (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``): two steps,
identical weights on both ranks, disjoint data shards.

The ranks meet through a file store in the test's temporary folder, not a TCP port, so a concurrent test cannot take
the rendezvous address (no probe-then-bind race, nothing to retry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_ranks_identical_weights(tmp_path):
    from safetensors.torch import load_file

    store = tmp_path / "rendezvous"
    procs, logs = [], [tmp_path / f"rank{r}.log" for r in range(2)]
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"}
        with open(logs[rank], "w") as log:  # files, not pipes: a rank blocked on a full pipe would stall the other
            procs.append(subprocess.Popen([sys.executable, str(Path(__file__).with_name("ddp_worker.py")),
                                           str(tmp_path), store.as_uri()], env=env, stdout=log, stderr=log))
    for p, log in zip(procs, logs, strict=True):
        assert p.wait(timeout=110) == 0, log.read_text()[-3000:]
    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == 2 and len(r0["ids"]) == len(r1["ids"]) == 8
    assert not set(r0["ids"]) & set(r1["ids"])  # per-rank sharding
    assert len(r0["losses"]) == 2 and r0["losses"] != r1["losses"]  # each rank saw its own batches
    if sys.platform.startswith("linux"):  # gloo's threads ran while training and ended with finish_distributed
        # (a rank reaching interpreter exit with them can abort: CI's SIGABRT of session 31). Anything that keeps
        # the group referenced past destroy_process_group keeps them: with torch 2.13, a DDP whose constructor is
        # the first importer of torch._dynamo does (medvit.train imports it earlier, through torchao)
        assert all(r["gloo_threads"]["during"] and not r["gloo_threads"]["after"] for r in (r0, r1)), (r0, r1)
    ck = tmp_path / "run" / "checkpoints" / "step_000002"
    assert (ck / "rng_rank1.safetensors").is_file() and (ck / "model.safetensors").is_file()


def test_finish_distributed_leaves_the_process_group_after_a_barrier(tmp_path):
    """The CLI ends every torchrun rank with finish_distributed: the group is destroyed in order (not by interpreter
    exit, which aborted a rank in CI), and a second call without a group is a no-op."""
    import torch.distributed as dist

    from medvit.train.distributed import finish_distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        finish_distributed()
        assert not dist.is_initialized()
        finish_distributed()
    finally:  # never leave a process group to the pytest worker's later tests
        if dist.is_initialized():
            dist.destroy_process_group()
