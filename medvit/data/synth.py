"""Write a phantom dataset folder (what ``medvit data synth`` does). Byte-identical for identical arguments.

Layout of ``out/``::

    manifest.json            kind, n, seed, image_size (chest: fov_mm), format, knobs, label/class names, encodings
    labels.csv               one row per image: ids, split, files, truth columns, mask names
    findings.jsonl           structured findings + metadata per image (sorted keys)
    images/<image_id>.dcm|.png|.nii.gz
    masks/<image_id>.png     16-bit bit field: bit k set = inside structure k of the row's ``mask_names``
    reports/<image_id>.txt   findings + impression
    splits/train.txt, val.txt, test.txt   image ids, patient-disjoint (80/10/10 % of patients)

Pixel encodings: chest DICOM stores 12-bit values ``round(image·4095)`` (window 2048/4096 = full range);
retina DICOM stores 8-bit ``round(image·255)`` (Ophthalmic Photography); PNG stores 16-bit
``round(image·65535)``; NIfTI stores the same uint16 with ``scl_slope = 1/65535`` and axes (column, row).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from medvit.data.phantom_common import SPLITS, check_draw, plan_patients
from medvit.data.phantom_datasets import make_generator, visits

logger = logging.getLogger(__name__)

FORMATS = {"dicom": ".dcm", "png": ".png", "nifti": ".nii.gz"}
DEFAULT_SIZE = {"cxr": 512, "retina": 256}


def encode_masks(masks: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """name → (H, W) bool masks → (H, W) uint16 bit field and the ordered names (≤ 16)."""
    names = sorted(masks)
    if len(names) > 16:
        raise ValueError(f"at most 16 mask structures fit a 16-bit bit field, got {len(names)}: {names}")
    h, w = next(iter(masks.values())).shape if masks else (0, 0)
    out = np.zeros((h, w), np.uint16)
    for k, n in enumerate(names):
        out |= masks[n].astype(np.uint16) << np.uint16(k)
    return out, names


def decode_masks(bits: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_masks`."""
    b = np.asarray(bits).astype(np.uint16)
    return {n: ((b >> np.uint16(k)) & 1).astype(bool) for k, n in enumerate(names)}


def _write_image(path: Path, kind: str, fmt: str, image: np.ndarray, meta: dict[str, Any], monochrome1: bool,
                 jpeg2000: bool) -> None:
    from medvit.io.writers import write_dicom_dx, write_dicom_ophthalmic, write_nifti, write_png16

    if fmt == "dicom":
        if kind == "cxr":
            q = np.round(image * 4095).astype(np.uint16)
            write_dicom_dx(path, q, meta, window=(2048.0, 4096.0), monochrome1=monochrome1, jpeg2000=jpeg2000)
        else:
            write_dicom_ophthalmic(path, np.round(image * 255).astype(np.uint8), meta, jpeg2000=jpeg2000)
        return
    q16 = np.round(image * 65535).astype(np.uint16)
    if fmt == "png":
        write_png16(path, q16)
    else:
        sp = meta["PixelSpacing"]
        row, col = (float(sp), float(sp)) if np.isscalar(sp) else (float(sp[0]), float(sp[1]))
        write_nifti(path, q16.T, np.diag([col, row, 1.0, 1.0]), scale=(1.0 / 65535, 0.0))


