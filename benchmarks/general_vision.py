"""General-vision components against the plain ViT: speed (CPU images/s, analytic GMACs) and accuracy.

``throughput``: ViT-S/16 at 224 vs EViT (r = 1, 0.7, 0.5), LookupViT (7×7 compressed tokens), LGViT
(bounds: every sample out at the first exit / none early), ChannelViT with 1..3 channels present and
FMViT-S (training form vs re-parameterised; MACs measured by torch's FLOP counter, no analytic formula);
random weights, batch B, models interleaved per round (A B C … A B C …), median images/s and the
median of the per-round ratios to the ViT.

``accuracy``: chest phantoms (``cxr_phantom``, 7 findings, patient-disjoint splits; best epoch chosen
on val, test reported once): ViT from scratch; EViT r = 0.7 / 0.5 fine-tuned from that ViT with the
keep-rate warm-up; LookupViT from scratch; LGViT exits trained on the frozen ViT (stage 2) and
evaluated at several thresholds; ChannelViT + HCS vs ViT on the 3-window phantoms
(``cxr_multiwindow_phantom``) with every subset of windows present at test time (ViT: missing
windows zero-filled; also a ViT trained with random window zeroing).

    python benchmarks/general_vision.py throughput [--threads 8] [--batch 16] [--rounds 5] [--name NAME]
    python benchmarks/general_vision.py accuracy [--n 8000] [--image-size 96] [--epochs 30] [--device cuda]
        [--seeds 0 1 2] [--arms vit evit lookupvit lgvit channelvit] [--dataset-args JSON] [--name STEM]
    python benchmarks/general_vision.py report RUN.json [RUN.json ...] [--name general_vision_accuracy_seeds]

``--seeds``: every seed draws its own phantoms (dataset seed = the seed), its own initialisation and batch
order; within a seed every arm sees the same data and splits, so arms are compared pairwise per seed (test
AUROC difference to the ViT with a paired bootstrap over test images) and over seeds (``report``: mean ± sd,
medvit.eval.stats.compare, a plot of test AUROC against measured images/s). Measured images/s: each arm's
inference on the same test batch, interleaved rounds, median, in the training process (its thread count).

Writes ``general_vision_{throughput,accuracy}.{json,md}`` into ``--out`` (benchmarks/results).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medvit.data.phantom_cxr import CXR_LABELS
from medvit.data.phantom_datasets import PhantomDataset
from medvit.data.phantom_multiwindow import CXR_WINDOWS, apply_window
from medvit.models import create_model
from medvit.nn.early_exit import exit_distillation_loss
from medvit.nn.flops import measured_macs, patch_embed_macs, vit_macs
from medvit.nn.token_reorganize import keep_rate_schedule


# ---------------------------------------------------------------------------------------------- throughput
def vit_analytic(m) -> int:
    n = m.patch_embed.num_patches
    ratio = m.blocks[0].mlp.fc1.out_features / m.embed_dim
    pe = patch_embed_macs(n, m.in_chans, m.patch_size, m.embed_dim)
    return vit_macs([m.num_prefix_tokens + n] * len(m.blocks), m.embed_dim, ratio, num_classes=m.num_classes) + pe


def throughput(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, K = args.batch, 7
    x3 = torch.randn(B, 3, 224, 224)
    vit = create_model("vit_small_patch16_224", num_classes=K).eval()
    evit = create_model("evit_small_patch16_224", num_classes=K).eval()
    evit.load_state_dict(vit.state_dict())
    look = create_model("lookupvit_small_patch16_224", num_classes=K).eval()
    lg = create_model("lgvit_small_patch16_224", num_classes=K).eval()
    cv = create_model("channelvit_small_patch16_224", num_classes=K).eval()
    cases = {  # name -> (fn, analytic MACs per image)
        "vit_small (baseline)": (lambda: vit(x3), vit_analytic(vit)),
        "evit_small r=1.0": (lambda: evit.forward_head(evit.forward_features(x3, keep_rate=1.0)),
                             evit.analytic_macs(keep_rate=1.0)),
        "evit_small r=0.7": (lambda: evit.forward_head(evit.forward_features(x3, keep_rate=0.7)),
                             evit.analytic_macs(keep_rate=0.7)),
        "evit_small r=0.5": (lambda: evit.forward_head(evit.forward_features(x3, keep_rate=0.5)),
                             evit.analytic_macs(keep_rate=0.5)),
        "lookupvit_small 7x7": (lambda: look(x3), look.analytic_macs()),
        "lgvit_small all exit at exit 1 (tau=0)": (lambda: lg.forward_early_exit(x3, 0.0),
                                                   lg._macs_until(0, 196)),
        "lgvit_small none early (tau>1)": (lambda: lg.forward_early_exit(x3, 2.0),
                                           lg._macs_until(len(lg.exits), 196)),
    }
    for c in (1, 2, 3):
        xc, ids = x3[:, :c], torch.arange(c)
        cases[f"channelvit_small {c} of 3 channels"] = (lambda xc=xc, ids=ids: cv(xc, ids), cv.analytic_macs(c))
    fm = create_model("fmvit_small_patch16_224", num_classes=K).eval()
    fm_fused = copy.deepcopy(fm).reparameterize()
    x1 = x3[:1]
    cases["fmvit_small training form (measured MACs)"] = (lambda: fm(x3), measured_macs(fm, x1))
    cases["fmvit_small re-parameterised (measured MACs)"] = (lambda: fm_fused(x3), measured_macs(fm_fused, x1))
    load_start = os.getloadavg()
    with torch.inference_mode():
        for fn, _ in cases.values():
            fn()  # warm-up
        res: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.rounds):
            for k, (fn, _) in cases.items():
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    fn()
                res[k].append(args.iters * B / (time.perf_counter() - t0))
    base = res["vit_small (baseline)"]
    rows = []
    for k, (_, macs) in cases.items():
        ratios = [a / b for a, b in zip(res[k], base)]
        rows.append(dict(model=k, img_s=round(statistics.median(res[k]), 2),
                         ratio_vs_vit=round(statistics.median(ratios), 3),
                         ratio_min=round(min(ratios), 3), ratio_max=round(max(ratios), 3),
                         gmacs=round(macs / 1e9, 3), gmacs_vs_vit=round(macs / cases["vit_small (baseline)"][1], 3)))
        print(rows[-1], flush=True)
    meta = dict(command="python " + " ".join(sys.argv), torch=torch.__version__, threads=args.threads, batch=B,
                rounds=args.rounds, iters=args.iters, cpu=platform.processor() or platform.machine(),
                cores=os.cpu_count(), when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                load_avg_start=[round(v, 2) for v in load_start],
                load_avg_end=[round(v, 2) for v in os.getloadavg()])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = [
        "# General-vision components vs the plain ViT-S/16: CPU throughput and analytic MACs", "",
        f"Command: `{meta['command']}`  ",
        f"torch {meta['torch']}, {args.threads} threads, batch {B}, 224×224, random weights, 7 classes, "
        f"inference mode, fp32; median of {args.rounds} interleaved rounds ({meta['when']}). "
        "GMACs: the shared analytic formula (`medvit.nn.flops`), per image (FMViT: measured by torch's FLOP "
        f"counter). {meta['cores']} CPU cores; load average (1, 5, 15 min) {meta['load_avg_start']} at the start, "
        f"{meta['load_avg_end']} at the end.", "",
        "| model | img/s | ratio vs ViT (median, per-round range) | GMACs | GMACs vs ViT |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['img_s']} | {r['ratio_vs_vit']} ({r['ratio_min']}–{r['ratio_max']}) | "
                     f"{r['gmacs']} | {r['gmacs_vs_vit']} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------- accuracy
def load_split(split: str, n: int, size: int, workers: int, seed: int = 0,
               **gen_kw) -> tuple[torch.Tensor, torch.Tensor]:
    ds = PhantomDataset("cxr", split, n=n, seed=seed, image_size=size, **gen_kw)
    dl = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=workers, collate_fn=_keep_list)
    xs, ys = [], []
    for batch in dl:
        xs.append(torch.stack([b["image"] for b in batch]))
        ys.append(torch.stack([b["label"] for b in batch]))
    return torch.cat(xs), torch.cat(ys)


def _keep_list(batch: list) -> list:
    return batch


def windows(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) radiographs -> (N, 3, S, S) lung / soft-tissue / bone windows (as cxr_multiwindow_phantom)."""
    return torch.cat([apply_window(x, c, w) for c, w in CXR_WINDOWS.values()], dim=1)


