"""Does MAE pretraining help? Fine-tuning with 10 % of the labels on CXR phantoms, MAE init vs random init.

1. ``mae_pretrain`` on the phantom training images (labels unused): pipelines/mae_thorax/mae_pretrain_tiny_cpu.yaml.
2. ``finetune_multilabel`` with ``label_fraction`` of the training labels, 3 seeds, from (a) the MAE encoder and
   (b) random initialisation — the same recipe for both (pipelines/mae_thorax/finetune_tiny_cpu.yaml, no layer decay,
   more epochs because there are 10x fewer images). Checkpoints are selected on validation; test evaluated once.
Reports test mean AUROC mean ± sd per arm (table + plot) in benchmarks/results/mae_science.{md,json,png}.

    nice -n 10 .venv/bin/python benchmarks/mae_science.py            # ~10-20 min on one core
    .venv/bin/python benchmarks/mae_science.py --mae-epochs 2 --ft-epochs 2 --seeds 0 --no-write   # smoke test
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
PIPE = Path(__file__).parent.parent / "pipelines" / "mae_thorax"


#: (label, MAE init?, layer decay) fine-tuned with few labels; random init gets both layer-decay settings
ARMS = [("MAE init, layer decay 0.75", True, 0.75), ("MAE init, no layer decay", True, 1.0),
        ("random init, no layer decay", False, 1.0), ("random init, layer decay 0.75", False, 0.75)]
ARMS_FULL = [ARMS[0], ARMS[2]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/mae_science")
    p.add_argument("--n", type=int, default=2000, help="phantoms in all splits (train ~79%%)")
    p.add_argument("--mae-epochs", type=int, default=60)
    p.add_argument("--ft-epochs", type=int, default=40)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--probe-only", action="store_true",
                   help="add the linear-probe table to an existing mae_science.json (reuses WORK/mae)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from medvit.tasks import run_task

    work = Path(args.work)
    data = {"n": args.n, "seed": 0, "image_size": 64}
    if args.probe_only:
        res = json.loads((RESULTS / "mae_science.json").read_text())
        res["probe"] = linear_probe(work, data, args.seeds, args.fractions)
        res["probe_command"] = " ".join(shlex.quote(a) for a in ["python"] + sys.argv)
        write(res, work)
        return
    t0 = time.time()
    mae = run_task(PIPE / "mae_pretrain_tiny_cpu.yaml", [
        f"output_dir={work / 'mae'}", f"dataset_args={json.dumps(data)}", f"train.epochs={args.mae_epochs}"])
    t_mae = time.time() - t0
    print(f"MAE pretraining: {mae['steps']} steps, final loss {mae['losses'][-1]:.4f}, {t_mae:.0f} s", flush=True)
    rows = []
    res = {"mae": {k: mae[k] for k in ("steps", "samples_per_s", "n_images")} | {"final_loss": mae["losses"][-1],
                                                                                 "first_loss": mae["losses"][0],
                                                                                 "seconds": t_mae},
           "rows": rows, "seeds": args.seeds, "command": " ".join(shlex.quote(a) for a in ["python"] + sys.argv)}
    for frac in args.fractions:
        for arm, pre, ld in ARMS if frac < 1 else ARMS_FULL:
            t1 = time.time()
            tag = f"{'mae' if pre else 'random'}_ld{ld}_{frac}"
            s = run_task(PIPE / "finetune_tiny_cpu.yaml", [
                f"output_dir={work / ('ft_' + tag)}", f"dataset_args={json.dumps(data)}",
                f"label_fraction={frac}", f"seeds={json.dumps(args.seeds)}",
                f"pretrained={json.dumps(str(work / 'mae') if pre else None)}",
                f"train.epochs={args.ft_epochs if frac < 1 else 12}", "train.batch_size=32",
                "train.warmup_epochs=2", f"train.layer_decay={ld}"])
            tests = [x["test"]["mean_auroc"] for x in s["seeds"]]
            vals = [x["val"]["mean_auroc"] for x in s["seeds"]]
            per_class = {k: [x["test"]["per_class"][k] for x in s["seeds"]] for k in s["seeds"][0]["test"]["per_class"]}
            rows.append({"arm": arm, "layer_decay": ld, "label_fraction": frac, "n_train": s["seeds"][0]["n_train"],
                         "test": tests, "val": vals, "per_class": per_class, "seconds": time.time() - t1})
            print(f"{arm} @ {frac:.0%} labels: test mAUROC {statistics.fmean(tests):.4f} ± "
                  f"{statistics.stdev(tests) if len(tests) > 1 else 0:.4f}", flush=True)
            res["total_seconds"] = time.time() - t0
            if not args.no_write:  # rewritten after every arm, so a cut-short run still leaves its table
                write(res, work)
    res["probe"] = linear_probe(work, data, args.seeds, args.fractions)
    if not args.no_write:
        write(res, work)


def linear_probe(work: Path, data: dict, seeds: list[int], fractions: list[float]) -> list[dict]:
    """Frozen encoder (MAE vs random init) + per-label logistic regression on the same label subsets."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from medvit.data import build_dataset
    from medvit.data.fraction import subset_indices
    from medvit.eval import mean_auroc
    from medvit.models import create_model
    from medvit.models.mae_convert import load_pretrained_encoder

    def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        ds = build_dataset("cxr_phantom", split, **data)
        items = [ds[i] for i in range(len(ds))]
        return (torch.stack([it["image"] for it in items]) - 0.523) / 0.287, torch.stack([it["label"] for it in items])

    x, y = load("train")
    xt, yt = load("test")
    out = []
    for arm in ("MAE init", "random init"):
        for frac in fractions:
            scores = []
            for seed in seeds:
                torch.manual_seed(seed)
                m = create_model("vit_tiny_patch16_224", img_size=64, patch_size=16, embed_dim=128, depth=3,
                                 num_heads=4, in_chans=1, num_classes=0, global_pool="avg").eval()
                if arm == "MAE init":
                    load_pretrained_encoder(m, work / "mae")
                with torch.no_grad():
                    f, ft = m(x).numpy(), m(xt).numpy()
                idx = subset_indices(len(x), frac, seed)
                p = np.zeros((len(xt), y.shape[1]))
                for k in range(y.shape[1]):
                    yk = y[idx, k].numpy()
                    if yk.min() == yk.max():
                        continue
                    p[:, k] = LogisticRegression(C=1.0, max_iter=2000).fit(f[idx], yk).decision_function(ft)
                scores.append(mean_auroc(yt, p).mean)
            out.append({"arm": arm, "label_fraction": frac, "test": scores})
            print(f"linear probe {arm} @ {frac:.0%}: {_ms(scores)}", flush=True)
    return out


