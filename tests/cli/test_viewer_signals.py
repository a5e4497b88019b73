"""`kill` of `medvit viewer` stops the server it started (SIGTERM/SIGINT forwarded, then waited for)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHILD = textwrap.dedent("""
    import signal, sys
    sig = signal.Signals[sys.argv[2]]
    # blocked, so a signal sent before sigwait stays pending instead of being lost (a handler + pause() loop can
    # miss one that lands between its check and the pause, and then waits forever)
    signal.pthread_sigmask(signal.SIG_BLOCK, {sig})
    print("ready", flush=True)
    signal.sigwait({sig})
    open(sys.argv[1], "w").write(f"stopped by {sig.name}")
""")
PARENT = textwrap.dedent("""
    import subprocess, sys
    from medvit.cli.viewer_cmd import run_forwarding_signals
    child = subprocess.Popen([sys.executable, "-c", *sys.argv[1:]], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    sys.exit(run_forwarding_signals(child, ready=lambda: print(child.pid, flush=True)))
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_viewer_stops_the_server(tmp_path: Path, sig):
    marker = tmp_path / "child.txt"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(marker), sig.name], stdout=subprocess.PIPE,
                              text=True, env=env)
    child_pid = int(parent.stdout.readline())  # child up with the signal blocked, the parent's forwarding installed
    parent.send_signal(sig)
    assert parent.wait(timeout=30) == 0
    assert marker.read_text() == f"stopped by {sig.name}"  # the server got the signal and shut down
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)  # and is gone (reaped), not left serving
