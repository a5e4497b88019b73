"""Training throughput with and without MONAI's PersistentDataset on 1024² DICOM phantoms, and how busy the model is.

Arms, interleaved round by round on the same files (machine load affects all alike):

- ``stream``: ``monai.data.Dataset``: every epoch reads, decodes and downsizes each DICOM (1024² → short side
  ``--short-side``, the NIH preset's cache-friendly setting);
- ``disk-cold``: ``PersistentDataset`` on an empty cache folder (decodes and writes the cache);
- ``disk-warm``: ``PersistentDataset`` again (reads the cached tensors).

Each arm trains ``--model`` at 224 px for one epoch with the task's training transform (MONAI RandResizedCropd,
RandFlipd, RandAugmentd, NormalizeIntensityd) through torch's DataLoader with ``--workers`` processes and batch
``--batch``. Per step, ``wait`` = time blocked in ``next(loader)`` and ``compute`` = forward + backward + step;
model busy fraction = Σ compute / (Σ compute + Σ wait). Also the loader alone (no model): images/s.

    nice -n 10 python benchmarks/persistent_cache.py [--n 128] [--batch 32] [--workers 2] [--rounds 2]

Writes benchmarks/results/persistent_cache.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from medvit.data import build_dataset
from medvit.data.augment import build_train_transform
from medvit.data.monai_data import monai_dataset
from medvit.data.phantom_cxr import CXR_LABELS
from medvit.models import create_model
from medvit.train.losses import masked_bce


class Augmented(torch.utils.data.Dataset):
    """Items through the training transform, seeded per (epoch, index) as the training loop does."""

    def __init__(self, ds, tf, epoch: int):
        self.ds, self.tf, self.epoch = ds, tf, epoch

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.epoch * 1_000_003 + i)
        it = self.tf(self.ds[i], g)
        return {k: it[k] for k in ("image", "label", "label_mask")}


def epoch(ds, tf, args, model=None, opt=None, ep: int = 0) -> dict:
    loader = torch.utils.data.DataLoader(Augmented(ds, tf, ep), batch_size=args.batch, shuffle=True,
                                         num_workers=args.workers, drop_last=False, persistent_workers=False,
                                         generator=torch.Generator().manual_seed(ep))
    wait = compute = 0.0
    n = 0
    t_start = time.perf_counter()
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        batch = next(it, None)
        t1 = time.perf_counter()
        if batch is None:
            break
        wait += t1 - t0
        if model is not None:
            loss = masked_bce(model(batch["image"]), batch["label"], batch["label_mask"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            compute += time.perf_counter() - t1
        n += batch["image"].shape[0]
    wall = time.perf_counter() - t_start
    return {"images": n, "wall_s": wall, "wait_s": wait, "compute_s": compute, "images_per_s": n / wall,
            "busy": compute / (compute + wait) if model is not None and compute + wait > 0 else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="1024² DICOM phantoms written")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--jpeg2000", action="store_true", help="write the phantoms JPEG 2000 compressed (decode-bound)")
    ap.add_argument("--work", default="", help="folder for phantoms and cache (default: a temporary one)")
    ap.add_argument("--out", default="benchmarks/results/persistent_cache")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="medvit_pcache_"))
    data = work / "dicom"
    t0 = time.perf_counter()
    if not (data / "labels.csv").is_file():
        from medvit.data.synth import write_synth

        write_synth("cxr", args.n, data, fmt="dicom", seed=0, image_size=1024, masks=False, jpeg2000=args.jpeg2000)
    write_s = time.perf_counter() - t0
    ds_args = dict(root=str(data), path_column="file", patient_column="patient_id", label_columns=list(CXR_LABELS),
                   max_short_side=args.short_side)
    raw = build_dataset("csv", "all", **ds_args)
    tf = build_train_transform(224, (0.5,), (0.25,), (0.08, 1.0), hflip_prob=0.5, randaug="rand-m6-mstd0.5-inc1",
                               in_chans=1)
    model = create_model(args.model, img_size=224, in_chans=1, num_classes=len(CXR_LABELS))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cfg = {"dataset": "csv", "args": ds_args}
    rows: dict[str, list[dict]] = {"stream": [], "disk-cold": [], "disk-warm": [], "loader-stream": [],
                                   "loader-warm": []}
    for r in range(args.rounds):
        cache = work / f"cache_{r}"
        shutil.rmtree(cache, ignore_errors=True)
        stream = monai_dataset(raw, "none", None, cfg)
        disk = monai_dataset(raw, "disk", cache, cfg)
        rows["stream"].append(epoch(stream, tf, args, model, opt, ep=r))
        rows["disk-cold"].append(epoch(disk, tf, args, model, opt, ep=r))
        rows["disk-warm"].append(epoch(disk, tf, args, model, opt, ep=r))
        rows["loader-stream"].append(epoch(stream, tf, args, ep=r))
        rows["loader-warm"].append(epoch(disk, tf, args, ep=r))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]['images_per_s']:.1f} img/s" for k, v in rows.items()),
              flush=True)
    summary = {}
    for k, v in rows.items():
        ips = [x["images_per_s"] for x in v]
        busy = [x["busy"] for x in v if x["busy"] is not None]
        summary[k] = {"images_per_s_mean": statistics.mean(ips), "images_per_s_sd": statistics.pstdev(ips),
                      "busy_mean": statistics.mean(busy) if busy else None, "rounds": v}
    cache_mb = sum(f.stat().st_size for f in (work / f"cache_{args.rounds - 1}").rglob("*.pt")) / 2**20
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": "nice -n 10 python benchmarks/persistent_cache.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("work", "out", "jpeg2000"))
                + (" --jpeg2000" if args.jpeg2000 else "") + f" --out {args.out}",
            "n_images": args.n,
            "image": "1024x1024 DICOM CXR phantoms (" + ("JPEG 2000" if args.jpeg2000 else "uncompressed") + ")",
            "short_side": args.short_side, "batch": args.batch, "workers": args.workers, "model": args.model,
            "threads": args.threads, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "phantom_write_s": write_s, "cache_mib": cache_mb}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=2))
    lines = [f"# Persistent cache (MONAI PersistentDataset) vs streaming, 1024² DICOM phantoms ({meta['image']})", "",
             f"`{meta['command']}`", "",
             f"{args.n} images, loaded at short side {args.short_side}, {args.model} at 224 px, batch {args.batch}, "
             f"{args.workers} loader workers, {args.threads} torch threads, {args.rounds} interleaved rounds; "
             f"machine: {meta['cores']} cores shared with other jobs (budget ~20 CPU-min). Cache on disk: "
             f"{cache_mb:.1f} MiB.", "",
             "| arm | images/s (mean ± sd) | model busy |", "|---|---|---|"]
    for k, s in summary.items():
        busy = f"{100 * s['busy_mean']:.1f} %" if s["busy_mean"] is not None else "— (loader only)"
        lines.append(f"| {k} | {s['images_per_s_mean']:.1f} ± {s['images_per_s_sd']:.1f} | {busy} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    names = list(summary)
    a.bar(names, [summary[k]["images_per_s_mean"] for k in names],
          yerr=[summary[k]["images_per_s_sd"] for k in names], color="tab:blue")
    a.set(ylabel="images / s", title="throughput per epoch")
    a.tick_params(axis="x", rotation=30)
    train = [k for k in names if summary[k]["busy_mean"] is not None]
    b.bar(train, [100 * summary[k]["busy_mean"] for k in train], color="tab:green")
    b.axhline(90, ls=":", color="grey")
    b.set(ylabel="model busy (%)", ylim=(0, 100), title=f"compute / (compute + data wait), batch {args.batch}")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(out.with_suffix(".md").read_text())
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
