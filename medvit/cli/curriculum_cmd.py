"""``medvit curriculum``: the RetinaVLM pipeline — ``generate`` the curriculum (parts 1 and 2) from a data folder."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curriculum", help="RetinaVLM curriculum: generate (train/evaluate: see pipelines/retinavlm)",
                       description="RetinaVLM specialist curriculum (Holland et al. 2025) from tabular labels, "
                       "reports and guideline YAML. See pipelines/retinavlm/README.md.")
    csub = p.add_subparsers(dest="curriculum_command", metavar="ACTION")
    g = csub.add_parser("generate", help="write part1/part2/captions JSONL + manifest from a data folder",
                        description="Deterministic templates driven by the guideline schemas; byte-identical per seed. "
                        "Bad rows are skipped and listed in manifest.json.")
    g.add_argument("root", help="data folder holding the table (e.g. `medvit data synth --kind retina` output)")
    g.add_argument("-o", "--out", required=True, help="output folder")
    g.add_argument("-c", "--config", default=None, help="curriculum YAML (default: phantom columns, paper K)")
    g.add_argument("--guidelines", default=None, help="guideline folder (default pipelines/retinavlm/guidelines)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override a.b=value, repeatable (e.g. --set part1_k=5 --set seed=1)")
    t = csub.add_parser("train", help="train a VLM on a generated curriculum with a registered schedule",
                        description="Frozen vision encoder and LM, linear projector trained (the paper design) unless "
                        "the config says otherwise; one checkpoint per phase. `medvit list schedule` lists schedules.")
    t.add_argument("config", help="training YAML (pipelines/retinavlm/*.yaml)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override a.b=value, repeatable")
    e = csub.add_parser("evaluate", help="closed-ended evaluation: two-step prompting, pooled F1 with 95%% CIs",
                        description="Staging (6), referral (3) and the biomarker tasks on a data folder's split; "
                        "writes predictions.csv, scores.json and confusion PNGs.")
    e.add_argument("root", help="data folder (table + images + reports)")
    e.add_argument("-m", "--model", required=True, help="VLM checkpoint folder (a phase of `medvit curriculum train`)")
    e.add_argument("-o", "--out", required=True, help="output folder")
    e.add_argument("-c", "--config", default=None, help="curriculum YAML with the table's column mapping")
    e.add_argument("--guidelines", default=None, help="guideline folder (default pipelines/retinavlm/guidelines)")
    e.add_argument("--split", default="test", help="rows of this split (default test; 'all' for every row)")
    e.add_argument("--max-images", type=int, default=0, help="evaluate at most this many images (0: all)")
    e.add_argument("--tasks", default="staging,referral,biomarkers", help="comma list of staging, referral, biomarkers")
    e.add_argument("--describe-tokens", type=int, default=64, help="max new tokens of step 1 (description)")
    e.add_argument("--answer-tokens", type=int, default=16, help="max new tokens of step 2 (answer)")
    e.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default; 1 for tiny models)")
    e.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples for the 95%% CIs")
    p.set_defaults(func=lambda args: _dispatch(args, p))


def _dispatch(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    if args.curriculum_command == "generate":
        return run_generate(args)
    if args.curriculum_command == "train":
        return run_train(args)
    if args.curriculum_command == "evaluate":
        return run_evaluate(args)
    p.print_help()
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from medvit.config import apply_overrides, from_dict, load_yaml, to_dict
    from medvit.vlm.retina.curriculum import CurriculumConfig, generate_curriculum
    from medvit.vlm.retina.guidelines import default_guidelines_dir, load_guidelines

    raw = load_yaml(args.config) if args.config else {}
    raw.pop("task", None)
    raw = raw.get("curriculum", raw)
    # a key the YAML gives replaces the default as a whole (a user's own column mapping); --set edits the result
    cfg = from_dict(CurriculumConfig, apply_overrides({**to_dict(CurriculumConfig()), **raw}, args.overrides))
    g = load_guidelines(args.guidelines or default_guidelines_dir())
    para = None
    if cfg.paraphraser:
        from medvit.vlm.retina.paraphrase import hf_paraphraser

        para = hf_paraphraser(cfg.paraphraser)
    res = generate_curriculum(args.root, args.out, cfg, g, paraphrase=para)
    print(f"curriculum written to {res.out}: {sum(res.counts.values())} pairs "  # noqa: T201
          f"({', '.join(f'{k} {v}' for k, v in sorted(res.counts.items()))}); guidelines {g.version}; "
          f"{len(res.skipped)} rows skipped (see manifest.json)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from medvit.config import apply_overrides, from_dict, load_yaml
    from medvit.vlm.retina.train import TrainConfig, train_curriculum

    raw = load_yaml(args.config)
    raw.pop("task", None)
    cfg = from_dict(TrainConfig, apply_overrides(raw, args.overrides))
    s = train_curriculum(cfg)
    for ph in s["phases"]:
        print(f"{ph['name']}: {ph['steps']} steps on {ph['records']} conversations, final loss "  # noqa: T201
              f"{ph['final_loss']:.4f} -> {ph['checkpoint']}")
    print(f"trainable parameters {s['trainable_parameters']} of {s['parameters']}; {s['seconds']} s")  # noqa: T201
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medvit.config import from_dict, load_yaml, to_dict
    from medvit.vlm import VisionLanguageModel
    from medvit.vlm.retina.curriculum import CurriculumConfig, read_rows
    from medvit.vlm.retina.evaluate import run_closed_ended, score, tasks_for, write_results
    from medvit.vlm.retina.guidelines import default_guidelines_dir, load_guidelines

    raw = load_yaml(args.config) if args.config else {}
    raw = raw.get("curriculum", raw)
    cfg = from_dict(CurriculumConfig, {**to_dict(CurriculumConfig()), **raw})
    cfg.splits = [] if args.split == "all" else [args.split]
    cfg.max_images = args.max_images
    g = load_guidelines(args.guidelines or default_guidelines_dir())
    which = [w.strip() for w in args.tasks.split(",") if w.strip()]
    bad = sorted(set(which) - {"staging", "referral", "biomarkers"})
    if bad:
        raise ValueError(f"--tasks: unknown {bad}; use staging, referral, biomarkers")
    rows, skipped = read_rows(Path(args.root), cfg, g)
    rows = [r for r in rows if r.observations is not None]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = VisionLanguageModel.load(args.model)
    tasks = tasks_for(g, which)
    preds = run_closed_ended(model, rows, g, args.root, tasks, args.describe_tokens, args.answer_tokens)
    scores = score(preds, tasks, n_resamples=args.resamples)
    write_results(args.out, preds, scores, title=Path(args.model).name)
    for name, s in scores.items():
        f1 = "n/a (no positive cases)" if s["f1"] is None else f"{s['f1']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"
        print(f"{name:22s} F1 {f1}  n={s['n']} invalid={s['invalid']}")  # noqa: T201
    print(f"{len(rows)} images ({len(skipped)} rows skipped); results in {args.out}")  # noqa: T201
    return 0
