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
            try:  # the holder's pid is in the file only while it holds the lock: none left to name a stale run
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """Who holds the lock on ``fd``'s file: the pid the kernel reports (``/proc/locks``), with the host from the
    lock file when that file names the same pid; the file's pid only if that process is alive; else unknown.

    The file alone can be stale (a run killed before it released) or name nobody (another tool's ``flock``)."""
    recorded: dict[str, Any] = {}
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        recorded = json.loads(os.read(fd, 4096) or b"{}")
    except (OSError, ValueError):
        recorded = {}
    holder = _kernel_holder(fd)
    if holder is not None:
        if recorded.get("pid") == holder:
            return f"pid {holder} on {recorded.get('host', socket.gethostname())}"
        return f"pid {holder}"
    pid = recorded.get("pid")
    if isinstance(pid, int) and recorded.get("host") == socket.gethostname() and _alive(pid):
        return f"pid {pid} on {recorded['host']}"
    if isinstance(pid, int) and recorded.get("host") not in (None, socket.gethostname()):
        return f"pid {pid} on {recorded['host']}"  # a run on another machine sharing the folder
    return "holder unknown"


def _kernel_holder(fd: int) -> int | None:
    """The pid holding a ``flock`` on ``fd``'s file according to ``/proc/locks`` (Linux); None if not found."""
    try:
        st = os.fstat(fd)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in lines:
        parts = line.split()
        if "FLOCK" not in parts or "->" in parts:  # "->" marks a waiter, not the holder
            continue
        try:
            i = parts.index("FLOCK")
            pid = int(parts[i + 3])
            major, minor, ino = parts[i + 4].split(":")
            if (int(major, 16), int(minor, 16), int(ino)) == want:
                return pid
        except (ValueError, IndexError):
            continue
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
