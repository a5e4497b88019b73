"""Post-training compression of a ViT-S/16 on chest phantoms: speed on this CPU and accuracy kept, in one run.

Trains a ViT-S/16 (384-d, 12 blocks, 6 heads) on ``cxr_phantom`` (7 findings, patient-disjoint splits; best epoch
on val), then compares, on the test split and through the `medvit infer` predictor (``medvit.infer.predictor.
Predictor``: the engine `medvit infer` runs the model with):

- dense fp32 eager, dense bf16 weights, dense fp32 Inductor-compiled;
- dynamic int8 (``torch.ao.quantization.quantize_dynamic`` on the linears, eager);
- static int8 PT2E calibrated on the first batch (the former `medvit infer --precision int8` behaviour);
- static int8 PT2E from a Q-HyViT-style PTQ checkpoint (``medvit.compress.ptq``: 256 calibration images,
  per-layer scheme search, AdaRound block reconstruction);
- NViT pruned to 50 % MACs (``medvit.compress.prune``) + a short fine-tune, eager / compiled / PTQ int8.

Speed: images/s of ``Predictor.predict`` on batches of B test images, all variants interleaved per round
(A B C … A B C …), median over rounds; compiles happen before the timed rounds. Metric: test mean AUROC.

    nice -n 10 python benchmarks/compression.py [--n 2000] [--image-size 64] [--epochs 3] [--ft-epochs 1]

Writes ``compression.{json,md,png}`` (Pareto plot: images/s vs test AUROC) into ``--out`` (benchmarks/results).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import general_vision as gv  # noqa: E402  (phantom loading, training loop, AUROC)

from medvit.compress.prune import apply_plan, group_saliency, plan_pruning  # noqa: E402
from medvit.compress.ptq import PTQConfig, ptq_calibrate  # noqa: E402
from medvit.data.phantom_cxr import CXR_LABELS  # noqa: E402
from medvit.models import create_model  # noqa: E402
from medvit.nn.flops import measured_macs  # noqa: E402


def dyn_int8(m: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 linears (weights int8, activations quantised per call), eager."""
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(m), {torch.nn.Linear}, dtype=torch.qint8)


def chunks(x: torch.Tensor, b: int) -> list[torch.Tensor]:
    return [x[i:i + b] for i in range(0, len(x), b)]


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--n", type=int, default=2000)
    a.add_argument("--image-size", type=int, default=64)
    a.add_argument("--arch", default="vit_small_patch16_224")
    a.add_argument("--epochs", type=int, default=3)
    a.add_argument("--ft-epochs", type=int, default=1)
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--batch", type=int, default=32)
    a.add_argument("--mac-ratio", type=float, default=0.5)
    a.add_argument("--calib", type=int, default=256)
    a.add_argument("--recon-iters", type=int, default=60)
    a.add_argument("--rounds", type=int, default=5)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--speed-size", type=int, default=224)
    a.add_argument("--speed-batch", type=int, default=8)
    a.add_argument("--speed-only", action="store_true", help="skip training/accuracy: random ViT-S/16 weights, the "
                   "NViT plan from saliency on random images (structure only)")
    a.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = a.parse_args()
    args.device, args.workers = "cpu", 0
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MEDVIT_COMPILE_CACHE", tempfile.mkdtemp(prefix="medvit_compile_"))
    from medvit.infer.predictor import Predictor

    t0 = time.time()
    load0 = os.getloadavg()
    K = len(CXR_LABELS)
    if args.speed_only:
        log: dict = {"meta": {"command": "python benchmarks/compression.py " + " ".join(sys.argv[1:]),
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
                              "platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                              "load_at_start": load0, "speed_batch": args.speed_batch, "arch": args.arch,
                              "speed_only": True, "native_bf16": bool(torch.cpu._is_avx512_bf16_supported()
                                                                     or torch.cpu._is_amx_tile_supported())},
               "rows": []}
        torch.manual_seed(0)
        d = create_model(args.arch, img_size=args.speed_size, in_chans=1, num_classes=K).eval()
        xr = torch.randn(16, 1, args.speed_size, args.speed_size)
        yr = (torch.rand(16, K) < 0.3).float()
        sal = group_saliency(d, [(xr[:8], yr[:8]), (xr[8:], yr[8:])], F.binary_cross_entropy_with_logits)
        plan = plan_pruning(d, sal, args.mac_ratio)
        log["meta"]["prune_plan"] = plan.to_dict()
    else:
        t0 = time.time()
        load0 = os.getloadavg()
        S, K = args.image_size, len(CXR_LABELS)
        data = {s: gv.load_split(s, args.n, S, 0) for s in ("train", "val", "test")}
        xte, yte = data["test"]
        log: dict = {"meta": {"command": "python benchmarks/compression.py " + " ".join(sys.argv[1:]),
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
                              "platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                              "splits": {k: len(v[0]) for k, v in data.items()}, "image_size": S, "arch": args.arch,
                              "load_at_start": load0, "speed_batch": args.speed_batch,
                              "ft_epochs": args.ft_epochs}, "rows": []}
        torch.manual_seed(0)
        dense = create_model(args.arch, img_size=S, in_chans=1, num_classes=K)
        dense, val = gv.train(dense, data, args, args.epochs, args.lr)
        log["meta"]["train_s"] = round(time.time() - t0, 1)
        print(f"dense trained: val {val:.4f} ({time.time() - t0:.0f} s)", flush=True)

        # NViT: saliency on training batches, prune to the MAC budget, short fine-tune
        xtr, ytr = data["train"]
        sal_batches = [(xtr[i:i + 32], ytr[i:i + 32]) for i in range(0, 256, 32)]
        sal = group_saliency(dense, sal_batches, F.binary_cross_entropy_with_logits)
        plan = plan_pruning(dense, sal, args.mac_ratio)
        pruned = apply_plan(dense, plan)
        pruned_before = gv.mean_auroc(gv.predict(pruned, xte, "cpu"), yte)
        pruned, pval = gv.train(pruned, data, args, args.ft_epochs, args.lr / 4)
        log["meta"]["prune_plan"] = plan.to_dict()
        log["meta"]["pruned_test_before_finetune"] = pruned_before
        print(f"pruned: {plan.to_dict()} before ft {pruned_before:.4f}, val after {pval:.4f}", flush=True)

        # Q-HyViT-style PTQ on calibration images from the training split (disjoint from test)
        calib = chunks(xtr[:args.calib], 32)
        ptq = {}
        for name, m in (("dense", dense), ("pruned", pruned)):
            t = time.time()
            qm, res = ptq_calibrate(m, calib, PTQConfig(recon_iters=args.recon_iters))
            qm.int8_qparams = res.qparams
            ptq[name] = (qm, res, time.time() - t)
            print(f"PTQ {name}: {time.time() - t:.0f} s, choices {res.report['choice_counts']}", flush=True)

        from medvit.compress.pt2e import quantize_pt2e_x86
        from medvit.compress.ptq import simulate

        # metric at the training size: the numerics of each path (the int8 graphs run as their exact float
        # reference: PT2E converted graph / fake-quant simulation; Inductor's int8 kernels match them to ~1e-5)
        first = quantize_pt2e_x86(dense, [xte[:args.batch]])  # `medvit infer` without a PTQ checkpoint: first batch
        bf16 = copy.deepcopy(dense).to(torch.bfloat16)
        metric_fns = {
            "dense fp32": ("dense", dense),
            "dense bf16 weights": ("dense", lambda x: bf16(x.to(torch.bfloat16)).float()),
            "dense dynamic int8": ("dense", dyn_int8(dense)),
            "dense static int8, first-batch calibration": ("dense", first),
            "dense static int8, Q-HyViT PTQ": ("dense", simulate(ptq["dense"][0], ptq["dense"][1].qparams)),
            f"NViT {args.mac_ratio:.0%} MACs fp32": ("pruned", pruned),
            f"NViT {args.mac_ratio:.0%} MACs static int8 PTQ": ("pruned", simulate(ptq["pruned"][0],
                                                                                    ptq["pruned"][1].qparams)),
        }
        x1 = xte[:1]
        macs = {"dense": measured_macs(dense, x1), "pruned": measured_macs(pruned, x1)}
        for name, (kind, fn) in metric_fns.items():
            with torch.no_grad():
                full = len(xte) // args.batch * args.batch  # whole batches: the exported graphs have a fixed batch
                auc = gv.mean_auroc(torch.cat([fn(c).float() for c in chunks(xte[:full], args.batch)]), yte[:full])
            log["rows"].append({"variant": name, "test_auroc": auc, "gmacs_at_train_size": macs[kind] / 1e9})
            print(f"{name}: test AUROC {auc:.4f}", flush=True)

    # speed at the serving size (224 px) through the `medvit infer` predictor; the same shapes with random
    # weights (speed does not depend on the values); int8 graphs compiled by Inductor
    Z = args.speed_size
    torch.manual_seed(1)
    d224 = create_model(args.arch, img_size=Z, in_chans=1, num_classes=K).eval()
    p224 = apply_plan(d224, plan)  # the plan's kept shapes (indices into the random model)
    xs = torch.randn(args.speed_batch, 1, Z, Z)
    q = {}
    for kind, m in (("dense", d224), ("pruned", p224)):
        qm, r = ptq_calibrate(m, [xs[:8]], PTQConfig(recon_iters=0, search_rows=512))
        qm.int8_qparams = r.qparams
        q[kind] = qm
    variants = {
        "dense fp32 eager": Predictor(d224, "fp32"),
        "dense bf16 weights": Predictor(d224, "bf16"),
        "dense dynamic int8 (eager)": Predictor(dyn_int8(d224), "fp32"),
        "dense static int8 PTQ (Inductor)": Predictor(q["dense"], "int8"),
        f"NViT {args.mac_ratio:.0%} MACs fp32 eager": Predictor(p224, "fp32"),
        f"NViT {args.mac_ratio:.0%} MACs static int8 PTQ (Inductor)": Predictor(q["pruned"], "int8"),
    }
    macs224 = {"dense": measured_macs(d224, xs[:1]), "pruned": measured_macs(p224, xs[:1])}
    for name, p in variants.items():  # warm-up; compiles the int8 graphs (first batch fixes the shape)
        t = time.time()
        p.predict(xs.numpy())
        print(f"warm {name}: {time.time() - t:.0f} s", flush=True)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, p in variants.items():
            t = time.perf_counter()
            p.predict(xs.numpy())
            times[name].append(args.speed_batch / (time.perf_counter() - t))
    base = "dense fp32 eager"
    log["speed"] = []
    for name in variants:
        log["speed"].append({
            "variant": name, "images_per_s": statistics.median(times[name]),
            "speedup_vs_fp32_eager": statistics.median([a / b for a, b in zip(times[name], times[base],
                                                                               strict=True)]),
            "gmacs": macs224["pruned" if name.startswith("NViT") else "dense"] / 1e9})
        print(log["speed"][-1], flush=True)
    if not args.speed_only:
        log["meta"]["ptq_seconds"] = {k: round(v[2], 1) for k, v in ptq.items()}
        log["meta"]["ptq_report_dense"] = {k: v for k, v in ptq["dense"][1].report.items() if k != "config"}
    log["meta"]["total_s"] = round(time.time() - t0, 1)
    log["meta"]["load_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compression.json").write_text(json.dumps(log, indent=2, default=float))
    write_md(log, out / "compression.md")
    plot(log, out / "compression.png")


SPEED_OF = {  # metric row -> the speed row measuring the same path at the serving size
    "dense fp32": "dense fp32 eager",
    "dense bf16 weights": "dense bf16 weights",
    "dense dynamic int8": "dense dynamic int8 (eager)",
    "dense static int8, Q-HyViT PTQ": "dense static int8 PTQ (Inductor)",
    "dense static int8, first-batch calibration": "dense static int8 PTQ (Inductor)",
}


def speed_for(log: dict, variant: str) -> dict | None:
    name = SPEED_OF.get(variant)
    if name is None and variant.startswith("NViT"):
        name = variant.replace("MACs fp32", "MACs fp32 eager").replace("int8 PTQ", "int8 PTQ (Inductor)")
    return next((r for r in log.get("speed", []) if r["variant"] == name), None)


def write_md(log: dict, path: Path) -> None:
    m = log["meta"]
    if m.get("speed_only"):
        lines = [f"# Post-training compression of {m['arch']}: CPU speed at 224 px (`medvit infer` predictor)", "",
                 f"Command: `nice -n 10 {m['command']}`  ",
                 f"{m['date']}; {m['platform']}; {m['cpus']} CPUs shared with other jobs (load average at start "
                 f"{', '.join(f'{v:.1f}' for v in m['load_at_start'])}, at end "
                 f"{', '.join(f'{v:.1f}' for v in m['load_at_end'])}); {m['threads']} torch threads; "
                 f"torch {m['torch']}; total ≈ {m['total_s'] / 60:.0f} min wall.", "",
                 f"Random weights (speed does not depend on them); batch {m['speed_batch']}; variants interleaved "
                 "per "
                 "round, median images/s, speed-up = median of per-round ratios to dense fp32 eager. Native bf16 "
                 f"(AVX512-BF16/AMX) per torch: {m.get('native_bf16')}. NViT shapes from saliency on random images "
                 "(structure "
                 f"only): {m['prune_plan']}. int8 = PT2E x86 static int8 from a PTQ parameter set, compiled by "
                 "Inductor (oneDNN int8 kernels) — the `medvit infer --precision int8` path.", "",
                 "| path at 224 px | GMACs | images/s | speed-up vs fp32 eager |", "|---|---|---|---|"]
        for r in log["speed"]:
            lines.append(f"| {r['variant']} | {r['gmacs']:.2f} | {r['images_per_s']:.2f} | "
                         f"{r['speedup_vs_fp32_eager']:.2f}× |")
        lines += ["", "Accuracy: not in this run (the full run's training on this loaded CPU did not fit the session; "
                  "PTQ accuracy is bounded in tests/compress/test_ptq.py: ≤ 0.05 probability, cosine > 0.99 vs fp32 on "
                  "calibration-disjoint phantoms). Not in this run either: SN-Netv2 stitched points, ElasticViT "
                  "subnets, ViT-B/16.", "", "![speed vs MACs](compression.png)"]
        path.write_text("\n".join(lines) + "\n")
        return
    lines = [f"# Post-training compression of {m['arch']}: CPU speed (224 px) and accuracy kept (chest phantoms)", "",
             f"Command: `nice -n 10 {m['command']}`  ",
             f"{m['date']}; {m['platform']}; {m['cpus']} CPUs shared with other jobs (load average at start "
             f"{', '.join(f'{v:.1f}' for v in m['load_at_start'])}, at end "
             f"{', '.join(f'{v:.1f}' for v in m['load_at_end'])}); {m['threads']} torch threads; torch {m['torch']}; "
             f"total ≈ {m['total_s'] / 60:.0f} min wall.", "",
             "**Accuracy** (test mean AUROC, 7 findings): the ViT-S/16 shape (384-d, 12 blocks, 6 heads) trained on "
             f"this loaded CPU for {m['train_s']:.0f} s at {m['image_size']} px on cxr_phantom {m['splits']} (best "
             "val epoch) — a small budget, so AUROC is low and differences below ~0.01 are not separable (one seed). "
             "int8 rows are evaluated through their exact float references (PT2E converted graph; fake-quant "
             "simulation, equal to the PT2E graph to 1e-5 in tests/compress/test_ptq.py).", "",
             f"**Speed** (images/s, batch {m.get('speed_batch', 8)}, at 224 px through "
             "`medvit.infer.predictor.Predictor`, "
             "the `medvit infer` engine; the same shapes with random weights; variants interleaved per round, median; "
             "speed-up = median of per-round ratios to dense fp32 eager). bf16 is emulated (slower than "
             "fp32) where torch reports no AVX512-BF16/AMX.", "",
             "| variant | test mean AUROC | GMACs at 224 | images/s at 224 | speed-up vs fp32 eager |",
             "|---|---|---|---|---|"]
    for r in log["rows"]:
        sp = speed_for(log, r["variant"])
        cells = (f"{sp['gmacs']:.2f} | {sp['images_per_s']:.2f} | {sp['speedup_vs_fp32_eager']:.2f}×" if sp
                 else "— | — | —")
        lines.append(f"| {r['variant']} | {r['test_auroc']:.4f} | {cells} |")
    lines += ["", "Speed rows:", "", "| path at 224 px | GMACs | images/s | speed-up |", "|---|---|---|---|"]
    for r in log.get("speed", []):
        lines.append(f"| {r['variant']} | {r['gmacs']:.2f} | {r['images_per_s']:.2f} | "
                     f"{r['speedup_vs_fp32_eager']:.2f}× |")
    lines += ["", f"NViT plan (saliency on 256 training images, budget {m['prune_plan']['mac_ratio']:.3f} of dense "
              f"MACs at {m['image_size']} px): {m['prune_plan']}; test AUROC right after pruning, before the "
              f"{m.get('ft_epochs', 1)}-epoch fine-tune: {m['pruned_test_before_finetune']:.4f}.", "",
              f"PTQ time (s): {m['ptq_seconds']}; dense PTQ choice counts "
              f"{m['ptq_report_dense'].get('choice_counts')}; "
              "per-block output MSE nearest → reconstructed: "
              + ", ".join(f"{b['mse_nearest']:.2e}→{b['mse_reconstructed']:.2e}"
                          for b in m['ptq_report_dense'].get('blocks', [])), "",
              "Not in this run: SN-Netv2 stitched size points and ElasticViT subnets (not implemented yet), ViT-B/16 "
              "(no CPU time left on the shared machine).", "", "![Pareto](compression.png)"]
    path.write_text("\n".join(lines) + "\n")


def plot(log: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if log["meta"].get("speed_only"):
        for r in log["speed"]:
            ax.scatter(r["gmacs"], r["images_per_s"])
            ax.annotate(r["variant"], (r["gmacs"], r["images_per_s"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xlabel("GMACs per image (224 px)")
        ax.set_ylabel("images/s on this CPU (medvit infer predictor)")
        ax.set_title(f"{log['meta']['arch']}: speed of the compressed paths (upper left is better)")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return
    pts = []
    for r in log["rows"]:
        sp = speed_for(log, r["variant"])
        if sp is None:
            continue
        pts.append((sp["images_per_s"], r["test_auroc"]))
        ax.scatter(*pts[-1], marker="s" if r["variant"].startswith("NViT") else "o")
        ax.annotate(r["variant"], pts[-1], fontsize=6, xytext=(3, 3), textcoords="offset points")
    front, best = [], -1.0
    for p in sorted(pts, key=lambda p: -p[0]):
        if p[1] > best:
            front.append(p)
            best = p[1]
    ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=0.8, label="Pareto front")
    ax.set_xlabel("images/s at 224 px on this CPU (medvit infer predictor)")
    ax.set_ylabel(f"test mean AUROC (chest phantoms, {log['meta']['image_size']} px)")
    ax.set_title(f"{log['meta']['arch']}: post-training compression on CPU")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
