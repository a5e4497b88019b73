"""One run per OUTPUT folder: an exclusive ``flock`` on ``OUTPUT/.medvit-infer/lock`` (SECURITY.md §5).

The kernel releases the lock when the holding process dies (even by SIGKILL), so a stale lock never blocks a
later run, and a run that holds it knows every temporary file and every ``running`` run.json in OUTPUT is
left over by a dead run.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any


class OutputLockedError(RuntimeError):
    """Another live ``medvit infer`` run holds OUTPUT."""


class OutputLock:
    """Context manager holding the exclusive lock of an output folder; :class:`OutputLockedError` if taken."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "lock"
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputLockedError(
                f"{self.path.parent.parent} is in use by another medvit infer run ({holder}); wait for it to "
                "finish or choose another --output. Two runs on one folder would do the work twice and "
                "remove each other's temporary files.") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096) or b"{}")
        return f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
    except (OSError, ValueError):
        return "pid unknown"
