"""VILA-M3 on chest phantoms with SmolLM2-135M-Instruct (CPU): the four stages (pipelines/vila_m3/tiny_cpu.yaml)
for several seeds, then classification F1 from yes/no answers without vs with the CXR expert in the loop (the
paper's claim: with > without), the expert alone and the majority-class baseline, closed-VQA exact match and
report BLEU/ROUGE-L (mean ± sd over seeds); plus generation tokens/s and training images/s per stage, fp32 vs
bf16 (autocast), measured interleaved in one process.

    make vlm-lm
    nice -n 10 .venv/bin/python benchmarks/vila_m3_phantoms.py --seeds 0 1 2 --parallel 3
    nice -n 10 .venv/bin/python benchmarks/vila_m3_phantoms.py --timing-only     # speed part only

Writes benchmarks/results/vila_m3_phantoms.{json,md,png}. Runs go to runs/bench_vila_m3/seed_<s>/ (the phantom
instruction data are generated once and shared). Budget: stated in the results (CPU seconds of every process).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "pipelines" / "vila_m3" / "tiny_cpu.yaml"
OUT = ROOT / "benchmarks" / "results"
logger = logging.getLogger("vila_m3_bench")


def _ms(vals: list[float | None]) -> tuple[float, float]:
    v = [float(x) for x in vals if x is not None]
    if not v:
        return float("nan"), float("nan")
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def train_seeds(seeds: list[int], runs: Path, parallel: int, extra: list[str], launch: bool = True) -> dict[int, dict]:
    shared = runs / "data"
    if launch and not (shared / "done.json").is_file():  # report-only: never build data
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-c", "import sys; from medvit.tasks import build_config; from medvit.vlm.train import "
               "_mixture; from pathlib import Path; s, c = build_config(sys.argv[1], []); "
               "_mixture(c, Path(sys.argv[2]))", str(PRESET), str(runs)]
        subprocess.run(cmd, check=True, env=env)
    procs: dict[int, subprocess.Popen] = {}
    pending = list(seeds) if launch else []
    while pending or procs:
        while pending and len(procs) < parallel:
            s = pending.pop(0)
            out = runs / f"seed_{s}"
            if not (out / "data").exists():
                out.mkdir(parents=True, exist_ok=True)
                shutil.copytree(shared, out / "data", copy_function=os.link)
            cmd = [sys.executable, "-m", "medvit", "run", str(PRESET), f"output_dir={out}", f"seed={s}", *extra]
            log = open(out / "bench.log", "w")  # noqa: SIM115
            procs[s] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, PYTHONPATH=str(ROOT)))
            logger.info("seed %d started", s)
        time.sleep(5)
        for s, p in list(procs.items()):
            if p.poll() is not None:
                logger.info("seed %d finished rc=%s", s, p.returncode)
                procs.pop(s)
    res = {}
    for s in seeds:
        f = runs / f"seed_{s}" / "eval.json"
        if f.is_file():
            summ = json.loads((runs / f"seed_{s}" / "summary.json").read_text())
            res[s] = {"eval": json.loads(f.read_text()), "stages": summ["stages"],
                      "cpu_seconds": summ.get("cpu_seconds")}
    return res


def timing(runs: Path, reps: int = 2, steps: int = 4, overrides: list[str] | None = None) -> dict:
    """Generation tokens/s and training images/s per stage, fp32 vs bf16 autocast, interleaved (per rep and stage
    both precisions back to back, the order alternating between reps), on a VLM built from the preset (speed does
    not depend on the trained weights). Each stage as the preset trains it: its freeze pattern, LoRA, batch size,
    sequence length and packing; one untimed warm-up step, then ``steps`` timed steps of forward + backward +
    AdamW on fixed batches. Images/s counts the images in the timed batches (a packed row holds several). LoRA
    adapters are attached from the start (stage 0 carries them frozen), so every rep times the same graph."""
    import dataclasses
    from itertools import islice

    import torch

    from medvit.nn.precision import autocast
    from medvit.tasks import build_config
    from medvit.vlm import ConversationDataset, VisionLanguageModel, VLMProcessor
    from medvit.vlm.data import PackedConversationDataset, collate_conversations, collate_packed
    from medvit.vlm.instruct import read_mixture
    from medvit.vlm.train import _mixture, _StageModule, apply_stage, resolve_lm

    _, cfg = build_config(PRESET, list(overrides or []))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    lm_path, gguf = resolve_lm(cfg.lm, runs)
    vcfg = dataclasses.replace(cfg.vlm, lm_path=lm_path, gguf_file=gguf)
    torch.manual_seed(0)
    vlm = VisionLanguageModel(dataclasses.replace(vcfg))
    vlm.enable_lora(cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, list(cfg.lora.target_modules) or None)
    mix_file = _mixture(dataclasses.replace(cfg, output_dir=str(runs)), runs)
    pix = VLMProcessor.for_model(vlm).load_image(sorted((mix_file.parent / "images").glob("*.png"))[0])[None]
    msgs = [{"role": "user", "content": "<image>\nDescribe the image in detail."}]
    gen: dict[str, list[float]] = {"fp32": [], "bf16": []}
    gen_tokens: dict[str, list[int]] = {"fp32": [], "bf16": []}
    batches: dict[int, list[dict]] = {}
    pad = vlm.tokenizer.pad_token_id or 0
    for sc in cfg.stages:  # fixed batches per stage (the stage's data, batch size, length, packing)
        ds = ConversationDataset(vlm, sources=[p for _, p in read_mixture(mix_file, stage=sc.stage)],
                                 max_length=sc.max_length)
        coll = partial(collate_conversations, pad_id=pad)
        if sc.packing:
            ds, coll = PackedConversationDataset(ds, seed=0), partial(collate_packed, pad_id=pad)
        dl = torch.utils.data.DataLoader(ds, batch_size=sc.train.batch_size, shuffle=True, collate_fn=coll,
                                         generator=torch.Generator().manual_seed(sc.stage))
        batches[sc.stage] = list(islice(iter(dl), steps + 1))
    train: dict[str, dict[str, list[float]]] = {str(sc.stage): {"fp32": [], "bf16": []} for sc in cfg.stages}
    for rep in range(reps):
        order = ("fp32", "bf16") if rep % 2 == 0 else ("bf16", "fp32")
        for prec in order:
            vlm.eval()
            t0 = time.perf_counter()
            with autocast("cpu", prec), torch.no_grad():
                ids = vlm.generate_ids(msgs, pix, max_new_tokens=24, temperature=0.0)
            gen[prec].append(len(ids) / (time.perf_counter() - t0))
            gen_tokens[prec].append(len(ids))
        for sc in cfg.stages:
            apply_stage(vlm, sc, cfg.lora)
            mod = _StageModule(vlm).train()
            params = [p for p in mod.parameters() if p.requires_grad]
            for prec in order:
                opt = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.0)
                n_img, dt = 0, 0.0
                for k, b in enumerate(batches[sc.stage]):
                    t0 = time.perf_counter()
                    with autocast("cpu", prec):
                        loss = mod(b)
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    if k:  # step 0 is the warm-up
                        dt += time.perf_counter() - t0
                        n_img += int(b["pixel_values"].shape[0])
                train[str(sc.stage)][prec].append(n_img / dt)
    return {"generation_tokens_per_s": gen, "generation_tokens": gen_tokens, "training_images_per_s": train,
            "reps": reps, "steps": steps, "batch_sizes": {str(sc.stage): sc.train.batch_size for sc in cfg.stages},
            "packing": {str(sc.stage): sc.packing for sc in cfg.stages}, "threads": torch.get_num_threads(),
            "bf16_native": bool(getattr(torch.backends, "mkldnn", None) and torch.backends.mkldnn.is_available()
                                and _has_avx512_bf16())}


def speed_table(tim: dict) -> str:
    """Markdown of :func:`timing`'s result: per row fp32 and bf16 (mean ± sd over reps) and the bf16/fp32 ratio."""
    def ms(v: list[float]) -> str:
        m, s = _ms(v)
        return f"{m:.2f} ± {s:.2f}"

    g = tim["generation_tokens_per_s"]
    rows = [("generation tokens/s (greedy, KV cache, 24 new tokens)", g)]
    rows += [(f"training images/s, stage {st} (batch {tim['batch_sizes'][st]}"
              f"{', packed' if tim['packing'][st] else ''})", v) for st, v in tim["training_images_per_s"].items()]
    lines = ["# VILA-M3 speed on this CPU: fp32 vs bf16 autocast (SmolLM2-135M-Instruct, tiny_cpu preset)", "",
             f"Command: `{tim['command']}` through the CPU gate (`/work/cpu.sh -n 2`: both cores, "
             f"{tim['threads']} torch threads).  ",
             f"Interleaved: {tim['reps']} reps; per rep and stage both precisions back to back (order alternating); "
             f"{tim['steps']} timed steps (fwd + bwd + AdamW) after one warm-up step on fixed batches. Wall "
             f"{tim['wall_seconds'] / 60:.1f} min, {tim['cpu_seconds'] / 60:.1f} CPU-min. Load average (1/5/15 "
             f"min) at start {', '.join(f'{x:.2f}' for x in tim['loadavg_start'])}, at end "
             f"{', '.join(f'{x:.2f}' for x in tim['loadavg_end'])} (other helpers' jobs share the machine). "
             f"Native bf16 instructions (avx512_bf16/amx): {tim['bf16_native']}.", "",
             "| what | fp32 | bf16 | bf16 / fp32 |", "|---|---|---|---|"]
    for what, v in rows:
        lines.append(f"| {what} | {ms(v['fp32'])} | {ms(v['bf16'])} | "
                     f"{_ms(v['bf16'])[0] / _ms(v['fp32'])[0]:.2f} |")
    return "\n".join(lines) + "\n"