def write_synth(kind: str, n: int, out: str | Path, fmt: str = "dicom", seed: int = 0, image_size: int | None = None,
                masks: bool = True, monochrome1: bool = False, jpeg2000: bool = False,
                **knobs: Any) -> dict[str, Any]:
    """Generate ``n`` phantoms of ``kind`` (``cxr``/``retina``) into ``out``; returns a summary dict.

    ``knobs``: the generator's calibration knobs (``lesion_contrast``, ``lesion_size``, ``anatomy``, ``noise``,
    ``label_noise``, ``label_noise_splits``; chest also ``prevalence``, ``healthy_fraction``; see
    ``docs/phantoms.md``), recorded in ``manifest.json``; ``labels.csv`` holds each split's reported labels.

    ``manifest.json`` records every knob whatever its value, defaults included (``knobs``: the five numeric ones;
    ``label_noise_splits``; ``population``: chest ``prevalence`` / ``healthy_fraction``, retina ``stage_probs``), so
    a folder describes itself without the reader knowing this version's defaults. ``label_noise_splits`` is
    recorded when ``knobs.label_noise`` is 0 too, where it has no effect: a folder's labels are noisy exactly on
    the ``label_noise_splits`` when ``label_noise > 0`` and on none otherwise. Nothing in medvit reads the key back
    (:class:`~medvit.data.phantom_datasets.PhantomFolderDataset` reads ``kind``, ``label_names``,
    ``class_names``)."""
    if kind not in DEFAULT_SIZE:
        raise ValueError(f"unknown phantom kind {kind!r}; use 'cxr' or 'retina'")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if monochrome1 and (kind != "cxr" or fmt != "dicom"):
        raise ValueError("monochrome1 applies to chest DICOM only (--kind cxr --format dicom)")
    if "with_masks" in knobs:  # the generator's name for this function's `masks` (it gave "multiple values")
        raise ValueError(f"with_masks: write_synth takes masks=True/False (whether mask PNGs are written), got "
                         f"with_masks={knobs['with_masks']!r}")
    check_draw(seed, masks, lambda k: "masks" if k == "with_masks" else k)  # this function's names
    out = Path(out)
    # bad arguments refused before anything is written, by the generator's and the patient plan's own checks (64.5
    # was truncated to 64 here, seed 1.5 drawn as 1 and recorded as 1.5)
    plan = plan_patients(n, seed, kind)
    n, seed = plan.n, plan.seed
    gen = make_generator(kind, DEFAULT_SIZE[kind] if image_size is None else image_size, seed, with_masks=masks,
                         **knobs)
    size = gen.size
    for sub in ("images", "reports", "splits") + (("masks",) if masks else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    visit = visits(plan.patient_of)
    t0 = time.perf_counter()
    rows, jsonl = [], io.StringIO()
    for i in range(n):
        p = gen.sample(i, int(plan.patient_of[i]), int(visit[i]), plan.split_of_image(i))
        iid = p.meta["ImageID"]
        rel = f"images/{iid}{FORMATS[fmt]}"
        _write_image(out / rel, kind, fmt, p.image, p.meta, monochrome1, jpeg2000)
        (out / "reports" / f"{iid}.txt").write_text(p.report + "\n")
        row: dict[str, Any] = {"image_id": iid, "patient_id": p.meta["PatientID"], "split": plan.split_of_image(i),
                               "file": rel, "report_file": f"reports/{iid}.txt",
                               "study_date": p.meta["StudyDate"], "sex": p.meta["PatientSex"],
                               "age": int(p.meta["PatientAge"][:3])}
        if masks:
            from medvit.io.writers import write_png16

            bits, names = encode_masks(p.masks)
            write_png16(out / "masks" / f"{iid}.png", bits)
            row["mask_file"], row["mask_names"] = f"masks/{iid}.png", ";".join(names)
        if kind == "cxr":
            row["view"] = p.meta["ViewPosition"]
            row.update({name: int(v) for name, v in zip(p.label_names, p.labels)})
            row["No Finding"] = int(not p.labels.any())
        else:
            row.update({"eye": p.meta["Eye"], "stage": p.target, "stage_name": p.meta["stage_name"],
                        "referral": p.meta["referral"], "referral_name": p.meta["referral_name"],
                        "va_logmar": p.meta["va_logmar"], "quality_index": p.meta["quality_index"]})
            row.update({name: int(v) for name, v in zip(p.label_names, p.labels)})
        rows.append(row)
        jsonl.write(json.dumps({"image_id": iid, "findings": p.findings, "meta": p.meta}, sort_keys=True) + "\n")
    elapsed = time.perf_counter() - t0
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    (out / "findings.jsonl").write_text(jsonl.getvalue())
    for s in SPLITS:
        (out / "splits" / f"{s}.txt").write_text("".join(r["image_id"] + "\n" for r in rows if r["split"] == s))
    manifest: dict[str, Any] = {
        "kind": kind, "n": n, "seed": seed, "image_size": size, "format": fmt, "monochrome1": monochrome1,
        "jpeg2000": jpeg2000, "label_names": list(gen.label_names),
        "encoding": {"dicom": "12-bit round(image*4095), window 2048/4096" if kind == "cxr"
                     else "8-bit round(image*255), Ophthalmic Photography",
                     "png": "16-bit round(image*65535)", "nifti": "uint16 round(image*65535), scl_slope 1/65535, "
                     "axes (column, row)"}[fmt],
        "masks": "16-bit PNG bit field; bit k = k-th name in labels.csv mask_names" if masks else None,
        "split_fractions_by_patient": [0.8, 0.1, 0.1], "knobs": gen.difficulty.as_dict(),
        "label_noise_splits": list(gen.difficulty.label_noise_splits),
    }
    if kind == "cxr":  # the population knobs, recorded like the difficulty ones, and the geometry a PNG lacks
        manifest["population"] = {"prevalence": gen.prevalence, "healthy_fraction": gen.healthy_fraction}
        manifest["fov_mm"] = gen.fov_mm
    if kind == "retina":
        manifest["population"] = {"stage_probs": [float(x) for x in gen.probs]}
        manifest["class_names"] = list(gen.class_names)
        manifest["referral_names"] = ["none", "routine", "urgent"]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    logger.debug("wrote %d %s phantoms (%s) to %s in %.1fs", n, kind, fmt, out, elapsed)  # the CLI prints it
    return {"out": str(out), "n": n, "seconds": elapsed, "images_per_s": n / max(elapsed, 1e-9), "splits": counts}
