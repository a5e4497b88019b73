"""Studies/s from a PACS through inference back to the PACS, against the same studies from a folder.

One interleaved run on the same files and machine state; each repeat runs every mode once, in turn:

* **folder**: ``medvit infer -i FOLDER --sr`` (walk, decode, predict, journal, tables, one SR per study);
* **DICOMweb**: ``--source dicomweb://… --send-to dicomweb://…`` against a private Orthanc (QIDO-RS, WADO-RS
  into the spool, the same folder run, STOW-RS of the SRs);
* **DIMSE**: ``--source dimse://… --send-to dimse://…`` (C-FIND, C-GET, the folder run, C-STORE).

Each mode starts from a fresh OUTPUT (nothing resumed); the model is loaded in-process each time for every
mode alike. Reported: wall seconds per run (median over repeats), studies/s, and the share spent outside
the folder run (retrieve + send, timed around each step; the folder run's own time includes model loading,
the tables and the SR).

    nice -n 10 python benchmarks/pacs_roundtrip.py [--studies 24] [--per-study 2] [--size 256] [--repeats 3]

Needs Debian's orthanc + orthanc-dicomweb. Writes benchmarks/results/pacs_roundtrip.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medvit.infer import InferConfig  # noqa: E402
from medvit.infer.pacs_run import run_with_pacs, spool_dir  # noqa: E402
from tests.pacs.orthanc import OrthancServer  # noqa: E402


def make_studies(out: Path, n_studies: int, per_study: int, size: int) -> list[Path]:
    from pydicom.uid import generate_uid

    from tests.infer.helpers import write_dx

    paths = []
    for s in range(n_studies):
        study, series = generate_uid(), generate_uid()
        for i in range(per_study):
            paths.append(write_dx(out / f"study{s:03d}" / f"img{i}.dcm", study, series, rows=size, cols=size,
                                  seed=s * per_study + i, patient=f"P{s:03d}"))
    return paths


def one(mode: str, model: str, folder: Path, orthanc: OrthancServer, out: Path, batch: int) -> dict:
    kw = dict(model=model, output=str(out), batch_size=batch, workers=0, sr=True, progress=False)
    t0 = time.perf_counter()
    if mode == "folder":
        res = run_with_pacs(InferConfig(input=str(folder), **kw))
    elif mode == "dicomweb":
        res = run_with_pacs(InferConfig(input=str(spool_dir(out)), **kw), source=orthanc.dicomweb("Modality=DX"),
                            send_to=orthanc.dicomweb())
    else:
        res = run_with_pacs(InferConfig(input=str(spool_dir(out)), **kw), source=orthanc.dimse("Modality=DX"),
                            send_to=orthanc.dimse())
    wall = time.perf_counter() - t0
    assert res.exit_code == 0, (mode, res.counts)
    p = res.counts.get("pacs") or {}
    return {"wall_s": wall, "infer_s": p.get("infer_s", wall), "retrieve_s": p.get("retrieve_s", 0.0),
            "send_s": p.get("send_s", 0.0), "studies": res.counts["studies"],
            "predicted": res.counts["predicted"], "sr_written": res.counts.get("sr_written"),
            "pacs": res.counts.get("pacs")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=24)
    ap.add_argument("--per-study", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--model", default=str(ROOT / "pipelines" / "demo" / "model"))
    args = ap.parse_args()
    modes = ["folder", "dicomweb", "dimse"]
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = make_studies(tmp / "in", args.studies, args.per_study, args.size)
        with OrthancServer(tmp / "orthanc") as orthanc:
            orthanc.upload(files)
            one("folder", args.model, tmp / "in", orthanc, tmp / "warmup", args.batch)  # imports, first load
            for r in range(args.repeats):
                for m in modes:
                    runs[m].append(one(m, args.model, tmp / "in", orthanc, tmp / f"{m}{r}", args.batch))
                    print(m, r, f"{runs[m][-1]['wall_s']:.2f} s", flush=True)
            srs = sum(1 for t in orthanc.instance_tags() if t.get("Modality") == "SR")
    summary = {}
    for m in modes:
        med = {k: statistics.median(x[k] for x in runs[m]) for k in ("wall_s", "infer_s", "retrieve_s", "send_s")}
        summary[m] = {k: round(v, 3) for k, v in med.items()}
        summary[m]["studies_per_s"] = round(args.studies / med["wall_s"], 3)
    for m in modes:
        summary[m]["folder_over_this"] = round(summary["folder"]["studies_per_s"] / summary[m]["studies_per_s"], 3)
    cmd = "nice -n 10 python benchmarks/pacs_roundtrip.py " + " ".join(sys.argv[1:])
    doc = {"command": cmd.strip(), "date": datetime.now(UTC).isoformat(timespec="minutes"),
           "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_end": os.getloadavg()},
           "args": vars(args), "summary": summary, "runs": runs, "srs_in_orthanc_at_end": srs}
    res = ROOT / "benchmarks" / "results"
    (res / "pacs_roundtrip.json").write_text(json.dumps(doc, indent=2, default=str))
    lines = ["# PACS round trip: Orthanc → medvit infer → Orthanc vs the same studies from a folder", "",
             f"Command: `{doc['command']}`  ",
             f"{doc['date']}; {doc['host']['platform']}; {doc['host']['cpus']} CPUs **shared with other jobs** "
             f"(load average at the end {', '.join(f'{x:.1f}' for x in doc['host']['load_avg_end'])}). "
             f"Model `{Path(args.model).name}` ({args.model}), {args.studies} studies × {args.per_study} DX images "
             f"of {args.size}×{args.size}, batch {args.batch}, decoding in-process, SR per study; Orthanc "
             "1.10 (Debian) on localhost with its DICOMweb plugin; median of "
             f"{args.repeats} interleaved repeats (folder, DICOMweb, DIMSE in turn, each from a fresh OUTPUT).", "",
             "| mode | wall s | studies/s | folder ÷ this | retrieve s | folder run s (model load, infer, SR) "
             "| send s |", "|---|---|---|---|---|---|---|"]
    for m in modes:
        s = summary[m]
        lines.append(f"| {m} | {s['wall_s']:.2f} | {s['studies_per_s']:.2f} | {s['folder_over_this']:.2f} | "
                     f"{s['retrieve_s']:.2f} | {s['infer_s']:.2f} | {s['send_s']:.2f} |")
    lines += ["", "All runs (wall s): " + "; ".join(
        f"{m} " + ", ".join(f"{x['wall_s']:.2f}" for x in runs[m]) for m in modes),
        f"SR instances in Orthanc at the end: {srs} (one per study: the repeats re-send the same SR UIDs, "
        "which Orthanc keeps once).", ""]
    (res / "pacs_roundtrip.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
