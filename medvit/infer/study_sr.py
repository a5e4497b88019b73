"""Per-study DICOM SR of a run, built from the journal after all images are predicted."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medvit.infer.context import RunOutputs
from medvit.io.errors import redact_values

logger = logging.getLogger(__name__)


def write_study_reports(run: RunOutputs, records: Iterable[dict[str, Any]],
                        only: set[str] | None = None) -> tuple[int, int]:
    """One TID 1500 Comprehensive 3D SR per study under ``OUTPUT/sr/<study uid>.dcm``; returns (written, failed).

    ``records``: the run's journal records (one per image; the predicted ones carry probabilities and thresholds).
    ``only``: write just these studies (by Study Instance UID as journaled), e.g. the one a listener completed;
    ``sr_errors.csv`` is then left alone (the caller records failures).

    A study whose SR cannot be built is logged and recorded in errors.csv-adjacent ``sr_errors.csv``; its
    image predictions stay valid. Images without a Study Instance UID, or with an invalid one (not digits and
    dots, > 64 characters, multi-valued), get no SR unless the run de-identifies (which replaces the UID): they
    are counted as failed SRs. Studies are named in logs and ``sr_errors.csv`` by
    :func:`medvit.io.safe_write.path_component` (the UID, or ``h-<sha256>`` of an invalid value;
    ``no-study-uid``), the same name as the SR file; never by the raw header value.
    """
    from medvit.infer.outputs import csv_text
    from medvit.io.safe_write import atomic_write, is_valid_uid, path_component
    from medvit.io.sr import AlgorithmInfo, Finding, ImageFindings, write_findings_sr
    from medvit.version import __version__

    studies: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        if rec["status"] == "predicted" and (only is None or rec["study_instance_uid"] in only):
            studies.setdefault(rec["study_instance_uid"], []).append(
                {k: rec.get(k, "") for k in ("file", "probabilities", "positive_findings", "thresholds", "ood_score",
                                             "ood_threshold", "ood_flag")})
    algo = AlgorithmInfo(run.info.name, run.info.version, run.info.sha256, run.info.architecture,
                         research_only=run.info.research_only, software_version=f"medvit {__version__}")
    out_dir = Path(run.out) / "sr"
    written, failures = 0, []
    for study, recs in sorted(studies.items()):
        # named everywhere by a safe identifier: the UID when valid, else h-<sha256> (never the raw header value)
        name = path_component(study, "no-study-uid")
        if not study or (run.deid is None and not is_valid_uid(study)):
            # an SR belongs to one study (PS3.3 C.7.2.1) and references it by its UID: none is written for images
            # whose study cannot be named; counted as failed and listed in sr_errors.csv (README, "SR")
            what = "no Study Instance UID" if not study else "an invalid Study Instance UID (not a UID per PS3.5 9.1)"
            reason = (f"{len(recs)} predicted image(s) with {what}; an SR belongs to one study (PS3.3 C.7.2.1), "
                      "so none is written for them (their rows are in predictions.csv)")
            logger.info("SR for study %s not written: %s", name, reason)  # counted in the summary, listed in
            failures.append([name, "sr", reason])                          # sr_errors.csv: no terminal line
            continue
        try:
            images = []
            for r in recs:
                findings = [Finding(k, float(p), float(r["thresholds"][k]), k in r["positive_findings"])
                            for k, p in r["probabilities"].items()]
                ood = None if r["ood_score"] == "" else (float(r["ood_score"]), float(r["ood_threshold"]),
                                                          bool(r["ood_flag"]))
                images.append(ImageFindings(run.source_header(r["file"]), findings, ood))
            write_findings_sr(out_dir / f"{name}.dcm", images, algo,
                              deidentified=run.deid is not None, root=run.out, deidentifier=run.deid)
            written += 1
        except Exception as e:  # one bad study must not cost the others (no header value in the message)
            reason = f"{type(e).__name__}: {redact_values(str(e))}"
            logger.warning("SR for study %s not written: %s", name, reason)
            failures.append([name, "sr", reason])
    if only is None and (failures or (out_dir.parent / "sr_errors.csv").exists()):
        atomic_write(out_dir.parent / "sr_errors.csv", csv_text(["study", "stage", "reason"],
                                                                     failures), run.out)
    return written, len(failures)
