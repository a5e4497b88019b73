"""torchrun entry for tests: ``medvit run ...`` in each rank; with ``MEDVIT_TEST_KILL_RANK=R:STEP`` rank R SIGKILLs
itself right after the resumable checkpoint of step STEP is complete (its last barrier passed), on torchrun's first
attempt only (``TORCHELASTIC_RESTART_COUNT`` 0): a rank lost at a known point, with no timing involved.

Each rank that ends prints one line ``medvit-test threads: rank R attempt A during=[...] after=[...]``: the names of
its gloo threads at its last checkpoint (process group alive) and after ``medvit run`` returned. A rank that reaches
interpreter exit with gloo's threads still running can abort there (``terminate called without an active
exception``, the CI failure of session 31); the test checks that ``medvit run`` leaves none, deterministically,
instead of waiting for the rare abort."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from medvit.cli.main import main
from medvit.train.loop import Trainer

_save = Trainer._save
_during: list[str] = []


def _gloo_threads() -> list[str]:
    """Names of this process's threads that belong to gloo (Linux: /proc/self/task/*/comm; elsewhere none)."""
    task = Path("/proc/self/task")
    if not task.is_dir():
        return []
    return sorted(n for n in ((t / "comm").read_text().strip() for t in task.iterdir()) if "gloo" in n)


def _save_then_maybe_die(self, module, optimizer, step, micro):
    _save(self, module, optimizer, step, micro)
    _during[:] = _gloo_threads()
    rank, at = (int(x) for x in os.environ.get("MEDVIT_TEST_KILL_RANK", "-1:-1").split(":"))
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0" and self.dist.rank == rank and step == at:
        os.kill(os.getpid(), signal.SIGKILL)


Trainer._save = _save_then_maybe_die

if __name__ == "__main__":
    rc = main(sys.argv[1:])
    sys.stdout.flush()
    rank, attempt = os.environ.get("RANK"), os.environ.get("TORCHELASTIC_RESTART_COUNT")
    line = f"medvit-test threads: rank {rank} attempt {attempt} during={_during} after={_gloo_threads()}\n"
    os.write(1, line.encode())  # one write: the ranks share the log file, lines must not interleave
    sys.exit(rc)
