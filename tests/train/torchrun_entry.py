"""torchrun entry for tests: ``medvit run ...`` in each rank; with ``MEDVIT_TEST_KILL_RANK=R:STEP`` rank R SIGKILLs
itself right after the resumable checkpoint of step STEP is complete (its last barrier passed), on torchrun's first
attempt only (``TORCHELASTIC_RESTART_COUNT`` 0): a rank lost at a known point, with no timing involved."""

from __future__ import annotations

import os
import signal
import sys

from medvit.cli.main import main
from medvit.train.loop import Trainer

_save = Trainer._save


def _save_then_maybe_die(self, module, optimizer, step, micro):
    _save(self, module, optimizer, step, micro)
    rank, at = (int(x) for x in os.environ.get("MEDVIT_TEST_KILL_RANK", "-1:-1").split(":"))
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0" and self.dist.rank == rank and step == at:
        os.kill(os.getpid(), signal.SIGKILL)


Trainer._save = _save_then_maybe_die

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
