"""Are the phantoms learnable but non-trivial? Small ViT vs logistic regression on 32×32 pixels.

Chest: multi-label (7 findings) mean AUROC on held-out (patient-disjoint) phantoms.
Retina: AMD stage (5 classes) accuracy and quadratic weighted kappa.

The ViT is ``vit_tiny_patch16_224`` shrunk for a CPU budget (img_size 96, depth 6, from scratch) and
trained with a minimal AdamW + cosine loop; the baseline is sklearn logistic regression on the same
images downsampled to 32×32 (C picked on the validation split). Selection uses val; test is reported once.

    nice -n 10 .venv/bin/python benchmarks/phantom_learnability.py --kind cxr --n 5000     # writes results
    nice -n 10 .venv/bin/python benchmarks/phantom_learnability.py --kind retina --n 3000 --epochs 8
    .venv/bin/python benchmarks/phantom_learnability.py --kind cxr --n 3000 --epochs 3 --no-write   # quick look
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

RESULTS = Path(__file__).parent / "results"


def make_split(kind: str, split: str, n: int, seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate a split in memory → images (N, 1, S, S), labels (N, K) float or (N,) long."""
    from medvit.data import build_dataset

    ds = build_dataset(f"{kind}_phantom", split, n=n, seed=seed, image_size=size)
    xs, ys = [], []
    for i in range(len(ds)):
        it = ds[i]
        xs.append(it["image"])
        ys.append(it["label"])
    return torch.stack(xs), torch.stack(ys)


