"""``torchrun`` through the c10d rendezvous (a TCP store at an explicit ``--rdzv-endpoint``, as on several machines;
not ``--standalone``): two processes pretrain an MAE / fine-tune a classifier with ``medvit run``; one rank killed
after a checkpoint is restarted by torchrun (``--max-restarts 1``) and resumes (``train.resume=auto``) to the same
weights as an uninterrupted run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
#: tiny models on phantoms: 4 optimizer steps of 4 images per rank, a checkpoint every step
COMMON = ["dataset_args.image_size=32", "image_size=32", "backbone_args.embed_dim=32", "backbone_args.depth=1",
          "backbone_args.num_heads=2", "train.steps=4", "train.batch_size=4", "train.ckpt_every=1",
          "train.log_every=1", "train.warmup_epochs=0", "train.progress=false", "train.resume=auto"]
#: pipeline, overrides, final weights (relative to output_dir), run folder holding log.csv
TASKS = {
    "mae": ("mae_pretrain_tiny_cpu.yaml", ["dataset_args.n=32", "decoder_dim=32", "decoder_depth=1",
                                           "decoder_heads=2", "figure_split="], "mae/model.safetensors", "."),
    "finetune": ("finetune_tiny_cpu.yaml", ["dataset_args.n=96", "ood_fpr=0", "train.eval_every=2"],
                 "model/model.safetensors", "seed_0"),
}


def _torchrun(task: str, out: Path, log: Path, kill: str | None = None) -> int:
    """Two processes on this machine, joined through the c10d rendezvous at 127.0.0.1, port 0: the agent binds its
    store on a port the kernel picks (a probed free port could be taken before the agent binds it, and torchrun's
    agent then joins whatever listens there as a client)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", f"medvit-test-{uuid.uuid4().hex}",
           "--max-restarts", "1", "--monitor-interval", "0.5",
           str(REPO / "tests" / "train" / "torchrun_entry.py"),
           "run", str(REPO / "pipelines" / "mae_thorax" / TASKS[task][0]), f"output_dir={out}", *COMMON,
           *TASKS[task][1]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("MEDVIT_TEST_KILL_RANK", None)
    if kill:
        env["MEDVIT_TEST_KILL_RANK"] = kill
    with open(log, "w") as f:  # a file, not a pipe: a blocked pipe would stall a rank
        return subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=400).returncode


@pytest.mark.timeout(480)
@pytest.mark.parametrize("task", list(TASKS))
def test_torchrun_rendezvous_rank_killed_then_resumed_equals_uninterrupted(tmp_path, task):
    from safetensors.torch import load_file

    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert _torchrun(task, ref, tmp_path / "ref.log") == 0, (tmp_path / "ref.log").read_text()[-4000:]
    assert _torchrun(task, out, tmp_path / "killed.log", kill="1:2") == 0, \
        (tmp_path / "killed.log").read_text()[-4000:]
    log = (tmp_path / "killed.log").read_text()
    assert "exitcode: -9" in log and "local_rank: 1" in log, log[-4000:]  # torchrun saw rank 1 killed, restarted
    # every rank that ended its attempt normally (both ranks of the uninterrupted run, both of the restarted attempt)
    # had gloo threads while training and none after `medvit run` returned: finish_distributed ended the process
    # group before interpreter exit (a rank reaching exit with them running can abort: CI's SIGABRT). Ranks of the
    # first, interrupted attempt end by an error or torchrun's SIGTERM and are not looked at.
    for name, attempt in (("ref.log", "0"), ("killed.log", "1")):
        if not sys.platform.startswith("linux"):  # thread names come from /proc
            break
        ends = [e for e in re.findall(r"medvit-test threads: rank (\d) attempt (\d) during=\[(.*)\] after=\[(.*)\]",
                                      (tmp_path / name).read_text()) if e[1] == attempt]
        assert sorted(e[0] for e in ends) == ["0", "1"] and all(e[2] and not e[3] for e in ends), (name, ends)
    _, _, weights, run_dir = TASKS[task]
    a, b = load_file(str(out / weights)), load_file(str(ref / weights))
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    rows = (out / run_dir / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:] if ",train," in r] == ["1", "2", "3", "4"]  # no replayed rows
