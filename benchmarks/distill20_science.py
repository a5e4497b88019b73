"""Issue 20A science benchmark on chest phantoms, 3 seeds, mean ± sd (not a test).

Part ``tinyvit``: TinyViT-style fast distillation — a small student (32-d x 2 blocks) trained only on the stored
top-3 sparse teacher probabilities (teacher: 96-d x 4 blocks, trained first) vs the same student trained alone on
the labels; same data, augmentation, steps. Presets: pipelines/distill20/cxr_{teacher_vit,student_alone,
student_tinyvit}_tiny_cpu.yaml.

Part ``deit_lt``: DeiT-LT vs plain fine-tuning on the long-tailed split (cxr_phantom_lt, training positives 1:100
from Atelectasis to Pneumothorax; val/test natural) — distilled ViT + MONAI DenseNet teacher on Mixup/CutMix
batches + effective-number DRW vs the same-size ViT with masked BCE. Reported: test AUROC of the tail finding
(Pneumothorax), of the three rarest findings, and the mean over all. Presets:
pipelines/distill20/cxr_lt_{teacher_cnn,plain,deit_lt}_tiny_cpu.yaml.

Checkpoints are selected on validation mean AUROC; the test split is evaluated once.

    /work/cpu.sh -n 1 lossreg .venv/bin/python benchmarks/distill20_science.py --part tinyvit
    /work/cpu.sh -n 1 lossreg .venv/bin/python benchmarks/distill20_science.py --part deit_lt
    .venv/bin/python benchmarks/distill20_science.py --plot-only       # table + PNG from the two JSON files
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
PIPE = Path(__file__).parent.parent / "pipelines" / "distill20"
TAIL = ["Pneumothorax", "Nodule", "Mass"]  # the three rarest findings of cxr_phantom_lt (default order)


def _ms(xs: list[float | None]) -> tuple[float, float]:
    v = [x for x in xs if x is not None]
    if not v:
        return float("nan"), float("nan")
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def _run(preset: str, out: Path, extra: list[str]) -> dict:
    from medvit.tasks import run_task

    t0 = time.time()
    s = run_task(PIPE / f"{preset}.yaml", [f"output_dir={out}", *extra])
    s["_wall_s"] = time.time() - t0
    return s


def _per_seed(s: dict, key: str) -> list[float | None]:
    out = []
    for r in s["seeds"]:
        test = r.get("test", {})
        if key == "mean":
            out.append(test.get("mean_auroc"))
        elif key == "tail3":
            v = [test["per_class"].get(n) for n in TAIL]
            out.append(statistics.mean(v) if all(x is not None for x in v) else None)
        else:
            out.append(test["per_class"].get(key))
    return out


def part_tinyvit(work: Path, seeds: list[int], steps: int, teacher_steps: int) -> dict:
    seeds_o = f"seeds={json.dumps(seeds)}"
    teacher = _run("cxr_teacher_vit_tiny_cpu", work / "teacher", [f"train.steps={teacher_steps}"])
    alone = _run("cxr_student_alone_tiny_cpu", work / "alone", [seeds_o, f"train.steps={steps}"])
    kd = _run("cxr_student_tinyvit_tiny_cpu", work / "tinyvit",
              [seeds_o, f"train.steps={steps}", f"loss.args.teacher={work / 'teacher' / 'model'}",
               f"loss.args.store={work / 'logits_seed{seed}'}"])
    store_bytes = sum(f.stat().st_size for f in work.glob("logits_seed*/logits.bin"))
    return {
        "teacher_test_mean_auroc": teacher["seeds"][0]["test"]["mean_auroc"],
        "teacher_wall_s": teacher["_wall_s"],
        "arms": {
            "student alone (labels)": {"test_mean_auroc": _per_seed(alone, "mean"), "wall_s": alone["_wall_s"]},
            "student TinyViT sparse KD (top-3, no labels)": {"test_mean_auroc": _per_seed(kd, "mean"),
                                                              "wall_s": kd["_wall_s"]},
        },
        "store_bytes_all_seeds": store_bytes,
        "steps": steps, "teacher_steps": teacher_steps, "seeds": seeds,
    }


def part_deit_lt(work: Path, seeds: list[int], steps: int, teacher_steps: int) -> dict:
    seeds_o = f"seeds={json.dumps(seeds)}"
    teacher = _run("cxr_lt_teacher_cnn_tiny_cpu", work / "lt_teacher", [f"train.steps={teacher_steps}"])
    plain = _run("cxr_lt_plain_tiny_cpu", work / "lt_plain", [seeds_o, f"train.steps={steps}"])
    deit = _run("cxr_lt_deit_lt_tiny_cpu", work / "lt_deit_lt",
                [seeds_o, f"train.steps={steps}", f"loss.args.teacher={work / 'lt_teacher' / 'model'}"])
    t0 = teacher["seeds"][0]
    arms = {}
    for name, s in (("plain fine-tuning (masked BCE)", plain), ("DeiT-LT (CNN teacher, OOD mix, DRW)", deit)):
        arms[name] = {"tail_auroc_pneumothorax": _per_seed(s, "Pneumothorax"), "tail3_auroc": _per_seed(s, "tail3"),
                      "test_mean_auroc": _per_seed(s, "mean"), "wall_s": s["_wall_s"]}
    return {
        "teacher_test": {"mean_auroc": t0["test"]["mean_auroc"],
                         "Pneumothorax": t0["test"]["per_class"]["Pneumothorax"],
                         "tail3": statistics.mean(t0["test"]["per_class"][n] for n in TAIL)},
        "teacher_wall_s": teacher["_wall_s"],
        "train_positives": t0.get("n_train"),
        "test_positives": t0["test"]["n_pos"],
        "arms": arms, "steps": steps, "teacher_steps": teacher_steps, "seeds": seeds,
    }


def write(res: dict) -> None:
    lines = ["# Issue 20A science benchmark: TinyViT sparse-logit distillation and DeiT-LT on chest phantoms", ""]
    cmds = res.get("commands", {})
    figs = []
    if "tinyvit" in res:
        r = res["tinyvit"]
        lines += ["## TinyViT-style distillation: small student from a larger medvit teacher", "",
                  f"teacher (96-d x 4) test mean AUROC {r['teacher_test_mean_auroc']:.4f}; students 32-d x 2, "
                  f"{r['steps']} steps, seeds {r['seeds']}; store {r['store_bytes_all_seeds']} bytes for all seeds",
                  "", "| arm | test mean AUROC (mean ± sd) | per seed | wall s (all seeds) |", "|---|---|---|---|"]
        for name, a in r["arms"].items():
            m, sd = _ms(a["test_mean_auroc"])
            lines.append(f"| {name} | {m:.4f} ± {sd:.4f} | {', '.join(f'{x:.4f}' for x in a['test_mean_auroc'])} "
                         f"| {a['wall_s']:.0f} |")
            figs.append(("TinyViT: " + name.split(" (")[0], m, sd))
        lines += ["", f"command: `{cmds.get('tinyvit', '')}`", ""]
    if "deit_lt" in res:
        r = res["deit_lt"]
        t = r["teacher_test"]
        lines += ["## DeiT-LT vs plain fine-tuning on the long-tailed split (training positives 1:100)", "",
                  f"CNN teacher (MONAI DenseNet) test: mean {t['mean_auroc']:.4f}, Pneumothorax "
                  f"{t['Pneumothorax']:.4f}, 3 rarest {t['tail3']:.4f}; test positives {r['test_positives']}", "",
                  "| arm | tail AUROC Pneumothorax | 3 rarest findings | all findings | wall s |",
                  "|---|---|---|---|---|"]
        for name, a in r["arms"].items():
            cells = []
            for k in ("tail_auroc_pneumothorax", "tail3_auroc", "test_mean_auroc"):
                m, sd = _ms(a[k])
                cells.append(f"{m:.4f} ± {sd:.4f}")
            lines.append(f"| {name} | {' | '.join(cells)} | {a['wall_s']:.0f} |")
            m, sd = _ms(a["tail_auroc_pneumothorax"])
            figs.append(("LT tail: " + name.split(" (")[0], m, sd))
        lines += ["", f"command: `{cmds.get('deit_lt', '')}`", ""]
    lines += ["## Verdicts", "", *res.get("verdicts", ["(written after both parts ran)"]), ""]
    lines += [f"CPU: {res.get('cpu', '')}", ""]
    (RESULTS / "distill20_science.md").write_text("\n".join(lines))
    (RESULTS / "distill20_science.json").write_text(json.dumps(res, indent=2))
    if figs:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.barh([f[0] for f in figs], [f[1] for f in figs], xerr=[f[2] for f in figs], color="#4a7ab5", capsize=4)
        ax.set_xlim(0.4, 1.0)
        ax.set_xlabel("test AUROC (mean ± sd over 3 seeds)")
        ax.set_title("issue 20A: TinyViT distillation (mean AUROC) / DeiT-LT (tail AUROC)", fontsize=10)
        fig.tight_layout()
        fig.savefig(RESULTS / "distill20_science.png", dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["tinyvit", "deit_lt"])
    p.add_argument("--work", default="/tmp/distill20")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=0, help="student steps (0 = the preset's)")
    p.add_argument("--teacher-steps", type=int, default=0, help="teacher steps (0 = the preset's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    f = RESULTS / "distill20_science.json"
    res = json.loads(f.read_text()) if f.is_file() else {}
    if not args.plot_only:
        if args.part is None:
            p.error("--part is required unless --plot-only")
        steps = args.steps or (300 if args.part == "tinyvit" else 400)
        tsteps = args.teacher_steps or (500 if args.part == "tinyvit" else 400)
        fn = part_tinyvit if args.part == "tinyvit" else part_deit_lt
        t0 = time.time()
        res[args.part] = fn(Path(args.work), args.seeds, steps, tsteps)
        res[args.part]["wall_s"] = time.time() - t0
        res.setdefault("commands", {})[args.part] = " ".join(shlex.quote(a) for a in ["python"] + sys.argv)
        print(json.dumps(res[args.part], indent=2))
    if not args.no_write:
        write(res)


if __name__ == "__main__":
    main()