def train_vit(kind: str, xtr: torch.Tensor, ytr: torch.Tensor, xva: torch.Tensor, yva: torch.Tensor,
              args: argparse.Namespace, refresh=None) -> torch.nn.Module:
    """Minimal loop: AdamW, linear warmup + cosine, BCE (cxr) / CE (retina); keeps the best val epoch.

    ``refresh(epoch)`` (optional) returns a new training set (x, y) for that epoch: phantoms are unlimited,
    so the ViT can see fresh images instead of memorising a fixed set.
    """
    import medvit

    n_out = ytr.shape[1] if kind == "cxr" else int(ytr.max()) + 1
    model = medvit.create_model("vit_tiny_patch16_224", in_chans=1, img_size=xtr.shape[-1], num_classes=n_out,
                                depth=args.depth, patch_size=args.patch, embed_dim=args.dim, num_heads=args.heads,
                                global_pool="avg", drop_path_rate=0.05, pos_embed=args.pos)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps = args.epochs * math.ceil(len(xtr) / args.batch)
    warm = max(1, steps // 15)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    mean, std = xtr.mean().item(), xtr.std().item()
    model.norm_ = (mean, std)
    g = torch.Generator().manual_seed(0)
    best, best_state = -1.0, None
    for ep in range(args.epochs):
        if refresh is not None and ep > 0:
            xtr, ytr = refresh(ep)
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        t0, tot = time.time(), 0.0
        for b in range(0, len(xtr), args.batch):
            idx = perm[b:b + args.batch]
            x = (xtr[idx] - mean) / std
            if args.flip:  # laterality is not a label: flips are label-preserving
                flip = torch.rand(len(idx), generator=g) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            logits = model(x)
            loss = (F.binary_cross_entropy_with_logits(logits, ytr[idx]) if kind == "cxr"
                    else F.cross_entropy(logits, ytr[idx], label_smoothing=0.05))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        res = evaluate(kind, predict(model, xva), yva)
        score = res["primary"]
        detail = " ".join(f"{a:.2f}" for a in res.get("per_class_auroc", [res.get("accuracy", 0.0)]))
        print(f"  {kind} epoch {ep + 1}/{args.epochs} loss {tot / len(xtr):.4f} val {score:.4f} [{detail}] "
              f"({time.time() - t0:.0f}s)", flush=True)
        if score > best:
            best, best_state = score, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    mean, std = model.norm_
    out = [model((x[i:i + 256] - mean) / std) for i in range(0, len(x), 256)]
    return torch.cat(out).float().numpy()


def evaluate(kind: str, scores: np.ndarray, y: torch.Tensor) -> dict:
    from sklearn.metrics import accuracy_score, cohen_kappa_score, roc_auc_score

    yn = y.numpy()
    if kind == "cxr":
        per = [float(roc_auc_score(yn[:, k], scores[:, k])) for k in range(yn.shape[1])]
        return {"primary": float(np.mean(per)), "mean_auroc": float(np.mean(per)), "per_class_auroc": per}
    pred = scores.argmax(1)
    return {"primary": float(cohen_kappa_score(yn, pred, weights="quadratic")),
            "accuracy": float(accuracy_score(yn, pred)),
            "qwk": float(cohen_kappa_score(yn, pred, weights="quadratic"))}


def logreg(kind: str, xtr, ytr, xva, yva, xte, yte) -> tuple[dict, float]:
    """Logistic regression on 32×32 pixels; C chosen on val. Returns test metrics and the chosen C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def feats(x):
        return F.interpolate(x, size=(32, 32), mode="area").flatten(1).numpy()

    sc = StandardScaler().fit(feats(xtr))
    ftr, fva, fte = (sc.transform(feats(x)) for x in (xtr, xva, xte))

    def fit_predict(C, f_out):
        if kind == "cxr":
            cols = [LogisticRegression(C=C, max_iter=300).fit(ftr, ytr[:, k].numpy()).decision_function(f_out)
                    for k in range(ytr.shape[1])]
            return np.stack(cols, 1)
        return LogisticRegression(C=C, max_iter=500).fit(ftr, ytr.numpy()).decision_function(f_out)

    best_c = max((0.003, 0.03, 0.3), key=lambda C: evaluate(kind, fit_predict(C, fva), yva)["primary"])
    return evaluate(kind, fit_predict(best_c, fte), yte), best_c


def run_kind(kind: str, args: argparse.Namespace) -> dict:
    t0 = time.time()
    data = {s: make_split(kind, s, args.n, args.seed, args.size) for s in ("train", "val", "test")}
    t_gen = time.time() - t0
    print(f"{kind}: generated {args.n} phantoms at {args.size}px in {t_gen:.1f}s "
          f"(train {len(data['train'][0])}, val {len(data['val'][0])}, test {len(data['test'][0])})", flush=True)
    t1 = time.time()
    lr_res, c = logreg(kind, *data["train"], *data["val"], *data["test"])
    t_lr = time.time() - t1
    print(f"{kind}: logistic regression (C={c}) test {lr_res}", flush=True)
    t2 = time.time()
    torch.manual_seed(args.seed)
    seen = [len(data["train"][0])]

    def refresh(ep: int) -> tuple[torch.Tensor, torch.Tensor]:
        # a fresh, independent phantom set (another seed: other patients) every `fresh` epochs
        x, y = make_split(kind, "train", args.n, args.seed + 1000 + ep // args.fresh, args.size)
        if ep % args.fresh == 0:
            seen.append(len(x))
        return x, y

    model = train_vit(kind, *data["train"], *data["val"], args, refresh=refresh if args.fresh else None)
    vit_res = evaluate(kind, predict(model, data["test"][0]), data["test"][1])
    t_vit = time.time() - t2
    print(f"{kind}: ViT test {vit_res}", flush=True)
    return {"kind": kind, "n_train": len(data["train"][0]), "n_train_seen": int(sum(seen)),
            "n_val": len(data["val"][0]),
            "n_test": len(data["test"][0]), "vit": vit_res, "logreg": lr_res, "logreg_C": c,
            "seconds": {"generate": round(t_gen, 1), "logreg": round(t_lr, 1), "vit": round(t_vit, 1)}}


def write(results: list[dict], args: argparse.Namespace, cmd: str) -> None:
    """Save each kind's JSON, then rebuild the markdown from every kind's JSON present."""
    from medvit.data.phantom_cxr import CXR_LABELS

    RESULTS.mkdir(parents=True, exist_ok=True)
    for r in results:
        (RESULTS / f"phantom_learnability_{r['kind']}.json").write_text(
            json.dumps({"command": cmd, "args": vars(args), "result": r}, indent=2))
    lines = ["# Phantom learnability: small ViT vs logistic regression on 32×32 pixels", "",
             "Held-out = the patient-disjoint test split of the same in-memory phantom set (never used for "
             "training or model selection; the best epoch and the logistic-regression C are chosen on val).", ""]
    for kind in ("cxr", "retina"):
        f = RESULTS / f"phantom_learnability_{kind}.json"
        if not f.is_file():
            continue
        d = json.loads(f.read_text())
        r, a = d["result"], d["args"]
        lines += [f"## {kind} (train {r['n_train']} per set, {r.get('n_train_seen', r['n_train'])} distinct phantoms "
                  f"seen in training; val {r['n_val']}, test {r['n_test']})", "",
                  f"Command: `{d['command']}`", "",
                  f"ViT: `vit_tiny_patch16_224` with img_size={a['size']}, patch={a['patch']}, depth={a['depth']}, "
                  f"embed_dim={a['dim']}, heads={a['heads']}, from scratch, {a['epochs']} epochs, batch {a['batch']}, "
                  f"AdamW lr {a['lr']}, CPU ({a['threads']} thread(s)).", ""]
        if kind == "cxr":
            lines += ["| model | mean AUROC | " + " | ".join(CXR_LABELS) + " |",
                      "|---|---|" + "---|" * len(CXR_LABELS)]
            for name, key in (("small ViT", "vit"), (f"logistic regression 32×32 (C={r['logreg_C']})", "logreg")):
                m = r[key]
                lines.append(f"| {name} | **{m['mean_auroc']:.3f}** | "
                             + " | ".join(f"{v:.3f}" for v in m["per_class_auroc"]) + " |")
        else:
            lines += ["| model | accuracy | quadratic weighted kappa |", "|---|---|---|"]
            for name, key in (("small ViT", "vit"), (f"logistic regression 32×32 (C={r['logreg_C']})", "logreg")):
                lines.append(f"| {name} | {r[key]['accuracy']:.3f} | {r[key]['qwk']:.3f} |")
        lines += ["", f"Seconds (wall): {r['seconds']}", ""]
    (RESULTS / "phantom_learnability.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=["cxr", "retina", "both"], default="both")
    p.add_argument("--n", type=int, default=6000, help="phantoms per kind (all splits; train ≈ 80%%)")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pos", choices=["learn", "sincos"], default="learn", help="position embedding")
    p.add_argument("--flip", action="store_true", help="random horizontal flips while training")
    p.add_argument("--fresh", type=int, default=0, help="draw a fresh training set every FRESH epochs (0 = never)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--md-only", action="store_true", help="only rebuild the markdown from the saved JSON files")
    args = p.parse_args(argv)
    if args.md_only:
        write([], args, "")
        return 0
    torch.set_num_threads(args.threads)
    cmd = "nice -n 10 .venv/bin/python benchmarks/phantom_learnability.py " + shlex.join(argv or sys.argv[1:])
    kinds = ["cxr", "retina"] if args.kind == "both" else [args.kind]
    results = [run_kind(k, args) for k in kinds]
    if not args.no_write:
        write(results, args, cmd.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
