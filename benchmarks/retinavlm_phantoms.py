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


def train_arm(arm: str, seed: int, work: Path, data: Path, cur: Path, lm: Path, a: argparse.Namespace,
              encoder: Path | None = None) -> Path:
    schedule, budget = ARMS[arm]
    s1, s2 = a.steps1, a.steps2
    p1, p2 = {"steps1": (s1, 0), "both": (s1 + s2, 0), "split": (s1, s2)}[budget]
    if schedule == "captions_only":
        p1, p2 = (s1 + s2) // 2, (s1 + s2) - (s1 + s2) // 2  # captions_only draws on part1 + part2 steps
    vision = ({"vision_checkpoint": str(encoder), "mean": [0.5], "std": [0.25]} if encoder else
              {"backbone": "vit_tiny_patch16_224", "backbone_args": dict(BACKBONE)})
    cfg = TrainConfig(curriculum_dir=str(cur), data_root=str(data), output_dir=str(work / f"{arm}_s{seed}{a.tag}"),
                      vlm=dict(lm_path=str(lm), **vision, projector="linear", image_size=64, in_chans=1,
                               max_length=200),
                      train_lm=True, schedule=schedule, part1_steps=p1, part2_steps=p2, batch_size=a.batch,
                      lr=a.lr, seed=seed, log_every=50)
    torch.manual_seed(seed)  # the same random encoder per seed in every arm (built first from this seed)
    s = train_curriculum(cfg)
    return Path(s["final_checkpoint"])


def supervised(seed: int, data: Path, rows_train, rows_test, g, a: argparse.Namespace,
               save: Path | None = None) -> list[str]:
    """The same ViT architecture fine-tuned (all weights) on the phantom stage labels; returns predicted stages
    (and saves the model as a medvit checkpoint to ``save``: the stage-supervised frozen encoder variant)."""
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
    if save is not None:
        from medvit.models.checkpoint import save_checkpoint

        save_checkpoint(m, save)
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


def diagnostic(a: argparse.Namespace) -> int:
    """Single-step diagnostic on the saved checkpoints: each model is asked the part-1 phrasing of the stage and
    follow-up questions (no description, no preamble), which part 1 and the full curriculum both trained on; plus the
    best constant answer (the most frequent training stage / referral) as a prior reference."""
    from dataclasses import replace

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    t0, cpu0 = time.time(), time.process_time()
    work = Path(a.work)
    data = work / "data"
    g = load_guidelines(default_guidelines_dir())
    rows_test, _ = read_rows(data, CurriculumConfig(splits=["test"]), g)
    rows_train, _ = read_rows(data, CurriculumConfig(splits=["train"]), g)
    base = {t.name: t for t in tasks_for(g, ["staging", "referral"])}
    tasks = [replace(base["staging"], question="What is the AMD stage of this eye?", preamble=""),
             replace(base["referral"], question="What follow-up does this patient need?", preamble="")]
    out: dict = {"protocol": "single step, part-1 question phrasing, no preamble (diagnostic)", "results": {}}
    for arm in [x for x in a.arms if x in ARMS]:
        for seed in a.seeds:
            ckpt = work / f"{arm}_s{seed}{a.tag}" / ("part2" if arm == "full" else
                                               "captions" if arm == "generalist" else "part1")
            if not ckpt.is_dir():
                continue
            model = VisionLanguageModel.load(ckpt)
            p = run_closed_ended(model, rows_test, g, data, tasks, answer_tokens=a.answer_tokens + 14, two_step=False)
            sc = score(p, tasks, seed=seed)
            out["results"].setdefault(arm, {})[seed] = {k: {kk: v[kk] for kk in ("f1", "ci", "invalid")}
                                                        for k, v in sc.items()}
            out["results"][arm][seed]["answers"] = sorted({x["answer"] for x in p})[:8]
            log.info("diagnostic %s seed %d: %s", arm, seed, {k: v["f1"] for k, v in sc.items()})
    prior = {}
    for t in tasks:
        tr = [t.truth(r.observations) for r in rows_train]
        const = max(set(tr), key=tr.count)
        truth = [t.truth(r.observations) for r in rows_test]
        prior[t.name] = {"answer": const, **{k: v for k, v in pooled_f1_ci(truth, [const] * len(truth), t.options,
                                                                             t.positive).as_dict().items()
                                             if k in ("f1", "ci")}}
    out["constant_prior"] = prior
    out["wall_s"], out["cpu_s"] = round(time.time() - t0), round(time.process_time() - cpu0)
    Path(a.out + "_direct.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "results"}, indent=1))
    return 0


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
    ap.add_argument("--encoder", choices=["random", "stage_supervised"], default="random",
                    help="frozen VLM encoder: random init, or the supervised ceiling's ViT (trained on train stages)")
    ap.add_argument("--tag", default="", help="suffix of the checkpoint folders (keeps variants apart)")
    ap.add_argument("--diagnostic", action="store_true", help="only the single-step diagnostic on saved checkpoints")
    a = ap.parse_args()
    if a.diagnostic:
        return diagnostic(a)
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
    if a.encoder == "stage_supervised":  # the ceiling first: its ViT is the VLM arms' frozen encoder
        a.arms = ["supervised"] + [x for x in a.arms if x != "supervised"]
    for seed in a.seeds:
        enc = work / f"encoder_s{seed}{a.tag}" if a.encoder == "stage_supervised" else None
        for arm in a.arms:
            t1 = time.time()
            if arm == "supervised":
                st = supervised(seed, data, rows_train, rows_test, g, a, save=enc)
                preds = {"staging": st, "referral": [referral_from_stage(s, g) for s in st]}
                sc = {t.name: pooled_f1_ci(truth[t.name], preds[t.name], t.options, t.positive, seed=seed).as_dict()
                      for t in tasks}
            else:
                ckpt = train_arm(arm, seed, work, data, cur, lm, a, encoder=enc)
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
