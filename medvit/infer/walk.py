"""Walking INPUT: every entry either yields a file to decode or a :class:`WalkIssue` that becomes a status row.

Nothing is skipped silently (SECURITY.md §5):

* a folder that cannot be listed (permissions, I/O error) → an ``error`` row at stage ``walk``;
* a symlinked folder → followed only with ``follow_links`` (each real folder once, so link loops end), else a
  ``skipped`` row;
* a file or folder whose link leads outside INPUT → refused (``skipped`` row) unless ``follow_links``;
* FIFOs, sockets and device files → ``skipped`` rows (reading them could block forever or never end); so are
  symbolic-link loops (wording of :func:`medvit.io.errors.file_problem`).

Hidden entries (names starting with ``.``) and the ``exclude`` folder (OUTPUT) are not walked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from medvit.io.errors import file_problem, mode_problem
from medvit.io.safe_write import resolved_inside

WALK_STAGE = "walk"


@dataclass
class WalkIssue:
    """An INPUT entry that is not decoded: ``rel`` (folders end with ``/``), ``status``, ``reason``."""

    rel: str
    status: str  # "skipped" | "error"
    reason: str


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


def _entry_issue(p: Path, root: Path) -> WalkIssue:
    """The row of an entry that cannot be stat'ed, worded by :func:`medvit.io.errors.file_problem`: a symbolic-link
    loop is ``skipped`` (like a broken link: nothing to read), any other OS error an ``error`` naming it."""
    why = file_problem(p) or "changed while walked"
    if why == "is a symbolic-link loop":
        return WalkIssue(_rel(p, root), "skipped", f"{why}, not a regular file")
    return WalkIssue(_rel(p, root), "error", f"unreadable entry ({why})")


def walk_inputs(root: Path, exclude: Path | None = None, follow_links: bool = False) -> Iterator[Path | WalkIssue]:
    """Files under ``root`` in sorted order, interleaved with :class:`WalkIssue` for entries not decoded.

    ``root`` should be resolved; a file root yields itself.
    """
    root = Path(root)
    if not root.is_dir():
        yield root
        return
    seen: set[tuple[int, int]] = set()
    yield from _walk_dir(root, root, exclude, follow_links, seen)


def _walk_dir(d: Path, root: Path, exclude: Path | None, follow: bool,
              seen: set[tuple[int, int]]) -> Iterator[Path | WalkIssue]:
    try:
        st = d.stat()
        key = (st.st_dev, st.st_ino)
        if key in seen:  # reached again through a link: walked once already
            return
        seen.add(key)
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        yield WalkIssue(_rel(d, root) + "/", "error",
                        f"unreadable folder ({type(e).__name__}: {e.strerror or e}); its files were not read")
        return
    files, dirs = [], []
    for e in entries:
        if e.name.startswith("."):
            continue
        p = Path(e.path)
        try:
            is_link = e.is_symlink()
            is_dir = e.is_dir(follow_symlinks=True)
        except OSError:
            yield _entry_issue(p, root)
            continue
        if is_link:
            if not p.exists():
                yield WalkIssue(_rel(p, root), "skipped", "broken symbolic link")
                continue
            if not follow and not resolved_inside(root, p)[1]:
                yield WalkIssue(_rel(p, root) + ("/" if is_dir else ""), "skipped",
                                "refused: symbolic link leading outside INPUT (use --follow-links to read it)")
                continue
            if is_dir and not follow:
                yield WalkIssue(_rel(p, root) + "/", "skipped",
                                "symbolic link to a folder not followed (use --follow-links)")
                continue
        if is_dir:
            if exclude is not None and p.resolve() == exclude:
                continue
            dirs.append(p)
            continue
        try:
            mode = p.stat().st_mode
        except OSError:
            yield _entry_issue(p, root)
            continue
        if why := mode_problem(mode):  # reading a FIFO could block forever, a device never end
            yield WalkIssue(_rel(p, root), "skipped", f"{why}, not a regular file")
            continue
        files.append(p)
    # the same order os.walk gave before (files of a folder, then its sub-folders), so resumes line up
    yield from files
    for sub in dirs:
        yield from _walk_dir(sub, root, exclude, follow, seen)
