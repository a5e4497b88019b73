"""``medvit data synth``: write a synthetic phantom dataset (images, labels CSV, masks, reports, splits)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset utilities (synthetic phantoms)",
                       description="Dataset utilities.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    s = dsub.add_parser("synth", help="write chest X-ray or retina OCT phantoms with ground truth",
                        description="Generate procedural phantoms with labels, masks, reports and patient-disjoint "
                        "train/val/test splits. Deterministic: the same arguments give byte-identical files.")
    s.add_argument("--kind", choices=["cxr", "retina"], required=True, help="chest X-ray or retina OCT B-scan")
    s.add_argument("--n", type=int, required=True, help="number of images")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--format", choices=["dicom", "png", "nifti"], default="dicom", help="image file format")
    s.add_argument("--seed", type=int, default=0, help="dataset seed")
    s.add_argument("--size", type=int, default=None, help="image size in pixels (default 512 cxr, 256 retina)")
    s.add_argument("--no-masks", action="store_true", help="skip mask files")
    s.add_argument("--monochrome1", action="store_true", help="chest DICOM as MONOCHROME1 (inverted storage)")
    s.add_argument("--jpeg2000", action="store_true", help="DICOM with JPEG 2000 lossless compression")
    s.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                   help="phantom calibration knob (repeatable; docs/phantoms.md), e.g. --knob lesion_contrast=3 "
                   "--knob label_noise=0.1 --knob label_noise_splits=train")
    s.add_argument("--demo-knobs", action="store_true",
                   help="draw with the demo pipeline's calibrated knobs (the phantoms `medvit demo` and the demo "
                   "model / CXR expert were trained on); --knob values are applied on top")
    p.set_defaults(func=lambda args: run_synth(args) if args.data_command == "synth" else p.print_help())


def run_synth(args: argparse.Namespace) -> int:
    from medvit.data.phantom_common import parse_knob_assignments
    from medvit.data.phantom_datasets import check_phantom_args
    from medvit.data.synth import write_synth

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    knobs: dict = {}
    if args.demo_knobs:
        if args.kind != "cxr":
            raise ValueError("--demo-knobs: the demo pipeline draws chest phantoms (--kind cxr)")
        from medvit.cli.demo_cmd import pipeline_knobs

        knobs.update(pipeline_knobs())
    knobs.update(parse_knob_assignments(args.knob, "--knob"))
    # the checks `medvit run` applies to dataset_args, naming the option (a chest-only knob for retina, which of
    # prevalence / healthy_fraction, --seed -1, sizes that would not fit in memory); nothing is written before
    flags = {"n": "--n", "seed": "--seed", "image_size": "--size"}
    check_phantom_args(args.kind, {"n": args.n, "seed": args.seed, **knobs}
                       | ({"image_size": args.size} if args.size is not None else {}),
                       name=lambda k: flags.get(k, f"--knob {k}"), where="medvit data synth")
    res = write_synth(args.kind, args.n, args.out, fmt=args.format, seed=args.seed, image_size=args.size,
                      masks=not args.no_masks, monochrome1=args.monochrome1, jpeg2000=args.jpeg2000, **knobs)
    print(f"wrote {res['n']} {args.kind} phantoms to {res['out']} in {res['seconds']:.1f}s "  # noqa: T201
          f"({res['images_per_s']:.1f} images/s); splits {res['splits']}"
          + (f"; knobs {knobs}" if knobs else ""))
    return 0
