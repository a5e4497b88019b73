"""``medvit export CKPT --to hf|onnx|torchscript|monai-bundle [--merge-peft] -o DIR`` (:mod:`medvit.tasks.export`)."""

from __future__ import annotations

import argparse
import json

FORMATS = ("hf", "onnx", "torchscript", "monai-bundle")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained model: HF transformers dir, ONNX, TorchScript, MONAI bundle",
                       description="Export a medvit checkpoint or PEFT adapter directory into a format other tools "
                       "load. The outputs of the exported model are checked against medvit's at export time "
                       "(hf <= 1e-5, others <= 1e-4 max |logit difference|) and export.json records the source "
                       "weights' SHA-256.")
    p.add_argument("checkpoint", help="checkpoint directory (model.safetensors + config.json) or adapter directory")
    p.add_argument("--to", required=True, choices=FORMATS, help="format: hf (ViTForImageClassification directory), "
                   "onnx (model.onnx), torchscript (model.ts), monai-bundle (configs/, models/, docs/)")
    p.add_argument("-o", "--output", required=True, help="output folder (must be empty or absent)")
    p.add_argument("--merge-peft", action="store_true", help="fold a LoRA-family adapter into its base weights first")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--tolerance", type=float, default=None, help="max |logit difference| accepted (default: 1e-5 for "
                   "hf, 1e-4 otherwise)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medvit.tasks.export import export

    info = export(args.checkpoint, args.to, args.output, merge_peft=args.merge_peft, tolerance=args.tolerance,
                  overwrite=args.overwrite)
    print(json.dumps(info, indent=2))  # noqa: T201
    return 0
