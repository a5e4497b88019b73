"""MAE pretraining speed: medvit ``MaskedAutoencoder`` vs HF ``ViTMAEForPreTraining``, same ViT-S configuration.

ViT-S/16 encoder (384-d, 12 blocks, 6 heads) at 224x224x3, decoder 512-d x 2 blocks x 16 heads (the thorax-MAE
ViT-S recipe), mask ratio 0.90, batch 32. Both models hold the same weights (HF's converted into medvit) and see the
same images and masking noise. One training step = forward + backward + AdamW step; fp32 and bf16 autocast.
Repeats are interleaved (medvit, HF, medvit, HF, ...) so machine load affects both alike; the median step time is
reported, images/s = batch / median. A torch.profiler table per implementation shows where the time goes.

    nice -n 10 .venv/bin/python benchmarks/mae_speed.py                  # writes benchmarks/results/mae_speed.*
    .venv/bin/python benchmarks/mae_speed.py --batch 4 --repeats 1 --no-write   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(medvit MAE, HF ViTMAEForPreTraining) with identical weights."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    from medvit.models.mae import create_mae
    from medvit.models.mae_convert import mae_state_dict

    cfg = ViTMAEConfig(image_size=args.size, patch_size=16, num_channels=3, hidden_size=384, num_hidden_layers=12,
                       num_attention_heads=6, intermediate_size=1536, decoder_hidden_size=512,
                       decoder_num_hidden_layers=2, decoder_num_attention_heads=16, decoder_intermediate_size=2048,
                       mask_ratio=args.mask_ratio, norm_pix_loss=False, layer_norm_eps=1e-6,
                       attn_implementation="sdpa")
    torch.manual_seed(0)
    hf = ViTMAEForPreTraining(cfg)
    hf.vit.embeddings.patch_embeddings.projection._is_hf_initialized = False  # ecosystem-notes §F.4
    hf.vit.embeddings.initialize_weights()
    hf.decoder.initialize_weights(hf.vit.embeddings.patch_embeddings.num_patches)
    mv = create_mae(preset="mae_vit_small_patch16_dec512d2b", in_chans=3, img_size=args.size,
                    mask_ratio=args.mask_ratio)
    mv.load_state_dict(mae_state_dict(hf.state_dict()))
    return mv.train(), hf.train()


def make_step(model: torch.nn.Module, kind: str, precision: str):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))

    def step(x: torch.Tensor, noise: torch.Tensor) -> float:
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            loss = model(x, noise=noise)["loss"] if kind == "medvit" else model(pixel_values=x, noise=noise).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return step


def profile(step, x: torch.Tensor, noise: torch.Tensor, rows: int = 12) -> list[dict]:
    """Self CPU time per op category and the top ops, for one step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprof

    with tprof(activities=[ProfilerActivity.CPU]) as prof:
        step(x, noise)
    evs = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in evs)
    cats: dict[str, float] = defaultdict(float)
    for e in evs:
        n = e.key
        if any(k in n for k in ("mm", "linear", "addmm", "bmm", "matmul")):
            c = "matmul (linear layers)"
        elif "attention" in n or "sdpa" in n or "flash" in n:
            c = "attention (SDPA)"
        elif "conv" in n:
            c = "patch embedding (conv)"
        elif "layer_norm" in n:
            c = "layer norm"
        elif "gelu" in n:
            c = "GELU"
        elif any(k in n for k in ("gather", "sort", "scatter", "index")):
            c = "masking (sort/gather)"
        elif any(k in n for k in ("adam", "_foreach", "lerp", "addcdiv", "sqrt")):
            c = "optimizer"
        elif any(k in n for k in ("copy", "to", "cat", "clone", "contiguous", "permute", "transpose", "reshape")):
            c = "copies / layout"
        else:
            c = "other elementwise"
        cats[c] += e.self_cpu_time_total
    out = [{"category": k, "ms": v / 1000, "share": v / total} for k, v in sorted(cats.items(), key=lambda t: -t[1])]
    top = sorted(evs, key=lambda e: -e.self_cpu_time_total)[:rows]
    return out + [{"op": e.key, "ms": e.self_cpu_time_total / 1000, "calls": e.count} for e in top]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--mask-ratio", type=float, default=0.9)
    p.add_argument("--repeats", type=int, default=3, help="timed steps per (implementation, precision)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--render", action="store_true", help="rewrite mae_speed.md from mae_speed.json, measure nothing")
    args = p.parse_args()
    if args.render:
        write(json.loads((RESULTS / "mae_speed.json").read_text()))
        return
    torch.set_num_threads(args.threads)
    mv, hf = build(args)
    n = (args.size // 16) ** 2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    noise = torch.rand(args.batch, n, generator=g)
    with torch.no_grad():
        lm, lh = mv(x, noise=noise)["loss"].item(), hf(pixel_values=x, noise=noise).loss.item()
    print(f"same weights and noise: loss medvit {lm:.6f} HF {lh:.6f}", flush=True)
    results: dict = {"loss_check": {"medvit": lm, "hf": lh}, "runs": {}}
    for prec in args.precisions:
        steps = {"medvit": make_step(mv, "medvit", prec), "hf": make_step(hf, "hf", prec)}
        for k in steps:  # warm-up
            steps[k](x, noise)
        times: dict[str, list[float]] = {"medvit": [], "hf": []}
        for _ in range(args.repeats):
            for k in ("medvit", "hf"):
                t0 = time.perf_counter()
                steps[k](x, noise)
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        ips = {k: args.batch / v for k, v in med.items()}
        results["runs"][prec] = {"step_s": times, "median_step_s": med, "images_per_s": ips,
                                 "speedup_vs_hf": ips["medvit"] / ips["hf"],
                                 "profile_medvit": profile(steps["medvit"], x, noise),
                                 "profile_hf": profile(steps["hf"], x, noise)}
        print(f"{prec}: medvit {ips['medvit']:.2f} img/s, HF {ips['hf']:.2f} img/s, "
              f"ratio {ips['medvit'] / ips['hf']:.3f}", flush=True)
    results["env"] = {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or "cpu",
                      "load_avg": os.getloadavg(), "batch": args.batch, "size": args.size,
                      "mask_ratio": args.mask_ratio}
    results["command"] = " ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1]] + sys.argv)
    if not args.no_write:
        write(results)


ANALYSIS = """\
- **Goal not reached: medvit is on par with HF, not 1.3x faster.** Medians: fp32 0.99x, bf16 1.11x; with three
  interleaved repeats on a machine shared with other jobs, differences of about 10 % are within the spread of the
  repeats (table above), so the honest summary is parity.
- Both run the same arithmetic: with the same weights and noise the losses agree to 1e-6, and the profiles have the
  same shape. In fp32 two thirds of the time is matrix multiplication (the 2-block 512-d decoder over all 197 tokens
  costs about three times the 12-block encoder over 20 visible tokens); fusing q/k/v into one GEMM (medvit) instead of
  three (HF) changes the call count (116 vs 172 mm) but hardly the time.
- In bf16 the largest single item is PyTorch's CPU flash-attention *backward* (about a third of the step in both).
  Measured separately: for the encoder's 20-token sequences an explicit softmax(QK^T)V is 4.6x faster than the CPU
  flash kernel in bf16 (5 ms vs 23 ms per layer at batch 32), for the decoder's 197 tokens 1.5x. Choosing the
  explicit path for short bf16 CPU sequences in `medvit/nn/attention.py` (the shared backbone module, not part of
  this issue) is the clearest remaining lever, worth roughly 10-20 % in bf16.
- Tried and dropped: `torch.compile` of the whole MAE (inductor, CPU) took 400 s to compile under this load and gained
  about 7 % per step at batch 8; an explicit-attention decoder block did not beat SDPA at 197 tokens once the
  softmax is kept in fp32. The training loop uses torch's fused AdamW (3x faster optimizer step on CPU); the
  benchmark gives both models the same (multi-tensor) AdamW so that it compares the models.
- No GPU was lent to this task, so there are no CUDA figures; the same script runs on CUDA after changing the
  autocast device."""


def write(r: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mae_speed.json").write_text(json.dumps(r, indent=2, default=float))
    e = r["env"]
    lines = ["# MAE pretraining speed: medvit vs HF ViTMAEForPreTraining", "",
             f"ViT-S/16 encoder + 512-d x 2 decoder, {e['size']}x{e['size']}x3, mask ratio {e['mask_ratio']}, batch "
             f"{e['batch']}, forward + backward + AdamW step, same weights and masking noise "
             f"(loss medvit {r['loss_check']['medvit']:.6f} vs HF {r['loss_check']['hf']:.6f}).",
             f"CPU only (no GPU lent to this task), torch {e['torch']}, {e['threads']} thread(s); the 2-core machine "
             f"was shared with other jobs (load average {e['load_avg'][0]:.1f}), so repeats were interleaved and "
             "the median is reported.", "",
             "| precision | medvit img/s | HF img/s | medvit / HF |", "|---|---|---|---|"]
    for prec, run in r["runs"].items():
        ips = run["images_per_s"]
        lines.append(f"| {prec} | {ips['medvit']:.2f} | {ips['hf']:.2f} | **{run['speedup_vs_hf']:.2f}x** |")
    lines += ["", "Step times of every repeat (s), interleaved:", "", "| precision | medvit | HF |", "|---|---|---|"]
    for prec, run in r["runs"].items():
        lines.append(f"| {prec} | {', '.join(f'{t:.1f}' for t in run['step_s']['medvit'])} | "
                     f"{', '.join(f'{t:.1f}' for t in run['step_s']['hf'])} |")
    lines += ["", "## Reading", "", ANALYSIS]
    for prec, run in r["runs"].items():
        lines += ["", f"## Where the time goes ({prec}, one step, self CPU time)", "",
                  "| category | medvit ms | medvit share | HF ms | HF share |", "|---|---|---|---|---|"]
        hf = {c["category"]: c for c in run["profile_hf"] if "category" in c}
        for c in (c for c in run["profile_medvit"] if "category" in c):
            h = hf.get(c["category"], {"ms": 0.0, "share": 0.0})
            lines.append(f"| {c['category']} | {c['ms']:.0f} | {c['share']:.0%} | {h['ms']:.0f} | {h['share']:.0%} |")
        lines += ["", "Top ops, medvit:", "", "| op | ms | calls |", "|---|---|---|"]
        lines += [f"| {o['op']} | {o['ms']:.0f} | {o['calls']} |" for o in run["profile_medvit"] if "op" in o]
    lines += ["", "Command:", "", "```", "nice -n 10 " + r["command"], "```", ""]
    (RESULTS / "mae_speed.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
