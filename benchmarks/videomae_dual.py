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

    python benchmarks/videomae_dual.py --seeds 0 1 2 --steps 400

Writes ``videomae_dual.{json,md,png}`` into ``--out`` (benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

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


def train(model: torch.nn.Module, x: torch.Tensor, steps: int, batch: int, seed: int) -> list[float]:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1.5e-3, betas=(0.9, 0.95),
                            weight_decay=0.05)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))
    g = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
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
    return losses


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
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--decoder-depth", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--timing-steps", type=int, default=5)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t_start = time.time()
    load_start = os.getloadavg()
    data = {s: load(s, args) for s in ("train", "val", "test")}
    res: dict = {"config": vars(args), "host": platform.processor() or platform.machine(),
                 "threads": torch.get_num_threads(), "loadavg_start": load_start}
    res["timing"] = timing(args, data["train"][0])
    if not args.skip_quality:
        base = quality(build("plain", 0, args), data)  # random-init encoder: what pretraining must beat
        res["random_init"] = base
        runs: dict[str, list[dict]] = {a: [] for a in ARMS}
        for seed in args.seeds:
            for a in ARMS:
                m = build(a, seed, args)
                t0 = time.perf_counter()
                losses = train(m, data["train"][0], args.steps, args.batch, seed)
                q = quality(m, data)
                q.update(seed=seed, train_wall_s=time.perf_counter() - t0, final_train_loss=statistics.mean(
                    losses[-20:]), losses=losses)
                runs[a].append(q)
                print(a, seed, {k: v for k, v in q.items() if k != "losses"}, flush=True)
        res["runs"] = runs
    res["loadavg_end"] = os.getloadavg()
    res["wall_s"] = time.time() - t_start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "videomae_dual.json").write_text(json.dumps(res, indent=1))
    write_md(res, out)


def write_md(res: dict, out: Path) -> None:
    t = res["timing"]
    a = res["config"]
    lines = ["# VideoMAE V2 dual masking vs plain 3D MAE (tube 0.9; decoder running cell 0.5 vs full)", "",
             f"`python benchmarks/videomae_dual.py --seeds {' '.join(map(str, a['seeds']))} --steps {a['steps']}` "
             f"(through `/work/cpu.sh -n 1`, OMP threads {res['threads']}); ct_volume_phantom 1×{a['depth']}×"
             f"{a['size']}×{a['size']}, tubelets 2×4×4 (512 tokens), encoder 96-d × 4 blocks, decoder 96-d × "
             f"{a['decoder_depth']} blocks, batch {a['batch']}. Wall {res['wall_s'] / 60:.1f} min; load average "
             f"start {res['loadavg_start'][0]:.2f}, end {res['loadavg_end'][0]:.2f} (2 shared cores, other helpers' "
             "jobs running).", "",
             "## Cost (fresh models, arms interleaved per round)", "",
             "| arm | decoder tokens | training images/s | GFLOPs / step (fwd+bwd) | saved activations MB |",
             "|---|---|---|---|---|"]
    for arm in ARMS:
        r = t[arm]
        lines.append(f"| {arm} | {r['decoder_tokens']} | {r['images_per_s']:.1f} | {r['gflops_per_step']:.2f} | "
                     f"{r['saved_activation_mb']:.1f} |")
    q = t["ratio_dual_over_plain"]
    lines += ["", f"dual / plain: images/s ×{q['images_per_s']:.2f} (median of per-round ratios), FLOPs "
              f"×{q['gflops_per_step']:.3f}, saved activations ×{q['saved_activation_mb']:.3f}.", ""]
    if "runs" in res:
        lines += [f"## Quality after {a['steps']} steps, mean ± sd over seeds {a['seeds']}", "",
                  "| arm | val reconstruction MSE (all masked tokens) | probe val AUROC | probe test AUROC | "
                  "train wall s |", "|---|---|---|---|---|"]
        for arm, runs in res["runs"].items():
            lines.append(f"| {arm} | {mean_sd([r['val_recon_mse'] for r in runs])} | "
                         f"{mean_sd([r['probe_val_auroc'] for r in runs])} | "
                         f"{mean_sd([r['probe_test_auroc'] for r in runs])} | "
                         f"{mean_sd([r['train_wall_s'] for r in runs])} |")
        b = res["random_init"]
        lines.append(f"| random-init encoder | {b['val_recon_mse']:.4f} | {b['probe_val_auroc']:.4f} | "
                     f"{b['probe_test_auroc']:.4f} | — |")
    (out / "videomae_dual.md").write_text("\n".join(lines) + "\n")
    plot(res, out)


def plot(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    t = res["timing"]
    axes[0].bar(list(ARMS), [t[a]["images_per_s"] for a in ARMS], color=["tab:gray", "tab:blue"])
    axes[0].set_ylabel("training images/s (CPU, 1 thread)")
    axes[1].bar(list(ARMS), [t[a]["saved_activation_mb"] for a in ARMS], color=["tab:gray", "tab:blue"])
    axes[1].set_ylabel("activations saved for backward (MB)")
    if "runs" in res:
        for arm, c in zip(ARMS, ["tab:gray", "tab:blue"]):
            curves = np.array([r["losses"] for r in res["runs"][arm]])
            k = 10
            sm = np.array([np.convolve(cv, np.ones(k) / k, mode="valid") for cv in curves])
            axes[2].plot(sm.mean(0), color=c, label=f"{arm} (train loss on its decoded tokens)")
            axes[2].fill_between(np.arange(sm.shape[1]), sm.min(0), sm.max(0), color=c, alpha=0.2)
            rec = [r["val_recon_mse"] for r in res["runs"][arm]]
            axes[2].axhline(statistics.mean(rec), color=c, ls="--", label=f"{arm} val recon (all masked)")
        axes[2].set_xlabel("step")
        axes[2].set_ylabel("MSE (normalised pixels)")
        axes[2].legend(fontsize=7)
    fig.suptitle("VideoMAE V2 dual masking vs plain tube-masked 3D MAE (ct_volume_phantom)")
    fig.tight_layout()
    fig.savefig(out / "videomae_dual.png", dpi=110)


if __name__ == "__main__":
    main()
