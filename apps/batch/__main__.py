"""``python -m apps.batch``: `medvit infer` with MONAI Deploy App SDK / Holoscan I/O conventions.

Paths come from ``-m/-i/-o`` or the environment variables ``HOLOSCAN_MODEL_PATH``, ``HOLOSCAN_INPUT_PATH``
and ``HOLOSCAN_OUTPUT_PATH`` (what a MAP container is started with). Everything else is ``medvit infer``:
extra arguments pass through (``--sr`` is on by default here, as a PACS-facing app writes a structured
report). The exit code is medvit infer's (0 ok, 3 some inputs failed, 4 nothing predicted, 2 bad arguments).

It runs the public command (``python -m medvit infer …``) in a child process, as a container entry point would;
it does not import medvit's CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys

ENV = {"-m": "HOLOSCAN_MODEL_PATH", "-i": "HOLOSCAN_INPUT_PATH", "-o": "HOLOSCAN_OUTPUT_PATH"}
LONG = {"-m": "--model", "-i": "--input", "-o": "--output"}


def build_argv(argv: list[str], environ: dict[str, str]) -> list[str]:
    """``medvit`` arguments: ``infer``, the three paths (flags win over the environment), ``--sr``, the rest."""
    out = ["infer"]
    for short, var in ENV.items():
        if short not in argv and LONG[short] not in argv and environ.get(var):
            out += [short, environ[var]]
    out += list(argv)
    if "--no-sr" in out:
        out.remove("--no-sr")
    elif "--sr" not in out:
        out.append("--sr")
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_argv(sys.argv[1:] if argv is None else argv, dict(os.environ))
    return subprocess.call([sys.executable, "-m", "medvit", *args])


if __name__ == "__main__":
    sys.exit(main())
