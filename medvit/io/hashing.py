"""SHA-256 of files: the one helper behind checkpoint hashes, data-cache keys and language-model hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-byte pieces. Raises ``OSError`` when unreadable."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def cached_sha256_file(path: str | Path) -> str:
    """:func:`sha256_file` memoised per (resolved path, size, mtime_ns) in this process — for cache keys and large
    read-only files (language models) hashed repeatedly; security checks use :func:`sha256_file` directly."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = sha256_file(p, 1 << 22)
    return _CACHE[key]
