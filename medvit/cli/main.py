"""``medvit`` entry point. Each module in :data:`COMMANDS` adds its subcommand(s) with ``add_parser``.

Command modules must import heavy libraries inside their handlers, so ``medvit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: modules providing subcommands; each defines ``add_parser(subparsers)`` setting ``func``.
COMMANDS = [
    "medvit.cli.list_cmd",
    "medvit.cli.run_cmd",
    "medvit.cli.verbs_cmd",
    "medvit.cli.export_cmd",
    "medvit.cli.convert_cmd",
    "medvit.cli.demo_cmd",
    "medvit.cli.infer_cmd",
    "medvit.cli.listen_cmd",
    "medvit.cli.viewer_cmd",
    "medvit.cli.dicom_cmd",
    "medvit.cli.data_cmd",
    "medvit.cli.curriculum_cmd",
    "medvit.cli.chat_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    from medvit.version import __version__

    parser = argparse.ArgumentParser(
        prog="medvit",
        description="medvit: Vision Transformers for medical imaging (I/O, training, tuning, inference, viewer).",
    )
    parser.add_argument("--version", action="version", version=f"medvit {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMANDS:
        importlib.import_module(mod).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides after options (`medvit finetune --epochs 1 a.b=2`): only where they are taken
        if not hasattr(args, "overrides") or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose + 1, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from medvit.cli.logs import EscapeControls

    for h in logging.getLogger().handlers:  # file names and header values in any terminal log line: escaped
        if type(h) is logging.StreamHandler and not any(isinstance(f, EscapeControls) for f in h.filters):
            h.addFilter(EscapeControls())
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)  # noqa: T201
        return 130
    except BrokenPipeError:  # `medvit dicom info FILE | head`: the reader left; not an error of ours
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports it
    except (ValueError, KeyError, FileNotFoundError, TypeError, RuntimeError, FloatingPointError) as e:
        if isinstance(e, RuntimeError):  # MONAI wraps a data item's error: report the item's own message
            e = _data_item_error(e)
        if e is None or args.verbose >= 2:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        from medvit.io.text import escape_text  # a file name or header value in the message: no raw escapes

        print(f"medvit {args.command}: error: {escape_text(msg, keep_newlines=True)}", file=sys.stderr)  # noqa: T201
        return 2
    try:
        sys.stdout.flush()  # a closed pipe shows up here for output still buffered
    except BrokenPipeError:
        _silence_stdout()
        return 141
    return int(rc or 0)


def _data_item_error(e: BaseException) -> BaseException | None:
    """The ValueError / FileNotFoundError a MONAI transform (``RuntimeError("applying transform ...")``, e.g. a
    dataset item that cannot be read mid-training) wraps, or None for any other RuntimeError."""
    if not str(e).startswith("applying transform"):
        return None
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ValueError | FileNotFoundError):
            return e
        e = e.__cause__
    return None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again on the closed pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
