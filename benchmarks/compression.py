"""Post-training compression on chest phantoms: test mean AUROC and measured CPU images/s of every compressed form
of repo-trained ViT-S/16 and ViT-B/16 models, one table, one Pareto plot.

Inputs: checkpoints trained by the repo's own task on the calibrated chest phantoms at 64 px
(``medvit run pipelines/compress/vit_s16_cxr_phantom.yaml`` → ViT-S/16, ``vit_ti16_cxr_phantom.yaml`` → ViT-Ti/16,
the small SN-Netv2 anchor, ``vit_b16_cxr_phantom.yaml`` → ViT-B/16). Two phases over one work directory (``--work``):

``--phase build`` (one core): with the repo's tasks and libraries, on the training split,
- fp32 / bf16 weights / dynamic int8 / Q-HyViT-style static int8 PTQ (``ptq`` task) of the dense ViT-S/16 (family
  ``dense``) and ViT-B/16 (family ``b16``);
- NViT (``nvit_prune`` task) to ``--mac-ratio`` of the dense MACs + the paper's short fine-tune with distillation
  from the dense model (``--ft-epochs``; ``--b16-ft-epochs``), and the PTQ of the pruned ViT-S/16;
- SN-Netv2 (``snnet_train`` task): Ti/16 + S/16 stitched, stitching layers trained (``--snnet-steps``);
- ElasticViT (``elastic_train`` task): the S/16 as supernet, conflict-aware training (``--elastic-steps``), one
  subnet per MAC budget (searched on val loss);
then the test mean AUROC of every variant (int8 rows through the exact float simulation of the PT2E graph).
``--families`` rebuilds only some families (the rows of the others are kept in ``build.json``).

``--phase time`` (run it with the whole machine, ``/work/cpu.sh -n 2``): images/s of every variant through the
`medvit infer` predictor (``medvit.infer.predictor.Predictor``) at the models' 64 px input, all variants
interleaved per round (median), every sample taken while no other process kept the machine busy
(``benchmarks/cpu_timing.py``); and the `medvit infer` end-to-end gain of the PTQ checkpoint (``--precision int8``
vs fp32) on phantom DICOM files, in adjacent pairs. Writes ``compression.{json,md,png}`` into ``--out``.
``--phase report`` renders md/png from ``build.json`` alone (or, with ``--timed``, from a timed json).

    /work/cpu.sh -n 1 TAG python benchmarks/compression.py --phase build --families b16 --b16 runs/vit_b16_cxr/model
    /work/cpu.sh -n 2 TAG python benchmarks/compression.py --phase time
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from medvit.models import load_model, save_checkpoint  # noqa: E402
from medvit.nn.flops import measured_macs  # noqa: E402

TIMED_FAMILIES = ("dense", "nvit", "snnet", "elastic", "b16")
DATA = {"n": 2000, "seed": 0, "image_size": 64, "lesion_contrast": 3.0, "lesion_size": 2.0, "anatomy": 0.5}


def dyn_int8(m: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 linears (weights int8, activations quantised per call), eager."""
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(m), {torch.nn.Linear}, dtype=torch.qint8)


