"""RetinaVLM curriculum on retina phantoms: does the full curriculum (part 1 + part 2) beat part 1 alone and a
generalist trained on captions only? Staging and referral F1 (pooled over positive classes) with 95 % bootstrap CIs,
McNemar tests, a supervised ceiling (the same ViT fine-tuned on the stage labels). Science benchmark, not a test.

    nice -n 10 .venv/bin/python benchmarks/retinavlm_phantoms.py [--n 900] [--seeds 0 1] [--steps1 400 --steps2 400]

Writes benchmarks/results/retinavlm_phantoms.{md,json,png} (+ confusion PNGs of one seed's full-curriculum model).
Arms (same frozen random-init 1-channel ViT encoder per seed, linear projector, tiny LM trained in every arm — a
0.2M-parameter random LM cannot be frozen as the paper freezes its 8B LLM):
  part1_only    RetinaVLM-Base: part 1 for steps1
  part1_long    control: part 1 for steps1 + steps2 (same steps as the full curriculum)
  full          RetinaVLM-Specialist: part 1 (steps1) then part 2 (steps2), initialised from part 1
  generalist    generic captions only for steps1 + steps2
  supervised    ceiling: the ViT fine-tuned with cross-entropy on the 5 phantom stages (referral from the predicted
                stage by the guideline)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medvit.data.synth import write_synth  # noqa: E402
from medvit.eval.closed_ended import mcnemar_test, pooled_f1_ci  # noqa: E402
from medvit.vlm import VisionLanguageModel  # noqa: E402
from medvit.vlm.retina.curriculum import CurriculumConfig, generate_curriculum, read_rows  # noqa: E402
from medvit.vlm.retina.evaluate import run_closed_ended, score, tasks_for, write_results  # noqa: E402
from medvit.vlm.retina.guidelines import default_guidelines_dir, load_guidelines, referral_from_stage  # noqa: E402
from medvit.vlm.retina.reports import PHANTOM_STAGE  # noqa: E402
from medvit.vlm.retina.train import TrainConfig, train_curriculum  # noqa: E402

log = logging.getLogger("retinavlm_bench")
BACKBONE = {"img_size": 64, "patch_size": 16, "in_chans": 1, "embed_dim": 96, "depth": 4, "num_heads": 3}
K2 = {"advanced_biomarkers_guidelines": 3, "specific_qa": 2, "general_qa": 1, "staging_introduction_guidelines": 2,
      "staging_logic_guidelines": 2, "referral_reasoning_guidelines": 2, "report_writing": 1,
      "full_report_writing_guidelines": 1, "staging_accuracy_guidelines": 3, "staging_accuracy": 3}
ARMS = {"part1_only": ("part1_only", "steps1"), "part1_long": ("part1_only", "both"), "full": ("sequential", "split"),
        "generalist": ("captions_only", "both")}


def train_arm(arm: str, seed: int, work: Path, data: Path, cur: Path, lm: Path, a: argparse.Namespace) -> Path:
    schedule, budget = ARMS[arm]
    s1, s2 = a.steps1, a.steps2
    p1, p2 = {"steps1": (s1, 0), "both": (s1 + s2, 0), "split": (s1, s2)}[budget]
    if schedule == "captions_only":
        p1, p2 = (s1 + s2) // 2, (s1 + s2) - (s1 + s2) // 2  # captions_only draws on part1 + part2 steps
    cfg = TrainConfig(curriculum_dir=str(cur), data_root=str(data), output_dir=str(work / f"{arm}_s{seed}"),
                      vlm=dict(lm_path=str(lm), backbone="vit_tiny_patch16_224", backbone_args=dict(BACKBONE),
                               projector="linear", image_size=64, in_chans=1, max_length=200),
                      train_lm=True, schedule=schedule, part1_steps=p1, part2_steps=p2, batch_size=a.batch,
                      lr=a.lr, seed=seed, log_every=50)
    torch.manual_seed(seed)  # the same random encoder per seed in every arm (built first from this seed)
    s = train_curriculum(cfg)
    return Path(s["final_checkpoint"])


def supervised(seed: int, data: Path, rows_train, rows_test, g, a: argparse.Namespace) -> list[str]:
    """The same ViT architecture fine-tuned (all weights) on the phantom stage labels; returns predicted stages."""
    import medvit
    from medvit.vlm.data import VLMProcessor

    torch.manual_seed(seed)
    stages = list(PHANTOM_STAGE.values())
    m = medvit.create_model("vit_tiny_patch16_224", num_classes=len(stages), **BACKBONE)
    proc = VLMProcessor(64, 1, [0.5], [0.25])
    x = torch.stack([proc.load_image(data / r.image) for r in rows_train])
    y = torch.tensor([stages.index(r.fields["stage"]) for r in rows_train])
    xt = torch.stack([proc.load_image(data / r.image) for r in rows_test])
    opt = torch.optim.AdamW(m.parameters(), lr=a.sup_lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    m.train()
    for _ in range(a.steps1 + a.steps2):
        idx = torch.randint(0, len(x), (a.batch * 2,), generator=gen)
        loss = torch.nn.functional.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        pred = m(xt).argmax(1).tolist()
    return [stages[i] for i in pred]


def _report(a, results, per_image, truth, rows_test, rows_train, t0, cpu0, final: bool) -> dict:
    """Summary (mean ± sd over the seeds done), McNemar tests, JSON + PNG; called after every arm (partial runs)."""
    seeds = [s for s in a.seeds if all(s in results[arm] for arm in a.arms)]
    tests = {}
    for seed in seeds:
        for other in [x for x in a.arms if x != "full"]:
            if "full" in per_image:
                for t in ("staging", "referral"):
                    r = mcnemar_test(truth[t], per_image["full"][seed][t], per_image[other][seed][t])
                    tests[f"{t}: full vs {other}, seed {seed}"] = {"pvalue": r["pvalue"], "full_only_right":
                                                                   r["a_only"], "other_only_right": r["b_only"]}
    summary = {}
    for arm in a.arms:
        for t in ("staging", "referral"):
            vals = [results[arm][s][t]["f1"] for s in seeds]
            if vals:
                summary.setdefault(arm, {})[t] = {"mean": statistics.fmean(vals),
                                                  "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                                                  "per_seed": vals}
    wall, cpu = time.time() - t0, time.process_time() - cpu0
    out = {"args": vars(a), "complete": final, "seeds_done": seeds, "n_test": len(rows_test),
           "n_train": len(rows_train), "results": results, "summary": summary, "mcnemar": tests,
           "wall_s": round(wall), "cpu_s": round(cpu),
           "test_truth_counts": {t: {o: truth[t].count(o) for o in sorted(set(truth[t]))} for t in truth}}
    Path(a.out + ".json").write_text(json.dumps(out, indent=2) + "\n")
    if seeds:
        _plot(summary, {arm: {s: results[arm][s] for s in seeds} for arm in a.arms}, seeds, Path(a.out + ".png"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=900, help="phantoms (80/10/10 %% patients train/val/test)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps1", type=int, default=400)
    ap.add_argument("--steps2", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--sup-lr", type=float, default=1e-3)
    ap.add_argument("--describe-tokens", type=int, default=48)
    ap.add_argument("--answer-tokens", type=int, default=10)
    ap.add_argument("--work", default=str(ROOT / ".cache" / "retinavlm_bench"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "retinavlm_phantoms"))
    ap.add_argument("--arms", nargs="+", default=[*ARMS, "supervised"])
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest on a shared machine
    t0, cpu0 = time.time(), time.process_time()
    work = Path(a.work)
    data, cur = work / "data", work / "curriculum"
    g = load_guidelines(default_guidelines_dir())
    if not (data / "labels.csv").is_file():
        write_synth("retina", a.n, data, fmt="png", seed=17, image_size=64, masks=False)
    generate_curriculum(data, cur, CurriculumConfig(splits=["train"], part1_k=6, part2_k=dict(K2), captions_k=2,
                                                    seed=0), g)
    from medvit.vlm.testing import build_tiny_lm

    lm = build_tiny_lm(work / "tiny_lm", family="llama", seed=0, hidden_size=96, num_layers=2, vocab_size=1024)
    rows_test, _ = read_rows(data, CurriculumConfig(splits=["test"]), g)
    rows_train, _ = read_rows(data, CurriculumConfig(splits=["train"]), g)
    tasks = tasks_for(g, ["staging", "referral"])
    results: dict[str, dict[int, dict]] = {arm: {} for arm in a.arms}
    per_image: dict[str, dict[int, dict[str, list[str]]]] = {arm: {} for arm in a.arms}
    truth = {t.name: [t.truth(r.observations) for r in rows_test] for t in tasks}
    for seed in a.seeds:
        for arm in a.arms:
            t1 = time.time()
            if arm == "supervised":
                st = supervised(seed, data, rows_train, rows_test, g, a)
                preds = {"staging": st, "referral": [referral_from_stage(s, g) for s in st]}
                sc = {t.name: pooled_f1_ci(truth[t.name], preds[t.name], t.options, t.positive, seed=seed).as_dict()
                      for t in tasks}
            else:
                ckpt = train_arm(arm, seed, work, data, cur, lm, a)
                model = VisionLanguageModel.load(ckpt)
                p = run_closed_ended(model, rows_test, g, data, tasks, describe_tokens=a.describe_tokens,
                                     answer_tokens=a.answer_tokens)
                sc = score(p, tasks, seed=seed)
                preds = {t.name: [x["parsed"] for x in p if x["task"] == t.name] for t in tasks}
                if arm == "full" and seed == a.seeds[0]:
                    write_results(Path(f"{a.out}_full_seed{seed}"), p, sc, title=f"full curriculum seed {seed}")
            results[arm][seed] = {k: {kk: v[kk] for kk in ("f1", "ci", "invalid", "precision", "recall") if kk in v}
                                  for k, v in sc.items()}
            per_image[arm][seed] = preds
            _report(a, results, per_image, truth, rows_test, rows_train, t0, cpu0, final=False)
            log.info("%s seed %d: %s (%.0f s)", arm, seed, {k: round(v["f1"] or 0, 3) for k, v in sc.items()},
                     time.time() - t1)
    out = _report(a, results, per_image, truth, rows_test, rows_train, t0, cpu0, final=True)
    summary, wall, cpu = out["summary"], out["wall_s"], out["cpu_s"]
    log.info("done in %.0f s wall, %.0f s CPU", wall, cpu)
    print(json.dumps(summary, indent=1))
    return 0


def _plot(summary, results, seeds, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(summary)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, t in zip(axes, ("staging", "referral")):
        for i, arm in enumerate(arms):
            for j, s in enumerate(seeds):
                r = results[arm][s][t]
                lo, hi = r["ci"] if r.get("ci") else (math.nan, math.nan)
                x = i + (j - (len(seeds) - 1) / 2) * 0.15
                ax.errorbar(x, r["f1"], yerr=[[r["f1"] - lo], [hi - r["f1"]]], fmt="o", capsize=3, color=f"C{i}")
            ax.hlines(summary[arm][t]["mean"], i - 0.3, i + 0.3, color=f"C{i}")
        ax.set_xticks(range(len(arms)), arms, rotation=20)
        ax.set_ylim(0, 1)
        ax.set_title(f"{t}: pooled F1, 95 % bootstrap CI per seed")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