def _has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text() or "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def verdict(res: dict[int, dict]) -> str:
    """The paper's claim (F1 with the expert in the loop > without, both > majority) judged on paired seeds:
    holds when every seed's with-minus-without difference is positive and the mean difference exceeds its sd;
    does not hold when the mean difference is <= 0; otherwise not separable at this budget."""
    d = [r["eval"]["f1_with_expert"] - r["eval"]["f1_without_expert"] for r in res.values()
         if r["eval"].get("f1_with_expert") is not None and r["eval"].get("f1_without_expert") is not None]
    if not d:
        return "Verdict: not measured."
    m, s = statistics.fmean(d), (statistics.stdev(d) if len(d) > 1 else 0.0)
    above = all(r["eval"]["f1_with_expert"] > r["eval"]["f1_majority"] for r in res.values())
    if m <= 0:
        v = "does not hold"
    elif all(x > 0 for x in d) and m > s and len(d) >= 3:
        v = "holds"
    else:
        v = "not separable at this budget"
    return (f"**Verdict on the paper's claim (F1 with expert > without): {v}** — paired difference with − without "
            f"{m:+.3f} ± {s:.3f} over {len(d)} seeds ({', '.join(f'{x:+.3f}' for x in d)}); with-expert F1 above "
            f"the majority baseline in {'every' if above else 'not every'} seed.")


