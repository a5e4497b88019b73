"""Who may use the viewer and what it may read (no Streamlit here; SECURITY.md §6).

* **Host header** (DNS rebinding): a page on an attacker's domain that resolves to 127.0.0.1 reaches the
  viewer with ``Host: attacker.example``; only the host names the viewer serves are accepted
  (``localhost``, ``127.0.0.1``, ``[::1]`` and the ``--host`` given, ``MEDVIT_VIEWER_HOSTS``).
* **Token** (as Jupyter does): ``medvit viewer`` makes a random token, passes it in ``MEDVIT_VIEWER_TOKEN`` and
  prints the URL with ``?token=``; a session without it sees nothing.
* **Roots**: the "folder on this server" box opens only folders inside the configured roots (the data and
  results folders, the phantom folder and ``MEDVIT_VIEWER_ROOTS``), never any path the process can read.
* **Uploads**: each session's uploads go to its own 0700 folder, removed when the session ends (its state is
  dropped) and, for sessions of servers that died, when a viewer starts.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path

from medvit.io.errors import printable_path
from medvit.io.safe_write import resolve_path, resolved_inside

logger = logging.getLogger(__name__)

ENV_TOKEN = "MEDVIT_VIEWER_TOKEN"
ENV_HOSTS = "MEDVIT_VIEWER_HOSTS"
ENV_ROOTS = "MEDVIT_VIEWER_ROOTS"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
_UPLOAD_DIR = re.compile(r"^(?P<pid>\d+)-[0-9a-f]{16}$")


def _host_name(host_header: str) -> str:
    h = host_header.strip().lower()
    if h.startswith("["):  # [::1]:8501
        return h[: h.index("]") + 1] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def allowed_hosts(env: Mapping[str, str]) -> set[str]:
    """Host names accepted in the Host header."""
    extra = [h.strip().lower() for h in env.get(ENV_HOSTS, "").split(",") if h.strip()]
    return set(LOCAL_HOSTS) | {_host_name(h) for h in extra}


def refusal(headers: Mapping[str, str], query_token: str | None, env: Mapping[str, str]) -> str | None:
    """Why this request must not be served (None: serve it).

    ``headers``: the request's HTTP headers (a missing Host header, as in Streamlit's AppTest, is no browser
    request and passes the host check); ``query_token``: the ``token`` URL parameter.
    """
    host = next((v for k, v in headers.items() if k.lower() == "host"), None)
    if host is not None and _host_name(host) not in allowed_hosts(env):
        return (f"this viewer does not serve the host name {_host_name(host)!r} (possible DNS rebinding); open it "
                "as http://localhost:PORT, or start it with --host NAME")
    expected = env.get(ENV_TOKEN)
    if expected and not hmac.compare_digest(str(query_token or ""), expected):
        return "missing or wrong access token: open the URL `medvit viewer` printed (it ends with ?token=...)"
    return None


def new_token() -> str:
    """A random URL-safe access token (256 bits)."""
    return secrets.token_urlsafe(32)


def _resolved(path: Path | str, shown: str) -> Path:
    """``path`` with ``~`` expanded and links resolved; ``ValueError`` naming ``shown`` and why otherwise (an unknown
    ``~user``, a symbolic-link loop, a NUL byte: :func:`medvit.io.safe_write.resolve_path`)."""
    try:
        p = Path(path).expanduser()
    except RuntimeError:  # ~user of no known user
        raise ValueError(f"cannot resolve {shown}: its ~ names no home folder") from None
    return resolve_path(p, shown=shown)


def allowed_roots(paths: Iterable[Path | str | None], env: Mapping[str, str]) -> list[Path]:
    """The folders the viewer may open: ``paths`` (data, results, phantoms) plus ``MEDVIT_VIEWER_ROOTS``.

    Raises ``ValueError`` naming the folder (and ``MEDVIT_VIEWER_ROOTS`` for one listed there) when it cannot be
    resolved (a symbolic-link loop, a NUL byte)."""
    roots = [(Path(p), f"viewer folder {printable_path(p)}") for p in paths if p]
    roots += [(Path(p), f"{ENV_ROOTS} entry {printable_path(p)}")
              for p in env.get(ENV_ROOTS, "").split(os.pathsep) if p.strip()]
    out: list[Path] = []
    for r, shown in roots:
        rr = _resolved(r, shown)
        if rr not in out:
            out.append(rr)
    return out


def check_folder(folder: str | Path, roots: list[Path]) -> Path:
    """``folder`` resolved, if inside one of ``roots``; else ``PermissionError`` naming the roots, and
    ``ValueError`` naming the folder when it cannot be resolved (a symbolic-link loop, a NUL byte, an unknown
    ``~user``)."""
    p = _resolved(folder, f"folder {printable_path(folder)}")
    if any(resolved_inside(r, p)[1] for r in roots):
        return p
    shown = ", ".join(printable_path(r) for r in roots) or "none configured"
    raise PermissionError(f"{printable_path(folder)} is outside the folders this viewer may open ({shown}); start "
                          f"it with --data DIR or add folders to {ENV_ROOTS}")


def upload_root() -> Path:
    """Per-user parent of the session upload folders (0700)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    root = Path(tempfile.gettempdir()) / f"medvit-viewer-uploads-{uid}"
    root.mkdir(mode=0o700, exist_ok=True)
    if root.is_symlink() or (hasattr(os, "getuid") and root.stat().st_uid != uid):
        raise PermissionError(f"{root} is not a folder of this user; refusing to store uploads there")
    return root


class UploadDir:
    """A session's upload folder ``<upload_root>/<pid>-<random>``; removed when this object is collected
    (the session ended and Streamlit dropped its state) or at interpreter exit."""

    def __init__(self, root: Path | None = None) -> None:
        root = root or upload_root()
        self.path = root / f"{os.getpid()}-{secrets.token_hex(8)}"
        self.path.mkdir(mode=0o700)
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def __str__(self) -> str:
        return str(self.path)

    def remove(self) -> None:
        self._finalizer()


def remove_stale_uploads(root: Path | None = None) -> list[Path]:
    """Delete upload folders of viewer processes that no longer run; returns them."""
    from medvit.io.safe_write import pid_alive

    root = root or upload_root()
    removed = []
    for d in root.iterdir():
        m = _UPLOAD_DIR.match(d.name)
        if m and d.is_dir() and not d.is_symlink() and not pid_alive(int(m["pid"])):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed
