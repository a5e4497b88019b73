"""VideoMAE V2 dual masking vs plain (tube-masked, full-decoder) 3D MAE: pretraining cost and quality.

Arms (same encoder, decoder, data, steps, seeds; only the decoder mask differs):

- ``plain``: encoder tube mask ρ_e = 0.9, decoder given every encoder-masked token (VideoMAE V1;
  ``decoder_mask_ratio = 0``; decoder sequence N);
- ``dual``: the same encoder mask plus the running-cell decoder mask ρ_d = 0.5 (decoder sequence
  N_vis + N/2), loss on the decoded encoder-masked tokens.

Data: ``ct_volume_phantom`` (1 × 16 × 32 × 32 voxels, tubelets 2×4×4 → 8×8×8 = 512 tokens), train split for
pretraining. Quality, after the same number of steps, per seed:
(a) held-out reconstruction MSE (normalised-pixel target) over **all** encoder-masked tokens of the val volumes
with fixed masks (identical for both arms); (b) linear probe (scikit-learn logistic regression on mean-pooled
encoder tokens of the unmasked volume, C chosen on val) for the nodule label, test AUROC.
Cost (one interleaved timing run on fresh models, 1 thread): training images/s (median of rounds, arms
alternating), FLOPs of one training step (``torch.utils.flop_counter``) and peak activation memory (bytes saved
for backward, summed through ``torch.autograd.graph.saved_tensors_hooks``; CPU has no allocator peak per arm).

    python benchmarks/videomae_dual.py timing                    # cost + random-init baseline
    python benchmarks/videomae_dual.py seed --seed 0              # one seed: plain 300 steps, dual 480 steps
    python benchmarks/videomae_dual.py report                    # videomae_dual.{md,png} from the parts

Each part writes its JSON (``videomae_dual_timing.json``, ``videomae_dual_seed<S>.json``) into ``--out``
(benchmarks/results), so every gate call stays short. The dual arm runs longer (480 steps ≈ the plain arm's 300 in
wall time) with the val reconstruction MSE every 30 steps: quality at equal steps, at equal time, and the time to
reach the plain arm's quality.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvit.data import build_dataset
from medvit.models.videomae import create_dual_mae

ARMS = {"plain": 0.0, "dual": 0.5}


def build(arm: str, seed: int, args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_dual_mae("vit_small_patch16_96_3d", img_size=(args.depth, args.size, args.size),
                           patch_size=(2, 4, 4), embed_dim=96, depth=4, num_heads=4, in_chans=1,
                           decoder_dim=96, decoder_depth=args.decoder_depth, decoder_heads=4, mask_ratio=0.9,
                           decoder_mask_ratio=ARMS[arm], encoder_mask="tube", loss_on="masked", norm_pix_loss=True)


def load(split: str, args: argparse.Namespace) -> tuple[torch.Tensor, np.ndarray]:
    ds = build_dataset("ct_volume_phantom", split, n=args.n, seed=0, image_size=args.size, depth=args.depth)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    y = np.array([int(ds[i]["label"]) for i in range(len(ds))])
    return (x - 0.23) / 0.36, y


def train(model: torch.nn.Module, x: torch.Tensor, steps: int, batch: int, seed: int, xv: torch.Tensor,
          eval_every: int, snapshot_at: int = 0, snapshot: Any = None) -> tuple[list[float], list[list[float]]]:
    """AdamW (blr-free lr 1.5e-3, betas 0.9/0.95, wd 0.05), 10 % linear warmup then cosine over ``steps``; random
    left-right flips. Every ``eval_every`` steps the val reconstruction MSE is appended to the curve; at step
    ``snapshot_at`` ``snapshot(model)`` is called (quality at the other arm's step count)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1.5e-3, betas=(0.9, 0.95),
                            weight_decay=0.05)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))
    g = torch.Generator().manual_seed(seed)
    losses, curve = [], []
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        xb = x[idx]
        flip = torch.rand(batch, generator=g) < 0.5
        xb = torch.where(flip[:, None, None, None, None], xb.flip(-1), xb)
        loss = model(xb)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            model.eval()
            curve.append([step, float(model.reconstruction_loss(xv, torch.Generator().manual_seed(1234)))])
            model.train()
        if step == snapshot_at and snapshot is not None:
            snapshot(model)
            model.train()
    return losses, curve


@torch.no_grad()
def quality(model: torch.nn.Module, data: dict[str, tuple[torch.Tensor, np.ndarray]]) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    model.eval()
    xv = data["val"][0]
    rec = float(model.reconstruction_loss(xv, torch.Generator().manual_seed(1234)))
    feats = {s: model.encoder.forward_features(x)[:, model.num_prefix_tokens:].mean(1).numpy()
             for s, (x, _) in data.items()}
    sc = StandardScaler().fit(feats["train"])
    best = (-1.0, 1.0)
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(sc.transform(feats["train"]), data["train"][1])
        auc = roc_auc_score(data["val"][1], clf.predict_proba(sc.transform(feats["val"]))[:, 1])
        best = max(best, (auc, c))
    clf = LogisticRegression(C=best[1], max_iter=2000).fit(sc.transform(feats["train"]), data["train"][1])
    test_auc = roc_auc_score(data["test"][1], clf.predict_proba(sc.transform(feats["test"]))[:, 1])
    return {"val_recon_mse": rec, "probe_val_auroc": best[0], "probe_C": best[1], "probe_test_auroc": test_auc}


def step_cost(model: torch.nn.Module, xb: torch.Tensor) -> dict[str, float]:
    from torch.utils.flop_counter import FlopCounterMode

    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(xb, *model.make_masks(len(xb), model.grid_size, xb.device, torch.Generator().manual_seed(0)))
    out["loss"].backward()
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as fc:
        model(xb)["loss"].backward()
    model.zero_grad(set_to_none=True)
    n_dec = int(out["pred"].shape[1]) + int((~out["mask"][0]).sum())
    return {"gflops_per_step": fc.get_total_flops() / 1e9, "saved_activation_mb": saved[0] / 2**20,
            "decoder_tokens": n_dec}


def timing(args: argparse.Namespace, x: torch.Tensor) -> dict[str, dict[str, float]]:
    models = {a: build(a, 0, args) for a in ARMS}
    opts = {a: torch.optim.AdamW(m.parameters(), lr=1e-4) for a, m in models.items()}
    g = torch.Generator().manual_seed(0)
    per = {a: [] for a in ARMS}
    for r in range(args.rounds + 1):
        for a, m in models.items():
            t0 = time.perf_counter()
            for _ in range(args.timing_steps):
                xb = x[torch.randint(0, len(x), (args.batch,), generator=g)]
                loss = m(xb)["loss"]
                opts[a].zero_grad(set_to_none=True)
                loss.backward()
                opts[a].step()
            if r:  # round 0 warms up
                per[a].append(args.timing_steps * args.batch / (time.perf_counter() - t0))
    out = {}
    for a in ARMS:
        out[a] = {"images_per_s": statistics.median(per[a]), "rounds": per[a],
                  **step_cost(models[a], x[: args.batch])}
    out["ratio_dual_over_plain"] = {
        "images_per_s": statistics.median(d / p for d, p in zip(per["dual"], per["plain"])),
        "gflops_per_step": out["dual"]["gflops_per_step"] / out["plain"]["gflops_per_step"],
        "saved_activation_mb": out["dual"]["saved_activation_mb"] / out["plain"]["saved_activation_mb"]}
    return out


