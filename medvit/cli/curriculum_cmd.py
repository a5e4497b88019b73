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
    p.set_defaults(func=lambda args: _dispatch(args, p))


def _dispatch(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    if args.curriculum_command == "generate":
        return run_generate(args)
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
