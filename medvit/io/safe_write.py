"""Writing outputs safely: header values never become paths, every write stays inside its output root.

Files medvit reads come from outside the hospital's control; what it writes travels back into clinical
systems. The rules here (see SECURITY.md):

* :func:`path_component` — a value read from a file (a Study / SOP Instance UID) becomes a path component
  only when it is a valid DICOM UID (PS3.5 §9.1: digits and dots, at most 64 characters, no empty or
  leading-zero components); anything else is replaced by a SHA-256 of it, so ``../``, absolute paths,
  NUL bytes or 10 kB strings can never steer a write.
* :func:`checked_path` — the final path (symlinks resolved) must lie inside ``root``; else
  :class:`UnsafePathError`.
* :func:`resolved_inside` — the one containment rule of medvit's writes and reads (data folders, INPUT walks,
  saved model directories): both sides resolved, so a root reached through a link is fine and a link out is seen.
* :func:`atomic_write` — a temporary file created exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``, a random
  name, mode 0600 by default) in the target's folder, fsynced, then ``os.replace``: a planted symlink is
  never followed and a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Any

#: PS3.5 §9.1 UID: components of digits without leading zeros (a lone 0 allowed), separated by dots
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
#: temporary files written by :func:`atomic_write`: ``.<name>.tmp<pid>.<16 hex>``
TEMP_PATTERN = re.compile(r"^\..+\.tmp(?P<pid>\d+)(\.[0-9a-f]{16})?$")


class UnsafePathError(ValueError):
    """A path would lead outside the folder it must stay in (or through a symlink out of it)."""


def is_valid_uid(value: str) -> bool:
    """True when ``value`` is a DICOM UID per PS3.5 §9.1 (≤ 64 characters, digits and dots)."""
    return 0 < len(value) <= 64 and _UID.match(value) is not None


def path_component(value: Any, fallback: str = "unknown") -> str:
    """A file-name-safe component for a value read from a file.

    A valid UID is used as is; ``""``/``None`` becomes ``fallback``; anything else becomes
    ``h-<first 32 hex of its SHA-256>`` (stable, so the same bad value always maps to the same name).
    """
    if value is None or str(value) == "":
        return fallback
    s = str(value)
    if is_valid_uid(s):
        return s
    return "h-" + hashlib.sha256(s.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def checked_path(root: str | Path, path: str | Path) -> Path:
    """``path`` if it resolves (symlinks followed) to ``root`` or below it; else :class:`UnsafePathError`.

    A relative ``path`` is relative to the working directory, like ``root`` itself (callers build it as
    ``root / ...``; ``medvit infer -o results`` gives a relative root). Paths in the message are printable
    (:func:`medvit.io.errors.printable_path`: no NUL byte or raw non-UTF-8 bytes reach a log or a CSV row).
    """
    from medvit.io.errors import printable_path

    p = Path(path)
    try:
        resolved, ok = resolved_inside(root, p)
    except ValueError as e:  # a link loop on the way
        raise UnsafePathError(f"refusing to write {printable_path(p)}: {e}") from None
    if not ok:
        raise UnsafePathError(f"refusing to write {printable_path(p)}: it resolves to {printable_path(resolved)}, "
                              f"outside {printable_path(Path(root).resolve())}")
    return p


def resolve_path(path: str | Path, shown: str | None = None) -> Path:
    """``path`` with every symbolic link resolved (``Path.resolve``, non-strict: a missing tail is fine).

    Raises:
        ValueError: ``"cannot resolve <shown>: <why>"`` (default: the printable path), why being ``"symbolic-link
            loop"``, ``"contains a NUL byte"`` or the OS error; never a bare ``RuntimeError`` (a loop before
            Python 3.13) or ``"embedded null byte"``.
    """
    import errno

    from medvit.io.errors import printable_path

    try:
        return Path(path).resolve()
    except (OSError, RuntimeError, ValueError) as e:
        if isinstance(e, ValueError):
            why = "contains a NUL byte"
        elif isinstance(e, RuntimeError) or e.errno == errno.ELOOP:
            why = "symbolic-link loop"
        else:
            why = e.strerror or str(e)
        raise ValueError(f"cannot resolve {shown or printable_path(path)}: {why}") from None


def resolved_inside(root: str | Path, path: str | Path, shown: str | None = None) -> tuple[Path, bool]:
    """``(target, inside)``: ``path`` with every symbolic link resolved (the file itself or a folder on its way),
    and whether it is ``root`` or lies below it. ``root`` is resolved too, so a root that is itself reached through
    a link is fine. A relative path is relative to the working directory. Nothing is opened.

    Raises:
        ValueError: ``path`` or ``root`` cannot be resolved (:func:`resolve_path`: a symbolic-link loop, a NUL
            byte, an OS error); the message says which side failed, naming ``path`` as ``shown`` (default: the
            printable path).
    """
    from medvit.io.errors import printable_path

    target = resolve_path(path, shown)
    try:
        r = resolve_path(root)
    except ValueError as e:
        raise ValueError(f"{e} (checking whether {shown or printable_path(path)} lies inside it)") from None
    return target, target.is_relative_to(r)


def make_dirs(root: str | Path, folder: str | Path, mode: int = 0o700) -> Path:
    """Create ``folder`` (and its missing parents, each with ``mode``: owner-only by default, SECURITY.md §7)
    after checking it stays inside ``root``; returns it."""
    p = checked_path(root, folder)
    missing = []
    q = p
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    for d in reversed(missing):  # Path.mkdir(parents=True) would give the parents the umask's mode (0755)
        try:
            d.mkdir(mode=mode)
        except FileExistsError:  # created concurrently: checked below
            pass
    checked_path(root, p)  # a component created concurrently as a symlink is caught here
    return p


def atomic_write(path: str | Path, data: bytes | str, root: str | Path | None = None, mode: int = 0o600) -> Path:
    """Write ``data`` to ``path`` atomically (exclusive temp file + fsync + ``os.replace``); returns ``path``.

    ``root``: when given, ``path`` must stay inside it (:class:`UnsafePathError` otherwise). The
    temporary file is ``.<name>.tmp<pid>.<random>`` in the same folder, opened with ``O_EXCL |
    O_NOFOLLOW`` (an existing file or a planted symlink makes it fail rather than be followed).
    """
    p = Path(path)
    if root is not None:
        p = checked_path(root, p)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}.{secrets.token_hex(8)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if root is not None:
            checked_path(root, p)  # the folder was not swapped for a symlink meanwhile
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


def open_exclusive(path: str | Path, mode: int = 0o600) -> Any:
    """A new file opened for binary writing, created exclusively and without following symlinks."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.fdopen(os.open(path, flags, mode), "wb")


def save_dataset(path: str | Path, ds: Any, root: str | Path | None = None) -> Path:
    """Write a pydicom Dataset atomically (see :func:`atomic_write`) in the DICOM File Format."""
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return atomic_write(path, buf.getvalue(), root)


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this host (signal 0)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temporaries(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Delete :data:`TEMP_PATTERN` files under ``folder`` whose writing process is gone; returns them.

    Symlinks are never followed (``os.walk`` default) and only regular files are removed.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return removed
    walker = os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]
    for dirpath, _dirs, files in walker:
        for n in files:
            m = TEMP_PATTERN.match(n)
            if not m or int(m["pid"]) == os.getpid() or pid_alive(int(m["pid"])):
                continue
            f = Path(dirpath) / n
            if f.is_file() and not f.is_symlink():
                f.unlink()
                removed.append(f)
    return removed