def mean_sd(v: list[float]) -> str:
    return f"{statistics.mean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["timing", "seed", "report"], help="timing run, one seed's training, or the "
                                                                       "report from the saved parts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps-plain", type=int, default=300)
    ap.add_argument("--steps-dual", type=int, default=480, help="longer: equal wall time / equal-quality search")
    ap.add_argument("--eval-every", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--decoder-depth", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--timing-steps", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "report":
        write_md(out)
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t_start, load_start = time.time(), os.getloadavg()
    res: dict = {"config": vars(args), "host": platform.processor() or platform.machine(),
                 "threads": torch.get_num_threads(), "loadavg_start": load_start}
    data = {s: load(s, args) for s in ("train", "val", "test")}
    if args.part == "timing":
        res["timing"] = timing(args, data["train"][0])
        res["random_init"] = quality(build("plain", 0, args), data)  # what pretraining must beat
        name = "videomae_dual_timing.json"
    else:
        res["runs"] = {}
        for arm, steps in (("plain", args.steps_plain), ("dual", args.steps_dual)):
            m = build(arm, args.seed, args)
            snap: dict = {}
            t0 = time.perf_counter()
            losses, curve = train(m, data["train"][0], steps, args.batch, args.seed, data["val"][0],
                                  args.eval_every, args.steps_plain if arm == "dual" else 0,
                                  lambda mm, snap=snap: snap.update(quality(mm, data)))
            q = quality(m, data)
            q.update(seed=args.seed, steps=steps, train_wall_s=time.perf_counter() - t0, losses=losses, curve=curve,
                     at_plain_steps=snap or None)
            res["runs"][arm] = q
            print(arm, args.seed, {k: v for k, v in q.items() if k not in ("losses", "curve")}, flush=True)
        name = f"videomae_dual_seed{args.seed}.json"
    res["loadavg_end"], res["wall_s"] = os.getloadavg(), time.time() - t_start
    (out / name).write_text(json.dumps(res, indent=1))


def write_md(out: Path) -> None:
    tim = json.loads((out / "videomae_dual_timing.json").read_text())
    seeds = [json.loads(p.read_text()) for p in sorted(out.glob("videomae_dual_seed*.json"))]
    t, a = tim["timing"], tim["config"]
    sc = seeds[0]["config"] if seeds else a
    lines = ["# VideoMAE V2 dual masking vs plain 3D MAE (tube 0.9; decoder running cell 0.5 vs full)", "",
             "Commands (each through `/work/cpu.sh -n 1`, 1 thread):", "",
             "    python benchmarks/videomae_dual.py timing", *[
                 f"    python benchmarks/videomae_dual.py seed --seed {r['config']['seed']} --steps-plain "
                 f"{r['config']['steps_plain']} --steps-dual {r['config']['steps_dual']}" for r in seeds],
             "    python benchmarks/videomae_dual.py report", "",
             f"ct_volume_phantom 1×{a['depth']}×{a['size']}×{a['size']} (n={a['n']}: train/val/test 70/15/15 %), "
             f"tubelets 2×4×4 → 8×8×8 = 512 tokens, encoder 96-d × 4 blocks, decoder 96-d × {a['decoder_depth']} "
             f"blocks, batch {a['batch']}, normalised-pixel target. Both arms: encoder tube mask 0.9 (56 visible "
             "tokens); plain = decoder given every encoder-masked token (VideoMAE V1); dual = running-cell decoder "
             "mask 0.5, loss on the decoded encoder-masked tokens.",
             f"CPU budget: timing {tim['wall_s'] / 60:.1f} min + " + " + ".join(
                 f"{r['wall_s'] / 60:.1f}" for r in seeds) + " min (one core each). Load average (1 min) at the "
             "starts/ends: " + ", ".join(f"{r['loadavg_start'][0]:.1f}/{r['loadavg_end'][0]:.1f}"
                                           for r in [tim, *seeds]) + " (2 shared cores; other helpers' jobs ran).",
             "", "## Cost (fresh models, arms interleaved per round)", "",
             "| arm | decoder tokens (incl. visible) | training images/s | GFLOPs / step (fwd+bwd) | "
             "saved activations MB |", "|---|---|---|---|---|"]
    for arm in ARMS:
        r = t[arm]
        lines.append(f"| {arm} | {r['decoder_tokens']} | {r['images_per_s']:.1f} | {r['gflops_per_step']:.2f} | "
                     f"{r['saved_activation_mb']:.1f} |")
    q = t["ratio_dual_over_plain"]
    lines += ["", f"dual / plain: images/s ×{q['images_per_s']:.2f} (median of per-round ratios), FLOPs "
              f"×{q['gflops_per_step']:.3f}, activations saved for backward ×{q['saved_activation_mb']:.3f} "
              "(CPU has no per-arm allocator peak; the saved-tensor total is the training-memory term that "
              "scales with the decoder sequence).", ""]
    if seeds:
        sp, sd = sc["steps_plain"], sc["steps_dual"]
        rows = {"plain": [r["runs"]["plain"] for r in seeds], "dual": [r["runs"]["dual"] for r in seeds]}
        def at(run: dict, step: int) -> float:
            return next(v for s, v in run["curve"] if s >= step)
        lines += [f"## Quality, mean ± sd over seeds {[r['config']['seed'] for r in seeds]}", "",
                  "Val reconstruction MSE over **all** encoder-masked tokens (fixed masks, same for both arms); "
                  "linear probe = logistic regression on mean-pooled encoder tokens of the unmasked volume, C "
                  "chosen on val, nodule label, test AUROC.", "",
                  "| arm @ steps | val recon MSE | probe val AUROC | probe test AUROC | train wall s (this run) |",
                  "|---|---|---|---|---|",
                  f"| plain @ {sp} | {mean_sd([r['val_recon_mse'] for r in rows['plain']])} | "
                  f"{mean_sd([r['probe_val_auroc'] for r in rows['plain']])} | "
                  f"{mean_sd([r['probe_test_auroc'] for r in rows['plain']])} | "
                  f"{mean_sd([r['train_wall_s'] for r in rows['plain']])} |",
                  f"| dual @ {sp} (same steps) | {mean_sd([at(r, sp) for r in rows['dual']])} | "
                  f"{mean_sd([r['at_plain_steps']['probe_val_auroc'] for r in rows['dual']])} | "
                  f"{mean_sd([r['at_plain_steps']['probe_test_auroc'] for r in rows['dual']])} | — |",
                  f"| dual @ {sd} | {mean_sd([r['val_recon_mse'] for r in rows['dual']])} | "
                  f"{mean_sd([r['probe_val_auroc'] for r in rows['dual']])} | "
                  f"{mean_sd([r['probe_test_auroc'] for r in rows['dual']])} | "
                  f"{mean_sd([r['train_wall_s'] for r in rows['dual']])} |"]
        b = tim["random_init"]
        lines.append(f"| random-init encoder | {b['val_recon_mse']:.4f} | {b['probe_val_auroc']:.4f} | "
                     f"{b['probe_test_auroc']:.4f} | — |")
        per_step = {arm: a["batch"] / t[arm]["images_per_s"] for arm in ARMS}
        ratios, hits = [], []
        for p_run, d_run in zip(rows["plain"], rows["dual"]):
            hit = next((s for s, v in d_run["curve"] if v <= p_run["val_recon_mse"]), None)
            hits.append(hit)
            if hit is not None:
                ratios.append(hit * per_step["dual"] / (sp * per_step["plain"]))
        lines += ["", f"Equal quality: dual steps until its val MSE (checked every {sc['eval_every']} steps) reaches "
                  f"the same seed's plain MSE at {sp} steps: {hits} (None = not within {sd}). Training time to equal "
                  "reconstruction quality, dual / plain (time per step from the timing table): "
                  + (f"{mean_sd(ratios)} over {len(ratios)} seed(s)" if ratios else "not reached") + "."]
    verdict = out / "videomae_dual_verdict.md"  # the human verdict on these figures, kept beside the generated part
    if verdict.is_file():
        lines += ["", verdict.read_text().strip()]
    lines += ["", "![dual vs plain](videomae_dual.png)"]
    (out / "videomae_dual.md").write_text("\n".join(lines) + "\n")
    plot(tim, seeds, out)


def plot(tim: dict, seeds: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    t = tim["timing"]
    cols = {"plain": "tab:gray", "dual": "tab:blue"}
    axes[0].bar(list(ARMS), [t[a]["images_per_s"] for a in ARMS], color=list(cols.values()))
    axes[0].set_ylabel("training images/s (CPU, 1 thread)")
    axes[1].bar(list(ARMS), [t[a]["saved_activation_mb"] for a in ARMS], color=list(cols.values()))
    axes[1].set_ylabel("activations saved for backward (MB)")
    per_step = {a: tim["config"]["batch"] / t[a]["images_per_s"] for a in ARMS}
    for arm in ARMS:
        if not seeds:
            break
        curves = np.array([[v for _, v in r["runs"][arm]["curve"]] for r in seeds])
        steps = np.array([s for s, _ in seeds[0]["runs"][arm]["curve"]])
        axes[2].errorbar(steps * per_step[arm], curves.mean(0), yerr=curves.std(0), color=cols[arm], marker="o",
                         ms=3, label=f"{arm} (mean ± sd, {len(seeds)} seeds)")
    axes[2].set_xlabel("training time (s, from the measured time per step)")
    axes[2].set_ylabel("val reconstruction MSE (all masked tokens)")
    axes[2].legend(fontsize=8)
    fig.suptitle("VideoMAE V2 dual masking vs plain tube-masked 3D MAE (ct_volume_phantom)")
    fig.tight_layout()
    fig.savefig(out / "videomae_dual.png", dpi=110)


if __name__ == "__main__":
    main()
