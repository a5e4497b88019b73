"""``medvit convert SRC OUT --arch NAME``: foreign weights (timm/MAE .pth, HF, safetensors) -> medvit checkpoint."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert timm/MAE/HF ViT weights into a medvit checkpoint directory",
                       description="Convert weights to a medvit checkpoint (model.safetensors + config.json). "
                       ".pth files (also MAE/DeiT training checkpoints with argparse args) are read with torch's "
                       "weights-only unpickler plus a small allow-list of plain-data globals only.")
    p.add_argument("src", help="weights file (.pth/.pt/.bin/.safetensors) or HF model directory")
    p.add_argument("out", help="output checkpoint directory")
    p.add_argument("--arch", required=True, help="registered backbone, e.g. vit_small_patch16_224")
    p.add_argument("--in-chans", type=int, default=None, help="adapt the patch embedding to this many channels")
    p.add_argument("--num-classes", type=int, default=0, help="classifier outputs (0: keep none)")
    p.add_argument("--global-pool", choices=["token", "avg"], default=None, help="pooling of the converted model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medvit.models import create_model, save_checkpoint

    src = Path(args.src)
    if src.is_dir():
        cands = [src / n for n in ("model.safetensors", "pytorch_model.bin")]
        src = next((c for c in cands if c.is_file()), src)
    kw = {"num_classes": args.num_classes}
    if args.in_chans:
        kw["in_chans"] = args.in_chans
    if args.global_pool:
        kw["global_pool"] = args.global_pool
    model = create_model(args.arch, pretrained=str(src), **kw)
    out = save_checkpoint(model, args.out, extra={"converted_from": str(src)})
    print(f"wrote {out}")  # noqa: T201
    return 0
