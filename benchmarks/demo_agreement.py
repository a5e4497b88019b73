"""Does the demo model's printed agreement hold on studies it has not seen? `make demo`'s path, many inboxes.

`medvit demo` shows one fixed inbox (8 chest phantom studies, site seeds 104 / 106: 56 labels); one inbox is a
small sample. This benchmark draws ``--inboxes`` further inboxes exactly the way the demo draws its own
(:func:`medvit.cli.demo_cmd.build_inbox`: DICOM written by ``medvit data synth`` at the demo's draw size with the
demo pipeline's knobs, site_b MONOCHROME1 + JPEG 2000) from phantom seeds the model was never trained, validated or
tested on (seed 0 is the training data), runs ``medvit infer`` (the demo's command: contract preprocessing,
thresholds, scope rules) once over all of them and scores each inbox as the demo does
(:func:`medvit.cli.demo_cmd.truth_vs_findings`): per-label agreement against the all-negative baseline, and
sensitivity / specificity per finding pooled over all inboxes.

    .venv/bin/python benchmarks/demo_agreement.py                       # committed model, 20 inboxes of 8
    .venv/bin/python benchmarks/demo_agreement.py --model DIR --no-write   # a candidate model, quick look

Writes benchmarks/results/demo_agreement.{md,json} (unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
#: inbox k uses site seeds (FIRST_SEED + 2k, FIRST_SEED + 2k + 1): disjoint from the training seed 0 and the demo's
FIRST_SEED = 1000


def run(model: Path, inboxes: int, n: int, work: Path) -> dict:
    from medvit.cli import demo_cmd
    from medvit.cli.main import build_parser
    from medvit.data.phantom_cxr import CXR_LABELS
    from medvit.eval.operating import operating_summary

    knobs, size = demo_cmd.pipeline_knobs(), demo_cmd.pipeline_draw_size()
    inbox = work / "inbox"
    truths: dict[int, dict[str, dict[str, str]]] = {}
    for k in range(inboxes):
        sub = f"inbox_{k:02d}"
        t = demo_cmd.build_inbox(inbox / sub, n, knobs, seeds=(FIRST_SEED + 2 * k, FIRST_SEED + 2 * k + 1),
                                 extras=False, work=work / "phantoms" / sub, image_size=size)
        truths[k] = {f"{sub}/{rel}": row for rel, row in t.items()}
    results = work / "results"
    argv = ["infer", "-m", str(model), "-i", str(inbox), "-o", str(results), "--rules", str(demo_cmd.RULES),
            "--quiet"]
    args = build_parser().parse_args(argv)
    rc = args.func(args)
    with open(results / "predictions.csv", newline="") as f:
        preds = {r["file"]: r for r in csv.DictReader(f)}
    per_inbox, y_true, y_pred = [], [], []
    for k, truth in truths.items():
        rows, op = demo_cmd.truth_vs_findings(truth, preds)
        if op is None:
            per_inbox.append({"inbox": k, "predicted": 0})
            continue
        per_inbox.append({"inbox": k, "seeds": [FIRST_SEED + 2 * k, FIRST_SEED + 2 * k + 1], "labels": op.total,
                          "agreement": op.agree, "all_negative": op.all_negative_agree,
                          "ood_flagged": sum(r[3] for r in rows), "predicted": sum(r[2] is not None for r in rows)})
        for _, true_pos, found, _ in rows:
            if found is not None:
                y_true.append([name in true_pos for name in CXR_LABELS])
                y_pred.append([name in found for name in CXR_LABELS])
    if not y_true:
        raise RuntimeError(f"medvit infer (exit code {rc}) predicted none of the {len(preds)} studies: see {results}")
    pooled = operating_summary(y_true, y_pred, CXR_LABELS)
    ag = [r["agreement"] / r["labels"] for r in per_inbox if r.get("labels")]
    base = [r["all_negative"] / r["labels"] for r in per_inbox if r.get("labels")]
    return {"model": str(model), "inboxes": inboxes, "studies_per_inbox": n, "infer_rc": rc, "knobs": knobs,
            "draw_size": size, "per_inbox": per_inbox,
            "agreement_mean": statistics.mean(ag), "agreement_sd": statistics.stdev(ag) if len(ag) > 1 else 0.0,
            "agreement_min": min(ag), "agreement_max": max(ag),
            "inboxes_at_least_85": sum(a >= 0.85 for a in ag), "all_negative_mean": statistics.mean(base),
            "pooled": pooled.as_dict(), "pooled_headline": pooled.headline(), "pooled_table": pooled.table()}


def write(res: dict, cmd: str, cpu_s: float, load: str) -> None:
    lines = ["# Demo agreement on unseen inboxes (issue 15)", "",
             f"Command: `{cmd}` ({cpu_s / 60:.1f} CPU-min; load average at start/end: {load}).", "",
             f"Model: `{res['model']}`. {res['inboxes']} inboxes of {res['studies_per_inbox']} chest phantom studies "
             f"each, drawn as `medvit demo` draws its own (DICOM at {res['draw_size']} px, knobs {res['knobs']}, "
             f"site_b MONOCHROME1 + JPEG 2000) from seeds {FIRST_SEED}..{FIRST_SEED + 2 * res['inboxes'] - 1} "
             "(never seen in training, validation or test), scored through `medvit infer` at the model's thresholds.",
             "",
             f"**Per-label agreement per inbox: {100 * res['agreement_mean']:.1f} ± {100 * res['agreement_sd']:.1f} %"
             f" (mean ± sd over {res['inboxes']} inboxes; min {100 * res['agreement_min']:.0f} %, max "
             f"{100 * res['agreement_max']:.0f} %); {res['inboxes_at_least_85']}/{res['inboxes']} inboxes reach "
             f"85 %; all-negative baseline {100 * res['all_negative_mean']:.1f} %.**", "",
             f"Pooled over all inboxes: {res['pooled_headline']}", "", res["pooled_table"], "",
             "| inbox | seeds | agreement | all-negative | OOD flagged |", "|---|---|---|---|---|"]
    for r in res["per_inbox"]:
        if r.get("labels"):
            lines.append(f"| {r['inbox']} | {r['seeds'][0]}, {r['seeds'][1]} | {r['agreement']}/{r['labels']} "
                         f"({100 * r['agreement'] / r['labels']:.0f} %) | {r['all_negative']}/{r['labels']} | "
                         f"{r['ood_flagged']} |")
        else:
            lines.append(f"| {r['inbox']} | — | not predicted | — | — |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo_agreement.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "demo_agreement.json").write_text(json.dumps({**res, "command": cmd, "cpu_s": cpu_s}, indent=1))


def main() -> int:
    import logging
    import os

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pipelines/demo/model", help="demo model directory (default: the committed one)")
    ap.add_argument("--inboxes", type=int, default=20, help="inboxes to draw (default 20)")
    ap.add_argument("--n", type=int, default=8, help="studies per inbox (default 8, as `medvit demo`)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results alone")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in ("medvit.data.synth", "openjpeg", "medvit.infer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    load0 = f"{os.getloadavg()[0]:.1f}"
    t0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="demo_agreement_") as tmp:
        res = run(Path(a.model), a.inboxes, a.n, Path(tmp))
    cpu = time.process_time() - t0
    load = f"{load0} / {os.getloadavg()[0]:.1f}"
    print(f"{res['inboxes']} inboxes: agreement {100 * res['agreement_mean']:.1f} ± {100 * res['agreement_sd']:.1f} % "
          f"(min {100 * res['agreement_min']:.0f}, max {100 * res['agreement_max']:.0f}); >= 85 %: "
          f"{res['inboxes_at_least_85']}/{res['inboxes']}; all-negative {100 * res['all_negative_mean']:.1f} %")
    print(res["pooled_headline"])
    print(res["pooled_table"])
    if not a.no_write:
        write(res, "python " + " ".join(shlex.quote(x) for x in sys.argv), cpu, load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