def mean_auroc(logits: torch.Tensor, y: torch.Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    p, t = logits.float().sigmoid().cpu().numpy(), y.cpu().numpy()
    return float(np.mean([roc_auc_score(t[:, k], p[:, k]) for k in range(t.shape[1]) if 0 < t[:, k].sum() < len(t)]))


def predict(fn, x: torch.Tensor, dev: str, bs: int = 256) -> torch.Tensor:
    with torch.no_grad(), torch.autocast(dev.split(":")[0], torch.bfloat16, enabled=dev.startswith("cuda")):
        return torch.cat([fn(x[i : i + bs].to(dev)).float() for i in range(0, len(x), bs)])


def train(model, data, args, epochs: int, lr: float, forward=None, loss_fn=None, on_epoch=None, params=None):
    """AdamW + cosine, bf16 autocast on CUDA; returns the model at the best val AUROC epoch and that AUROC."""
    dev = args.device
    (xtr, ytr), (xva, yva) = data["train"], data["val"]
    model.to(dev)
    forward = forward or model
    params = [p for p in (params or model.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(xtr) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    best, best_state = -1.0, None
    g = torch.Generator().manual_seed(getattr(args, "seed", 0))
    for ep in range(epochs):
        if on_epoch:
            on_epoch(ep)
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), args.batch):
            idx = perm[i : i + args.batch]
            xb, yb = xtr[idx].to(dev), ytr[idx].to(dev)
            flip = torch.rand(len(xb), device=dev) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            with torch.autocast(dev.split(":")[0], torch.bfloat16, enabled=dev.startswith("cuda")):
                loss = loss_fn(xb, yb) if loss_fn else F.binary_cross_entropy_with_logits(forward(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
        model.eval()
        auc = mean_auroc(predict(forward, xva, dev), yva)
        if auc > best:
            best, best_state = auc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model.eval(), best


def image_bootstrap_diff(pa: torch.Tensor, pb: torch.Tensor, y: torch.Tensor, n_resamples: int,
                         seed: int) -> dict:
    """Paired bootstrap over test images of mean AUROC(a) − mean AUROC(b) (same images, one seed).

    Args:
        pa, pb: (N, K) logits of two models on the same N test images; y: (N, K) 0/1 labels.
    Returns:
        dict diff (on all images), ci_low / ci_high (95 % percentile interval, scipy.stats.bootstrap, paired).
    """
    from scipy.stats import bootstrap

    a, b, t = pa.float().sigmoid().cpu().numpy(), pb.float().sigmoid().cpu().numpy(), y.cpu().numpy()

    def stat(idx):
        i = idx.astype(int)
        return _auroc_np(a[i], t[i]) - _auroc_np(b[i], t[i])

    res = bootstrap((np.arange(len(t)),), stat, vectorized=False, n_resamples=n_resamples, method="percentile",
                    rng=np.random.default_rng(seed))
    return dict(diff=round(float(stat(np.arange(len(t)))), 4), ci_low=round(float(res.confidence_interval.low), 4),
                ci_high=round(float(res.confidence_interval.high), 4), n_resamples=n_resamples)


def _auroc_np(p: np.ndarray, t: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(np.mean([roc_auc_score(t[:, k], p[:, k]) for k in range(t.shape[1]) if 0 < t[:, k].sum() < len(t)]))


def measure_img_s(fns: dict, x: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median images/s of each ``fn(x)`` over ``rounds`` interleaved rounds (inference mode, after a warm-up)."""
    res: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn(x)
        for _ in range(rounds):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn(x)
                res[k].append(len(x) / (time.perf_counter() - t0))
    return {k: round(statistics.median(v), 2) for k, v in res.items()}


def accuracy(args: argparse.Namespace) -> None:
    """Run the accuracy study once per seed in ``args.seeds``; rows carry their ``seed``."""
    t_start = time.time()
    dev = args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log: dict = dict(meta=dict(command="python " + " ".join(sys.argv), torch=torch.__version__, device=dev,
                               gpu=torch.cuda.get_device_name() if dev.startswith("cuda") else None,
                               threads=torch.get_num_threads(), n=args.n, image_size=args.image_size,
                               patch=args.patch, embed_dim=args.embed_dim, depth=args.depth, heads=args.heads,
                               epochs=args.epochs, ft_epochs=args.ft_epochs, batch=args.batch, seeds=args.seeds,
                               arms=args.arms, dataset_args=args.dataset_args,
                               when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               load_avg_start=[round(v, 2) for v in os.getloadavg()]),
                     results=[], seconds={})
    json_path = out / f"{args.name}.json"

    def done(name: str, **kw) -> None:
        row = dict(model=name, **kw)
        log["results"].append(row)
        log["seconds"]["elapsed"] = round(time.time() - t_start, 1)
        print(row, flush=True)
        json_path.write_text(json.dumps(log, indent=1))

    def over_budget(step: str) -> bool:
        if time.time() - t_start > args.budget_s:
            log.setdefault("skipped", []).append(step)
            print(f"budget exhausted: skipping {step}", flush=True)
            return True
        return False

    for seed in args.seeds:
        accuracy_one_seed(args, seed, log, done, over_budget)
    log["meta"]["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    log["seconds"]["total"] = round(time.time() - t_start, 1)
    json_path.write_text(json.dumps(log, indent=1))
    write_accuracy_md(log, out / f"{args.name}.md")


def accuracy_one_seed(args: argparse.Namespace, seed: int, log: dict, done, over_budget) -> None:
    """One seed of the study: phantoms drawn with dataset seed ``seed``; every model initialised after
    ``torch.manual_seed(seed)``; batch order from a generator seeded with ``seed``."""
    dev = args.device
    args.seed = seed
    t0 = time.time()
    data = {s: load_split(s, args.n, args.image_size, args.workers, seed=seed, **args.dataset_args)
            for s in ("train", "val", "test")}
    log["seconds"][f"generate_seed{seed}"] = round(time.time() - t0, 1)
    log["meta"]["split_sizes"] = {s: len(v[0]) for s, v in data.items()}
    xte, yte = data["test"]
    S = args.image_size
    shape = dict(img_size=S, patch_size=args.patch, embed_dim=args.embed_dim, depth=args.depth,
                 num_heads=args.heads, num_classes=len(CXR_LABELS), drop_path_rate=0.1)
    n_patch = (S // args.patch) ** 2
    arms = set(args.arms)
    timed: dict = {}  # row name -> (fn(x) -> logits, row index); timed together at the end of the seed
    test_logits: dict[str, torch.Tensor] = {}

    def seeded(name: str, **kw):
        torch.manual_seed(seed)
        return create_model(name, **kw)

    def tested(name: str, fn, **kw) -> None:
        logits = predict(fn, xte, dev)
        test_logits[name] = logits
        kw = dict(seed=seed, **kw, test_auroc=round(mean_auroc(logits, yte), 4))
        if "vit (scratch)" in test_logits and name != "vit (scratch)" and args.bootstrap:
            kw["paired_vs_vit"] = image_bootstrap_diff(logits, test_logits["vit (scratch)"], yte, args.bootstrap, seed)
        timed[name] = fn
        done(name, **kw)

    # 1. plain ViT from scratch (the reference: EViT and LGViT start from it)
    vit = seeded("vit_tiny_patch16_224", in_chans=1, **shape)
    vit, val = train(vit, data, args, args.epochs, args.lr)
    base_macs = vit_analytic(vit)
    tested("vit (scratch)", vit, val_auroc=round(val, 4), gmacs=round(base_macs / 1e9, 4), macs_vs_vit=1.0)

    # 2. EViT fine-tuned from the ViT (keep-rate warm-up over the first half)
    for r in (0.7, 0.5) if "evit" in arms else ():
        if over_budget(f"evit r={r} seed {seed}"):
            break
        ev = seeded("evit_small_patch16_224", in_chans=1, keep_rate=r, **shape)
        ev.load_state_dict(vit.state_dict())
        ev.to(dev).eval()
        zero_shot = mean_auroc(predict(ev, xte, dev), yte)
        half = max(1, args.ft_epochs // 2)
        ev, val = train(ev, data, args, args.ft_epochs, args.lr / 4,
                        on_epoch=lambda ep, m=ev, r=r, h=half: setattr(m, "keep_rate", keep_rate_schedule(ep, r, 0, h)))
        ev.keep_rate = r
        tested(f"evit r={r} (fine-tuned from the vit)", ev, val_auroc=round(val, 4),
               test_auroc_before_finetune=round(zero_shot, 4), gmacs=round(ev.analytic_macs(n_patch) / 1e9, 4),
               macs_vs_vit=round(ev.analytic_macs(n_patch) / base_macs, 3))

    # 3. LookupViT from scratch
    if "lookupvit" in arms and not over_budget(f"lookupvit seed {seed}"):
        lk = seeded("lookupvit_small_patch16_224", in_chans=1, compressed_grid=args.compressed, **shape)
        lk, val = train(lk, data, args, args.epochs, args.lr)
        tested(f"lookupvit {args.compressed}x{args.compressed} (scratch)", lk, val_auroc=round(val, 4),
               gmacs=round(lk.analytic_macs() / 1e9, 4), macs_vs_vit=round(lk.analytic_macs() / base_macs, 3))

    # 4. LGViT: stage 1 = the ViT above; stage 2 trains the exits on the frozen backbone
    if "lgvit" in arms and not over_budget(f"lgvit seed {seed}"):
        D = args.depth
        exit_layers = tuple(range(1, D - 1))
        lg = seeded("lgvit_small_patch16_224", in_chans=1, exit_layers=exit_layers, **shape)
        missing = lg.load_state_dict(vit.state_dict(), strict=False)
        assert all(k.startswith("exits.") for k in missing.missing_keys) and not missing.unexpected_keys
        lg.set_training_stage(2)

        def lg_loss(xb, yb, m=lg):
            outs = m.forward_exits(xb)
            final = outs[-1].float()
            return sum(F.binary_cross_entropy_with_logits(o.float(), yb)
                       + exit_distillation_loss(o.float(), final, multilabel=True) for o in outs[:-1])

        lg, _ = train(lg, data, args, args.ft_epochs, args.lr, loss_fn=lg_loss,
                      forward=lambda xb, m=lg: m.forward_exits(xb)[0])
        lg.to(dev).eval()
        per_exit = [mean_auroc(predict(lambda xb, j=j: lg.forward_exits(xb)[j], xte, dev), yte)
                    for j in range(len(lg.exits) + 1)]
        for tau in args.taus:
            res = [lg.forward_early_exit(xte[i : i + 256].to(dev), tau, "sigmoid") for i in range(0, len(xte), 256)]
            macs = torch.cat([r.macs for r in res]).double()
            exits = torch.cat([r.exit_index for r in res]).cpu()
            tested(f"lgvit tau={tau} (exits after blocks {exit_layers[0] + 1}-{exit_layers[-1] + 1} of {D}, "
                   "frozen vit)", lambda xb, t=tau: lg.forward_early_exit(xb, t, "sigmoid").logits,
                   gmacs=round(macs.mean().item() / 1e9, 4), macs_vs_vit=round(macs.mean().item() / base_macs, 3),
                   exit_fraction=[round(float((exits == j).float().mean()), 3) for j in range(len(lg.exits) + 1)],
                   per_exit_test_auroc=[round(a, 4) for a in per_exit])

    # measured images/s of every arm of this seed on the same test batch, interleaved rounds
    if args.time_rounds and not dev.startswith("cuda"):
        xb = xte[: args.time_batch].to(dev)
        speed = measure_img_s(timed, xb, args.time_rounds)
        for row in log["results"]:
            if row.get("seed") == seed and row["model"] in speed:
                row["img_s"] = speed[row["model"]]
                row["img_s_vs_vit"] = round(speed[row["model"]] / speed["vit (scratch)"], 3)
        print({"seed": seed, "img_s": speed}, flush=True)

    # 5. ChannelViT + HCS vs ViT on 3-window phantoms, every subset of windows present at test time
    if "channelvit" in arms and not over_budget(f"channelvit seed {seed}"):
        wdata = {s: (windows(x), y) for s, (x, y) in data.items()}
        xw = wdata["test"][0]
        shape3 = dict(shape, in_chans=3)
        cv = seeded("channelvit_small_patch16_224", hcs=True, **shape3)
        cv, cv_val = train(cv, wdata, args, args.epochs, args.lr)
        vw = seeded("vit_tiny_patch16_224", **shape3)
        vw, vw_val = train(vw, wdata, args, args.epochs, args.lr)
        vd = seeded("vit_tiny_patch16_224", **shape3)

        def zero_drop_loss(xb, yb, m=vd):  # HCS-like augmentation for the ViT: zero a random window subset
            keep = torch.zeros(3, dtype=torch.bool)
            keep[torch.randperm(3)[: int(torch.randint(1, 4, (1,)))]] = True
            return F.binary_cross_entropy_with_logits(m(xb * keep.to(xb.device)[None, :, None, None]).float(), yb)

        vd, vd_val = train(vd, wdata, args, args.epochs, args.lr, loss_fn=zero_drop_loss)
        names = list(CXR_WINDOWS)
        for k in (3, 2, 1):
            for sub in itertools.combinations(range(3), k):
                ids = torch.tensor(sub)
                mask = torch.zeros(3)
                mask[ids] = 1
                a_cv = mean_auroc(predict(lambda xb, i=ids: cv(xb[:, i], i.to(xb.device)), xw, dev), yte)
                w = mask[None, :, None, None].to(dev)
                a_vw = mean_auroc(predict(lambda xb, w=w: vw(xb * w), xw, dev), yte)
                a_vd = mean_auroc(predict(lambda xb, w=w: vd(xb * w), xw, dev), yte)
                done(f"windows present: {'+'.join(names[i] for i in sub)}", seed=seed, channelvit_hcs=round(a_cv, 4),
                     vit_zero_fill=round(a_vw, 4), vit_trained_with_zeroing=round(a_vd, 4),
                     channelvit_gmacs=round(cv.analytic_macs(k) / 1e9, 4), vit_gmacs=round(vit_analytic(vw) / 1e9, 4))
        log["meta"]["val_auroc_all_windows"] = dict(channelvit=round(cv_val, 4), vit=round(vw_val, 4),
                                                    vit_zeroing=round(vd_val, 4))


def write_accuracy_md(log: dict, path: Path) -> None:
    m = log["meta"]
    lines = ["# General-vision components on the chest phantoms: accuracy kept and compute", "",
             f"Command: `{m['command']}`  ",
             f"torch {m['torch']} on {m['gpu'] or m['device']}; cxr_phantom n={m['n']} "
             f"(splits {m.get('split_sizes')}), "
             f"{m['image_size']} px, patch from the command, ViT-Ti-like 192-d × 6 blocks × 3 heads; "
             f"{m['epochs']} epochs from scratch, {m['ft_epochs']} fine-tune/exit epochs; best epoch on val, "
             "test mean AUROC over 7 findings reported once. GMACs analytic, per image.", "",
             "| model | test mean AUROC | val | GMACs | MACs vs ViT | notes |", "|---|---|---|---|---|---|"]
    for r in log["results"]:
        if "test_auroc" not in r:
            continue
        notes = []
        if "test_auroc_before_finetune" in r:
            notes.append(f"before fine-tune {r['test_auroc_before_finetune']}")
        if "exit_fraction" in r:
            notes.append(f"exit fractions {r['exit_fraction']}; per-exit AUROC {r['per_exit_test_auroc']}")
        if "img_s" in r:
            notes.append(f"{r['img_s']} img/s ({r['img_s_vs_vit']}× the ViT)")
        name = r["model"] + (f" [seed {r['seed']}]" if len(m.get("seeds", [0])) > 1 else "")
        lines.append(f"| {name} | {r['test_auroc']} | {r.get('val_auroc', '')} | {r['gmacs']} | "
                     f"{r['macs_vs_vit']} | {'; '.join(notes)} |")
    rows = [r for r in log["results"] if "channelvit_hcs" in r]
    if rows:
        lines += ["", "## Missing windows at test time (cxr_multiwindow_phantom: lung / soft tissue / bone)", "",
                  f"Val AUROC with all windows: {m.get('val_auroc_all_windows')}.", "",
                  "| windows present | ChannelViT + HCS | ViT, missing zero-filled | ViT trained with random zeroing | "
                  "ChannelViT GMACs | ViT GMACs |", "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['model'].split(': ')[1]} | {r['channelvit_hcs']} | {r['vit_zero_fill']} | "
                         f"{r['vit_trained_with_zeroing']} | {r['channelvit_gmacs']} | {r['vit_gmacs']} |")
    if log.get("skipped"):
        lines += ["", f"Skipped (time budget): {log['skipped']}"]
    lines += ["", f"Seconds: {log['seconds']}"]
    path.write_text("\n".join(lines) + "\n")


def report(args: argparse.Namespace) -> None:
    """Merge per-seed accuracy runs (``accuracy --seeds S --name …``) into mean ± sd over seeds, paired
    comparisons against the ViT (medvit.eval.stats.compare over seeds; per-seed paired image bootstrap), the
    EViT verdict and a PNG of test AUROC against measured images/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medvit.eval.stats import compare, mean_sd

    runs = [json.loads(Path(f).read_text()) for f in args.runs]
    rows = [r for run in runs for r in run["results"] if "test_auroc" in r]
    seeds = sorted({r["seed"] for r in rows})
    names = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["model"], r["seed"]): r for r in rows}
    ref = "vit (scratch)"
    complete = [s for s in seeds if all((n, s) in by for n in names)]
    summary = []
    for n in names:
        got = [by[(n, s)] for s in seeds if (n, s) in by]
        row: dict = dict(model=n, seeds=[r["seed"] for r in got])
        for key in ("test_auroc", "val_auroc", "img_s", "img_s_vs_vit", "gmacs", "macs_vs_vit"):
            vals = [r[key] for r in got if key in r]
            if vals:
                m, sd = mean_sd(vals) if len(vals) > 1 else (vals[0], float("nan"))
                row[key] = dict(mean=round(m, 4), sd=round(sd, 4), values=vals)
        if n != ref:
            pair = [s for s in seeds if (n, s) in by and (ref, s) in by]
            row["paired_vs_vit_per_seed"] = {s: by[(n, s)].get("paired_vs_vit") for s in pair}
            if len(pair) >= 2:
                row["compare_over_seeds"] = compare([by[(n, s)]["test_auroc"] for s in pair],
                                                    [by[(ref, s)]["test_auroc"] for s in pair], n, ref)
        summary.append(row)
    runs_meta = [run["meta"] for run in runs]
    verdict = evit_verdict(summary, args.margin)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(dict(runs=runs_meta, seeds=seeds, complete_seeds=complete,
                                                           margin=args.margin, summary=summary, verdict=verdict,
                                                           per_seed=rows), indent=1, default=str))
    # plot: test AUROC (mean ± sd) against measured images/s (mean ± sd), one point per arm
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for row in summary:
        if "img_s" not in row:
            continue
        x, y = row["img_s"], row["test_auroc"]
        ax.errorbar(x["mean"], y["mean"], xerr=np.nan_to_num(x["sd"]), yerr=np.nan_to_num(y["sd"]), fmt="o",
                    capsize=3, label=f"{row['model']} ({row['macs_vs_vit']['mean']:.2f}× MACs)")
    ax.set_xlabel("measured images/s (CPU, see command/threads)")
    ax.set_ylabel(f"test mean AUROC (mean ± sd, {len(seeds)} seeds)")
    ax.set_title("Chest phantoms: accuracy vs measured speed")
    ax.legend(fontsize=6.5, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"{args.name}.png", dpi=130)
    plt.close(fig)
    write_seeds_md(runs_meta, seeds, complete, summary, verdict, args, out / f"{args.name}.md")


def evit_verdict(summary: list[dict], margin: float) -> dict:
    """The notes' claim "EViT keeps accuracy at −34 % MACs" (r = 0.7) on this study.

    holds: in every seed the paired image-bootstrap 95 % CI of AUROC(EViT) − AUROC(ViT) lies above −margin;
    does not hold: the CI lies wholly below −margin in at least half of the seeds, or compare() over seeds finds
    the ViT better; else not separable at this budget.
    """
    row = next((r for r in summary if r["model"].startswith("evit r=0.7")), None)
    if row is None or not row.get("paired_vs_vit_per_seed"):
        return dict(claim="EViT r=0.7 keeps accuracy", verdict="not run")
    cis = [v for v in row["paired_vs_vit_per_seed"].values() if v]
    over = row.get("compare_over_seeds", {})
    if cis and all(c["ci_low"] > -margin for c in cis):
        v = "holds"
    elif sum(c["ci_high"] < -margin for c in cis) * 2 >= len(cis) or over.get("outcome") == "vit (scratch) better":
        v = "does not hold"
    else:
        v = "not separable at this budget"
    return dict(claim="EViT r=0.7 keeps accuracy (notes: −34 % MACs at r=0.7 on DeiT-S)", verdict=v, margin=margin,
                macs_vs_vit=row.get("macs_vs_vit", {}).get("mean"), per_seed_ci=cis,
                over_seeds=over.get("outcome"))


def _ms(d: dict | None, nd: int = 4) -> str:
    if not d:
        return ""
    return f"{d['mean']:.{nd}f}" if d["sd"] != d["sd"] else f"{d['mean']:.{nd}f} ± {d['sd']:.{nd}f}"


def write_seeds_md(metas: list[dict], seeds: list[int], complete: list[int], summary: list[dict], verdict: dict,
                   args: argparse.Namespace, path: Path) -> None:
    m = metas[0]
    partial = "" if len(complete) == len(seeds) and len(seeds) >= 3 else " — PARTIAL"
    lines = [f"# General-vision components on the chest phantoms: accuracy over seeds{partial}", "",
             f"Seeds {seeds} (complete: {complete}); one `accuracy` run per seed through the CPU gate "
             "(`/work/cpu.sh -n 1`), merged by `report`. Commands:", ""]
    lines += [f"- `{x['command']}` — {x['when']}, load average {x.get('load_avg_start')} → {x.get('load_avg_end')}"
              for x in metas]
    lines += ["", f"- merge: `python {' '.join(sys.argv)}`", "",
              f"Setting: torch {m['torch']} on {m['device']}, {m['threads']} thread(s); cxr_phantom n={m['n']} "
              f"(splits {m.get('split_sizes')}), dataset_args {m['dataset_args']} (the calibrated knobs of "
              f"pipelines/demo/cxr_phantom_demo.yaml, drawn at {m['image_size']} px), patch {m['patch']}, ViT "
              f"{m['embed_dim']}-d × {m['depth']} blocks × {m['heads']} heads (the width of the "
              f"pipelines/general_vision presets); {m['epochs']} epochs from scratch, {m['ft_epochs']} fine-tune/exit "
              f"epochs, batch {m['batch']}; best epoch on val, test mean AUROC over 7 findings. Every seed draws its "
              "own phantoms (dataset seed = seed), initialisation and batch order; within a seed all arms share data "
              "and splits. GMACs analytic per image; img/s = median of interleaved rounds of each arm's inference on "
              "the same test batch inside the training process (same thread count), so ratios share the load.", "",
              "| model | test mean AUROC | val AUROC | img/s | img/s vs ViT | GMACs | MACs vs ViT | "
              "Δ test AUROC vs ViT per seed [paired image-bootstrap 95 % CI] | over seeds (stats.compare) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        per = "; ".join(f"s{s}: {v['diff']:+.4f} [{v['ci_low']:+.4f}, {v['ci_high']:+.4f}]"
                        for s, v in r.get("paired_vs_vit_per_seed", {}).items() if v)
        cmp_ = r.get("compare_over_seeds")
        sg = cmp_["sign_test"] if cmp_ else {}
        cmp_s = (f"{cmp_['outcome']} (mean Δ {cmp_['bootstrap']['mean_diff']:+.4f}, sign {sg['n_positive']}+/"
                 f"{sg['n_negative']}−)") if cmp_ else ""
        lines.append(f"| {r['model']} | {_ms(r.get('test_auroc'))} | {_ms(r.get('val_auroc'))} | "
                     f"{_ms(r.get('img_s'), 1)} | {_ms(r.get('img_s_vs_vit'), 3)} | {_ms(r.get('gmacs'))} | "
                     f"{_ms(r.get('macs_vs_vit'), 3)} | {per} | {cmp_s} |")
    lines += ["", f"**Verdict** — {verdict['claim']}: **{verdict['verdict']}** (rule: holds when every seed's paired "
              f"CI of the AUROC difference lies above −{args.margin}; does not hold when it lies below −{args.margin} "
              "in half the seeds or the ViT is better over seeds; else not separable). With 3 seeds "
              "stats.compare can never separate (the sign test needs ≥ 5 pairs), so the per-seed image bootstrap "
              "carries the verdict.", "",
              f"Plot: `{path.with_suffix('.png').name}`. Earlier single-seed study (H200, 96 px, 192-d × 6, 30 "
              "epochs, default phantoms): `general_vision_accuracy.md`."]
    path.write_text("\n".join(lines) + "\n")


ARMS = ("vit", "evit", "lookupvit", "lgvit", "channelvit")


def _json_dict(text: str) -> dict:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--dataset-args is not JSON: {e}") from e
    if not isinstance(d, dict):
        raise argparse.ArgumentTypeError("--dataset-args must be a JSON object")
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--rounds", type=int, default=5)
    t.add_argument("--iters", type=int, default=1)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--name", default="general_vision_throughput", help="output file stem in --out")
    a = sub.add_parser("accuracy")
    a.add_argument("--n", type=int, default=8000)
    a.add_argument("--image-size", type=int, default=96)
    a.add_argument("--patch", type=int, default=8)
    a.add_argument("--compressed", type=int, default=6)
    a.add_argument("--epochs", type=int, default=30)
    a.add_argument("--ft-epochs", type=int, default=10)
    a.add_argument("--batch", type=int, default=128)
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--taus", type=float, nargs="+", default=[0.8, 0.9, 0.95, 0.99])
    a.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a.add_argument("--workers", type=int, default=4)
    a.add_argument("--budget-s", type=float, default=1e9, help="skip remaining steps once this many seconds passed")
    a.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run of every arm per seed")
    a.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    a.add_argument("--dataset-args", type=_json_dict, default={},
                   help='extra cxr phantom knobs as JSON, e.g. \'{"lesion_contrast": 3.0, "lesion_size": 2.0}\'')
    a.add_argument("--embed-dim", type=int, default=192)
    a.add_argument("--depth", type=int, default=6)
    a.add_argument("--heads", type=int, default=3)
    a.add_argument("--bootstrap", type=int, default=1000, help="paired image-bootstrap resamples vs the ViT (0: off)")
    a.add_argument("--time-rounds", type=int, default=5, help="interleaved img/s rounds on CPU (0: off)")
    a.add_argument("--time-batch", type=int, default=64)
    a.add_argument("--name", default="general_vision_accuracy", help="output file stem in --out")
    r = sub.add_parser("report", help="merge per-seed accuracy runs: mean ± sd, paired comparisons, plot")
    r.add_argument("runs", nargs="+", help="JSON files written by `accuracy`")
    r.add_argument("--margin", type=float, default=0.02, help="AUROC drop tolerated by 'keeps accuracy'")
    r.add_argument("--name", default="general_vision_accuracy_seeds")
    for p in (t, a, r):
        p.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    {"throughput": throughput, "accuracy": accuracy, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