def _ms(v: list[float]) -> str:
    return f"{statistics.fmean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.4f}"


def write(r: dict, work: Path) -> None:
    import shutil

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mae_science.json").write_text(json.dumps(r, indent=2))
    m = r["mae"]
    lines = ["# MAE pretraining vs random initialisation, fine-tuning with few labels (CXR phantoms)", "",
             f"MAE: {m['n_images']} unlabelled training phantoms (64 px), {m['steps']} steps, masked-patch loss "
             f"{m['first_loss']:.3f} -> {m['final_loss']:.3f} ({m['seconds']:.0f} s). Fine-tuning: one recipe for "
             "every arm (ViT 16x16 patches, 128-d, 3 blocks, AdamW lr 5e-4 at batch 32, head initialised as in the "
             "paper), only the initialisation and the layer-wise LR decay (BEiT rule) differ; checkpoint "
             "selected "
             f"on validation mean AUROC, test evaluated once; seeds {r['seeds']} (seed = init, label subset, data "
             "order).", "",
             "| init | labels | train images | test mean AUROC (mean ± sd) | val mean AUROC | per seed (test) |",
             "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['arm']} | {row['label_fraction']:.0%} | {row['n_train']} | **{_ms(row['test'])}** | "
                     f"{_ms(row['val'])} | {', '.join(f'{v:.3f}' for v in row['test'])} |")
    lines += ["", "Per-class test AUROC (mean over seeds):", ""]
    labels = list(r["rows"][0]["per_class"])
    lines += ["| init | labels | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for row in r["rows"]:
        vals = [statistics.fmean(v for v in row["per_class"][k] if v is not None) for k in labels]
        lines.append(f"| {row['arm']} | {row['label_fraction']:.0%} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    if r.get("probe"):
        lines += ["", "Linear probe (frozen encoder, logistic regression per label on the same label subsets; "
                  "test mean AUROC):", "", "| encoder | labels | test mean AUROC (mean ± sd) | per seed |",
                  "|---|---|---|---|"]
        lines += [f"| {x['arm']} | {x['label_fraction']:.0%} | {_ms(x['test'])} | "
                  f"{', '.join(f'{v:.3f}' for v in x['test'])} |" for x in r["probe"]]
    if r.get("reading"):
        lines += ["", "## Reading", "", r["reading"]]
    lines += ["", "![test mean AUROC](mae_science.png)", "",
              "Reconstructions of held-out phantoms after pretraining: ![reconstructions](mae_science_recon.png)", "",
              f"Total time {r['total_seconds'] / 60:.1f} min (one CPU thread, shared machine).", "", "Command:", "",
              "```", "nice -n 10 " + r["command"]]
    lines += (["nice -n 10 " + r["probe_command"]] if "probe_command" in r else []) + ["```", ""]
    (RESULTS / "mae_science.md").write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for i, row in enumerate(r["rows"]):
        mu = statistics.fmean(row["test"])
        sd = statistics.stdev(row["test"]) if len(row["test"]) > 1 else 0
        ax.bar(i, mu, yerr=sd, capsize=4, color="tab:blue" if row["arm"].startswith("MAE") else "tab:gray")
        ax.scatter([i] * len(row["test"]), row["test"], color="k", s=10, zorder=3)
    ax.set_xticks(range(len(r["rows"])), [f"{x['arm'].replace(', ', chr(10))}\n{x['label_fraction']:.0%} labels"
                                          for x in r["rows"]], fontsize=7)
    lo = min(min(x["test"]) for x in r["rows"])
    ax.set_ylim(max(0.0, lo - 0.05), min(1.0, max(max(x["test"]) for x in r["rows"]) + 0.05))
    ax.set_ylabel("test mean AUROC")
    ax.set_title("CXR phantoms: MAE init vs random init")
    fig.tight_layout()
    fig.savefig(RESULTS / "mae_science.png", dpi=110)
    if (work / "mae" / "reconstruction.png").is_file():
        shutil.copy(work / "mae" / "reconstruction.png", RESULTS / "mae_science_recon.png")


if __name__ == "__main__":
    main()
