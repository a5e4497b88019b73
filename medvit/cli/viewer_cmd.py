"""``medvit viewer``: start the clinician viewer (a Streamlit app, ``apps/viewer/app.py``).

The app is a front end outside the library: ``apps/viewer/app.py`` of the medvit source tree, which this command
runs with Streamlit (the library never imports it; the source tree goes on the app's ``PYTHONPATH``). It serves on
127.0.0.1 only unless ``--host`` is given. The viewer's settings travel as environment variables
(``MEDVIT_VIEWER_DATA``, ``MEDVIT_VIEWER_MODEL``, ``MEDVIT_VIEWER_RESULTS``), which the app reads at start.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Any

#: environment variables the app reads (see ``apps/viewer/config.py``)
ENV_DATA = "MEDVIT_VIEWER_DATA"
ENV_MODEL = "MEDVIT_VIEWER_MODEL"
ENV_RESULTS = "MEDVIT_VIEWER_RESULTS"
ENV_VLM = "MEDVIT_VIEWER_VLM"  # vision-language model of the chat tab
ENV_TOKEN = "MEDVIT_VIEWER_TOKEN"  # the access token the app requires in its URL (?token=...)
ENV_HOSTS = "MEDVIT_VIEWER_HOSTS"  # host names the app accepts in the Host header (DNS-rebinding guard)
ENV_DICOMWEB = "MEDVIT_VIEWER_DICOMWEB"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "viewer", help="start the clinician viewer (Streamlit) on localhost",
        description="Open studies, window them correctly, run a model and see its findings with heatmaps. "
                    "Serves on 127.0.0.1 only unless --host is given. Research use only.",
    )
    p.add_argument("--data", metavar="DIR", default=None,
                   help="folder of studies to browse (default: the demo studies `make demo` writes; phantoms are "
                        "generated when there are none)")
    p.add_argument("--model", metavar="MODEL", default=None,
                   help="checkpoint directory or registered weight tag (default: the demo model)")
    p.add_argument("--results", metavar="DIR", default=None,
                   help="batch-inference output folder (SR links; feedback JSON is saved there; default: the "
                        "'results' folder beside the data, DATA/../results, as `make demo` lays it out)")
    p.add_argument("--dicomweb", metavar="URL", default=None,
                   help="DICOMweb server offered under 'DICOMweb (PACS)' in the sidebar, e.g. "
                        "dicomweb://localhost:8042/dicom-web?Modality=DX (studies are fetched when opened)")
    p.add_argument("--vlm", metavar="DIR", default=None,
                   help="vision-language model (a vila_m3 checkpoint) for the Chat tab: ask about the open image; "
                        "expert calls are shown")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default: 8501)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1 = this machine only). 0.0.0.0 exposes the viewer, and "
                        "every folder this user can read, to the network: use only behind an authenticating proxy")
    p.set_defaults(func=run)


def app_path() -> Path:
    """The viewer's Streamlit script, ``apps/viewer/app.py`` of the medvit source tree.

    Raises:
        FileNotFoundError: medvit is installed without its source tree (the viewer is not part of the library).
    """
    from medvit.demo import source_root

    root = source_root()
    path = (root / "apps" / "viewer" / "app.py") if root else None
    if path is None or not path.is_file():
        raise FileNotFoundError("the viewer app (apps/viewer/app.py) ships with the medvit source tree, not the "
                                "installed library; run `medvit viewer` from a clone (`make viewer`)")
    return path


def build_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` that start Streamlit on the viewer with the given options; validates paths and port."""
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    app = app_path()
    env = dict(os.environ)
    src = str(app.parents[2])  # the source tree, so the app imports its own modules (apps.viewer.*)
    env["PYTHONPATH"] = os.pathsep.join([src, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    for opt, key, must_exist in (("data", ENV_DATA, True), ("results", ENV_RESULTS, False), ("vlm", ENV_VLM, True)):
        val = getattr(args, opt, None)
        if val is None:
            env.pop(key, None)
            continue
        p = Path(val).expanduser().resolve()
        if must_exist and not p.is_dir():
            raise FileNotFoundError(f"--{opt} {val}: not a folder")
        env[key] = str(p)
    # access (apps/viewer/access.py): a per-start token in the URL, and only these host names in the Host header
    env[ENV_TOKEN] = getattr(args, "token", None) or secrets.token_urlsafe(32)
    env[ENV_HOSTS] = ",".join(h for h in ("localhost", "127.0.0.1", "[::1]", args.host) if h not in ("0.0.0.0", "::"))
    if getattr(args, "dicomweb", None):
        from medvit.pacs import parse_pacs_address

        parse_pacs_address(args.dicomweb)  # a bad address is a usage error here, not in the browser
        env[ENV_DICOMWEB] = args.dicomweb
    if args.model is None:
        env.pop(ENV_MODEL, None)
    else:
        mp = Path(args.model).expanduser()
        # a path that exists is passed absolute; anything else is a weight tag the app resolves (and reports)
        env[ENV_MODEL] = str(mp.resolve()) if mp.exists() else args.model
    argv = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", args.host,
        "--server.port", str(args.port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--server.maxUploadSize", "1024",  # MB: a zipped CT study is often over Streamlit's 200 MB default
        "--browser.gatherUsageStats", "false",
        "--browser.serverAddress", "localhost" if args.host in ("127.0.0.1", "localhost") else args.host,
        "--client.toolbarMode", "minimal",
        "--theme.base", "dark",
    ]
    return argv, env


def run(args: argparse.Namespace) -> int:
    import subprocess

    argv, env = build_command(args)
    shown = "localhost" if args.host in ("127.0.0.1", "localhost") else args.host
    print(f"medvit viewer: http://{shown}:{args.port}/?token={env[ENV_TOKEN]}  (Ctrl+C to stop; research use only)",  # noqa: T201
          flush=True)
    return run_forwarding_signals(subprocess.Popen(argv, env=env))


def run_forwarding_signals(proc: Any, grace_s: float = 15.0, ready: Any = None) -> int:
    """Wait for ``proc`` (the Streamlit server), forwarding SIGTERM / SIGINT / SIGHUP to it, so that ``kill`` of
    ``medvit viewer`` stops the server too; a server that does not stop within ``grace_s`` after our own exit
    path is killed. Returns its exit status (0 when it stopped on a forwarded signal)."""
    import signal
    import subprocess

    forwarded: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        forwarded.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    sigs = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    old = {sig: signal.signal(sig, forward) for sig in sigs}
    if ready is not None:  # the handlers are in place (tests wait for this before signalling)
        ready()
    try:
        rc = proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return 0 if forwarded and rc < 0 else rc