def load_split(contract, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A split of the calibrated phantoms through the checkpoint's serving preprocessing: (N, 1, 64, 64), (N, 7)."""
    from medvit.data import build_dataset
    from medvit.data.augment import build_contract_eval_transform

    ds = build_dataset("cxr_phantom", split, **DATA)
    tf = build_contract_eval_transform(contract)
    items = [tf(ds[i]) for i in range(len(ds))]
    return torch.stack([it["image"] for it in items]), torch.stack([torch.as_tensor(it["label"]) for it in items])


@torch.no_grad()
def logits_of(fn, x: torch.Tensor, bs: int = 64) -> torch.Tensor:
    return torch.cat([fn(x[i:i + bs]).float() for i in range(0, len(x), bs)])


def mean_auroc(logits: torch.Tensor, y: torch.Tensor) -> float:
    from medvit.eval import mean_auroc as ma

    return float(ma(y.float().numpy(), torch.sigmoid(logits.float()).numpy()).mean)


def run_task(task: str, **kw) -> dict:
    from medvit.tasks import run_task as rt

    return rt(None, [f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in kw.items()],
              data={"task": task})


def kd_finetune(student, teacher, x, y, epochs: float, lr: float, bs: int = 32, alpha: float = 0.5,
                bf16: bool = False) -> None:
    """NViT's fine-tune after pruning: labels + distillation from the dense model (BCE on its sigmoid), AdamW,
    cosine LR; ``epochs`` may be fractional; ``bf16``: autocast (as the ViT-B/16 preset trains)."""
    steps = int(epochs * (len(x) // bs))
    if steps <= 0:
        return
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(0)
    teacher.eval()
    student.train()
    done = 0
    while done < steps:
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - bs + 1, bs):
            if done == steps:
                break
            idx = perm[i:i + bs]
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                out = student(x[idx]).float()
                with torch.no_grad():
                    t = torch.sigmoid(teacher(x[idx]).float())
            loss = (1 - alpha) * F.binary_cross_entropy_with_logits(out, y[idx].float()) + \
                alpha * F.binary_cross_entropy_with_logits(out, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            sched.step()
            done += 1
    student.eval()


@dataclasses.dataclass
class Base:
    """A trained dense model the compressed rows start from: row-name prefix, family, checkpoint, its test split."""

    tag: str  # "ViT-S/16" | "ViT-B/16"
    family: str  # family of its dense rows
    ckpt: str
    model: torch.nn.Module
    macs: float
    xte: torch.Tensor
    yte: torch.Tensor


def build(args: argparse.Namespace) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0, load0 = time.time(), os.getloadavg()
    fams = args.families.split(",")
    unknown = set(fams) - set(TIMED_FAMILIES)
    if unknown:
        raise SystemExit(f"--families: unknown {sorted(unknown)} (choose from {TIMED_FAMILIES})")
    prev = json.loads((work / "build.json").read_text()) if (work / "build.json").exists() else {"meta": {},
                                                                                                "rows": []}
    parts = args.b16_parts.split(",")
    rows = [r for r in prev["rows"] if r["family"] not in fams or (r["family"] == "b16" and r.get("part") not in parts)]
    secs = dict(prev["meta"].get("seconds_build", {}))
    meta = {**prev["meta"], "torch": torch.__version__, "platform": platform.platform(), "cpus": os.cpu_count(),
            "threads_build": torch.get_num_threads(), "data": DATA, "s16": args.s16, "ti16": args.ti16,
            "args": {**prev["meta"].get("args", {}), **vars(args)},
            "commands_build": prev["meta"].get("commands_build", []) + [
                "python benchmarks/compression.py " + " ".join(sys.argv[1:])],
            "load_build": prev["meta"].get("load_build", []) + [[load0]],
            "build_s": prev["meta"].get("build_s", 0.0)}
    if "b16" in fams:
        meta["b16"] = args.b16

    def save():
        meta.update(date_build=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    seconds_build={k: round(v, 1) for k, v in secs.items()})
        meta["load_build"][-1] = [load0, os.getloadavg()]
        for ck, key in ((args.s16, "s16_training"), (args.ti16, "ti16_training"), (args.b16, "b16_training")):
            summ = Path(ck).parent / "summary.json"
            if summ.exists():
                js = json.loads(summ.read_text())
                meta[key] = {k: js[k] for k in ("val_mean_auroc", "test_mean_auroc", "trained_steps", "planned_steps",
                                                "best_step") if k in js}
        order = {f: i for i, f in enumerate(TIMED_FAMILIES)}
        rows.sort(key=lambda r: order[r["family"]])  # stable: the order within a family is kept
        out = {"meta": {**meta, "build_s": round(meta["build_s"] + time.time() - t0, 1)}, "rows": rows}
        (work / "build.json").write_text(json.dumps(out, indent=2, default=float))

    def add(base: Base, name, family, fn, macs, ckpt=None, **extra):
        auc = mean_auroc(logits_of(fn, base.xte), base.yte)
        rows.append({"variant": name, "family": family, "test_auroc": auc, "gmacs": macs / 1e9,
                     "checkpoint": str(ckpt) if ckpt else None, **extra})
        print(f"{name}: test AUROC {auc:.4f}, {macs / 1e9:.3f} GMACs", flush=True)

    def base_of(tag, family, ck) -> tuple[Base, torch.Tensor, torch.Tensor]:
        m = load_model(ck).eval()
        xte, yte = load_split(m.contract, "test")
        xtr, ytr = load_split(m.contract, "train")
        meta["n_test"], meta["n_train"] = len(xte), len(xtr)
        return Base(tag, family, str(ck), m, measured_macs(m, xte[:1]), xte, yte), xtr, ytr

    common = dict(dataset="cxr_phantom", dataset_args=DATA, batch_size=32)
    if {"dense", "nvit", "elastic", "snnet"} & set(fams):
        s16, xtr, ytr = base_of("ViT-S/16", "dense", args.s16)
        if "dense" in fams:
            build_dense(args, work / "ptq_dense", s16, add, secs, common)
            save()
        if "nvit" in fams:
            build_nvit(args, work, s16, "nvit", xtr, ytr, add, secs, common, ft_epochs=args.ft_epochs)
            save()
        if "elastic" in fams:
            build_elastic(args, work, s16, add, secs, common)
            save()
        if "snnet" in fams:
            build_snnet(args, work, s16, add, secs, common)
            save()
    if "b16" in fams:
        b16, xtr, ytr = base_of("ViT-B/16", "b16", args.b16)
        if "dense" in parts or "ptq" in parts:
            build_dense(args, work / "ptq_b16", b16, add, secs, common, float_rows="dense" in parts,
                        ptq="ptq" in parts)
            save()
        if "nvit" in parts:
            build_nvit(args, work, b16, "b16", xtr, ytr, add, secs, common, ft_epochs=args.b16_ft_epochs, bf16=True,
                       with_ptq=False)
            save()


def build_dense(args, out: Path, b: Base, add, secs, common, float_rows: bool = True, ptq: bool = True) -> None:
    """fp32, bf16 weights, dynamic int8 (``float_rows``) and Q-HyViT static int8 (``ptq``: the ``ptq`` task) of a
    dense model."""
    from medvit.compress.ptq import load_qparams, simulate

    if float_rows:
        add(b, f"{b.tag} dense fp32", b.family, b.model, b.macs, b.ckpt, part="dense")
        bf = copy.deepcopy(b.model).to(torch.bfloat16)
        add(b, f"{b.tag} dense bf16 weights", b.family, lambda x: bf(x.to(torch.bfloat16)), b.macs, b.ckpt,
            precision="bf16", part="dense")
        add(b, f"{b.tag} dense dynamic int8", b.family, dyn_int8(b.model), b.macs, b.ckpt, precision="dynamic_int8",
            part="dense")
    if not ptq:
        return
    t = time.time()
    s = run_task("ptq", checkpoint=b.ckpt, output_dir=out, calibration_images=args.calib,
                 recon_iters=args.recon_iters, **common)
    secs[out.name] = time.time() - t
    q = load_model(out / "model").eval()
    add(b, f"{b.tag} static int8 (Q-HyViT PTQ)", b.family, simulate(q, load_qparams(out / "model")), b.macs,
        out / "model", precision="int8", val_fp32_vs_int8=[s["fp32"], s["int8"]], part="ptq")


def build_nvit(args, work, b: Base, family, xtr, ytr, add, secs, common, ft_epochs: float, bf16: bool = False,
               with_ptq: bool = True) -> None:
    """NViT pruning (``nvit_prune`` task) to ``--mac-ratio`` + the KD fine-tune; optionally its static int8."""
    from medvit.compress.ptq import load_qparams, simulate

    sub = "nvit" if family == "nvit" else f"nvit_{family}"
    name = f"NViT {args.mac_ratio:.0%} MACs" if family == "nvit" else f"{b.tag} NViT {args.mac_ratio:.0%} MACs"
    t = time.time()
    s = run_task("nvit_prune", checkpoint=b.ckpt, output_dir=work / sub, saliency_images=256,
                 mac_ratio=args.mac_ratio, **common)
    pruned = load_model(work / sub / "model").eval()
    pm = measured_macs(pruned, b.xte[:1])
    before = mean_auroc(logits_of(pruned, b.xte), b.yte)
    kd_finetune(pruned, b.model, xtr, ytr, ft_epochs, args.ft_lr, bf16=bf16)
    save_checkpoint(pruned, work / f"{sub}_ft", contract=dataclasses.replace(b.model.contract, ood=None),
                    extra={"nvit": {k: s[k] for k in ("mac_ratio",)}})
    secs[f"{sub}_prune_finetune"] = time.time() - t
    add(b, f"{name} fp32", family, pruned, pm, work / f"{sub}_ft", test_auroc_before_finetune=before,
        ft_epochs=ft_epochs, plan={k: s[k] for k in ("kept_heads", "kept_mlp", "kept_embed", "mac_ratio")},
        part="nvit")
    if not with_ptq:
        return
    t = time.time()
    run_task("ptq", checkpoint=work / f"{sub}_ft", output_dir=work / f"ptq_{sub}", calibration_images=args.calib,
             recon_iters=args.recon_iters, **common)
    secs[f"ptq_{sub}"] = time.time() - t
    qp = load_model(work / f"ptq_{sub}" / "model").eval()
    add(b, f"{name} static int8 (PTQ)", family, simulate(qp, load_qparams(work / f"ptq_{sub}" / "model")), pm,
        work / f"ptq_{sub}" / "model", precision="int8")


def build_snnet(args, work, b: Base, add, secs, common) -> None:
    from medvit.compress.stitch import load_stitched

    t = time.time()
    s = run_task("snnet_train", checkpoint=args.ti16, large_checkpoint=b.ckpt, output_dir=work / "snnet",
                 steps=args.snnet_steps, rank=8, calibration_images=128, lr=1e-3, **common)
    secs["snnet_train"] = time.time() - t
    sn = load_stitched(work / "snnet" / "model")
    for r in s["configs"]:
        c = sn.configs[r["config_id"]]
        name = {"S": "SN-Net anchor ViT-Ti/16", "L": "SN-Net anchor ViT-S/16"}.get(
            c.key, f"SN-Net {c.route} stitch {c.front}→{c.back}")
        add(b, name, "snnet", lambda x, c=c: sn.forward_config(x, c), r["macs"], work / "snnet" / "model",
            config_id=r["config_id"], val_auroc=r["val"]["mean_auroc"],
            val_auroc_least_squares_init=r["val_after_least_squares_init"]["mean_auroc"])


def build_elastic(args, work, b: Base, add, secs, common) -> None:
    t = time.time()
    s = run_task("elastic_train", checkpoint=b.ckpt, output_dir=work / "elastic", steps=args.elastic_steps,
                 lr=args.elastic_lr, mac_ratios=[0.75, 0.5, 0.25], search_candidates=args.search, **common)
    secs["elastic_train"] = time.time() - t
    sup = load_model(work / "elastic" / "supernet").eval()
    add(b, "ElasticViT supernet (largest subnet)", "elastic", sup, b.macs, work / "elastic" / "supernet")
    for r in s["subnets"]:
        m = load_model(r["checkpoint"]).eval()
        add(b, f"ElasticViT subnet ≤{r['mac_ratio_budget']:.0%} MACs", "elastic", m, measured_macs(m, b.xte[:1]),
            r["checkpoint"], depth=r["depth"], heads=r["heads"], mlp=r["mlp"], val_auroc=r["val"]["mean_auroc"])



def row_forward(row: dict):
    """The float forward a build row is scored with (int8: the exact float simulation of its PT2E graph)."""
    from medvit.compress.ptq import load_qparams, simulate
    from medvit.compress.stitch import load_stitched

    if row["family"] == "snnet":
        return load_stitched(row["checkpoint"], row["config_id"]).eval()
    m = load_model(row["checkpoint"]).eval()
    prec = row.get("precision", "fp32")
    if prec == "int8":
        return simulate(m, load_qparams(row["checkpoint"]))
    if prec == "bf16":
        bf = m.to(torch.bfloat16)
        return lambda x: bf(x.to(torch.bfloat16))
    return dyn_int8(m) if prec == "dynamic_int8" else m


def rescore(args: argparse.Namespace) -> None:
    """Every row of build.json scored again on the test split the current phantom generator draws (the models are
    kept; the earlier value stays in ``test_auroc_earlier_data``): for when the generator changed after a build."""
    work = Path(args.work)
    log = json.loads((work / "build.json").read_text())
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for r in log["rows"]:
        base = log["meta"]["b16"] if r["family"] == "b16" else log["meta"]["s16"]
        if base not in splits:
            splits[base] = load_split(load_model(base).contract, "test")
        x, y = splits[base]
        auc = mean_auroc(logits_of(row_forward(r), x), y)
        r.setdefault("test_auroc_earlier_data", r["test_auroc"])
        print(f"{r['variant']}: {r['test_auroc']:.4f} -> {auc:.4f}", flush=True)
        r["test_auroc"] = auc
    log["meta"]["rescored"] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "command": "python benchmarks/compression.py " + " ".join(sys.argv[1:])}
    (work / "build.json").write_text(json.dumps(log, indent=2, default=float))


def predictor_for(row: dict, work: Path):
    """The Predictor running the row's model the way `medvit infer` would."""
    from medvit.compress.stitch import load_stitched
    from medvit.infer.predictor import Predictor, load_for_inference

    prec = row.get("precision", "fp32")
    if row["family"] == "snnet":
        m = load_stitched(row["checkpoint"], row["config_id"])
        return Predictor(m, "fp32")
    if prec == "int8":
        m, _, _ = load_for_inference(row["checkpoint"])
        m.ood_reference = None  # the model path alone, as for the other rows (medvit infer e2e keeps OOD)
        return Predictor(m, "int8")
    m = load_model(row["checkpoint"]).eval()
    if prec == "dynamic_int8":
        return Predictor(dyn_int8(m), "fp32")
    return Predictor(m, prec)


#: rows that run the very same ViT-S/16 forward under other names: their images/s must agree (timing check)
SAME_FORWARD = ("ViT-S/16 dense fp32", "SN-Net anchor ViT-S/16", "ElasticViT supernet (largest subnet)")
BASE = "ViT-S/16 dense fp32"


def time_phase(args: argparse.Namespace) -> None:
    """Every variant through the `medvit infer` Predictor, interleaved per round; each timed call repeated until it
    ran on a machine where other processes used ≤ ``--max-foreign`` cores (:mod:`cpu_timing`)."""
    import cpu_timing as ct

    from medvit.infer.predictor import Predictor

    torch.set_num_threads(args.threads)
    os.environ.setdefault("MEDVIT_COMPILE_CACHE", tempfile.mkdtemp(prefix="medvit_compile_"))
    work = Path(args.work)
    log = json.loads((work / "build.json").read_text())
    t0, load0 = time.time(), os.getloadavg()
    size = log["meta"]["data"]["image_size"]
    xs = torch.randn(args.speed_batch, 1, size, size).numpy()
    preds: dict[str, object] = {}
    for r in log["rows"]:
        if r["family"] == "snnet" and r["variant"].startswith("SN-Net") and "anchor" not in r["variant"]:
            c = r["variant"].split()[-1]
            if args.snnet_every and int(c.split("→")[0]) % args.snnet_every:
                continue
        preds[r["variant"]] = predictor_for(r, work)
        if r["variant"] == BASE and not args.no_inductor:
            preds[f"{BASE} Inductor"] = Predictor(load_model(r["checkpoint"]).eval(), "fp32", compile="inductor")
    reps, warm_s = {}, {}
    for name, p in preds.items():  # warm-up: compiles the Inductor / int8 graphs (first batch fixes the shape)
        t = time.perf_counter()
        p.predict(xs)
        warm_s[name] = time.perf_counter() - t
        t = time.perf_counter()
        p.predict(xs)
        reps[name] = ct.reps_for(time.perf_counter() - t, args.min_sample_s)
        print(f"warm {name}: {warm_s[name]:.1f} s, {reps[name]} batches per sample", flush=True)
    samples: dict[str, list] = {k: [] for k in preds}
    t_rounds = time.time()
    for rnd in range(args.rounds):
        if rnd >= 3 and time.time() - t0 > 0.6 * args.deadline_s:
            print(f"round {rnd}: past 60 % of --deadline-s, {rnd} rounds kept", flush=True)
            break
        for name, p in preds.items():
            s = ct.timed_call(lambda p=p, k=reps[name]: [p.predict(xs) for _ in range(k)], args.max_foreign,
                              args.tries)
            samples[name].append(s)
        bad = sum(not v[-1].clean for v in samples.values())
        print(f"round {rnd}: {bad} of {len(preds)} samples disturbed after {args.tries} tries", flush=True)
    speed = {}
    for name in preds:
        n_img = reps[name] * args.speed_batch
        sm = ct.summarize(samples[name], n_img)
        ratio, used = ct.paired_ratio(samples[name], samples[BASE], n_img, reps[BASE] * args.speed_batch)
        speed[name] = {"images_per_s": sm["per_s"], "images_per_s_min": sm["min_per_s"],
                       "images_per_s_max": sm["max_per_s"], "clean_samples": sm["clean"], "samples": sm["n"],
                       "foreign_cores_max": sm["foreign_cores_max"], "batches_per_sample": reps[name],
                       "warmup_s": warm_s[name], "speedup_vs_s16_fp32": ratio, "speedup_rounds": used,
                       "rounds": [s.to_dict() for s in samples[name]]}
    if f"{BASE} Inductor" in speed:
        speed[f"{BASE} Inductor"]["gmacs"] = next(r["gmacs"] for r in log["rows"] if r["variant"] == BASE)
    log["speed"] = speed
    rounds_s = time.time() - t_rounds
    log["e2e"] = carried_e2e(json.loads(Path(args.e2e_from).read_text())) if args.e2e_from else e2e_infer(
        args, work, t0)
    log["meta"].update({"command_time": "python benchmarks/compression.py " + " ".join(sys.argv[1:]),
                        "date_time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads_time": args.threads,
                        "load_time": [load0, os.getloadavg()], "speed_batch": args.speed_batch,
                        "rounds": len(samples[BASE]), "time_s": round(time.time() - t0, 1),
                        "rounds_s": round(rounds_s, 1),
                        "max_foreign": args.max_foreign, "tries": args.tries, "min_sample_s": args.min_sample_s})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compression.json").write_text(json.dumps(log, indent=2, default=float))
    write_md(log, out / "compression.md")
    plot(log, out / "compression.png")


def carried_e2e(prev: dict) -> dict:
    """The end-to-end section of an earlier timed compression.json (``--e2e-from``: a time run that re-times the
    variants only), with the settings it ran under — torch threads, ``--max-foreign``, its commands, its dates — so
    that the md states those and not the new run's. Raises ValueError when that json has no e2e pairs."""
    e, m = dict(prev.get("e2e") or {}), prev.get("meta", {})
    if not e.get("pairs"):
        raise ValueError("--e2e-from: that compression.json has no e2e pairs (key 'e2e.pairs')")
    e.setdefault("threads", m["threads_time"])
    e.setdefault("max_foreign", m.get("max_foreign"))
    e.setdefault("commands", [m["command_time"], *m.get("commands_e2e", [])])
    e.setdefault("calls", [m["date_time"]])
    return e


def e2e_more(args: argparse.Namespace) -> None:
    """More fp32/int8 pairs for the end-to-end figure of a timed json (``--timed``): appended to its pairs (tagged
    with this call's time), summary recomputed over all, md/png re-rendered."""
    path = Path(args.timed)
    log = json.loads(path.read_text())
    e = log["e2e"]
    args.e2e_n, args.e2e_size, args.e2e_decode = e["files"], e["dicom_size"], e["decode"]
    new = e2e_infer(args, Path(args.work), time.time())["pairs"]
    when = time.strftime("%H:%M UTC", time.gmtime())
    for p in new:
        p["call"] = when
    log["e2e"] = e2e_summary(e["pairs"] + new, e["files"], e["dicom_size"], e["decode"], e["checkpoint"])
    log["e2e"]["calls"] = e.get("calls", [log["meta"]["date_time"]]) + [when]
    log["meta"]["commands_e2e"] = log["meta"].get("commands_e2e", []) + [
        "python benchmarks/compression.py " + " ".join(sys.argv[1:])]
    path.write_text(json.dumps(log, indent=2, default=float))


def e2e_infer(args: argparse.Namespace, work: Path, t0: float) -> dict:
    """`medvit infer` on phantom DX DICOM files with the PTQ checkpoint: --precision fp32 vs int8 in adjacent pairs
    (order alternating), each run repeated while other processes kept the machine busy (:mod:`cpu_timing`).
    Verdict: a gain is separable when every clean pair points the same way and the sign test gives p ≤ 0.05."""
    import cpu_timing as ct
    from infer_benchmark import make_phantoms

    inp = work / f"dicom_{args.e2e_n}_{args.e2e_size}"
    if not inp.exists():
        make_phantoms(inp, args.e2e_n, args.e2e_size)
    model = work / "ptq_dense" / "model"

    def infer(prec: str, tag: str) -> dict:
        out = work / f"infer_{prec}_{tag}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "medvit.cli.main", "infer", "-m", str(model), "-i", str(inp), "-o", str(out),
               "--batch-size", str(args.speed_batch), "--precision", prec, "--device", "cpu", "--quiet",
               "--threads", str(args.threads), "--workers", "0", "--any-modality", f"--{args.e2e_decode}-decode"]
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if p.returncode not in (0, 3):
            raise RuntimeError(f"medvit infer failed ({p.returncode}): {p.stderr[-2000:]}")
        run = json.loads((out / "run.json").read_text())
        tm = run["counts"].get("timing") or {}
        cc = (run.get("execution") or {}).get("compile_cache") or {}
        return {"n": run["counts"]["predicted"], "run_s": run["seconds"], "predict_s": tm.get("predict_s"),
                "input_wait_s": tm.get("input_wait_s"), "img_s_run": run["counts"]["predicted"] / run["seconds"],
                "first_batch_s": tm.get("first_batch_s"), "compile_load_s": cc.get("seconds"),
                "img_s_after_first_batch": tm.get("images_per_s_after_first_batch")}

    for prec in ("fp32", "int8"):  # warm-up: the int8 compile goes into the cache; file-system caches filled
        r = infer(prec, "warm")
        print(f"e2e warm {prec}: {r['n']} images, run {r['run_s']:.1f} s", flush=True)
    pairs = []
    for rnd in range(args.e2e_rounds):
        if rnd >= 3 and time.time() - t0 > args.deadline_s:
            print(f"e2e: past --deadline-s, {rnd} pairs kept", flush=True)
            break
        pair = {}
        for prec in (("fp32", "int8") if rnd % 2 == 0 else ("int8", "fp32")):
            box: dict = {}
            s = ct.timed_call(lambda prec=prec, box=box, tag=str(rnd): box.update(infer(prec, tag)), args.max_foreign,
                              args.tries)
            pair[prec] = {**box, "wall_s": s.wall_s, "foreign_cores": s.foreign_cores, "clean": s.clean,
                          "tries": s.tries}
        pair["gain"] = pair["int8"]["img_s_run"] / pair["fp32"]["img_s_run"]
        a, b = pair["int8"]["img_s_after_first_batch"], pair["fp32"]["img_s_after_first_batch"]
        pair["gain_after_first_batch"] = a / b if a and b else None
        pair["clean"] = pair["int8"]["clean"] and pair["fp32"]["clean"]
        pairs.append(pair)
        print(f"e2e pair {rnd}: fp32 {pair['fp32']['img_s_run']:.1f} int8 {pair['int8']['img_s_run']:.1f} img/s, "
              f"gain {pair['gain']:.2f}, clean {pair['clean']}", flush=True)
    return e2e_summary(pairs, args.e2e_n, args.e2e_size, args.e2e_decode, model)


def e2e_summary(pairs: list[dict], files: int, size: int, decode: str, model: Path | str) -> dict:
    """Medians and verdicts over the clean fp32/int8 pairs (all pairs when none is clean), for the whole run and for
    the throughput after the first batch (the int8 run's first batch loads the compiled package from the cache).
    A gain is *separable* when every clean pair points the same way and a one-sample t-test of the log gains
    (scipy) gives p ≤ 0.05; the sign test's p is reported beside it (it cannot reach 0.05 below 6 pairs)."""
    from scipy import stats

    use = [p for p in pairs if p["clean"]] or pairs

    def verdict(gains: list[float]) -> dict:
        same_side = all(g > 1 for g in gains) or all(g < 1 for g in gains)
        logs = [math.log(g) for g in gains]
        p_t = float(stats.ttest_1samp(logs, 0.0).pvalue) if len(gains) > 2 else 1.0
        return {"median": statistics.median(gains), "min": min(gains), "max": max(gains), "n": len(gains),
                "t_test_p": p_t, "sign_test_p": 2 * 0.5 ** len(gains) if same_side else 1.0,
                "separable": same_side and p_t <= 0.05}

    whole = verdict([p["gain"] for p in use])
    steady_g = [p["gain_after_first_batch"] for p in use if p.get("gain_after_first_batch")]
    steady = verdict(steady_g) if steady_g else None
    med = {k: statistics.median([p[k]["img_s_run"] for p in use]) for k in ("fp32", "int8")}

    def med_of(key: str) -> dict:
        return {k: statistics.median([p[k][key] for p in use if p[k].get(key) is not None] or [math.nan])
                for k in ("fp32", "int8")}

    return {"pairs": pairs, "clean_pairs": sum(p["clean"] for p in pairs), "median_img_s_run": med,
            "median_img_s_after_first_batch": med_of("img_s_after_first_batch"),
            "median_first_batch_s": med_of("first_batch_s"), "median_predict_s": med_of("predict_s"),
            "whole_run": whole, "after_first_batch": steady, "int8_gain": whole["median"],
            "separable": whole["separable"], "files": files, "dicom_size": size, "decode": decode,
            "checkpoint": str(model)}


def write_md(log: dict, path: Path) -> None:
    m, sp = log["meta"], log.get("speed", {})
    base = next(r for r in log["rows"] if r["variant"] == BASE)
    b16 = m.get("b16_training")
    lines = ["# Post-training compression on chest phantoms: test AUROC vs measured CPU images/s", "",
             "Build (each through the CPU gate, `/work/cpu.sh`): "
             + "; ".join(f"`{c}`" for c in m["commands_build"])
             + f". Timing, one gate call (`/work/cpu.sh -n {m['threads_time']}`): `{m['command_time']}`"
             + "".join(f"; then `{c}`" for c in m.get("commands_e2e", [])) + ".  "
             + (f"{m['gate']}  " if m.get("gate") else ""),
             f"Build {m['build_s'] / 60:.0f} min wall over {len(m['load_build'])} calls (load average start → end: "
             + ", ".join(f"{a[0]:.1f} → {b[0]:.1f}" for a, b in m["load_build"])
             + f"); timing {m['date_time']}, {m['time_s'] / 60:.1f} min wall, load average "
             f"{m['load_time'][0][0]:.1f} → {m['load_time'][1][0]:.1f}, {m['threads_time']} torch threads; "
             f"{m['platform']}; torch {m['torch']}.", "",
             f"Models: ViT-Ti/16, ViT-S/16 and ViT-B/16 trained from scratch by the repo's `finetune_multilabel` task "
             f"(`pipelines/compress/vit_{{ti16,s16,b16}}_cxr_phantom.yaml`) on the calibrated chest phantoms "
             f"{m['data']} at 64 px (val/test mean AUROC from their runs — ViT-S/16: {m.get('s16_training')}; "
             f"ViT-Ti/16: {m.get('ti16_training')}; ViT-B/16: {b16}). Metric: mean AUROC over 7 findings on the "
             f"patient-disjoint test split ({m['n_test']} images), one training seed — differences below ≈ 0.01–0.02 "
             f"are not separable. int8 rows are scored through the exact float simulation of the exported PT2E graph "
             f"(equal to 1e-5, tests/compress/test_ptq.py).", ""]
    if sp:
        lines += [
            f"Speed: images/s of `Predictor.predict` (the `medvit infer` engine) on batches of {m['speed_batch']} at "
            f"64 px, every variant interleaved per round, median of {m['rounds']} rounds; one sample = as many batches "
            f"as fill ≥ {m.get('min_sample_s', 0.5)} s. **Each sample is taken on a quiet machine:** the CPU time "
            f"other processes used during it is measured (`/proc/stat` minus this process, "
            f"`benchmarks/cpu_timing.py`) and a sample during which they kept more than {m.get('max_foreign')} core "
            f"busy is retaken (≤ {m.get('tries')} tries). Why: with as many torch threads as cores (2), one foreign "
            "runnable process slows an eager forward 5–8× (OpenMP regions wait for the descheduled thread) — the cause "
            "of last session's unstable figures (the same forward read 260, 33 and 37 images/s). "
            + ("This run used 1 torch thread in a one-slot gate call: the other slot's job may keep the other core "
               "busy (hence the limit above 1 core); a third process is what gets a sample retaken. "
               if m["threads_time"] == 1 else "")
            + "speed-up = median per-round ratio to ViT-S/16 dense fp32 eager (rounds where both samples were clean).",
            ""]
        same = {k: sp[k] for k in SAME_FORWARD if k in sp}
        if len(same) > 1:
            v = [s["images_per_s"] for s in same.values()]
            lines += [f"Check — the same ViT-S/16 forward under {len(same)} names ("
                      + ", ".join(f"{k}: {s['images_per_s']:.0f}" for k, s in same.items())
                      + f" images/s): max/min {max(v) / min(v):.2f}"
                      + (" — consistent." if max(v) / min(v) <= 1.15 else " — **NOT consistent: read absolute "
                         "images/s as indicative only.**"), ""]
        bad = {k: f"{s['clean_samples']}/{s['samples']}" for k, s in sp.items() if s["clean_samples"] < s["samples"]}
        lines += [f"Samples still disturbed after the retries (clean/all): {bad or 'none'}.", ""]

    def cell(name):
        s = sp.get(name)
        return (f"{s['images_per_s']:.1f} ({s['images_per_s_min']:.0f}–{s['images_per_s_max']:.0f}) | "
                f"{s['speedup_vs_s16_fp32']:.2f}×" if s else "not timed | —")

    lines += ["| variant | test mean AUROC | GMACs | images/s (median, range over rounds) | speed-up |",
              "|---|---|---|---|---|"]
    for r in log["rows"]:
        lines.append(f"| {r['variant']} | {r['test_auroc']:.4f} | {r['gmacs']:.3f} | {cell(r['variant'])} |")
    lines.append(f"| {BASE} Inductor | {base['test_auroc']:.4f} (= fp32) | {base['gmacs']:.3f} | "
                 f"{cell(BASE + ' Inductor')} |")
    e = log.get("e2e")
    if e and "pairs" in e:
        e = e2e_summary(e["pairs"], e["files"], e["dicom_size"], e["decode"], e["checkpoint"]) | {
            k: e.get(k) for k in ("calls", "threads", "max_foreign", "commands") if k in e or k == "calls"}
        log["e2e"] = e
        w, st = e["whole_run"], e["after_first_batch"]
        g = [f"{p['gain']:.2f}" + ("" if p["clean"] else "*") for p in e["pairs"]]
        lines += ["", f"**`medvit infer` end to end** ({e['files']} phantom DX DICOM files {e['dicom_size']}², "
                  f"decode + preprocess + predict + CSV, batch {m['speed_batch']}, `--workers 0`, "
                  f"`--threads {e.get('threads', m['threads_time'])}`, the Q-HyViT PTQ checkpoint `ptq_dense/model`, "
                  f"`--{e['decode']}-decode`; run clock and timing from run.json; {len(e['pairs'])} adjacent "
                  f"fp32/int8 pairs" + (f" in {len(e['calls'])} calls ({', '.join(e['calls'])})" if e.get("calls")
                                        else "")
                  + f", order alternating, after one warm-up run each per call, each run retaken while other processes "
                  f"kept > {e.get('max_foreign', m.get('max_foreign'))} core busy; {e['clean_pairs']} clean pairs "
                  "used, * = disturbed" + ("; carried over from an earlier timing run, not the one above: "
                                           + "; then ".join(f"`{c}`" for c in e["commands"]) if e.get("commands")
                                           else "") + "):",
                  "",
                  f"- whole run: fp32 {e['median_img_s_run']['fp32']:.1f} images/s, `--precision int8` "
                  f"{e['median_img_s_run']['int8']:.1f} → **{w['median']:.2f}×** (clean pairs {w['min']:.2f}–"
                  f"{w['max']:.2f}; all pairs {', '.join(g)}; t-test of log gains p = {w['t_test_p']:.3f}) — "
                  f"**{'separable' if w['separable'] else 'not separable'}**. Each int8 run's first batch loads the "
                  f"compiled int8 package from the compile cache (first batch median: fp32 "
                  f"{e['median_first_batch_s']['fp32']:.2f} s, int8 {e['median_first_batch_s']['int8']:.2f} s), a "
                  f"fixed cost that is large against a {e['files']}-file run of ≈ 3 s."]
        if st:
            lines.append(f"- after the first batch (steady state, the part that grows with the inbox): fp32 "
                         f"{e['median_img_s_after_first_batch']['fp32']:.1f} images/s, int8 "
                         f"{e['median_img_s_after_first_batch']['int8']:.1f} → **{st['median']:.2f}×** (clean pairs "
                         f"{st['min']:.2f}–{st['max']:.2f}, t-test p = {st['t_test_p']:.1g}, sign test p = "
                         f"{st['sign_test_p']:.3f}) — **{'separable' if st['separable'] else 'not separable'}**.")
        lines.append(f"- verdict rule: separable when every clean pair points the same way and a one-sample t-test "
                     f"of the log gains gives p ≤ 0.05. Model time inside the run (`predict_s`, median, includes the "
                     f"first batch): fp32 {e['median_predict_s']['fp32']:.2f} s, int8 "
                     f"{e['median_predict_s']['int8']:.2f} s; the rest is decoding, preprocessing and writing.")
    for nv in (r for r in log["rows"] if r.get("test_auroc_before_finetune") is not None):
        lines += ["", f"{nv['variant']}: test AUROC right after pruning {nv['test_auroc_before_finetune']:.4f}, after "
                  f"the {nv.get('ft_epochs', m['args']['ft_epochs'])}-epoch distillation fine-tune "
                  f"{nv['test_auroc']:.4f}; plan {nv.get('plan')}."]
    lines += ["", "ViT-S/16 training (session 31): 20 epochs planned (blr 4e-3, batch 32, 1 thread, load average 2–8); "
              "the gate's 25-min limit stopped the run at step ≈ 950 of 980, after the Trainer had kept its "
              "best-validation weights (step 686, val mean AUROC 0.8225); the task's own post-training code "
              "(validation thresholds, test, OOD reference, weight contract, save) was then run on those weights "
              "(`Trainer.fit` replaced by loading them; rerun in session 32 to recreate the deleted checkpoint from "
              "the same weights). ViT-Ti/16: the full 12-epoch preset. " + b16_note(m),
              "", f"Build seconds: {m['seconds_build']}."]
    if m.get("rescored"):
        lines += ["", "All rows were scored again on the current phantom generator's test split "
                  f"({m['rescored']['date']}, "
                  f"`{m['rescored']['command']}`): its lesion_size knob changed after the session-31 build (8820f2d); "
                  "the models are unchanged, the earlier values are in compression.json (`test_auroc_earlier_data`; "
                  "the ViT-S/16 NViT 'right after pruning' value is from the earlier data)."]
    lines += ["",
              "SN-Net rows: `S2L i→j` = ViT-Ti/16 blocks < i, stitching layer, ViT-S/16 blocks ≥ j; `L2S` the other "
              "way; the stitching layers were trained with FLOPs-aware sampling, anchors frozen (val AUROC right "
              "after the least-squares init is in compression.json). ElasticViT subnets were chosen on val loss "
              "(random search), then scored on test.", "", "![Pareto](compression.png)"]
    path.write_text("\n".join(lines) + "\n")


def b16_val_trace(m: dict) -> str:
    """' (val mean AUROC a / b / … at each evaluation)' from the ViT-B/16 run's log.csv, when it is on this machine."""
    import csv

    f = Path(m.get("b16", "")).parent / "seed_0" / "log.csv"
    if not m.get("b16") or not f.is_file():
        return ""
    with f.open() as fh:
        ev = [r for r in csv.DictReader(fh) if r["kind"] == "eval"]
    return (" (val mean AUROC at each epoch: " + " / ".join(f"{float(r['val_mean_auroc']):.3f}" for r in ev)
            + "; the best is kept)") if ev else ""


def b16_note(m: dict) -> str:
    """How the ViT-B/16 was trained (from its summary.json, see build)."""
    b = m.get("b16_training") or {}
    if not b:
        return "ViT-B/16: not built."
    ft = m["args"].get("b16_ft_epochs", "—")
    if b.get("trained_steps") is None:
        return ("ViT-B/16 (session 32): the full 10-epoch preset `pipelines/compress/vit_b16_cxr_phantom.yaml` (490 "
                "steps, bf16 autocast, 1 thread), run in three resumable gate chunks: `medvit run "
                "pipelines/compress/vit_b16_cxr_phantom.yaml train.stop_at_step=150`, then `... "
                "train.stop_at_step=320 train.resume=auto train.ckpt_every=25`, then `... train.resume=auto "
                f"train.ckpt_every=25`{b16_val_trace(m)}. Its NViT row was fine-tuned with distillation for {ft} "
                "epoch(s) (bf16 autocast).")
    return (f"ViT-B/16 (session 32, `pipelines/compress/vit_b16_cxr_phantom.yaml`, bf16 autocast, resumable gate "
            f"chunks with `train.stop_at_step` / `train.resume=auto`): only {b['trained_steps']} of the "
            f"{b['planned_steps']} planned steps ran (the shared CPU gate's queue left no time for the rest), so it is "
            f"under-trained; the Trainer's best-validation weights (step {b['best_step']:.0f}) were finished by the "
            f"task's own post-training code as for the ViT-S/16. Its NViT row was fine-tuned with distillation for "
            f"{ft} epoch(s) (bf16 autocast).")


def plot(log: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    style = {"dense": ("o", "C0"), "nvit": ("s", "C1"), "snnet": ("^", "C2"), "elastic": ("D", "C3"),
             "b16": ("P", "C4")}
    label = {"dense": "ViT-S/16 dense / int8", "nvit": "ViT-S/16 NViT", "snnet": "SN-Netv2 Ti↔S",
             "elastic": "ElasticViT (S/16)", "b16": "ViT-B/16 dense / int8 / NViT"}
    pts, seen = [], set()
    no_speed = not log.get("speed")
    for r in log["rows"]:
        s = log.get("speed", {}).get(r["variant"])
        if no_speed:
            x = 1.0 / r["gmacs"]  # no timing run: 1 / GMACs on the x axis
        elif s is not None:
            x = s["images_per_s"]
        else:
            continue
        mk, col = style[r["family"]]
        ax.scatter(x, r["test_auroc"], marker=mk, color=col,
                   label=label[r["family"]] if r["family"] not in seen else None)
        seen.add(r["family"])
        pts.append((x, r["test_auroc"]))
        if r["family"] != "snnet" or "anchor" in r["variant"]:
            ax.annotate(r["variant"].replace("ViT-S/16 ", ""), pts[-1], fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    front, best = [], -1.0
    for p in sorted(pts, key=lambda p: -p[0]):
        if p[1] > best:
            front.append(p)
            best = p[1]
    ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=0.8, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("1 / GMACs per image (no timing run)" if no_speed else
                  f"measured CPU images/s (Predictor, batch {log['meta']['speed_batch']}, "
                  f"{log['meta']['threads_time']} threads, quiet-machine samples; log)")
    ax.set_ylabel("test mean AUROC (chest phantoms)")
    ax.set_title("Compressed ViT-S/16 and ViT-B/16: NViT, Q-HyViT int8, SN-Netv2 (Ti↔S), ElasticViT")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)



def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--phase", choices=("build", "rescore", "time", "e2e", "report"), required=True,
                   help="report: results from build.json alone (no timing run; speed columns 'not timed'); rescore: "
                        "test AUROC of every built row again on the current phantom generator's test split")
    a.add_argument("--work", default=str(ROOT / "runs" / "compression_bench"))
    a.add_argument("--s16", default=str(ROOT / "runs" / "vit_s16_cxr" / "model"))
    a.add_argument("--ti16", default=str(ROOT / "runs" / "vit_ti16_cxr" / "model"))
    a.add_argument("--mac-ratio", type=float, default=0.5)
    a.add_argument("--ft-epochs", type=int, default=2)
    a.add_argument("--ft-lr", type=float, default=2e-4)
    a.add_argument("--calib", type=int, default=128)
    a.add_argument("--recon-iters", type=int, default=20)
    a.add_argument("--snnet-steps", type=int, default=150)
    a.add_argument("--elastic-steps", type=int, default=150)
    a.add_argument("--elastic-lr", type=float, default=1e-4)
    a.add_argument("--search", type=int, default=30, help="ElasticViT random-search candidates per budget")
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--speed-batch", type=int, default=32)
    a.add_argument("--rounds", type=int, default=5)
    a.add_argument("--snnet-every", type=int, default=2, help="time every k-th stitch position (all are scored)")
    a.add_argument("--e2e-n", type=int, default=512)
    a.add_argument("--e2e-size", type=int, default=256)
    a.add_argument("--e2e-rounds", type=int, default=6, help="adjacent fp32/int8 pairs (order alternating)")
    a.add_argument("--e2e-decode", choices=("full", "reduced"), default="full",
                   help="medvit infer --full-decode (its default) or the opt-in --reduced-decode")
    a.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a.add_argument("--families", default="dense,nvit,elastic,snnet,b16",
                   help="variant families built now (rows of the others are kept from an earlier build.json)")
    a.add_argument("--n", type=int, default=2000, help="phantoms drawn (split into train/val/test)")
    a.add_argument("--b16", default=str(ROOT / "runs" / "vit_b16_cxr" / "model"),
                   help="ViT-B/16 trained by pipelines/compress/vit_b16_cxr_phantom.yaml (family b16)")
    a.add_argument("--b16-ft-epochs", type=float, default=1.0, help="KD fine-tune of the ViT-B/16 NViT row")
    a.add_argument("--b16-parts", default="dense,ptq,nvit",
                   help="family b16: which rows to (re)build — dense (fp32/bf16/dynamic int8), ptq, nvit")
    a.add_argument("--no-inductor", action="store_true", help="time phase: no ViT-S/16 fp32 Inductor row")
    a.add_argument("--max-foreign", type=float, default=0.15,
                   help="a timed call during which other processes kept more cores busy than this is retaken")
    a.add_argument("--tries", type=int, default=4, help="calls per timed sample at most (cpu_timing.timed_call)")
    a.add_argument("--min-sample-s", type=float, default=0.6, help="batches per timed sample fill at least this")
    a.add_argument("--deadline-s", type=float, default=500,
                   help="time phase: no round starts after 60 %% of this (3 at least), no e2e pair after it (3+)")
    a.add_argument("--e2e-from", help="time phase: no new `medvit infer` e2e pairs; carry this timed "
                   "compression.json's e2e section (with its threads/--max-foreign/commands)")
    a.add_argument("--timed", help="report phase: re-render md/png from this timed compression.json instead")
    args = a.parse_args()
    DATA["n"] = args.n
    if args.phase == "build":
        build(args)
    elif args.phase == "rescore":
        rescore(args)
    elif args.phase == "time":
        time_phase(args)
    elif args.phase == "e2e":  # more end-to-end pairs into --timed (threads/batch as given: use the timed run's)
        e2e_more(args)
    elif args.timed:  # speeds and e2e from the timed json; rows (built or rescored since) from build.json
        log = json.loads(Path(args.timed).read_text())
        built = Path(args.work) / "build.json"
        if built.exists():
            b = json.loads(built.read_text())
            log["rows"] = b["rows"]
            log["meta"].update({k: v for k, v in b["meta"].items() if k not in log["meta"] or k in (
                "rescored", "b16_training", "b16", "seconds_build", "commands_build", "load_build", "build_s",
                "args", "n_test", "n_train")})
            log["meta"]["args"] = {**b["meta"]["args"], "b16_ft_epochs": b["meta"]["args"].get("b16_ft_epochs")}
        write_md(log, Path(args.out) / "compression.md")  # (recomputes the e2e summary from its pairs)
        plot(log, Path(args.out) / "compression.png")
        (Path(args.out) / "compression.json").write_text(json.dumps(log, indent=2, default=float))
    else:
        log = json.loads((Path(args.work) / "build.json").read_text())
        log["meta"].update(command_time="(not run)", date_time="—", time_s=0.0, threads_time=0,
                           load_time=[[float("nan")], [float("nan")]], speed_batch=0, rounds=0)
        log.pop("speed", None)
        out = Path(args.out)
        (out / "compression.json").write_text(json.dumps(log, indent=2, default=float))
        write_md(log, out / "compression.md")
        plot(log, out / "compression.png")


if __name__ == "__main__":
    main()
