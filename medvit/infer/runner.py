"""`medvit infer`: walk → decode in worker processes → batched prediction → journal → tables, SR, heatmaps.

Memory stays bounded: files are listed lazily, at most ``max_inflight`` decoded images exist at a time, and
records go to the on-disk journal as soon as a batch is predicted (the final tables are streamed from it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from medvit.eval.ood import ood_flagged
from medvit.infer.context import RunOutputs
from medvit.infer.decode import Decoded, DecodeSpec, decode_file, decode_in_worker, init_worker, stderr_to
from medvit.infer.duplicates import DUPLICATE_STAGE, DuplicateTracker
from medvit.infer.fastpath import DEFAULT_PRECISION
from medvit.infer.outputs import (
    HEADER_TO_RECORD,
    RESEARCH_NOTE,
    STATE_DIR,
    Journal,
    write_tables,
)
from medvit.infer.predictor import INT8_MIN_CALIBRATION_IMAGES, PRECISIONS, Predictor, load_for_inference
from medvit.infer.preprocess import Preprocessor
from medvit.infer.walk import WALK_STAGE, WalkIssue, walk_inputs
from medvit.io.errors import printable_path
from medvit.io.rules import SelectionRules
from medvit.io.safe_write import atomic_write, resolve_path, resolved_inside
from medvit.io.text import header_text

logger = logging.getLogger(__name__)

#: heatmap overlays (PNG and Secondary Capture) are at most this many pixels a side
DISPLAY_MAX_SIDE = 1024

EXIT_OK = 0  # every input was predicted or deliberately skipped (with a status row)
EXIT_SOME_FAILED = 3  # some inputs failed (listed in errors.csv)
EXIT_NOTHING_PREDICTED = 4  # no input was an image this model could predict on


@dataclass
class InferConfig:
    """Everything a batch-inference run needs (echoed into run.json)."""

    model: str  # checkpoint directory or registered weight tag; its contract drives preprocessing
    input: str  # folder (walked recursively) or a single file
    output: str  # output folder (created; re-running on it resumes)
    batch_size: int = 16  # images per forward pass
    workers: int | None = None  # decoding worker processes (0 = in the main process; None = from cores/device)
    precision: str = DEFAULT_PRECISION  # auto (bf16 on CUDA / native-bf16 CPUs, else fp32) | fp32 | bf16 | int8
    compile: str = "none"  # none | inductor (AOTInductor, freezing) | openvino; cached per model hash and shape
    int8_rest: str | None = None  # int8: fp32 | bf16 between the int8 GEMMs (None = bf16 on native-bf16 CPUs)
    device: str = "cpu"  # cpu | cuda | cuda:N
    sr: bool = False  # write a DICOM Comprehensive 3D SR (TID 1500) per study
    heatmaps: bool = False  # write a PNG overlay and a DICOM Secondary Capture per image
    heatmap_method: str = "gradcam"  # gradcam (class-specific) | rollout (attention rollout)
    deidentify: bool = False  # PS3.15 basic profile on everything written (tables, SR, SC)
    deid_key: str | None = None  # pseudonymisation key file (outside OUTPUT); None = the per-site key
    deid_keep_dates: bool = False  # Retain Longitudinal Temporal Information Full Dates Option (recorded)
    rules: str | None = None  # series selection rules JSON file; None = defaults from the model contract
    geometry: str | None = None  # override the contract's crop_mode: pad (keep the field) | crop (fill) | squash
    any_modality: bool = False  # select every image, whatever the contract's scope (needed when it declares none)
    threads: int | None = None  # torch intra-op threads (None = torch default)
    max_image_mb: int = 256  # per image: refuse files whose header claims more decoded float32 pixels than this (MiB)
    inflight_mb: int = 512  # decoded model inputs + display images waiting for the model, at most (MiB)
    overwrite: bool = False  # discard results of a different earlier run in OUTPUT instead of refusing
    follow_links: bool = False  # follow symlinked folders and links leading outside INPUT (refused otherwise)
    progress: bool = True  # show a progress bar on stderr
    full_decode: bool = True  # full resolution = training's read (False: reduce by 2**r while >= 2x the model input)
    log_file: str | None = None  # decoding worker processes send their C-level stderr here (the CLI's infer.log)
    engine: str = "local"  # local (worker processes on this machine) | ray (decode + predict on Ray workers)
    address: str | None = None  # --engine ray: auto | HOST:PORT | ray://HOST:PORT; None = start a local Ray
    num_workers: int | None = None  # --engine ray: tasks running at once (None = the cluster's CPUs, or GPUs)
    cpus_per_worker: float = 1.0  # --engine ray: CPUs per task (torch threads on the worker)

    def __post_init__(self) -> None:
        if self.max_image_mb < 1 or self.inflight_mb < 1:
            raise ValueError(f"max_image_mb and inflight_mb must be >= 1, got {self.max_image_mb}, {self.inflight_mb}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers is None:
            from medvit.infer.fastpath import default_workers

            self.workers = default_workers(self.device)
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.int8_rest is not None and (self.precision != "int8" or self.int8_rest not in ("fp32", "bf16")):
            raise ValueError(f"int8_rest ({self.int8_rest!r}) is fp32 or bf16 and applies to --precision int8 only")
        if self.precision == "int8" and self.batch_size < INT8_MIN_CALIBRATION_IMAGES and \
                not _is_ptq_checkpoint(self.model):
            raise ValueError(f"--precision int8 calibrates activation ranges on the first batch: use --batch-size "
                             f">= {INT8_MIN_CALIBRATION_IMAGES} (got {self.batch_size}), or a PTQ checkpoint "
                             "(medvit.compress.ptq: its stored int8 parameters need no calibration batch)")
        if self.engine not in ("local", "ray"):
            raise ValueError(f"engine must be local or ray, got {self.engine!r}")
        if self.engine == "local" and (self.address or self.num_workers is not None):
            raise ValueError("--address and --num-workers apply to --engine ray")
        if self.engine == "ray" and self.precision == "int8":
            raise ValueError("--precision int8 calibrates on the first batch each process predicts: with --engine ray "
                             "every worker would calibrate on other images and results would depend on the sharding; "
                             "use fp32 or bf16 with --engine ray")
        if self.num_workers is not None and self.num_workers < 1 or self.cpus_per_worker <= 0:
            raise ValueError(f"num_workers must be >= 1 and cpus_per_worker > 0, got {self.num_workers}, "
                             f"{self.cpus_per_worker}")
        if self.heatmap_method not in ("gradcam", "rollout"):
            raise ValueError(f"heatmap_method must be gradcam or rollout, got {self.heatmap_method!r}")
        if self.geometry not in (None, "pad", "crop", "squash"):
            raise ValueError(f"geometry must be pad, crop or squash (or None: the contract's), got {self.geometry!r}")
        if not Path(self.input).exists():
            raise FileNotFoundError(f"input {self.input} does not exist")
        inp = resolve_path(self.input, shown=f"input {printable_path(self.input)}")  # a link loop: named, no traceback
        out = resolve_path(self.output, shown=f"output {printable_path(self.output)}")
        in_root = inp.parent if inp.is_file() and inp.name.upper() == "DICOMDIR" else inp
        if in_root.is_dir() and resolved_inside(in_root, out)[1]:
            raise ValueError(f"output {self.output} is inside input {self.input}: a later run would read its own "
                             "heatmaps and reports as inputs. Choose an output folder outside the input.")


def _is_ptq_checkpoint(model: str) -> bool:
    """Whether ``model`` is a checkpoint directory holding PTQ int8 parameters (``ptq.safetensors``): int8 then uses
    them and calibrates nothing, so any batch size works (the file's checksum is verified when the model loads)."""
    from medvit.compress.ptq import PTQ_FILE

    return (Path(model) / PTQ_FILE).is_file()


@dataclass
class RunResult:
    """What a run did (the CLI prints it; run.json holds it)."""

    exit_code: int
    counts: dict[str, Any]
    output: str
    seconds: float
    images_per_s: float
    new_this_run: int  # files journaled by this run (the rest were resumed)
    files: dict[str, str] = field(default_factory=dict)  # output name -> path


def iter_files(root: Path, exclude: Path | None = None, follow_links: bool = False) -> Iterator[Path]:
    """Files under ``root`` that the walk would decode (see :func:`medvit.infer.walk.walk_inputs`)."""
    for item in walk_inputs(Path(root), exclude, follow_links):
        if not isinstance(item, WalkIssue):
            yield item


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("medvit", "torch", "numpy", "pydicom", "highdicom", "pillow", "pylibjpeg", "python-gdcm"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Decoder:
    """Bounded-queue decoding: worker processes (or in-process when workers == 0), results in input order.

    A worker that dies (a decoder crash on a hostile file) breaks the pool; the in-flight files are then
    retried one by one in a fresh pool, so the culprit is isolated and reported as an error.
    """

    def __init__(self, spec: DecodeSpec, workers: int, max_inflight: int) -> None:
        self.spec, self.workers, self.max_inflight = spec, workers, max_inflight
        self.pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        return ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=init_worker, initargs=(self.spec,))

    def run(self, paths: Iterator[Path]) -> Iterator[Decoded]:
        if self.workers == 0:
            for p in paths:
                with stderr_to(self.spec.stderr_file):
                    d = decode_file(p, self.spec)
                yield d
            return
        from medvit.infer.decode import preload

        preload()  # forked workers start with the decoders imported
        self.pool = self._new_pool()
        inflight: deque[tuple[Path, Future]] = deque()
        try:
            for p in paths:
                inflight.append((p, self.pool.submit(decode_in_worker, str(p))))
                while len(inflight) >= self.max_inflight:
                    yield from self._take(inflight)
            while inflight:
                yield from self._take(inflight)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _take(self, inflight: deque[tuple[Path, Future]]) -> Iterator[Decoded]:
        p, fut = inflight[0]
        try:
            res = fut.result()
            inflight.popleft()
            yield res
        except BrokenProcessPool:
            pending = [q for q, _ in inflight]
            inflight.clear()
            self.pool.shutdown(wait=True, cancel_futures=True)
            for q in pending:  # one at a time, each in a fresh pool, to find the file that kills the worker
                self.pool = self._new_pool()
                try:
                    yield self.pool.submit(decode_in_worker, str(q)).result()
                except BrokenProcessPool:
                    from medvit.infer.decode import _rel

                    yield Decoded(_rel(q, self.spec.root), "error", "decode",
                                  "the decoding worker process died on this file (crash in a decoder library)")
                finally:
                    self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = self._new_pool()


class InferenceRun:
    """One `medvit infer` run; :meth:`run` returns a :class:`RunResult`."""

    def __init__(self, cfg: InferConfig) -> None:
        import torch

        self.cfg = cfg
        self.out = Path(cfg.output)
        self.root = Path(cfg.input).resolve()
        if self.root.is_file() and self.root.name.upper() == "DICOMDIR":
            # a DICOMDIR indexes files in its own folder tree: walk that tree (every file gets a status row)
            self.root = self.root.parent
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        model, self.contract, self.info = load_for_inference(cfg.model)
        if not self.contract.modalities and not cfg.rules and not cfg.any_modality:
            raise ValueError(
                f"model {cfg.model}: its contract declares no scope (modalities, views, body parts), so it would score "
                "every image whatever it shows. Give --rules RULES.json to select the series it is meant for, or "
                "--any-modality to run it on everything (or record modalities in the checkpoint's contract).")
        self.labels = list(self.contract.label_names)
        self.seg = self.contract.segmentation_contract()  # None for classifiers
        if self.seg is not None and cfg.heatmaps:
            raise ValueError(f"model {cfg.model} is a segmentation model: its masks are written as DICOM SEG; "
                             "--heatmaps explains classifiers only")
        self.thresholds = [float(t) for t in self.contract.thresholds]
        if cfg.rules:
            self.rules = SelectionRules.from_file(cfg.rules)
        elif cfg.any_modality:  # asked for explicitly: every image (non-image objects are still never scored)
            self.rules = SelectionRules([], "--any-modality")
        else:
            self.rules = SelectionRules.from_contract(self.contract)
        self.pre = Preprocessor.from_contract(self.contract, cfg.geometry)  # type: ignore[arg-type]
        self.predictor = Predictor(model, cfg.precision, cfg.device, self.contract.multilabel,  # type: ignore
                                   compile=cfg.compile, model_sha256=self.info.sha256,
                                   batch_size=cfg.batch_size, int8_rest=cfg.int8_rest)
        self.journal = Journal(self.out)
        self.deid = None
        self.writers: Any = None
        self._bar: Any = None
        self._ray: Any = None  # (ray module, RayEngineInfo) while an --engine ray run is connected

    # ------------------------------------------------------------------ state
    def _fingerprint(self) -> dict[str, Any]:
        c = self.cfg
        return {"input": str(self.root), "model_sha256": self.info.sha256, "precision": self.predictor.precision,
                **({"int8_rest": self.predictor.int8_rest} if self.predictor.precision == "int8" else {}),
                "geometry": self.pre.geometry, "rules": self.rules.content(), "heatmaps": c.heatmaps,
                "heatmap_method": c.heatmap_method if c.heatmaps else None, "deidentify": c.deidentify,
                **({"any_modality": True} if c.any_modality else {}),
                **({"full_decode": True} if c.full_decode else {}),
                **({"deid_key_id": self.deid.key_id(), "deid_keep_dates": c.deid_keep_dates} if self.deid else {})}

    def _deid_key(self) -> bytes:
        """The pseudonymisation key, never stored inside OUTPUT or INPUT (SECURITY.md).

        ``MEDVIT_DEID_KEY`` (the secret itself) wins; else the key file named by ``deid_key``; else the
        per-site key :func:`medvit.io.deidentify.default_key_file`. Created when absent (0600).
        """
        from medvit.io.deidentify import default_key_file, load_or_create_key

        legacy = self.out / STATE_DIR / "deid.key"
        if legacy.exists():
            raise ValueError(f"{legacy} is a pseudonymisation key stored inside OUTPUT (written by an older "
                             "medvit): anyone given the folder could re-identify patients. Move it outside "
                             "OUTPUT and pass it with --deid-key PATH (or delete it and start a new OUTPUT).")
        env = os.environ.get("MEDVIT_DEID_KEY")
        if env:
            return env.encode()
        what = ("de-identification key (--deid-key)" if self.cfg.deid_key else
                "de-identification key (the per-site default, MEDVIT_DEID_KEY_DIR)")
        return load_or_create_key(self.cfg.deid_key or default_key_file(), forbidden=(self.out, self.root), what=what)

    # ------------------------------------------------------------------ records
    def _base_record(self, d: Decoded, status: str) -> dict[str, Any]:
        rec: dict[str, Any] = {"file": d.rel, "status": status, "stage": d.stage, "reason": d.reason,
                               "selection": d.selection}
        for k, v in HEADER_TO_RECORD.items():
            rec[v] = header_text(d.header.get(k))  # a multi-valued UID is one (invalid) text, never a list repr
        return self.deid.record(rec) if self.deid else rec

    def _predicted_record(self, d: Decoded, probs: np.ndarray, ood: float | None = None) -> dict[str, Any]:
        rec = self._base_record(d, "predicted")
        rec["probabilities"] = {k: round(float(p), 6) for k, p in zip(self.labels, probs, strict=True)}
        rec["positive_findings"] = [k for k, p, t in zip(self.labels, probs, self.thresholds, strict=True)
                                    if float(p) >= t]
        rec["thresholds"] = dict(zip(self.labels, self.thresholds, strict=True))
        rec["preprocessing"] = d.notes
        rec["model"] = {"name": self.info.name, "version": self.info.version, "sha256": self.info.sha256,
                        "architecture": self.info.architecture, "precision": self.predictor.precision}
        rec["intended_use"] = RESEARCH_NOTE if self.info.research_only else ""
        rec["heatmap_target"] = ""
        rec["heatmap_png"] = ""
        ref = self.contract.ood
        # out-of-distribution: scaled Mahalanobis distance of the features to the training data, flag at threshold
        # a non-finite score (non-finite features) cannot be scored: flagged, fail closed
        scored = ood is not None and math.isfinite(float(ood))
        rec["ood_score"] = "" if ood is None else round(float(ood), 4) if scored else "non-finite"
        rec["ood_threshold"] = "" if ood is None else round(float(ref["threshold"]), 4)
        rec["ood_flag"] = "" if ood is None else bool(ood_flagged(float(ood), float(ref["threshold"])))
        return rec

    # ------------------------------------------------------------------ batches
    def _flush(self, batch: list[Decoded]) -> int:
        if not batch:
            return 0
        if all(d.probs is not None for d in batch):  # predicted where it was decoded (--engine ray)
            probs = np.stack([d.probs for d in batch])
            ood = None if batch[0].ood is None else np.array([d.ood for d in batch], dtype=np.float64)
            x = np.stack([d.x for d in batch]) if self.cfg.heatmaps else np.zeros((len(batch), 0), np.float32)
        else:
            x = np.stack([d.x for d in batch])
            t = time.perf_counter()
            probs, ood = self.predictor.predict_with_ood(x)
            timing = getattr(self, "_timing", None)
            if timing is not None:
                timing.predicted(time.perf_counter() - t, len(batch))
        maps = None
        if self.seg is not None:  # (B, K, h, w) probability maps; presence = highest pixel probability
            from medvit.infer.segment import presence

            maps, probs = probs, presence(probs)
            finite = np.isfinite(maps).reshape(len(batch), -1).all(axis=1)
        else:
            finite = np.isfinite(probs).all(axis=1)
        for d in (d for d, ok in zip(batch, finite, strict=True) if not ok):
            d.stage, d.reason = "predict", "the model produced non-finite outputs for this image"
            self.journal.append(self._base_record(d, "error"))
            _log_failed(d, self._bar)
        batch, x, probs = [d for d, ok in zip(batch, finite, strict=True) if ok], x[finite], probs[finite]
        scores = ood[finite] if ood is not None else [None] * len(batch)
        recs = [self._predicted_record(d, p, o) for d, p, o in zip(batch, probs, scores, strict=True)]
        if self.cfg.heatmaps and recs:
            self._heatmaps(batch, x, probs, recs)
        if maps is not None and recs:
            from medvit.infer.segment import segmentation_outputs

            segmentation_outputs(self.output_context(), self.seg, self.thresholds, batch, maps[finite], recs)
        for r in recs:
            self.journal.append(r)
        self.journal.sync(max_lag_s=1.0)  # at most one fsync a second (a fast model does several batches)
        return len(recs)

    def _heatmaps(self, batch: list[Decoded], x: np.ndarray, probs: np.ndarray, recs: list[dict[str, Any]]) -> None:
        import torch

        from medvit.infer.heatmaps import write_heatmap_outputs
        from medvit.visualize.attribution import explain

        targets = heatmap_targets(probs, np.asarray(self.thresholds))
        model = self.predictor.fp32_model  # fp32 weights (int8 runs keep them beside the quantised copy)
        dev = next(model.parameters()).device
        heat = explain(model, torch.as_tensor(x).to(dev), self.cfg.heatmap_method,
                       torch.as_tensor(targets, device=dev)).float().cpu().numpy()
        for d, h, t, rec in zip(batch, heat, targets, recs, strict=True):
            rec["heatmap_target"] = self.labels[int(t)]
            try:
                rec["heatmap_png"] = write_heatmap_outputs(self.output_context(), d, h, rec)
            except Exception as e:  # a heatmap must never cost the prediction
                from medvit.io.errors import redact_values

                rec["heatmap_png"] = ""
                rec["heatmap_error"] = f"{type(e).__name__}: {redact_values(str(e))}"
                logger.warning("%s: heatmap not written (%s)", printable_path(d.rel), rec["heatmap_error"])

    def _decode_min_side(self) -> int | None:
        """Pixels a side a decoded image must keep: twice the model input's longer side (the antialiased resize
        still does the last factor <= 2), at least the heatmap display size; None (full resolution) for
        segmentation models (their SEG is on the source grid) and with ``full_decode``."""
        if self.cfg.full_decode or self.seg is not None:
            return None
        side = 2 * max(tuple(self.contract.input_size)[:2])
        return max(side, DISPLAY_MAX_SIDE) if self.cfg.heatmaps else side

    def _max_inflight(self, spec: DecodeSpec) -> int:
        """Decoded items allowed in flight: enough to keep workers and batches busy, within ``inflight_mb``."""
        c, (h, w) = self.contract.in_chans, tuple(self.contract.input_size)[:2]
        per_item = c * h * w * 4 + (spec.display_max_side ** 2 * 2 if spec.keep_unit else 0)
        by_bytes = max(1, self.cfg.inflight_mb * 2**20 // per_item)
        want = max(2 * self.cfg.batch_size, 4 * max(self.cfg.workers, 1))
        if by_bytes < want:
            logger.info("in-flight items capped at %d by inflight_mb=%d", by_bytes, self.cfg.inflight_mb)
        return max(1, min(want, by_bytes))

    # ------------------------------------------------------------------ main loop
    def run(self) -> RunResult:
        """Run (holding OUTPUT's exclusive lock: :class:`medvit.infer.lock.OutputLockedError` when taken)."""
        from medvit.infer.lock import OutputLock

        if self.cfg.deidentify:
            from medvit.io.deidentify import Deidentifier

            self.deid = Deidentifier(self._deid_key(), keep_dates=self.cfg.deid_keep_dates)
        started_ray = False
        if self.cfg.engine == "ray":  # before OUTPUT is touched: an unreachable cluster changes nothing there
            started_ray = self._connect_ray()
        try:
            # OUTPUT may hold identifiers: a new OUTPUT is owner-only (0700), its files 0600 (SECURITY.md §7)
            self.out.mkdir(parents=True, exist_ok=True, mode=0o700)
            with OutputLock(self.out / STATE_DIR):
                self._history = self._previous_runs()
                return self._run_locked()
        finally:
            if started_ray:
                self._ray[0].shutdown()

    def _connect_ray(self) -> bool:
        """Join (or start) the Ray cluster of an ``--engine ray`` run; True when this run started it."""
        from medvit.infer.ray_engine import RayEngineInfo, connect, plan_workers

        c = self.cfg
        import math

        ray, started = connect(c.address, num_cpus=c.num_workers and math.ceil(c.num_workers * c.cpus_per_worker))
        n, gpus, nodes = plan_workers(ray, c.num_workers, c.cpus_per_worker, c.device)
        self._ray = (ray, RayEngineInfo(c.address or "local (started by this run)", started, n, c.cpus_per_worker,
                                        gpus, nodes, str(ray.__version__)))
        logger.info("Ray: %d workers on %d node(s)", n, nodes)
        return started

    def _decoder(self, spec: DecodeSpec, max_inflight: int) -> Any:
        """The source of decoded items: local worker processes, or Ray tasks that also predict."""
        if self._ray is None:
            return _Decoder(spec, self.cfg.workers, max_inflight)
        from dataclasses import replace

        from medvit.infer.ray_engine import RayDecoder

        ray, info = self._ray
        p = self.predictor
        kwargs = {"precision": p.precision, "device": self.cfg.device, "multilabel": p.multilabel,
                  "compile": p.compile_mode, "model_sha256": p.model_sha256}
        worker_spec = replace(spec, worker_memory_bytes=None, parent_pid=0, stderr_file=None)  # Ray owns its workers
        return RayDecoder(ray, worker_spec, p.fp32_model, kwargs, info, shard_size=self.cfg.batch_size,
                          keep_x=self.cfg.heatmaps, max_pending=max(2, max_inflight // self.cfg.batch_size))

    def _previous_runs(self) -> list[dict[str, Any]]:
        """Earlier runs on OUTPUT from run.json; one still marked ``running`` died without finishing (the lock
        is free, so its process is gone) and is recorded as ``killed``."""
        f = self.out / "run.json"
        try:
            old = json.loads(f.read_text())
        except (OSError, ValueError):
            return []
        hist = list(old.get("previous_runs") or [])
        state = old.get("state")
        if state == "running":
            state = "killed"
            logger.warning("the previous run on %s (started %s) was killed before it finished; resuming",
                           self.out, old.get("started"))
        hist.append({"started": old.get("started"), "ended": old.get("ended"), "state": state,
                     "exit_code": old.get("exit_code"), "counts": old.get("counts")})
        return hist[-20:]

    def _run_locked(self) -> RunResult:
        cfg = self.cfg
        t0 = time.perf_counter()
        started = _now()
        resumed = self.journal.check_state(self._fingerprint(), cfg.overwrite)
        _remove_stale_temporaries(self.out)
        done = self.journal.open()
        dups = DuplicateTracker(self.root)
        if done:
            dups.load(self.journal.records())
        exclude = self.out.resolve()
        todo = self._unique(self._walk(exclude, done), dups)
        total = sum(1 for _ in walk_inputs(self.root, exclude, cfg.follow_links))
        self._write_run_json(started, None, {}, "running", 0.0, 0)
        image_bytes = cfg.max_image_mb * 2**20
        spec = DecodeSpec(str(self.root), self.pre, self.rules, keep_unit=cfg.heatmaps,
                          pixel_budget=image_bytes // 4, display_max_side=DISPLAY_MAX_SIDE,
                          worker_memory_bytes=6 * image_bytes + 2**28, parent_pid=os.getpid(),
                          stderr_file=cfg.log_file, min_side=self._decode_min_side())
        max_inflight = self._max_inflight(spec)
        bar = self._bar = tqdm(total=total, initial=len(done), unit="file", desc="medvit infer", mininterval=0.5,
                               file=sys.stderr, disable=not cfg.progress)
        batch: list[Decoded] = []
        n_new = n_pred = 0
        t_pred = time.perf_counter()
        self._timing = _Timing(t0)
        try:
            for d in self._timing.waiting(self._decoder(spec, max_inflight).run(todo)):
                n_new += 1
                dup = dups.same_sop(d.rel, str(d.header.get("SOPInstanceUID", "")), d.x, d.digest) \
                    if d.status == "ok" else None
                if dup:
                    d.status, d.reason, d.stage = dup[0], dup[1], DUPLICATE_STAGE
                if d.status == "ok":
                    batch.append(d)
                    if len(batch) >= cfg.batch_size:
                        n_pred += self._flush(batch)
                        batch = []
                else:
                    self.journal.append(self._base_record(d, "error" if d.status == "error" else "skipped"))
                    if d.status == "error":  # one terminal line per failed file; details in errors.csv
                        _log_failed(d, bar)
                bar.update(1)
                bar.set_postfix_str(f"{n_pred / max(time.perf_counter() - t_pred, 1e-9):.1f} img/s", refresh=False)
            n_pred += self._flush(batch)
        except BaseException as e:  # interrupted (SIGINT/SIGTERM) or crashed: run.json says so, journal kept
            state = "interrupted" if isinstance(e, KeyboardInterrupt | SystemExit) else "failed"
            self.journal.close()
            self._write_run_json(started, _now(), {"error": type(e).__name__}, state,
                                 time.perf_counter() - t0, 130 if state == "interrupted" else 1)
            raise
        finally:
            bar.close()
            self.journal.close()
        seconds = time.perf_counter() - t0
        try:
            return self._finish(started, seconds, resumed, len(done), n_new, n_pred)
        except BaseException as e:  # run.json must not stay "running" (the journal keeps every finished file)
            self._write_run_json(started, _now(), {"error": type(e).__name__}, "failed", seconds, 1)
            raise

    def _walk(self, exclude: Path, done: set[str]) -> Iterator[Path]:
        """Files to decode; entries the walk cannot or must not read are journaled as status rows."""
        for item in walk_inputs(self.root, exclude, self.cfg.follow_links):
            if isinstance(item, WalkIssue):
                if item.rel not in done:
                    self.journal.append(self._base_record(Decoded(item.rel, item.status, WALK_STAGE, item.reason),
                                                          item.status))
                self._bar.update(1)
            elif _rel_key(item, self.root) not in done:
                yield item

    def _unique(self, paths: Iterator[Path], dups: DuplicateTracker) -> Iterator[Path]:
        """``paths`` without files already walked through another name (each gets a skipped status row)."""
        for p in paths:
            rel = _rel_key(p, self.root)
            first = dups.same_file(p, rel)
            if first is None:
                yield p
            else:
                self.journal.append(self._base_record(Decoded(
                    rel, "skipped", DUPLICATE_STAGE, f"same file as {first} (reached again through a link)"),
                    "skipped"))
                self._bar.update(1)

    def _finish(self, started: str, seconds: float, resumed: bool, n_done: int, n_new: int,
                n_pred: int) -> RunResult:
        cfg = self.cfg
        counts = write_tables(self.journal, self.out, self.labels,
                              segment_labels=self.labels if self.seg is not None else None)
        counts["resumed_from_previous_run"] = n_done if resumed else 0
        files = {"predictions.csv": str(self.out / "predictions.csv"),
                 "predictions.jsonl": str(self.out / "predictions.jsonl"),
                 "status.csv": str(self.out / "status.csv"), "errors.csv": str(self.out / "errors.csv")}
        if cfg.sr:
            from medvit.infer.study_sr import write_study_reports

            n_sr, sr_errors = write_study_reports(self.output_context(), self.journal.records())
            counts["sr_written"], counts["sr_failed"] = n_sr, sr_errors
            files["sr"] = str(self.out / "sr")
        if cfg.heatmaps:
            files["heatmaps"] = str(self.out / "heatmaps")
        if self.seg is not None:
            files["seg"] = str(self.out / "seg")
        if counts["error"] or counts.get("sr_failed") or counts.get("seg_failed"):
            code = EXIT_SOME_FAILED
        elif counts["predicted"] == 0:
            code = EXIT_NOTHING_PREDICTED
        else:
            code = EXIT_OK
        ips = n_pred / max(seconds, 1e-9)
        counts["images_per_s_this_run"] = round(ips, 3)
        if getattr(self, "_timing", None) is not None:
            counts["timing"] = self._timing.summary(seconds, n_pred)
        self._write_run_json(started, _now(), counts, "finished", seconds, code)
        files["run.json"] = str(self.out / "run.json")
        return RunResult(code, counts, str(self.out), seconds, ips, n_new, files)

    def _write_run_json(self, started: str, ended: str | None, counts: dict[str, Any], state: str,
                        seconds: float, code: int) -> None:
        doc = {
            "state": state, "started": started, "ended": ended, "seconds": round(seconds, 3), "exit_code": code,
            "config": asdict(self.cfg), "input_root": str(self.root), "execution": self.predictor.describe(),
            "engine": self._ray[1].to_dict() if self._ray else {"name": "local", "workers": self.cfg.workers},
            "model": self.info.to_dict(), "contract": self.contract.to_dict(),
            "preprocessing": self.pre.describe(), "rules": self.rules.to_dict(),
            "labels": self.labels, "thresholds": self.thresholds,
            "deidentification": self._deid_doc(),
            "intended_use": RESEARCH_NOTE if self.info.research_only else "", "counts": counts,
            "versions": _versions(), "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "previous_runs": getattr(self, "_history", []),
        }
        atomic_write(self.out / "run.json", json.dumps(doc, indent=2, default=str), self.out)


    def output_context(self) -> RunOutputs:
        """What the heatmap and SR writers need of this run (they never see the runner)."""
        return RunOutputs(self.out, self.root, self.info, self.deid, self.pre.geometry, self.cfg.heatmap_method)

    def _deid_doc(self) -> dict[str, Any] | None:
        if self.deid is None:
            return None
        from medvit.io.deidentify import TABLE_SOURCE

        return {"profile": "DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile",
                "code": "113100 (DCM)", "table": TABLE_SOURCE,
                "options": (["113106 (DCM) Retain Longitudinal Temporal Information Full Dates Option"]
                            if self.deid.keep_dates else []),
                "dates": "retained" if self.deid.keep_dates else "removed",
                "key": f"outside OUTPUT (key id {self.deid.key_id()})"}


class _Timing:
    """Where a run's time went (run.json ``counts.timing``, seconds): waiting for the next decoded file
    (``input_wait_s``: walk + decoding not hidden behind the model), in the model (``predict_s``), and when the
    first batch was done (``first_batch_s``: worker start, first decodes, the model's first call — oneDNN
    primitives or a compiled package); ``images_per_s_after_first_batch`` is the steady rate."""

    def __init__(self, t0: float) -> None:
        self.t0, self.wait, self.predict = t0, 0.0, 0.0
        self.first: tuple[float, int] | None = None

    def waiting(self, items: Iterator[Decoded]) -> Iterator[Decoded]:
        it = iter(items)
        while True:
            t = time.perf_counter()
            try:
                d = next(it)
            except StopIteration:
                return
            self.wait += time.perf_counter() - t
            yield d

    def predicted(self, seconds: float, n: int) -> None:
        self.predict += seconds
        if self.first is None:
            self.first = (time.perf_counter() - self.t0, n)

    def summary(self, seconds: float, n_pred: int) -> dict[str, float | None]:
        out: dict[str, float | None] = {"input_wait_s": round(self.wait, 3), "predict_s": round(self.predict, 3),
                                        "first_batch_s": None, "images_per_s_after_first_batch": None}
        if self.first is not None:
            t1, n1 = self.first
            out["first_batch_s"] = round(t1, 3)
            if n_pred > n1 and seconds > t1:
                out["images_per_s_after_first_batch"] = round((n_pred - n1) / (seconds - t1), 3)
        return out


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporary files that dead runs left behind (atomic writes that never reached os.replace).

    Only files named like :data:`medvit.io.safe_write.TEMP_PATTERN` whose writer process no longer exists
    are removed, so a live writer's file is never touched.
    """
    from medvit.io.safe_write import remove_dead_temporaries

    for f in remove_dead_temporaries(out, recursive=True):
        logger.info("removed a temporary file of a dead run: %s", f)


def heatmap_targets(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per image (rows of ``probs`` (N, K)), the finding a batch heatmap maps: the most probable *positive*
    finding (p >= its threshold), else the most probable one (then labelled negative). Shape (N,), int."""
    positive = probs >= thresholds[None, :]
    return np.where(positive.any(1), np.where(positive, probs, -np.inf).argmax(1), probs.argmax(1))


def _log_failed(d: Decoded, bar: Any) -> None:
    reason = d.reason if len(d.reason) <= 160 else d.reason[:157] + "..."
    msg = f"FAILED {printable_path(d.rel)} at {d.stage}: {reason}"
    if bar is not None:
        bar.clear()  # keep the bar on its own line
    logger.warning("%s", msg)
    if bar is not None:
        bar.refresh()


def _rel_key(p: Path, root: Path) -> str:
    from medvit.infer.decode import _rel

    return _rel(p, str(root))


def run_inference(cfg: InferConfig) -> RunResult:
    """Run batch inference (see :class:`InferConfig`); returns counts and the exit code."""
    return InferenceRun(cfg).run()


