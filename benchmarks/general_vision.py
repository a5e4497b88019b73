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
def load_split(split: str, n: int, size: int, workers: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ds = PhantomDataset("cxr", split, n=n, seed=seed, image_size=size)
    dl = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=workers, collate_fn=lambda b: b)
    xs, ys = [], []
    for batch in dl:
        xs.append(torch.stack([b["image"] for b in batch]))
        ys.append(torch.stack([b["label"] for b in batch]))
    return torch.cat(xs), torch.cat(ys)


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
    g = torch.Generator().manual_seed(0)
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


def accuracy(args: argparse.Namespace) -> None:
    t_start = time.time()
    dev = args.device
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log: dict = dict(meta=dict(command="python " + " ".join(sys.argv), torch=torch.__version__, device=dev,
                               gpu=torch.cuda.get_device_name() if dev.startswith("cuda") else None,
                               n=args.n, image_size=args.image_size, epochs=args.epochs, ft_epochs=args.ft_epochs,
                               batch=args.batch), results=[], seconds={})

    def done(name: str, **kw) -> None:
        row = dict(model=name, **kw)
        log["results"].append(row)
        log["seconds"]["elapsed"] = round(time.time() - t_start, 1)
        print(row, flush=True)
        (out / "general_vision_accuracy.json").write_text(json.dumps(log, indent=1))

    def over_budget(step: str) -> bool:
        if time.time() - t_start > args.budget_s:
            log.setdefault("skipped", []).append(step)
            print(f"budget exhausted: skipping {step}", flush=True)
            return True
        return False

    t0 = time.time()
    data = {s: load_split(s, args.n, args.image_size, args.workers) for s in ("train", "val", "test")}
    log["seconds"]["generate"] = round(time.time() - t0, 1)
    log["meta"]["split_sizes"] = {s: len(v[0]) for s, v in data.items()}
    xte, yte = data["test"]
    S = args.image_size
    shape = dict(img_size=S, patch_size=args.patch, embed_dim=192, depth=6, num_heads=3, num_classes=len(CXR_LABELS),
                 drop_path_rate=0.1)
    n_patch = (S // args.patch) ** 2

    # 1. plain ViT from scratch
    vit = create_model("vit_tiny_patch16_224", in_chans=1, **shape)
    vit, val = train(vit, data, args, args.epochs, args.lr)
    base_macs = vit_analytic(vit)
    done("vit (scratch)", val_auroc=round(val, 4), test_auroc=round(mean_auroc(predict(vit, xte, dev), yte), 4),
         gmacs=round(base_macs / 1e9, 4), macs_vs_vit=1.0)

    # 2. EViT fine-tuned from the ViT (keep-rate warm-up over the first half)
    for r in (0.7, 0.5):
        if over_budget(f"evit r={r}"):
            break
        ev = create_model("evit_small_patch16_224", in_chans=1, keep_rate=r, **shape)
        ev.load_state_dict(vit.state_dict())
        ev.to(dev).eval()
        zero_shot = mean_auroc(predict(ev, xte, dev), yte)
        half = max(1, args.ft_epochs // 2)
        ev, val = train(ev, data, args, args.ft_epochs, args.lr / 4,
                        on_epoch=lambda ep, m=ev, r=r, h=half: setattr(m, "keep_rate", keep_rate_schedule(ep, r, 0, h)))
        ev.keep_rate = r
        done(f"evit r={r} (fine-tuned from the vit)", val_auroc=round(val, 4),
             test_auroc=round(mean_auroc(predict(ev, xte, dev), yte), 4),
             test_auroc_before_finetune=round(zero_shot, 4), gmacs=round(ev.analytic_macs(n_patch) / 1e9, 4),
             macs_vs_vit=round(ev.analytic_macs(n_patch) / base_macs, 3))

    # 3. LookupViT from scratch
    if not over_budget("lookupvit"):
        lk = create_model("lookupvit_small_patch16_224", in_chans=1, compressed_grid=args.compressed, **shape)
        lk, val = train(lk, data, args, args.epochs, args.lr)
        done(f"lookupvit {args.compressed}x{args.compressed} (scratch)", val_auroc=round(val, 4),
             test_auroc=round(mean_auroc(predict(lk, xte, dev), yte), 4), gmacs=round(lk.analytic_macs() / 1e9, 4),
             macs_vs_vit=round(lk.analytic_macs() / base_macs, 3))

    # 4. LGViT: stage 1 = the ViT above; stage 2 trains the exits on the frozen backbone
    if not over_budget("lgvit"):
        lg = create_model("lgvit_small_patch16_224", in_chans=1, exit_layers=(1, 2, 3, 4), **shape)
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
            logits = torch.cat([r.logits for r in res])
            macs = torch.cat([r.macs for r in res]).double()
            exits = torch.cat([r.exit_index for r in res]).cpu()
            done(f"lgvit tau={tau} (exits after blocks 2-5 of 6, frozen vit)",
                 test_auroc=round(mean_auroc(logits, yte), 4), gmacs=round(macs.mean().item() / 1e9, 4),
                 macs_vs_vit=round(macs.mean().item() / base_macs, 3),
                 exit_fraction=[round(float((exits == j).float().mean()), 3) for j in range(len(lg.exits) + 1)],
                 per_exit_test_auroc=[round(a, 4) for a in per_exit])

    # 5. ChannelViT + HCS vs ViT on 3-window phantoms, every subset of windows present at test time
    if not over_budget("channelvit"):
        wdata = {s: (windows(x), y) for s, (x, y) in data.items()}
        xw = wdata["test"][0]
        shape3 = dict(shape, in_chans=3)
        cv = create_model("channelvit_small_patch16_224", hcs=True, **shape3)
        cv, cv_val = train(cv, wdata, args, args.epochs, args.lr)
        vw = create_model("vit_tiny_patch16_224", **shape3)
        vw, vw_val = train(vw, wdata, args, args.epochs, args.lr)
        vd = create_model("vit_tiny_patch16_224", **shape3)

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
                done(f"windows present: {'+'.join(names[i] for i in sub)}", channelvit_hcs=round(a_cv, 4),
                     vit_zero_fill=round(a_vw, 4), vit_trained_with_zeroing=round(a_vd, 4),
                     channelvit_gmacs=round(cv.analytic_macs(k) / 1e9, 4), vit_gmacs=round(vit_analytic(vw) / 1e9, 4))
        log["meta"]["val_auroc_all_windows"] = dict(channelvit=round(cv_val, 4), vit=round(vw_val, 4),
                                                    vit_zeroing=round(vd_val, 4))
    log["seconds"]["total"] = round(time.time() - t_start, 1)
    (out / "general_vision_accuracy.json").write_text(json.dumps(log, indent=1))
    write_accuracy_md(log, out / "general_vision_accuracy.md")


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
        lines.append(f"| {r['model']} | {r['test_auroc']} | {r.get('val_auroc', '')} | {r['gmacs']} | "
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
    for p in (t, a):
        p.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    throughput(args) if args.cmd == "throughput" else accuracy(args)


if __name__ == "__main__":
    main()
