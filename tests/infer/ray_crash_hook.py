"""Ray worker set-up hook for tests: a worker SIGKILLs itself on chosen input files, like a decoder crash.

The test cluster's ``runtime_env`` names :func:`install` as ``worker_process_setup_hook`` and sets
``MEDVIT_TEST_CRASH_DIR``. A file ``<dir>/<sha>.once`` or ``<dir>/<sha>.always`` whose content is an input's
absolute path kills the worker decoding it: ``once`` only on the first attempt (a marker file, created with
O_EXCL, records it), ``always`` on every attempt.
"""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path


def rule_file(crash_dir: Path, path: Path, mode: str) -> Path:
    """Make the worker die on ``path`` (``mode`` once | always)."""
    f = Path(crash_dir) / f"{hashlib.sha256(str(path).encode()).hexdigest()[:16]}.{mode}"
    f.write_text(str(path))
    return f


def install() -> None:
    import medvit.infer.ray_engine as engine

    crash_dir = Path(os.environ["MEDVIT_TEST_CRASH_DIR"])
    decode = engine.decode_file

    def decode_or_die(path, spec):
        key = hashlib.sha256(str(path).encode()).hexdigest()[:16]
        if (crash_dir / f"{key}.always").is_file():
            os.kill(os.getpid(), signal.SIGKILL)
        if (crash_dir / f"{key}.once").is_file():
            try:
                os.close(os.open(crash_dir / f"{key}.died", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return decode(path, spec)

    engine.decode_file = decode_or_die