def report(res: dict[int, dict], tim: dict | None, cpu_s: float, wall_s: float, cmd: str, name: str,
           lm_label: str, overrides: list[str], note: str = "") -> None:
    rows = {}
    keys = ["f1_without_expert", "f1_with_expert", "f1_expert_alone", "f1_majority", "expert_call_rate",
            "unparseable_without", "unparseable_with", "vqa_exact_match", "report_BLEU_4", "report_ROUGE_L",
            "report_METEOR", "report_CIDEr"]
    for k in keys:
        rows[k] = _ms([r["eval"].get(k) for r in res.values()])
    out = {"seeds": sorted(res), "per_seed": {s: r["eval"] for s, r in res.items()},
           "stages": {s: r["stages"] for s, r in res.items()}, "mean_sd": rows, "timing": tim,
           "cpu_seconds": cpu_s, "wall_seconds": wall_s, "command": cmd, "preset": str(PRESET.relative_to(ROOT)),
           "overrides": overrides, "lm": lm_label}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(out, indent=2, default=str))
    n = len(res)
    lines = [f"# VILA-M3 on chest phantoms, {lm_label}, CPU", "",
             f"Command: `{cmd}`  ", f"Preset: `{out['preset']}` with overrides `{' '.join(overrides) or '-'}`. "
             f"Seeds: {sorted(res)}. CPU time of all processes: {cpu_s / 60:.1f} CPU-min (wall "
             f"{wall_s / 60:.1f} min on a shared 2-core machine).", "",
             f"## Classification (mean per-class binary F1 from yes/no answers, {n} seeds, mean ± sd)", "",
             "| arm | F1 |", "|---|---|"]
    for k, arm in (("f1_majority", "majority-class baseline"), ("f1_without_expert", "VLM without expert"),
                    ("f1_with_expert", "VLM with CXR expert in the loop"), ("f1_expert_alone", "CXR expert alone")):
        m, s = rows[k]
        lines.append(f"| {arm} | {m:.3f} ± {s:.3f} |")
    lines += ["", verdict(res), ""] + ([note, ""] if note else [])
    m, s = rows["expert_call_rate"]
    lines += ["", f"Expert call rate (with-expert arm): {m:.2f} ± {s:.2f}; unparseable answers without / with: "
              f"{rows['unparseable_without'][0]:.1f} / {rows['unparseable_with'][0]:.1f} per seed.", ""]
    checks = {sd: json.loads((OUT / f"vila_m3_chat_check_seed{sd}.json").read_text()) for sd in sorted(res)
              if (OUT / f"vila_m3_chat_check_seed{sd}.json").is_file()}
    if checks:
        out["chat_checks"] = {sd: {k: c[k] for k in ("call_rate", "answer_matches_expert", "answer_matches_truth",
                                                       "expert_matches_truth", "n_questions")}
                              for sd, c in checks.items()}
        (OUT / f"{name}.json").write_text(json.dumps(out, indent=2, default=str))
        cr, fe = _ms([c["call_rate"] for c in checks.values()]), _ms([c["answer_matches_expert"]
                                                                      for c in checks.values()])
        lines += [f"Newcomer chat check (`benchmarks/vila_m3_chat_check.py`, per seed: "
                  f"{checks[next(iter(checks))]['n_questions']} questions on unseen phantom DICOMs, 2 of 4 phrasings "
                  f"unseen): `<CXR()>` call rate {cr[0]:.2f} ± {cr[1]:.2f}; final answer = the expert's result "
                  f"{fe[0]:.2f} ± {fe[1]:.2f} (" + ", ".join(
                      f"seed {sd}: {round(c['answer_matches_expert'] * c['n_questions'])}/{c['n_questions']}"
                      for sd, c in checks.items()) + ").", ""]
    lines += [
              "## VQA and report generation", "", "| metric | value |", "|---|---|"]
    for k in ("vqa_exact_match", "report_BLEU_4", "report_ROUGE_L", "report_METEOR", "report_CIDEr"):
        m, s = rows[k]
        lines.append(f"| {k} | {m:.3f} ± {s:.3f} |")
    st_rows = [r["stages"] for r in res.values() if r.get("stages")]
    if st_rows:
        lines += ["", "## Training stages (the runs above, mean over seeds)", "",
                  "| stage | steps | loss first → last | wall s | images/s | precision |", "|---|---|---|---|---|---|"]
        for k in range(len(st_rows[0])):
            rr = [sr[k] for sr in st_rows if len(sr) > k]
            f = statistics.fmean(x.get("first_loss") or float("nan") for x in rr)
            la = statistics.fmean(x.get("last_loss") or float("nan") for x in rr)
            lines.append(f"| {rr[0]['stage']} {rr[0]['name']}{' (packed)' if rr[0].get('packing') else ''} | "
                         f"{rr[0]['steps']} | {f:.2f} → {la:.2f} | {statistics.fmean(x['wall_s'] for x in rr):.0f} | "
                         f"{statistics.fmean(x['images_per_s'] for x in rr):.2f} | {rr[0]['precision']} |")
    if tim:
        lines += ["", "## Speed on this CPU (fp32 vs bf16 autocast, interleaved, mean of reps)", "",
                  f"Native bf16 instructions (avx512_bf16/amx): {tim['bf16_native']}.", "",
                  "| what | fp32 | bf16 |", "|---|---|---|"]
        g = tim["generation_tokens_per_s"]
        lines.append(f"| generation tokens/s | {statistics.fmean(g['fp32']):.2f} | {statistics.fmean(g['bf16']):.2f} |")
        for st, v in tim["training_images_per_s"].items():
            lines.append(f"| training images/s, stage {st} | {statistics.fmean(v['fp32']):.3f} | "
                         f"{statistics.fmean(v['bf16']):.3f} |")
    (OUT / f"{name}.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        arms = ["f1_majority", "f1_without_expert", "f1_with_expert", "f1_expert_alone"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(range(4), [rows[a][0] for a in arms], yerr=[rows[a][1] for a in arms], capsize=4,
               color=["grey", "tab:blue", "tab:green", "tab:orange"])
        ax.set_xticks(range(4), ["majority", "VLM w/o expert", "VLM with expert", "expert alone"])
        ax.set_ylabel("mean per-class F1")
        ax.set_title(f"VILA-M3 on chest phantoms\n{lm_label}, {n} seeds", fontsize=9)
        fig.tight_layout()
        fig.savefig(OUT / f"{name}.png", dpi=120)
    except ImportError:
        pass


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench_vila_m3"))
    ap.add_argument("--timing-only", action="store_true")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--eval-only", action="store_true", help="re-evaluate the saved seed models, then report")
    ap.add_argument("--report-only", action="store_true",
                    help="only collect the seeds' finished eval.json files (e.g. each seed run by its own CPU-gate "
                    "call) and write the report")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--name", default="vila_m3_phantoms", help="results file stem")
    ap.add_argument("--lm-label", default="SmolLM2-135M-Instruct", help="the LM, as written in the results")
    ap.add_argument("--timing-steps", type=int, default=4)
    ap.add_argument("--note", default="", help="a paragraph written under the verdict (how to read it)")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every seed's run")
    a = ap.parse_args()
    cmd = "nice -n 10 .venv/bin/python benchmarks/vila_m3_phantoms.py " + " ".join(
        x for x in sys.argv[1:] if x not in ("--note", a.note))  # the note is printed under the verdict
    t0 = time.perf_counter()
    runs = Path(a.runs)
    if a.timing_only:  # speed only, written to its own file (run it beside the seeds)
        load0 = os.getloadavg()
        tim = timing(runs, a.reps, a.timing_steps, a.overrides)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        tim.update(cpu_seconds=ru.ru_utime + ru.ru_stime, wall_seconds=time.perf_counter() - t0, command=cmd,
                   loadavg_start=load0, loadavg_end=os.getloadavg())
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "vila_m3_speed.json").write_text(json.dumps(tim, indent=2))
        (OUT / "vila_m3_speed.md").write_text(speed_table(tim))
        print(speed_table(tim))
        return 0
    if a.eval_only:  # re-evaluate the seeds' saved models (after an evaluation fix), in parallel
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        code = ("import json, sys; from pathlib import Path; from medvit.tasks import build_config; "
                "from medvit.vlm import VisionLanguageModel; from medvit.vlm.evaluate import evaluate_phantoms; "
                "import torch; out = Path(sys.argv[1]); s, c = build_config(sys.argv[2], sys.argv[3:]); "
                "torch.set_num_threads(c.threads or torch.get_num_threads()); "
                "v = VisionLanguageModel.load(out / 'model'); "
                "e = evaluate_phantoms(v, out / 'data', c.data.phantom.expert_checkpoints, c.eval); "
                "(out / 'eval.json').write_text(json.dumps(e, indent=2))")
        ps = [subprocess.Popen([sys.executable, "-c", code, str(runs / f"seed_{s}"), str(PRESET), *a.overrides],
                               env=env) for s in a.seeds]
        for p in ps:
            p.wait()
    res = train_seeds(a.seeds, runs, a.parallel, a.overrides, launch=not (a.eval_only or a.report_only))
    tim = None
    if not a.no_timing and (OUT / "vila_m3_speed.json").is_file():
        tim = json.loads((OUT / "vila_m3_speed.json").read_text())
    ru_c, ru_s = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru_c.ru_utime + ru_c.ru_stime + ru_s.ru_utime + ru_s.ru_stime + (tim or {}).get("cpu_seconds", 0.0)
    if a.report_only:  # the seeds ran elsewhere: their own recorded CPU time
        cpu += sum(r.get("cpu_seconds") or 0.0 for r in res.values())
    wall = time.perf_counter() - t0
    if a.report_only:  # the seeds' own training wall time (their evaluation not included)
        wall += sum(st.get("wall_s") or 0.0 for r in res.values() for st in r.get("stages") or [])
    report(res, tim, cpu, wall, cmd, a.name, a.lm_label, a.overrides, a.note)
    print((OUT / f"{a.name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
