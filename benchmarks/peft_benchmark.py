"""PEFT benchmark on phantoms: every registered method from the same pretrained backbone, 3 seeds.

For each problem — multi-label chest X-ray phantoms (mean AUROC) and 5-stage retina phantoms (ordinal,
quadratic weighted kappa) — and each registered PEFT method, the ``prompt_tune`` task trains from the same
pretrained tiny backbone (width 96, depth 4 as the CPU preset of ``pipelines/mae_thorax``; 32 px, patch 8) and
reports test score (mean ± sd over seeds; selection on validation), trainable parameters (count and % of
the backbone), adapter checkpoint size and median step time. All runs share one process, one thread.

The backbone: ``--pretrained DIR`` if given; otherwise an MAE run of the ``mae_pretrain`` task when that task
is registered (``--mae-preset``), otherwise a supervised-pretrained phantom backbone (full fine-tuning on a
disjoint CXR phantom set, seed 1) — the table says which.

    nice -n 10 .venv/bin/python benchmarks/peft_benchmark.py                 # full run, writes results
    .venv/bin/python benchmarks/peft_benchmark.py --quick --no-write         # smoke test (1 seed, few steps)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
BACKBONE = dict(backbone="vit_tiny_patch16_224", backbone_args=dict(patch_size=8, embed_dim=96, depth=4, num_heads=3),
                image_size=32, in_chans=1, global_pool="token")


def set_geometry(size: int, patch: int) -> None:
    """Image size and patch size of every model in the run (small: the CPU budget)."""
    BACKBONE["image_size"] = size
    BACKBONE["backbone_args"]["patch_size"] = patch

#: per-method config and learning rate (fixed a priori, not tuned on the test split)
METHODS: dict[str, tuple[dict[str, Any], float]] = {
    "full": ({}, 5e-4),
    "linear": ({}, 1e-2),
    "vpt_shallow": ({"num_prompts": 8}, 1e-2),
    "vpt_deep": ({"num_prompts": 8}, 1e-2),
    "dvpt": ({"rank": 8, "num_prompts": 8, "share_every": 1}, 5e-3),
    "lora": ({"r": 4, "alpha": 8, "targets": ["attention"]}, 5e-3),
    "loha": ({"r": 4, "alpha": 4, "targets": ["attention"]}, 5e-3),
    "lokr": ({"r": 4, "alpha": 4, "targets": ["attention"]}, 5e-3),
    "ia3": ({"targets": ["attention", "mlp"], "feedforward": ["mlp.fc2"]}, 1e-2),
    "adalora": ({"init_r": 6, "target_r": 4, "alpha": 8, "targets": ["attention"]}, 5e-3),
    "oft": ({"block_size": 8, "targets": ["attention"]}, 5e-3),
    "vera": ({"r": 32, "targets": ["attention", "mlp"]}, 1e-2),
}

PROBLEMS = {
    "cxr": dict(dataset="cxr_phantom", problem="multilabel", metric="mean_auroc"),
    "retina": dict(dataset="retina_phantom", problem="ordinal", metric="qwk"),
}


def supervised_backbone(out: Path, n: int, epochs: float) -> str:
    """Full fine-tuning on CXR phantoms of data seed 1 (disjoint from the benchmark's seed 0); -> checkpoint dir."""
    from medvit.models import create_model, save_checkpoint
    from medvit.peft import load_adapter
    from medvit.tasks import run_task

    run_dir = out / "supervised_pretrain"
    train = dict(epochs=epochs, batch_size=64, lr=2e-3, warmup_epochs=1, weight_decay=0.05, clip_grad=1.0,
                 progress=False)
    run_task(None, [], data=dict(task="prompt_tune", output_dir=str(run_dir), dataset="cxr_phantom",
                                 dataset_args=dict(n=n, seed=1, image_size=BACKBONE["image_size"]), method="full",
                                 seeds=[0], test_split="", train=train, **BACKBONE))
    base = create_model(BACKBONE["backbone"], img_size=BACKBONE["image_size"], in_chans=1, num_classes=7,
                        global_pool="token",
                        **BACKBONE["backbone_args"])
    model = load_adapter(run_dir / "seed_0" / "adapter", base_model=base, check_base=False)
    model.reset_classifier(0)  # keep the encoder only: every benchmark run gets a fresh head
    return str(save_checkpoint(model, out / "supervised_backbone",
                               extra={"source": "supervised full fine-tuning on cxr_phantom seed 1"}))


def mae_backbone(out: Path, n: int, epochs: float, preset: str | None, overrides: list[str]) -> str:
    """MAE-pretrain the benchmark backbone with the ``mae_pretrain`` task; -> run folder (its encoder/ is loaded).

    Inline config (same encoder geometry as the benchmark, small decoder, CXR phantoms of data seed 1) unless a
    pipeline ``preset`` file is given.
    """
    from medvit.tasks import run_task

    run_dir = out / "mae"
    if preset:
        run_task(preset, [f"output_dir={run_dir}", *overrides])
        return str(run_dir)
    data = dict(task="mae_pretrain", output_dir=str(run_dir), dataset="cxr_phantom",
                dataset_args=dict(n=n, seed=1, image_size=BACKBONE["image_size"]), splits=["train", "val"],
                backbone=BACKBONE["backbone"], backbone_args=BACKBONE["backbone_args"],
                image_size=BACKBONE["image_size"], in_chans=1, decoder_dim=64, decoder_depth=2, decoder_heads=4,
                mask_ratio=0.75, norm_pix_loss=True, rrc_scale=[0.5, 1.0], figure_images=4,
                train=dict(epochs=epochs, batch_size=64, blr=1.5e-4, betas=[0.9, 0.95], weight_decay=0.05,
                           warmup_epochs=max(1.0, epochs / 20), progress=False))
    run_task(None, overrides, data=data)
    return str(run_dir)


def run_method(problem: str, method: str, pretrained: str | None, seeds: list[int], n: int, epochs: float,
               out: Path) -> dict[str, Any]:
    from medvit.tasks import run_task

    cfg, lr = METHODS[method]
    p = PROBLEMS[problem]
    t0 = time.perf_counter()
    s = run_task(None, [], data=dict(
        task="prompt_tune", output_dir=str(out / problem / method), dataset=p["dataset"],
        dataset_args=dict(n=n, seed=0, image_size=BACKBONE["image_size"]), problem=p["problem"], pretrained=pretrained,
        method=method, method_config=cfg, seeds=seeds, eval_batch_size=256,
        train=dict(epochs=epochs, batch_size=32, lr=lr, warmup_epochs=0.5, weight_decay=1e-4, clip_grad=1.0,
                   progress=False),
        **BACKBONE))
    m = p["metric"]
    return {"problem": problem, "method": method, "lr": lr, "config": cfg,
            "test": s[f"test_{m}"], "test_sd": s[f"test_{m}_sd"], "val": s[f"val_{m}"], "val_sd": s[f"val_{m}_sd"],
            "test_per_seed": [x.get("test", {}).get("score") for x in s["seeds"]],
            "trainable_params": s["trainable_params"], "backbone_params": s["backbone_params"],
            "trainable_pct": s["trainable_pct"], "adapter_mb": s["adapter_mb"], "step_time_ms": s["step_time_ms"],
            "steps": s["seeds"][0]["steps"], "n_train": s["seeds"][0]["n_train"],
            "wall_s": time.perf_counter() - t0}


def _finite(o: Any) -> Any:
    """NaN -> None, recursively (strict JSON)."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def table(rows: list[dict[str, Any]], metric: str) -> str:
    head = (f"| method | test {metric} (mean ± sd) | val {metric} | trainable params | % of backbone | "
            "adapter MB | step ms | lr |\n|---|---|---|---|---|---|---|---|\n")
    body = "\n".join(
        f"| {r['method']} | {r['test']:.3f} ± {r['test_sd']:.3f} | {r['val']:.3f} ± {r['val_sd']:.3f} | "
        f"{r['trainable_params']:,} | {r['trainable_pct']:.2f} | {r['adapter_mb']:.3f} | {r['step_time_ms']:.1f} | "
        f"{r['lr']:g} |" for r in rows)
    return head + body + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PROBLEMS), figsize=(11, 4))
    for ax, (prob, p) in zip(axes, PROBLEMS.items()):
        rs = [r for r in rows if r["problem"] == prob]
        for r in rs:
            ax.errorbar(max(r["trainable_pct"], 1e-3), r["test"], yerr=r["test_sd"], fmt="o", capsize=3)
            ax.annotate(r["method"], (max(r["trainable_pct"], 1e-3), r["test"]), fontsize=8,
                        xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (% of backbone, log)")
        ax.set_ylabel(f"test {p['metric']}")
        ax.set_title(f"{p['dataset']} ({p['problem']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrained", default=None, help="backbone to start from (MAE run folder / checkpoint)")
    ap.add_argument("--mae-preset", default=None,
                    help="mae_pretrain pipeline YAML (default: an inline config with the benchmark's geometry)")
    ap.add_argument("--mae-overrides", nargs="*", default=[], help="key=value overrides for the MAE config")
    ap.add_argument("--mae-epochs", type=float, default=40.0, help="MAE pretraining epochs (inline config)")
    ap.add_argument("--supervised", action="store_true", help="use a supervised-pretrained backbone even if MAE exists")
    ap.add_argument("--methods", nargs="*", default=None, help="subset of methods (default: every registered)")
    ap.add_argument("--problems", nargs="*", default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=800, help="CXR phantoms (all splits; 80/10/10 by patient)")
    ap.add_argument("--epochs", type=float, default=4.0, help="CXR tuning epochs")
    ap.add_argument("--n-retina", type=int, default=1500, help="retina phantoms (all splits)")
    ap.add_argument("--epochs-retina", type=float, default=6.0, help="retina tuning epochs")
    ap.add_argument("--size", type=int, default=32, help="image size (square)")
    ap.add_argument("--patch", type=int, default=8, help="patch size")
    ap.add_argument("--pretrain-n", type=int, default=3000, help="phantoms for the supervised fallback backbone")
    ap.add_argument("--pretrain-epochs", type=float, default=10.0)
    ap.add_argument("--work", default="/tmp/medvit_peft_benchmark", help="scratch folder for runs and adapters")
    ap.add_argument("--quick", action="store_true", help="1 seed, 150 images, 1 epoch (smoke test)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch benchmarks/results")
    ap.add_argument("--name", default="peft_benchmark", help="basename of the result files")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.seeds, args.n, args.epochs, args.pretrain_n, args.pretrain_epochs = [0], 150, 1.0, 300, 1.0
        args.n_retina, args.epochs_retina = 150, 1.0
        args.mae_epochs = 1.0
    set_geometry(args.size, args.patch)
    from medvit.peft import list_methods
    from medvit.registry import REGISTRY

    methods = args.methods or list_methods()
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"no benchmark config for methods {unknown}; add them to METHODS")
    work = Path(args.work)
    t0 = time.perf_counter()
    if args.pretrained:
        pretrained, source = args.pretrained, f"given: {args.pretrained}"
    elif not args.supervised and ("task", "mae_pretrain") in REGISTRY:
        pretrained = mae_backbone(work, args.pretrain_n, args.mae_epochs, args.mae_preset, args.mae_overrides)
        source = (f"MAE-pretrained by the mae_pretrain task ({args.mae_preset or 'inline config'}: train+val images "
                  f"of {args.pretrain_n} CXR phantoms of data seed 1, {args.mae_epochs:g} epochs, mask 0.75, "
                  f"norm-pix loss, decoder 64 wide x 2 blocks{''.join(' ' + o for o in args.mae_overrides)})")
    else:
        pretrained = supervised_backbone(work, n=args.pretrain_n, epochs=args.pretrain_epochs)
        source = (f"supervised-pretrained phantom backbone (full training from scratch on the train split of "
                  f"{args.pretrain_n} CXR phantoms of data seed 1, {args.pretrain_epochs:g} epochs; the mae_pretrain "
                  "task was not available)")
    pretrain_s = time.perf_counter() - t0
    print(f"backbone: {source} ({pretrain_s:.0f} s)", flush=True)
    rows = []
    for prob in args.problems:
        for m in methods:
            n, ep = (args.n, args.epochs) if prob == "cxr" else (args.n_retina, args.epochs_retina)
            r = run_method(prob, m, pretrained, args.seeds, n, ep, work / "runs")
            rows.append(r)
            print(f"{prob:6s} {m:11s} test {r['test']:.3f} ± {r['test_sd']:.3f}  trainable {r['trainable_pct']:7.3f}%"
                  f"  adapter {r['adapter_mb']:.3f} MB  step {r['step_time_ms']:.1f} ms  ({r['wall_s']:.0f} s)",
                  flush=True)
    total_s = time.perf_counter() - t0
    cmd = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    md = [
        "# PEFT benchmark on phantoms",
        "",
        f"Command: `nice -n 10 {cmd}` (one process, 1 thread, CPU; total {total_s / 60:.1f} min incl. "
        f"{pretrain_s / 60:.1f} min backbone pretraining).",
        "",
        f"Backbone: {source}. Tiny ViT (patch {args.patch}, width 96, depth 4, 3 heads, {args.size} px, 1 channel, "
        "CLS pooling "
        f"after the pretrained final norm); every method starts from the same weights with a fresh head.",
        f"Data: in-memory phantoms of data seed 0 (patient-disjoint 80/10/10 train/val/test): {args.n} CXR / "
        f"{args.n_retina} retina images, {args.epochs:g} / {args.epochs_retina:g} epochs; batch 32, AdamW (wd 1e-4), "
        "cosine with 0.5-epoch warm-up, grad clip 1; "
        f"model selection on validation each epoch, test once. Seeds {args.seeds} (seed = head/adapter init and data "
        "order). Learning rates fixed per method family beforehand (column lr), not tuned.",
        "Trainable % = trained parameters (method + head) / backbone parameters without head. Adapter MB = size of "
        "`adapter.safetensors` (what a site stores per task). Step ms = median wall time between optimizer steps "
        "(forward + backward + AdamW, batch 32) on a shared 2-core machine: compare within this table only.",
        "",
    ]
    for prob, p in PROBLEMS.items():
        rs = [r for r in rows if r["problem"] == prob]
        if rs:
            md += [f"## {p['dataset']}: {p['problem']}, {p['metric']}", "", table(rs, p["metric"])]
    md += ["Phantom scores from a few-minute CPU budget are noisy (see sd); they check that every method trains "
           "and rank the cost columns, not the methods' merits on real data.", ""]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.name}.md").write_text(text + f"\n![score vs trainable %]({args.name}.png)\n")
        (RESULTS / f"{args.name}.json").write_text(json.dumps(
            _finite({"command": f"nice -n 10 {cmd}", "backbone": source, "pretrained": pretrained, "seeds": args.seeds,
             "n": args.n, "epochs": args.epochs, "n_retina": args.n_retina, "epochs_retina": args.epochs_retina,
             "total_s": total_s, "pretrain_s": pretrain_s, "rows": rows}),
            indent=2, default=str))
        plot(rows, RESULTS / f"{args.name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
