"""``medvit infer -m MODEL -i INPUT -o OUTPUT``: batch inference over a folder of DICOM studies
(or ``--source PACS`` instead of ``-i``, and ``--send-to PACS`` to store the SR back)."""

from __future__ import annotations

import argparse
import os
from typing import Any

EPILOG = """outputs (in OUTPUT): predictions.csv, predictions.jsonl, status.csv (one row per input file),
errors.csv, run.json; --sr adds sr/<study>.dcm (TID 1500), --heatmaps adds heatmaps/<study>/<sop>.png|.dcm;
a segmentation model adds seg/<study>/<sop>.dcm (DICOM SEG) and per-label areas.
Details of failures (decoder messages, library warnings) go to OUTPUT/infer.log.
Re-running with the same OUTPUT resumes. Exit codes: 0 all inputs predicted or skipped with a reason,
3 some inputs failed (see errors.csv; with a PACS also retrieve_errors.csv, send_errors.csv), 4 nothing
could be predicted, 2 bad arguments, 5 the PACS (or the --engine ray cluster) could not be reached or refused
the query.
--engine ray: decoding and prediction run as Ray tasks (medvit[ray] extra) on the cluster at --address
(auto, HOST:PORT of `ray start --head`, or ray://HOST:PORT), or on a Ray instance started for the run; the
outputs, journal, resume and exit codes are the local engine's. INPUT must be at the same path on every node.
PACS addresses: dicomweb://HOST:PORT/PATH?Modality=CR&StudyDate=20240101-20240131&AccessionNumber=A&PatientID=P
(DICOMweb; dicomwebs:// for https) or dimse://AET@HOST:PORT?Modality=DX&calling_aet=MEDVIT (C-FIND + C-GET,
C-STORE); a --source run keeps the retrieved instances in OUTPUT/spool/ and resumes from it.
Environment: MEDVIT_INFER_MODEL / _INPUT / _OUTPUT stand in for -m / -i / -o."""


