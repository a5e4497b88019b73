"""``medvit demo``: the main job (batch DICOM inference) end to end on built-in sample data.

1. obtains the demo model: trained once by ``medvit run pipelines/demo/cxr_phantom_demo.yaml`` on in-memory
   chest phantoms and cached in ``.cache/medvit-demo/model`` (git-ignored; retrained when the YAML changes;
   about a minute on 2 idle cores);
2. writes an inbox of phantom studies as DICOM (``medvit data synth``: plain, MONOCHROME1 + JPEG 2000) plus
   hostile extras (pydicom's CT, DICOMDIR and RT plan test files, a chest DX with truncated pixel data, a text
   file);
3. runs ``medvit infer -m MODEL -i INBOX -o RESULTS --sr --heatmaps --rules pipelines/demo/cxr_rules.json``
   and prints its summary, the phantoms' truth next to the findings, and where the outputs are.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path
from typing import Any

from medvit import demo as demo_files
from medvit.config import yaml_loads
from medvit.data.phantom_common import knobs_from_dataset_args

#: the demo's pipeline, rules and committed model (pipelines/demo of the source tree; see medvit.demo)
try:
    _DEMO = demo_files.demo_dir()
except FileNotFoundError:  # an installed package without the source tree: `medvit demo` says so when run
    _DEMO = Path("pipelines") / "demo"
PIPELINE = _DEMO / demo_files.PIPELINE_NAME
RULES = _DEMO / demo_files.RULES_NAME
COMMITTED = _DEMO / demo_files.COMMITTED_NAME
#: the committed segmentation model (pipelines/segmentation/model): its SEGs go to results/segmentation/
SEGMENTATION_MODEL = _DEMO.parent / "segmentation" / "model"
#: pydicom test files used as hostile extras, with the outcome the demo expects
EXTRAS = {"CT_small.dcm": "skipped (CT: not selected)", "rtplan.dcm": "skipped (no image)",
          "DICOMDIR": "skipped (DICOMDIR)"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run medvit's main job (batch DICOM inference) on built-in sample data",
                       description="Take the demo model committed in pipelines/demo/model (trained on chest "
                       "phantoms; it is trained again, once, and cached only when the pipeline YAML changed or with "
                       "--retrain), write a few phantom DICOM studies plus hostile files, run `medvit infer --sr "
                       "--heatmaps` on them and print the summary. Research use only - not for diagnosis.")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--n", type=int, default=8, help="phantom images to write (default 8)")
    p.add_argument("--retrain", action="store_true", help="train the demo model again (about a minute) instead of "
                   "using the committed or cached one")
    p.add_argument("--cache", default=str(demo_files.default_cache()),
                   help="where the trained demo model is cached (default .cache/medvit-demo of the source tree, "
                        "else ~/.cache/medvit/demo; env MEDVIT_DEMO_CACHE)")
    p.set_defaults(func=run)


def demo_model(cache: Path, retrain: bool = False) -> Path:
    """The cached demo checkpoint ``cache/model``, (re)trained with the demo pipeline when missing or when the
    pipeline YAML changed (its SHA-256 is kept in ``cache/PIPELINE_SHA256``)."""
    import json

    from medvit.tasks import run_task

    if not PIPELINE.is_file():
        demo_files.demo_dir()  # raises FileNotFoundError naming where it looked and MEDVIT_PIPELINES
    key = hashlib.sha256(PIPELINE.read_bytes()).hexdigest()
    if not retrain and _committed_model_ok(key):
        print(f"demo model: {_show(COMMITTED)} (committed; trained by `medvit run {_show(PIPELINE)}`, "  # noqa: T201
              "weights checksum verified)")
        return COMMITTED
    model = cache / "model"
    stamp = cache / "PIPELINE_SHA256"
    fresh = stamp.is_file() and stamp.read_text().strip() == key and (model / "model.safetensors").is_file()
    if fresh and not retrain:
        print(f"demo model: {model} (cached; trained by `medvit run {_show(PIPELINE)}`)")  # noqa: T201
        return model
    if cache.exists():
        shutil.rmtree(cache)
    print(f"demo model: training it once with `medvit run {_show(PIPELINE)} output_dir={cache}` "  # noqa: T201
          "(about a minute on 2 idle cores) ...", flush=True)
    summary = run_task(str(PIPELINE), [f"output_dir={cache}"])
    if not (model / "config.json").is_file():
        raise FileNotFoundError(f"the demo pipeline finished but wrote no checkpoint at {model}")
    cfg = json.loads((model / "config.json").read_text())
    stamp.write_text(key + "\n")
    (cache / "MODEL_SHA256").write_text(cfg.get("sha256", "") + "\n")
    test = summary.get("test", {}).get("mean_auroc") if isinstance(summary, dict) else None
    print(f"demo model: saved to {model} (weights sha256 {cfg.get('sha256', '')[:16]}...; "  # noqa: T201
          f"test mean AUROC on held-out phantoms {'n/a' if test is None else f'{test:.3f}'})")
    return model


def _committed_model_ok(pipeline_sha256: str) -> bool:
    """True when the repository ships the demo model trained by the current YAML and its weights verify."""
    import json

    from medvit.models.checkpoint import sha256_file

    stamp = COMMITTED / "PIPELINE_SHA256"
    weights, cfg = COMMITTED / "model.safetensors", COMMITTED / "config.json"
    if not (stamp.is_file() and weights.is_file() and cfg.is_file()):
        return False
    if stamp.read_text().strip() != pipeline_sha256:
        print(f"demo model: {_show(COMMITTED)} was trained by an older {PIPELINE.name}; training a fresh one")  # noqa: T201
        return False
    expected = json.loads(cfg.read_text()).get("sha256", "")
    if sha256_file(weights) != expected:
        raise ValueError(f"{weights}: SHA-256 does not match config.json ({expected[:16]}...); the file is damaged. "
                         "Restore it with git or run `medvit demo --retrain`.")
    return True


def _show(p: Path) -> str:
    """``p`` relative to the working directory when inside it (shorter commands to copy), else absolute."""
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _ratio(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.0f} %)" if n else "n/a (none)"


def pipeline_knobs(pipeline: Path | None = None) -> dict[str, float]:
    """The phantom knobs in the demo pipeline's ``dataset_args``: the inbox is drawn from the distribution the
    demo model was trained on (a phantom study of other difficulty would be another test)."""
    doc = yaml_loads((pipeline or PIPELINE).read_text()) or {}
    args = doc.get("dataset_args") or {}
    return knobs_from_dataset_args(args)


#: the demo inbox: (site, phantom seed, synth options); site_b's studies are MONOCHROME1 + JPEG 2000
SITES = (("site_a", 104, {}), ("site_b", 106, {"monochrome1": True, "jpeg2000": True}))
#: pixels per side the demo's phantom studies are drawn at when the pipeline names no ``dataset_args.image_size``
DRAW_SIZE = 256


def pipeline_draw_size(pipeline: Path | None = None) -> int:
    """Pixels per side the demo pipeline draws its training phantoms at (``dataset_args.image_size``, else
    :data:`DRAW_SIZE`): the inbox is drawn at the same size, so the model meets its studies through the same
    contract resize it was evaluated with (a phantom drawn small is not a large one resized)."""
    doc = yaml_loads((pipeline or PIPELINE).read_text()) or {}
    return int((doc.get("dataset_args") or {}).get("image_size", DRAW_SIZE))


def build_inbox(inbox: Path, n: int, knobs: dict[str, float] | None = None, seeds: tuple[int, int] | None = None,
                extras: bool = True, work: Path | None = None, image_size: int = DRAW_SIZE) -> dict[str, Any]:
    """Phantom studies (two sites: plain; MONOCHROME1 + JPEG 2000) and hostile extras; returns the truth table
    (inbox-relative file -> the synth ``labels.csv`` row).

    ``knobs``: phantom calibration knobs (default: those of the demo pipeline's ``dataset_args``). ``seeds``:
    phantom seeds of the two sites (default 104, 106: the studies `medvit demo` shows; other seeds draw unseen
    studies, as benchmarks/demo_agreement.py does). ``extras``: also the hostile files. ``work``: where the synth
    folders go (default: beside ``inbox``). ``image_size``: pixels per side of the drawn studies."""
    import csv

    from medvit.data.synth import write_synth

    knobs = pipeline_knobs() if knobs is None and PIPELINE.is_file() else (knobs or {})

    truth: dict[str, dict[str, str]] = {}
    phantoms = (work or inbox.parent) / "phantoms"
    n_b = max(1, n // 3)
    for (site, seed, opts), count, s in zip(SITES, (n - n_b, n_b), seeds or (None, None)):
        src = phantoms / site
        write_synth("cxr", count, src, seed=seed if s is None else int(s), image_size=image_size, masks=False,
                    **opts, **knobs)
        with open(src / "labels.csv", newline="") as f:
            for row in csv.DictReader(f):
                dst = inbox / site / row["patient_id"] / Path(row["file"]).name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src / row["file"], dst)
                truth[dst.relative_to(inbox).as_posix()] = row
    if not extras:
        return truth
    from pydicom.data import get_testdata_file

    xdir = inbox / "extras"
    xdir.mkdir(parents=True, exist_ok=True)
    for name in EXTRAS:
        try:
            shutil.copy(get_testdata_file(name), xdir / name)
        except (TypeError, OSError):  # a pydicom without that file: fewer extras
            pass
    (xdir / "README.txt").write_text("not an image: medvit infer lists it in status.csv and moves on\n")
    first = inbox / sorted(truth)[0]
    (xdir / "truncated_dx.dcm").write_bytes(first.read_bytes()[:-2000])  # a selected image that cannot decode
    return truth


def truth_vs_findings(truth: dict[str, dict[str, str]], preds: dict[str, dict[str, str]]) -> tuple[list, Any]:
    """Score ``medvit infer``'s ``predictions.csv`` rows (file -> row) against the phantoms' truth (file -> synth
    ``labels.csv`` row). Returns per image ``(file, true findings, found findings or None when the image was not
    predicted, OOD flag)`` and the :class:`~medvit.eval.operating.OperatingSummary` over the predicted images
    (per-label agreement, all-negative baseline, sensitivity / specificity per finding; None when none was)."""
    from medvit.data.phantom_cxr import CXR_LABELS
    from medvit.eval.operating import operating_summary

    rows, y_true, y_pred = [], [], []
    for rel, t in sorted(truth.items()):
        p = preds.get(rel)
        true_pos = [k for k in CXR_LABELS if str(t.get(k, "0")) == "1"]
        found = (p["positive_findings"].split(";") if p["positive_findings"] else []) if p else None
        if found is not None:  # images the model did not predict are listed but not scored
            y_true.append([k in true_pos for k in CXR_LABELS])
            y_pred.append([k in found for k in CXR_LABELS])
        rows.append((rel, true_pos, found, bool(p and p.get("ood_flag") == "True")))
    return rows, (operating_summary(y_true, y_pred, CXR_LABELS) if y_true else None)


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that is (or lies under) an existing non-folder, before anything is trained or written.
    Raises ``ValueError`` naming --out (the command prints it on one line and exits 2)."""
    for p in (out, *out.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "" if p == out else f" (its parent {p} is not a folder)"
                raise ValueError(f"--out {out}: exists and is not a folder{where}; give a folder path "
                                 "(it is created when missing)")
            return


def run(args: argparse.Namespace) -> int:
    import csv
    import logging

    from medvit.cli.main import build_parser

    for name in ("medvit.data.synth", "openjpeg", "medvit.tasks"):  # keep the demo's console readable
        logging.getLogger(name).setLevel(logging.WARNING)
    out = Path(args.out)
    _check_out(out)
    for sub in ("inbox", "phantoms", "results"):  # demo-owned: start clean
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    model = demo_model(Path(args.cache), args.retrain)
    truth = build_inbox(out / "inbox", args.n, image_size=pipeline_draw_size() if PIPELINE.is_file() else DRAW_SIZE)
    results = out / "results"
    argv = ["infer", "-m", _show(model), "-i", _show(out / "inbox"), "-o", _show(results), "--sr", "--heatmaps",
            "--rules", _show(RULES)]
    print(f"\n$ medvit {' '.join(argv)}", flush=True)  # noqa: T201
    infer_args = build_parser().parse_args(argv)
    rc = infer_args.func(infer_args)
    with open(results / "predictions.csv", newline="") as f:
        preds = {r["file"]: r for r in csv.DictReader(f)}
    print("\nphantom truth vs findings (positive at the model's thresholds):")  # noqa: T201
    rows, op = truth_vs_findings(truth, preds)
    for rel, true_pos, found, flagged in rows:
        ood = " [flagged out of distribution]" if flagged else ""
        print(f"  {rel:40s} truth: {', '.join(true_pos) or 'no finding':32s} "  # noqa: T201
              f"model: {'(not predicted)' if found is None else (', '.join(found) or 'no finding')}{ood}")
    if op is not None:
        print(f"  {op.headline()} (answering 'no finding' everywhere)")  # noqa: T201
        print("  per finding (sensitivity = found/present, specificity = clear/absent):")  # noqa: T201
        for f in op.findings:
            print(f"    {f.name:14s} sensitivity {_ratio(f.tp, f.tp + f.fn):12s} "  # noqa: T201
                  f"specificity {_ratio(f.tn, f.tn + f.fp)}")
    with open(results / "errors.csv", newline="") as f:
        errors = [r["file"] for r in csv.DictReader(f)]
    if rc == 3 and errors and all(e.startswith("extras/") for e in errors):
        print(f"\ndemo: the {len(errors)} failure(s) are the deliberately broken extras "  # noqa: T201
              f"({', '.join(errors)}); a real run would exit with code 3 here.")
        rc = 0
    if (SEGMENTATION_MODEL / "config.json").is_file():  # lungs and heart as DICOM SEG (the viewer overlays them)
        seg_argv = ["infer", "-m", _show(SEGMENTATION_MODEL), "-i", _show(out / "inbox"), "-o",
                    _show(results / "segmentation"), "--quiet"]
        print(f"\n$ medvit {' '.join(seg_argv)}", flush=True)  # noqa: T201
        seg_args = build_parser().parse_args(seg_argv)
        seg_args.func(seg_args)  # failures are the same hostile extras as above (listed in its errors.csv)
    print(f"\ndemo: outputs in {results}/ (predictions.csv, sr/, heatmaps/, segmentation/seg/, status.csv, run.json); "  # noqa: T201
          f"inputs in {out / 'inbox'}/. Research use only - not for diagnosis.")
    print(f"demo: to look at the studies and findings, run `make viewer` (or `medvit viewer --data {out / 'inbox'}`)")  # noqa: T201
    return rc
