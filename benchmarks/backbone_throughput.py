"""Inference throughput of medvit ViT-S/16 and ViT-B/16 at 224 vs HF transformers ViTModel.

Same configuration on both sides (depth, width, heads, MLP, qkv bias, 3 channels, 224 px, patch 16,
random weights), fp32 and bf16 autocast, measured in one run with the two models interleaved
(A B A B ...) so machine load affects both alike; the ratio medvit/HF is the figure that matters.

    python benchmarks/backbone_throughput.py [--batch 16] [--rounds 5] [--threads 2]

Writes benchmarks/results/backbone_throughput.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from medvit.models import create_model

SIZES = {"vit_small_patch16_224": (384, 12, 6), "vit_base_patch16_224": (768, 12, 12)}


def hf_model(dim: int, depth: int, heads: int):
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads, intermediate_size=4 * dim,
                    image_size=224, patch_size=16, num_channels=3, qkv_bias=True, layer_norm_eps=1e-6)
    return ViTModel(cfg, add_pooling_layer=False).eval()


def time_once(fn, x, precision: str, iters: int) -> float:
    """Images/s of ``iters`` forward passes of ``fn(x)``."""
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn(x)
        dt = time.perf_counter() - t0
    return iters * x.shape[0] / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    ap.add_argument("--iters", type=int, default=2, help="forward passes per timing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/backbone_throughput")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 224, 224)
    rows = []
    for name, (dim, depth, heads) in SIZES.items():
        mv = create_model(name, num_classes=0, norm_eps=1e-6).eval()
        hf = hf_model(dim, depth, heads)
        fns = {
            "medvit": lambda t, m=mv: m.forward_features(t),
            "hf": lambda t, m=hf: m(pixel_values=t).last_hidden_state,
        }
        for precision in ("fp32", "bf16"):
            for f in fns.values():  # warm-up (allocator, oneDNN kernels)
                time_once(f, x, precision, 1)
            res: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(args.rounds):
                for k, f in fns.items():
                    res[k].append(time_once(f, x, precision, args.iters))
            med = {k: statistics.median(v) for k, v in res.items()}
            ratios = [a / b for a, b in zip(res["medvit"], res["hf"])]
            row = dict(model=name, precision=precision, medvit_img_s=round(med["medvit"], 2),
                       hf_img_s=round(med["hf"], 2), ratio=round(med["medvit"] / med["hf"], 3),
                       ratio_min=round(min(ratios), 3), ratio_max=round(max(ratios), 3))
            rows.append(row)
            print(row, flush=True)
    cmd = "python " + " ".join(sys.argv)
    meta = dict(command=cmd, torch=torch.__version__, threads=args.threads, batch=args.batch, rounds=args.rounds,
                cpu=platform.processor() or platform.machine(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        "# Backbone inference throughput: medvit vs HF transformers ViTModel",
        "",
        f"Command: `{cmd}`  ",
        f"torch {meta['torch']}, {args.threads} threads, batch {args.batch}, 224x224x3, random weights, "
        f"median of {args.rounds} interleaved rounds ({meta['date']}). Shared 2-core machine: absolute "
        "images/s are noisy, the ratio (same run, interleaved) is the figure.",
        "",
        "| model | precision | medvit img/s | HF img/s | medvit / HF (median) | per-round range |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['precision']} | {r['medvit_img_s']} | {r['hf_img_s']} | "
                     f"{r['ratio']} | {r['ratio_min']}–{r['ratio_max']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