LOG_NAME = "infer.log"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="batch inference on a folder of DICOM studies (CSV/JSON, SR, heatmaps)",
                       description="Run a classifier over every DICOM image under INPUT. Preprocessing, labels "
                       "and thresholds come from the model's saved contract; nothing is retyped here.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default=os.environ.get("MEDVIT_INFER_MODEL"),
                   help="checkpoint directory or registered weight tag")
    p.add_argument("-i", "--input", default=os.environ.get("MEDVIT_INFER_INPUT"),
                   help="folder of studies (walked recursively) or one file")
    p.add_argument("--source", metavar="PACS", help="query and retrieve the studies from a PACS instead of -i "
                   "(dicomweb://... or dimse://..., see below)")
    p.add_argument("--send-to", metavar="PACS", help="store the results (SR per study, heatmap SCs) in this PACS "
                   "(dicomweb:// = STOW-RS, dimse:// = C-STORE); implies --sr")
    p.add_argument("-o", "--output", default=os.environ.get("MEDVIT_INFER_OUTPUT"), help="output folder")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--workers", type=int, default=None,
                   help="local engine: decoding worker processes, 0 = decode in the main process (default: from "
                   "the core count, 1 per 4 cores on CPU, all cores but one with CUDA)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default="auto",
                   help="auto = bf16 on CUDA or a CPU with native bf16 (AVX512-BF16/AMX), else fp32; bf16 "
                   "weights; int8 = static PT2E x86 quantisation, compiled (CPU): a PTQ checkpoint "
                   "(medvit.compress.ptq) brings its calibrated/reconstructed parameters (results independent of "
                   "the run); otherwise calibrated on the first batch of the run that compiles the cached package, "
                   "which later runs reuse whatever their images (run.json execution.int8_calibration) "
                   "(default auto; the choice is in run.json and every prediction row)")
    p.add_argument("--int8-rest", choices=["auto", "fp32", "bf16"], default="auto",
                   help="with --precision int8: dtype of the ops between the int8 matrix products (norms, GELU, "
                   "attention, residual adds); auto = bf16 on a CPU with native bf16 (int8-mixed-bf16), else fp32; "
                   "fp32 reproduces a PTQ checkpoint's float simulation most closely (default auto)")
    p.add_argument("--compile", choices=["none", "inductor", "openvino"], default="none",
                   help="inductor = AOTInductor with weight freezing, cached across runs per model hash and "
                   "input shape (the first run compiles: ~15 s for a ViT-B/16 on 2 cores; $MEDVIT_COMPILE_CACHE, "
                   "an unusable one is warned about and the model compiled without caching); openvino = the "
                   "optional OpenVINO CPU backend (pip install 'medvit[openvino]'), fp32 or bf16, converted once "
                   "and cached the same way (default none)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--sr", action="store_true", help="write a DICOM Comprehensive 3D SR (TID 1500) per study")
    p.add_argument("--heatmaps", action="store_true",
                   help="write a PNG heatmap overlay and a DICOM Secondary Capture per image")
    p.add_argument("--heatmap-method", choices=["gradcam", "rollout"], default="gradcam",
                   help="gradcam (for the top finding) or attention rollout (default gradcam)")
    p.add_argument("--deidentify", action="store_true",
                   help="apply the DICOM PS3.15 basic profile to everything written (tables, SR, SC)")
    p.add_argument("--deid-key", metavar="FILE",
                   help="pseudonymisation key file, outside OUTPUT (created if absent; default: the per-site key "
                   "$MEDVIT_DEID_KEY_DIR/site.key, ~/.config/medvit/deid-keys/site.key)")
    p.add_argument("--keep-dates", action="store_true",
                   help="with --deidentify: retain dates and times (PS3.15 Retain Longitudinal Temporal "
                   "Information Full Dates Option; recorded in the outputs)")
    p.add_argument("--rules", help="series selection rules JSON (MONAI Deploy grammar); default: from the "
                   "model contract (modalities, view positions, body parts)")
    p.add_argument("--any-modality", action="store_true",
                   help="score every image whatever the contract's modalities/views/body parts (needed for a model "
                   "whose contract declares no scope, which is refused otherwise); segmentations, SR, KO, PR and RT "
                   "objects are never scored")
    p.add_argument("--geometry", choices=["pad", "crop", "squash"], default=None,
                   help="override the contract's crop mode for non-square images: centre pad or centre crop to the "
                   "model's aspect, or squash (default: the model's contract; pad for checkpoints without one)")
    p.add_argument("--max-image-mb", type=int, default=256,
                   help="refuse images whose header claims more than this many MiB of decoded float32 pixels "
                   "(decompression bombs; default 256 = 8192 x 8192 greyscale)")
    dec = p.add_mutually_exclusive_group()
    dec.add_argument("--full-decode", dest="full_decode", action="store_true", default=True,
                     help="decode every image at full resolution, exactly as training and the viewer read it "
                     "(default: one preprocessing path from training to serving)")
    dec.add_argument("--reduced-decode", dest="full_decode", action="store_false",
                     help="faster, opt-in: a greyscale image at least twice the model input's size a side is first "
                     "reduced by the largest power of two that keeps it so (JPEG 2000 decoded at that wavelet "
                     "level, several times faster; others averaged over blocks; recorded as decoded_at in the "
                     "preprocessing notes), only where the intensity mapping is linear (a LINEAR window, the bit "
                     "range); no window (min-max), VOI LUT tables and SIGMOID are decoded in full. The model input "
                     "moves by up to ~0.045 of the intensity range (measured), probabilities by up to 0.13 on the "
                     "demo model, so findings can differ from training/viewer reads")
    p.add_argument("--follow-links", action="store_true",
                   help="follow symlinked folders and links that lead outside INPUT (refused by default; each "
                   "gets a status row)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local = worker processes on this machine (default); ray = shard the files over Ray "
                   "workers that decode and predict (pip install 'medvit[ray]')")
    p.add_argument("--address", help="--engine ray: the cluster to join (auto, HOST:PORT, ray://HOST:PORT; "
                   "default: start a Ray instance on this machine)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="--engine ray: tasks running at once (default: the cluster's CPUs / --cpus-per-worker, "
                   "or its GPUs with --device cuda)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="--engine ray: CPUs reserved per task, its torch threads (default 1)")
    p.add_argument("--threads", type=int, help="torch threads for the model (default: torch's choice)")
    p.add_argument("--overwrite", action="store_true", help="discard a different earlier run's results in OUTPUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medvit.cli.logs import routed_logs
    from medvit.infer import run_inference
    from medvit.infer.lock import OutputLockedError

    if args.source and args.input:
        raise ValueError("give either -i/--input or --source, not both")
    needed = ("model", "output") if args.source else ("model", "input", "output")
    missing = [f"-{k[0]}/--{k}" for k in needed if not getattr(args, k)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (or MEDVIT_INFER_MODEL/_INPUT/_OUTPUT)")
    # every unreadable file gets a status/error row and one terminal line; decoder tracebacks, pydicom's header
    # quirks and highdicom's warnings go to OUTPUT/infer.log
    _terminate_cleanly()
    try:
        if args.engine == "ray" and args.address:  # an unreachable cluster: one line, before OUTPUT is touched
            from medvit.infer.ray_engine import probe_address

            probe_address(args.address)
        if args.source or args.send_to:
            with routed_logs(getattr(args, "verbose", 0), Path(args.output) / LOG_NAME):
                return _run_pacs(args)
        cfg = _config(args, args.input)
        with routed_logs(getattr(args, "verbose", 0), Path(args.output) / LOG_NAME):
            result = run_inference(cfg)
    except OutputLockedError as e:  # another run holds OUTPUT: a usage error, one line, nothing changed
        import sys

        print(f"medvit infer: error: {e}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    except ConnectionError as e:  # --engine ray: the cluster at --address does not answer; nothing in OUTPUT changed
        import sys

        print(f"medvit infer: error: {e}", file=sys.stderr)  # noqa: T201
        return EXIT_PACS
    print(format_summary(result))  # noqa: T201
    return result.exit_code


def _terminate_cleanly() -> None:
    """SIGTERM (a scheduler stopping the job) unwinds like Ctrl-C: run.json records the run as interrupted,
    the journal keeps every finished file, and the OUTPUT lock is released."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def _stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _stop)


EXIT_USAGE = 2  # bad arguments, or OUTPUT is in use by another run (README, exit codes)
EXIT_PACS = 5  # the PACS (or the Ray cluster) could not be reached or refused (message names the server and the step)


def _run_pacs(args: argparse.Namespace) -> int:
    import sys

    from medvit.infer.pacs_run import run_with_pacs, spool_dir
    from medvit.pacs import PacsError, parse_pacs_address

    for a in (args.source, args.send_to):
        if a:
            parse_pacs_address(a)  # a bad address is a usage error before anything is created
    cfg = _config(args, str(spool_dir(args.output)) if args.source else args.input)
    try:
        result = run_with_pacs(cfg, source=args.source, send_to=args.send_to)
    except PacsError as e:
        from medvit.io.text import escape_text

        print(f"medvit infer: error: {escape_text(e, keep_newlines=True)}", file=sys.stderr)  # noqa: T201
        return EXIT_PACS
    print(format_summary(result))  # noqa: T201
    return result.exit_code


def _config(args: argparse.Namespace, input_path: str) -> Any:
    import sys
    from pathlib import Path

    from medvit.infer import InferConfig

    return InferConfig(model=args.model, input=input_path, output=args.output, batch_size=args.batch_size,
                      workers=args.workers, precision=args.precision, device=args.device, sr=args.sr,
                      int8_rest=None if args.int8_rest == "auto" else args.int8_rest,
                      compile=args.compile, heatmaps=args.heatmaps, heatmap_method=args.heatmap_method,
                      deidentify=args.deidentify,
                      deid_key=args.deid_key, deid_keep_dates=args.keep_dates,
                      rules=args.rules, any_modality=args.any_modality, geometry=args.geometry, threads=args.threads,
                      max_image_mb=args.max_image_mb, follow_links=args.follow_links, full_decode=args.full_decode,
                      overwrite=args.overwrite, progress=not args.quiet and sys.stderr.isatty(),
                      log_file=str(Path(args.output) / LOG_NAME), engine=args.engine, address=args.address,
                      num_workers=args.num_workers, cpus_per_worker=args.cpus_per_worker)


def format_summary(result: Any) -> str:
    """Human summary: studies, images, skipped/failed with reasons, positives per finding, output paths."""
    c = result.counts
    lines = [f"medvit infer: {c['predicted']} images predicted in {c['studies']} studies, "
             f"{c['skipped']} files skipped, {c['error']} failed "
             f"({result.seconds:.1f} s, {result.images_per_s:.1f} images/s"
             + (f"; {c['resumed_from_previous_run']} files done by an earlier run" if
                c.get("resumed_from_previous_run") else "") + ")"]
    if c.get("ood_flagged"):
        lines.append(f"  WARNING: {c['ood_flagged']} image(s) flagged out of distribution (unlike the model's training "
                     "data; its findings there are unreliable; see the ood_flag column)")
    if c["positives"]:
        lines.append("  positives per finding: " + ", ".join(f"{k} {v}" for k, v in c["positives"].items()))
    for reason, n in sorted(c["skip_reasons"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  skipped {n:4d}: {reason}")
    for stage, n in sorted(c["error_stages"].items()):
        lines.append(f"  FAILED  {n:4d} at {stage} (see errors.csv)")
    if "sr_written" in c:
        lines.append(f"  SR: {c['sr_written']} written" + (f", {c['sr_failed']} failed (sr_errors.csv)"
                                                          if c["sr_failed"] else ""))
    if "seg_written" in c:
        lines.append(f"  SEG: {c['seg_written']} written" + (f", {c['seg_failed']} failed (seg_errors.csv)"
                                                            if c["seg_failed"] else ""))
    pacs = c.get("pacs") or {}
    if "source" in pacs:
        lines.append(f"  PACS {pacs['source']}: {pacs['studies_found']} studies, {pacs['retrieved']} instances "
                     f"retrieved, {pacs['already_in_spool']} already in the spool"
                     + (f", {pacs['retrieve_failed']} FAILED (retrieve_errors.csv)" if pacs["retrieve_failed"] else ""))
    if "send_to" in pacs:
        lines.append(f"  sent to {pacs['send_to']}: {pacs['sent']} new, {pacs['already_sent']} sent before"
                     + (f", {pacs['send_failed']} FAILED (send_errors.csv)" if pacs["send_failed"] else ""))
    lines.append(f"  outputs: {result.output}/  (predictions.csv, predictions.jsonl, status.csv, errors.csv, "
                 f"run.json, {LOG_NAME}" + (", sr/" if "sr" in result.files else "")
                 + (", heatmaps/" if "heatmaps" in result.files else "")
                 + (", seg/" if "seg" in result.files else "") + ")")
    lines.append("  research use only - not for diagnosis")
    if result.exit_code == 3:
        lines.append(f"  exit code 3: {c['error']} input(s) failed" +
                     (f" and {c.get('sr_failed', 0)} SR(s)" if c.get("sr_failed") else "") +
                     (f", {c.get('seg_failed', 0)} SEG(s)" if c.get("seg_failed") else "") +
                     (f", {pacs['retrieve_failed']} retrieve(s)" if pacs.get("retrieve_failed") else "") +
                     (f", {pacs['send_failed']} send(s)" if pacs.get("send_failed") else ""))
    elif result.exit_code == 4:
        lines.append("  exit code 4: no input was an image this model could predict on (see status.csv)")
    return "\n".join(lines)
