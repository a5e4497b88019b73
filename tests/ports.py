"""Localhost ports for tests that start servers or need a closed port.

``free_port`` probes a port the kernel considers free; a server started on it afterwards can still lose it to a
concurrent process (prefer letting the server bind port 0 where it can, and retry start-up where it cannot, as
:class:`tests.pacs.orthanc.OrthancServer` does). ``refused_port`` holds a port where connections are refused.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


def free_port() -> int:
    """A localhost TCP port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A localhost port where connections are refused for as long as the block runs: a socket bound to it but not
    listening holds it, so no concurrent test or server can start listening there (a probed "free" port could be
    taken in between, and the test would then talk to that server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])
