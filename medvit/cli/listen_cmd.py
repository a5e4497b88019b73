"""``medvit listen --aet MEDVIT --port P -m MODEL -o OUTPUT [--send-to PACS]``: a DICOM node that infers."""

from __future__ import annotations

import argparse
import os

EPILOG = """A C-STORE SCP: studies sent to it (from a PACS, a modality or storescu) are written to OUTPUT/incoming/,
declared complete after --quiet-period seconds without a new instance, moved to OUTPUT/studies/ and run
through the model like `medvit infer` (same journal, tables and SR); the SR goes to --send-to.
Every acknowledged instance is on disk; a killed listener restarted on the same OUTPUT loses and duplicates
nothing. SIGTERM/SIGINT stop it cleanly (exit 0). OUTPUT/listen.jsonl has one line per handled study.
Example: medvit listen --aet MEDVIT --port 11112 -m MODEL -o listen_out --send-to dicomweb://localhost:8042/dicom-web"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("listen", help="DICOM C-STORE listener: infer each received study, send the SR back",
                       description="Receive studies over DICOM (C-STORE), run the model on each complete study and "
                       "store the SR in a PACS.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default=os.environ.get("MEDVIT_INFER_MODEL"),
                   help="checkpoint directory or registered weight tag")
    p.add_argument("-o", "--output", required=True, help="output folder (restarting on it resumes)")
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    p.add_argument("--aet", default="MEDVIT", help="our AE title (default MEDVIT)")
    p.add_argument("--host", default="", help="interface to bind (default: all)")
    p.add_argument("--quiet-period", type=float, default=10.0,
                   help="seconds without a new instance after which a study is complete (default 10)")
    p.add_argument("--send-to", metavar="PACS", help="store each SR there: dicomweb://HOST:PORT/PATH (STOW-RS) or "
                   "dimse://AET@HOST:PORT (C-STORE); default: keep it in OUTPUT/sr")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32", help="(default fp32)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--heatmaps", action="store_true", help="also write and send heatmap Secondary Captures")
    p.add_argument("--rules", help="series selection rules JSON (default: from the model contract)")
    p.add_argument("--any-modality", action="store_true", help="as for medvit infer")
    p.add_argument("--threads", type=int, help="torch threads for the model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medvit.infer.listen import ListenConfig, run_listener
    from medvit.pacs.url import _AET

    if getattr(args, "verbose", 0) < 1:  # one line per study from medvit; the libraries' per-request lines with -v
        import logging

        for name in ("pynetdicom", "highdicom", "dicomweb_client"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if not args.model:
        raise ValueError("missing -m/--model (or MEDVIT_INFER_MODEL)")
    if not _AET.match(args.aet) or not args.aet.strip():
        raise ValueError(f"--aet {args.aet!r} must be 1-16 printable characters")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a TCP port")
    if args.quiet_period <= 0:
        raise ValueError(f"--quiet-period must be > 0, got {args.quiet_period}")
    cfg = ListenConfig(model=args.model, output=args.output, port=args.port, aet=args.aet, host=args.host,
                       quiet_s=args.quiet_period, send_to=args.send_to, batch_size=args.batch_size,
                       precision=args.precision, device=args.device, heatmaps=args.heatmaps, rules=args.rules,
                       any_modality=args.any_modality, threads=args.threads)
    return run_listener(cfg)
