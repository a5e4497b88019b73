"""Task ``prompt_tune``: parameter-efficient tuning of a (pretrained) ViT with any registered PEFT method.

Two problems on one code path:

- ``multilabel`` (chest X-ray findings, e.g. ``cxr_phantom``): masked BCE-with-logits, mean AUROC;
- ``ordinal`` (5-grade DR / AMD-stage style, e.g. ``retina_phantom``): cross-entropy, prediction = argmax,
  quadratic weighted kappa (= sklearn ``cohen_kappa_score(weights="quadratic")``).

Per seed: build the datasets, create the backbone with a fresh head and load ``pretrained``, apply the method
(:func:`medvit.peft.apply_peft`), train the trainable parameters with the shared loop (:class:`medvit.train.Trainer`),
select on validation, test once, and save an adapter-only checkpoint (``seed_<s>/adapter``). Every run reports
trainable parameters (count and % of the backbone), adapter checkpoint size and step time (``summary.json``,
``results.md``, and the summary the CLI prints).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvit.config import option
from medvit.data.fraction import few_shot_subset, fraction_subset
from medvit.eval.metrics import mean_sd
from medvit.eval.predict import predict
from medvit.peft.hint_aug import HintAug, HintAugConfig
from medvit.tasks.base import register_task
from medvit.train.config import TrainConfig
from medvit.train.losses import LossFeed, LossSpec, check_direct_loss, direct_loss, masked_bce

logger = logging.getLogger(__name__)

#: what the cached datasets keep of each item
CACHED_KEYS = ("image", "label", "label_mask")

PROBLEMS = ("auto", "multilabel", "ordinal")


def _default_train() -> TrainConfig:
    return TrainConfig(epochs=10, lr=1e-3, weight_decay=1e-4, warmup_epochs=1.0, clip_grad=1.0, progress=False)


@dataclass
class PromptTuneConfig:
    """PEFT of a registered backbone on a registered dataset; every field can be overridden as ``key=value``."""

    output_dir: str = option("runs/prompt_tune", "run folder: seed_<s>/ (adapter/, summary.json), summary.json, "
                                                 "results.md")
    dataset: str = option("cxr_phantom", "registered dataset (`medvit list dataset`)")
    dataset_args: dict[str, Any] = option(
        default_factory=dict, help="build_dataset kwargs, e.g. {n: 2000, image_size: 64}")
    problem: str = option("auto", '"multilabel" (AUROC), "ordinal" (QWK), "auto": ordinal when the dataset has '
                                  'class_names')
    num_grades: int | None = option(None, "ordinal: number of grades (None = len(class_names) of the dataset)")
    referable_grade: int | None = option(
        None, "ordinal: also report referable_auroc, the AUROC of P(grade >= this) (softmax mass) against truth "
              "grade >= this (e.g. 2 = referable DR, 3 = late AMD on retina_phantom); None = off")
    train_split: str = option("train", "split used for training")
    val_split: str = option("val", "split used for model selection (never test)")
    test_split: str = option("test", 'split evaluated once at the end ("" = none)')
    label_fraction: float = option(1.0, "fraction of training images kept (label-efficiency studies), drawn per seed")
    shots_per_class: int = option(0, "few-shot: keep this many training images per class (per finding + 'no "
                                     "finding' for multi-label), drawn per seed; 0 = off")
    backbone: str = option("vit_small_patch16_224", "registered backbone")
    backbone_args: dict[str, Any] = option(default_factory=dict, help="constructor overrides (depth, embed_dim, ...)")
    pretrained: str | None = option(
        None, "mae_pretrain run folder / checkpoint dir / weights file / weight tag; None = random")
    image_size: int = option(224, "training and evaluation size (square)")
    in_chans: int = option(1, "model input channels (grey images repeated when 3)")
    global_pool: str = option(
        "token", '"token": CLS after the pretrained final norm; "avg": patch mean + fresh fc_norm')
    method: str = option("dvpt", "registered PEFT method (`medvit list peft`)")
    method_config: dict[str, Any] = option(default_factory=dict, help="the method's config fields (strict keys)")
    mean: list[float] | None = option(None, "normalisation mean per channel; None = the dataset's registered default")
    std: list[float] | None = option(None, "normalisation std per channel; None = the dataset's registered default")
    rrc_scale: tuple[float, float] = option((0.8, 1.0), "random resized crop area range")
    hflip: float = option(0.5, "horizontal flip probability")
    train: TrainConfig = option(default_factory=_default_train, help="optimisation (only trainable params are "
                                                                     "optimised)")
    loss: LossSpec | None = option(None, "training loss by registered name (`medvit list loss`), e.g. {name: "
                                         "masked_bce, args: {pos_weight: [...]}}; null = masked_bce (multilabel) or "
                                         "cross_entropy (ordinal grades as classes)")
    hint_aug: HintAugConfig = option(default_factory=HintAugConfig, help="Hint-Aug few-shot augmentation stage "
                                                                         "(enabled: true) with any image method")
    seeds: list[int] = option(default_factory=lambda: [0], help="one run per seed; results as mean ± sd")
    eval_batch_size: int = option(128, "batch size for validation/test prediction")
    cache_data: bool = option(True, "hold decoded images in memory (MONAI CacheDataset; phantoms, small sets); false "
                                    "= read every epoch (MONAI Dataset)")
    cache_dir: str = option("", "on-disk cache of decoded, preprocessed images (MONAI PersistentDataset keyed by file "
                                "SHA-256 and the loading/preprocessing config); overrides cache_data")
    save_merged: bool = option(False, "also write the adapter merged into the base (lora-family methods) as "
                                      "seed_<s>/merged")
    crop_mode: str = option("crop", "eval/serving geometry to the input's aspect: crop (centre) | pad | squash "
                                    "(contract)")
    interpolation: str = option("bicubic", "resize filter for training, evaluation and serving: bicubic | bilinear")
    threshold_rule: str = option("youden", "multilabel: per-label operating threshold chosen on validation (youden | "
                                           "f1 | accuracy)")
    modalities: list[str] = option(
        default_factory=list, help="contract scope, e.g. [CR, DX]; `medvit infer` selects on it")
    view_positions: list[str] = option(default_factory=list, help="contract scope, e.g. [PA, AP]")
    body_parts: list[str] = option(default_factory=list, help="contract scope, e.g. [CHEST]")
    source: str = option("", 'free text stored in the contract ("" = the task, method and dataset)')
    model_name: str = option("", 'contract name ("" = "<dataset>-<backbone>-<method>")')
    model_version: str = option("", 'contract version ("" = the training date, YYYY.MM.DD)')
    ood_fpr: float = option(0.05, "OOD reference: flag threshold at this FPR on validation (0 = none)")
    ood_max_train: int = option(10000, "training images (evenly spaced) the OOD reference is fitted on")

    def loss_feed(self, meta: dict[str, Any]) -> LossFeed:
        """What the tuning step hands the loss (batch image/label/label_mask): multi-hot labels (multilabel) or
        grade indices (ordinal); with ``problem: auto`` the registered dataset's meta decides (unknown = None)."""
        problem = self.problem
        if problem == "auto" and ("class_names" in meta or "label_names" in meta):
            problem = "ordinal" if meta.get("class_names") else "multilabel"
        if problem == "multilabel":
            k = len(meta["label_names"]) if meta.get("label_names") else None
            return LossFeed(CACHED_KEYS, "multilabel", k, LossSpec("masked_bce"), "prompt_tune (multilabel)")
        if problem == "ordinal":
            k = self.num_grades or (len(meta["class_names"]) if meta.get("class_names") else None)
            return LossFeed(CACHED_KEYS, "classes", k, LossSpec("cross_entropy"), "prompt_tune (ordinal)")
        return LossFeed(CACHED_KEYS, where="prompt_tune")

    def __post_init__(self) -> None:
        from medvit.peft import get_method, make_config

        if self.problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {PROBLEMS}, got {self.problem!r}")
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if self.shots_per_class < 0:
            raise ValueError(f"shots_per_class must be >= 0 (0 = off), got {self.shots_per_class}")
        if self.shots_per_class and self.label_fraction < 1.0:
            raise ValueError("give shots_per_class or label_fraction < 1, not both")
        if self.global_pool not in ("avg", "token"):
            raise ValueError(f"global_pool must be 'avg' or 'token', got {self.global_pool!r}")
        if self.in_chans < 1 or self.image_size < 1 or self.eval_batch_size < 1:
            raise ValueError("in_chans, image_size and eval_batch_size must be >= 1")
        if self.num_grades is not None and self.num_grades < 2:
            raise ValueError(f"num_grades must be >= 2, got {self.num_grades}")
        if self.referable_grade is not None and (self.problem == "multilabel" or self.referable_grade < 1):
            raise ValueError(f"referable_grade must be >= 1 and needs an ordinal problem, got {self.referable_grade} "
                             f"with problem {self.problem!r}")
        if not (0.0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1.0):
            raise ValueError(f"rrc_scale must satisfy 0 < lo <= hi <= 1, got {self.rrc_scale}")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither (dataset default)")
        try:
            spec = get_method(self.method)
        except KeyError as e:
            raise ValueError(f"method: {e.args[0]}") from e
        try:
            make_config(self.method, self.method_config)
        except (ValueError, TypeError) as e:
            raise ValueError(f"method_config: {e}") from e
        if self.crop_mode not in ("pad", "crop", "squash"):
            raise ValueError(f"crop_mode must be pad, crop or squash, got {self.crop_mode!r}")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation must be bilinear or bicubic, got {self.interpolation!r}")
        from medvit.eval.thresholds import THRESHOLD_RULES

        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be one of {', '.join(THRESHOLD_RULES)}, got {self.threshold_rule!r}")
        if not 0.0 <= self.ood_fpr < 1.0:
            raise ValueError(f"ood_fpr must be in [0, 1) (0 = no OOD reference), got {self.ood_fpr}")
        if self.loss is not None:
            check_direct_loss(self.loss.name)
        if self.save_merged and not spec.mergeable:
            raise ValueError(f"save_merged: method {self.method!r} cannot be merged into the base")


# --------------------------------------------------------------------------------------------- helpers
def score(problem: str, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None,
          num_classes: int, referable_grade: int | None = None) -> dict[str, float]:
    """Primary metric ``score`` (mean AUROC / QWK), ``loss`` and, for ordinal grading, ``accuracy``.

    Ordinal with ``referable_grade`` r also ``referable_auroc``: AUROC of the softmax mass on grades >= r,
    ``softmax(logits)[:, r:].sum(1)`` (logits (N, num_classes)), against ``labels >= r`` (the binary referral
    decision a graded screen is used for, e.g. referable DR = grade >= 2); NaN when one side is absent.
    """
    from medvit.eval import mean_auroc, quadratic_weighted_kappa

    if problem == "multilabel":
        m = mask if mask is not None else torch.ones_like(labels, dtype=torch.bool)
        return {"score": mean_auroc(labels, logits, m).mean, "loss": float(masked_bce(logits, labels, m))}
    pred = logits.argmax(dim=1)
    out = {"score": quadratic_weighted_kappa(labels, pred, labels=list(range(num_classes))),
           "loss": float(F.cross_entropy(logits, labels.long())),
           "accuracy": float((pred == labels).float().mean())}
    if referable_grade is not None:
        from medvit.eval.metrics import binary_auroc

        p_ref = torch.softmax(logits.float(), dim=1)[:, referable_grade:].sum(dim=1)
        out["referable_auroc"] = binary_auroc((labels >= referable_grade).long(), p_ref)
    return out


def _problem(cfg: PromptTuneConfig, ds: Any) -> tuple[str, int, list[str]]:
    """(problem, number of outputs, output names) from the config and the training set."""
    has_classes = bool(getattr(ds, "class_names", None))
    problem = cfg.problem if cfg.problem != "auto" else ("ordinal" if has_classes else "multilabel")
    if problem == "ordinal":
        names = list(getattr(ds, "class_names", []) or [])
        k = cfg.num_grades or len(names)
        if k < 2:
            raise ValueError(f"dataset {cfg.dataset!r} has no class_names; set num_grades for ordinal grading")
        return problem, k, names[:k] if len(names) >= k else [str(i) for i in range(k)]
    names = list(getattr(ds, "label_names", []) or [])
    if not names:
        raise ValueError(f"dataset {cfg.dataset!r} has no label_names; set problem='ordinal' for graded labels")
    return problem, len(names), names


def build_base(cfg: PromptTuneConfig, num_outputs: int,
               base_dir: Path | None = None) -> tuple[nn.Module, str | None, str | None]:
    """The backbone with a fresh ``num_outputs`` head and pretrained encoder weights; (model, weights, sha256).

    ``weights`` is what the adapter records as its base: the absolute path of ``cfg.pretrained`` (or the weight
    tag); without ``pretrained``, the random initialisation is saved to ``base_dir`` and that is the base, so the
    adapter can always be loaded again (``medvit infer``, the viewer).
    """
    from medvit.models import create_model
    from medvit.models.checkpoint import sha256_file
    from medvit.models.mae_convert import load_pretrained_encoder, resolve_encoder_file

    model = create_model(cfg.backbone, img_size=cfg.image_size, in_chans=cfg.in_chans, num_classes=num_outputs,
                         global_pool=cfg.global_pool, **cfg.backbone_args)
    weights = cfg.pretrained
    if cfg.pretrained:
        load_pretrained_encoder(model, cfg.pretrained)
        model.reset_classifier(num_outputs)
        if Path(cfg.pretrained).exists():
            weights = str(Path(cfg.pretrained).resolve())
    elif base_dir is not None:
        from medvit.models import save_checkpoint

        if int(os.environ.get("RANK", "0")) == 0:
            save_checkpoint(model, base_dir, extra={"task": "prompt_tune", "note": "random-init base of the adapter"})
        weights = str(Path(base_dir).resolve())
    f = resolve_encoder_file(weights) if weights else None
    return model, weights, (sha256_file(f) if f is not None else None)


def _total_steps(cfg: TrainConfig, n_train: int) -> int:
    """Optimizer steps the shared loop will run (single process), needed up front by AdaLoRA's budget."""
    per_epoch = n_train // cfg.batch_size
    return cfg.steps or max(1, math.ceil(cfg.epochs * per_epoch / cfg.accum_steps))


class _StepHook:
    """Global optimizer post-step hook for one model: the method's ``on_step`` and step timing."""

    def __init__(self, model: nn.Module, on_step: Any, counter: list[int] | None = None):
        self.ids = {id(p) for p in model.parameters() if p.requires_grad}
        self.model, self.on_step = model, on_step
        self.counter = counter if counter is not None else [0]
        self.step, self.times = 0, [time.perf_counter()]
        self.handle: Any = None

    def __call__(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        first = opt.param_groups[0]["params"][0] if opt.param_groups and opt.param_groups[0]["params"] else None
        if first is None or id(first) not in self.ids:
            return
        if self.on_step is not None:
            self.on_step(self.model, self.step)
        self.step += 1
        self.counter[0] = self.step
        self.times.append(time.perf_counter())

    def __enter__(self) -> _StepHook:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.handle = register_optimizer_step_post_hook(self)
        self.times = [time.perf_counter()]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()

    def median_step_s(self) -> float:
        d = [b - a for a, b in zip(self.times, self.times[1:])]
        return statistics.median(d[1:] if len(d) > 2 else d) if d else math.nan  # first step: warm-up


def _contract(cfg: PromptTuneConfig, pre: Any, problem: str, names: list[str],
              val_out: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None], seed: int) -> Any:
    """The full weight contract of the tuned model: preprocessing, outputs, thresholds chosen on validation, scope."""
    from datetime import UTC, datetime

    from medvit.eval import choose_thresholds

    logits, labels, mask = val_out
    if problem == "multilabel":
        m = mask if mask is not None else torch.ones_like(labels, dtype=torch.bool)
        thresholds = [float(t) for t in choose_thresholds(labels.numpy(), torch.sigmoid(logits).numpy(), m.numpy(),
                                                          cfg.threshold_rule)]
        rule = f"{cfg.threshold_rule} on the {cfg.val_split} split"
    else:  # softmax over grades: the prediction is the arg-max; a grade is "positive" at probability 0.5
        thresholds, rule = [0.5] * len(names), "0.5 (arg-max grading)"
    return dataclasses.replace(
        pre, name=cfg.model_name or f"{cfg.dataset}-{cfg.backbone}-{cfg.method}",
        version=cfg.model_version or datetime.now(UTC).strftime("%Y.%m.%d"), label_names=list(names),
        thresholds=thresholds, multilabel=problem == "multilabel", research_only=True,
        modalities=list(cfg.modalities), view_positions=list(cfg.view_positions), body_parts=list(cfg.body_parts),
        source=cfg.source or f"medvit prompt_tune ({cfg.method}) on {cfg.dataset} (seed {seed})",
        description=f"{cfg.backbone} tuned with {cfg.method} for {len(names)} outputs; thresholds: {rule}; "
                    "research use only")


def hint_check(model: nn.Module, layer: int) -> None:
    """Refuse Hint-Aug up front for a method it cannot augment (encoder without autograd) or a bad ``layer``."""
    from medvit.peft.hint_aug import vit_of

    try:
        vit = vit_of(model)
    except ValueError as e:
        raise ValueError(f"hint_aug: {e}") from e
    if layer >= len(vit.blocks):
        raise ValueError(f"hint_aug.layer={layer} but the backbone has {len(vit.blocks)} blocks")


def task_loss(cfg: PromptTuneConfig, problem: str) -> nn.Module:
    """The tuning loss from ``cfg.loss`` (registry kind ``loss``), by default masked BCE (multi-label) or
    cross-entropy (ordinal grades as classes); called as ``loss(logits, batch)``."""
    return direct_loss(cfg.loss, LossSpec("masked_bce" if problem == "multilabel" else "cross_entropy"))


def _apply_spt(base: nn.Module, mcfg: Any, train_ds: Any, train_tf: Any, tcfg: Any, loss_fn: Any, seed: int,
               **peft_kwargs: Any) -> nn.Module:
    """SPT's sensitivity pass over the first ``sensitivity_batches`` augmented training batches, then allocation."""
    from torch.utils.data import DataLoader

    from medvit.peft.spt import apply_spt
    from medvit.train.sampler import SeededTransformDataset

    n = min(len(train_ds), mcfg.sensitivity_batches * tcfg.batch_size)
    order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    loader = DataLoader(SeededTransformDataset(train_ds, train_tf), batch_size=tcfg.batch_size,
                        sampler=[(i, seed * 1_000_003 + i) for i in order])
    batches = ((b["image"], b) for b in loader)
    return apply_spt(base, batches, mcfg, loss_fn=loss_fn, **peft_kwargs)


# --------------------------------------------------------------------------------------------- run
def run_seed(cfg: PromptTuneConfig, seed: int, out: Path) -> dict[str, Any]:
    """One seed: tune, select on validation, test once, save the adapter. Returns the seed summary."""
    from medvit.data import build_dataset, dataset_normalization
    from medvit.data.augment import build_contract_eval_transform, build_train_transform
    from medvit.peft import apply_peft, get_method, make_config, merge_adapter, save_adapter, trainable_report
    from medvit.tasks.finetune_multilabel import preprocessing_contract
    from medvit.train import Trainer, resolve_device

    mean, std = (tuple(cfg.mean), tuple(cfg.std)) if cfg.mean is not None else dataset_normalization(cfg.dataset)
    pre_contract = preprocessing_contract(cfg, mean, std)
    eval_tf = build_contract_eval_transform(pre_contract)  # the serving preprocessing (medvit infer, viewer)
    train_tf = build_train_transform(cfg.image_size, mean, std, tuple(cfg.rrc_scale), hflip_prob=cfg.hflip,
                                     in_chans=cfg.in_chans, interpolation=cfg.interpolation)
    args = dict(cfg.dataset_args)
    train_raw = build_dataset(cfg.dataset, cfg.train_split, **args)
    problem, k, names = _problem(cfg, train_raw)
    loss_fn = task_loss(cfg, problem)
    train_ds = (few_shot_subset(train_raw, cfg.shots_per_class, seed) if cfg.shots_per_class
                else fraction_subset(train_raw, cfg.label_fraction, seed))
    val_ds = build_dataset(cfg.dataset, cfg.val_split, **args)
    test_ds = build_dataset(cfg.dataset, cfg.test_split, **args) if cfg.test_split else None
    from medvit.data.monai_data import task_datasets

    train_ds, val_ds, test_ds = task_datasets(
        cfg.dataset, args, [(cfg.train_split, train_ds, True), (cfg.val_split, val_ds, False),
                            (cfg.test_split, test_ds, False)], pre_contract, cfg.cache_data, cfg.cache_dir,
        keys=CACHED_KEYS)
    tcfg = dataclasses.replace(cfg.train, seed=seed, output_dir="")  # adapters are the artefact, not full copies
    total = _total_steps(tcfg, len(train_ds))
    mcfg = make_config(cfg.method, cfg.method_config)
    if getattr(mcfg, "total_step", 0) is None:  # AdaLoRA's budget schedule needs the run length
        mcfg = dataclasses.replace(mcfg, total_step=total)
    torch.manual_seed(seed)
    base, base_weights, sha = build_base(cfg, k, out / "base")
    fvit = copy.deepcopy(base) if cfg.hint_aug.enabled else None  # Hint-Aug's frozen foundation ViT
    if cfg.method == "spt" and not (mcfg.lora_targets or mcfg.sparse):  # SPT: allocate from training gradients
        model = _apply_spt(base, mcfg, train_ds, train_tf, tcfg, loss_fn, seed,
                           base_weights=base_weights, base_weights_sha256=sha)
    else:
        model = apply_peft(base, cfg.method, mcfg, base_weights=base_weights, base_weights_sha256=sha)
    spec = get_method(cfg.method)
    hint = (HintAug.from_config(cfg.hint_aug, fvit, k, multilabel=problem == "multilabel")
            if fvit is not None else None)
    if hint is not None:
        hint_check(model, cfg.hint_aug.layer)
    rep = trainable_report(model)
    reading = getattr(mcfg, "reading", None)  # DVPT: "abstract" | "released" | "custom"
    logger.info("prompt_tune %s seed %d%s: trainable %d of %d backbone params (%.3f%%)", cfg.method, seed,
                f" ({reading} reading)" if reading else "", rep["trainable_params"], rep["backbone_params"],
                rep["trainable_pct"])
    dev = resolve_device(tcfg.device)
    loss_fn.to(dev)

    steps_done = [0]  # optimizer steps so far (the step hook counts them); Hint-Aug starts at start_step

    def step_fn(m: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logits = m(batch["image"])
        loss = loss_fn(logits, batch)
        if hint is not None:  # Hint-Aug: a second loss on AOD/CFI-augmented images, true labels
            hint.update_confusion(logits, batch["label"])
            if steps_done[0] >= cfg.hint_aug.start_step:
                aug = hint.augment(model, batch["image"], batch["label"])
                loss = loss + cfg.hint_aug.weight * loss_fn(m(aug), batch)
        if spec.regularizer is not None and (reg := spec.regularizer(model)) is not None:
            loss = loss + reg
        return loss

    def evaluate(m: nn.Module) -> dict[str, float]:
        res = score(problem, *predict(m, val_ds, cfg.eval_batch_size, dev, tcfg.precision), k, cfg.referable_grade)
        return {f"val_{n}": v for n, v in res.items()}

    trainer = Trainer(model, tcfg, train_ds, step_fn, evaluate=evaluate, select_metric="val_score",
                      transform=train_tf)
    with _StepHook(model, spec.on_step, steps_done) as hook:
        result = trainer.fit()
    summary: dict[str, Any] = {
        "seed": seed, "problem": problem, "n_train": len(train_ds), "n_val": len(val_ds),
        "steps": result.steps, "best": result.best, "final_loss": result.losses[-1] if result.losses else None,
        **{k2: rep[k2] for k2 in ("trainable_params", "backbone_params", "trainable_pct")},
        **({"reading": reading} if reading else {}),
        "step_time_ms": 1000.0 * hook.median_step_s(), "train_samples_per_s": result.samples_per_s,
        **({"shots_per_class": cfg.shots_per_class} if cfg.shots_per_class else {}),
    }
    if hint is not None:
        summary["hint_aug"] = {"augmented_batches": len(hint.overfit_rate),
                               "aod_overfit_share": statistics.fmean(hint.overfit_rate) if hint.overfit_rate else None}
    if not trainer.dist.is_main:
        return summary
    val_out = predict(model, val_ds, cfg.eval_batch_size, dev, tcfg.precision)
    summary["val"] = score(problem, *val_out, k, cfg.referable_grade)
    contract = _contract(cfg, pre_contract, problem, names, val_out, seed)
    if test_ds is not None:
        test_out = predict(model, test_ds, cfg.eval_batch_size, dev, tcfg.precision)
        summary["test"] = score(problem, *test_out, k, cfg.referable_grade)
        if problem == "multilabel":  # agreement vs the all-negative baseline, sensitivity/specificity per finding
            from medvit.eval.operating import operating_at

            tl, ty, tm_ = test_out
            summary["test_operating"] = operating_at(tl.numpy(), ty.numpy(), None if tm_ is None else tm_.numpy(),
                                                     contract.thresholds, names).as_dict()
    if cfg.ood_fpr > 0:
        from medvit.tasks.finetune_multilabel import fit_ood

        try:
            contract.ood = fit_ood(model, train_ds, val_ds, test_ds, eval_tf, cfg.ood_fpr, cfg.ood_max_train,
                                   cfg.eval_batch_size, dev, out / "adapter")
            summary["ood"] = contract.ood
        except ValueError as e:  # e.g. too few images: the adapter is saved anyway, without a reference
            logger.warning("no OOD reference for %s: %s", out / "adapter", e)
            summary["ood_error"] = str(e)
    ad = save_adapter(model, out / "adapter", extra={"task": "prompt_tune", "dataset": cfg.dataset,
                                                    "problem": problem, "outputs": names, "seed": seed,
                                                    "image_size": cfg.image_size, "mean": list(mean),
                                                    "std": list(std), "val": summary["val"]}, contract=contract)
    summary["adapter_bytes"] = (ad / "adapter.safetensors").stat().st_size
    summary["adapter_mb"] = summary["adapter_bytes"] / 1e6
    if cfg.save_merged:
        from medvit.models import save_checkpoint

        save_checkpoint(merge_adapter(model), out / "merged", contract=contract,
                        extra={"task": "prompt_tune", "method": cfg.method, "merged_from": str(ad)})
        if contract.ood:  # the merged model computes the same features: the same reference file
            import shutil

            from medvit.eval.ood import OOD_NAME

            shutil.copyfile(ad / OOD_NAME, out / "merged" / OOD_NAME)
    (out / "summary.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    logger.info("prompt_tune %s seed %d: %s %.4f (val %.4f) | trainable %d (%.3f%% of backbone) | adapter %.3f MB "
                "| step %.1f ms", cfg.method, seed, "AUROC" if problem == "multilabel" else "QWK",
                summary.get("test", {}).get("score", math.nan), summary["val"]["score"], rep["trainable_params"],
                rep["trainable_pct"], summary["adapter_mb"], summary["step_time_ms"])
    return summary


def smoke_test_reason(cfg: PromptTuneConfig) -> str:
    """Why this run is only a smoke test ("" when it is not): a PEFT method that freezes the backbone started
    from a random one (``pretrained`` unset) learns on random features, so its scores sit near chance."""
    if cfg.pretrained or cfg.method == "full":
        return ""
    return (f"pretrained is null: {cfg.method} tunes on top of a frozen *random* backbone, so scores near chance "
            "are expected and say nothing about the method. Chain it from an MAE run for a real result: "
            "`medvit run pipelines/mae_thorax/mae_pretrain_tiny_cpu.yaml` then pretrained=runs/mae_tiny_cpu")


def _operating_lines(per_seed: list[dict[str, Any]]) -> str:
    """Per seed: test agreement next to the all-negative baseline (multi-label runs only)."""
    lines = [f"- seed {s['seed']} test at the validation thresholds: per-label agreement "
             f"{100 * s['test_operating']['agreement']:.1f} % vs all-negative baseline "
             f"{100 * s['test_operating']['all_negative_agreement']:.1f} %; sensitivity / specificity: "
             + ", ".join(f"{n} {v['sensitivity']:.2f}/{v['specificity']:.2f}"
                         for n, v in s["test_operating"]["findings"].items())
             for s in per_seed if "test_operating" in s]
    return "\n".join(lines) + "\n\n" if lines else ""


def run(cfg: PromptTuneConfig) -> dict[str, Any]:
    """Tune over ``cfg.seeds``; returns (and writes to ``output_dir/summary.json``) the report."""
    out = Path(cfg.output_dir)
    smoke = smoke_test_reason(cfg)
    if smoke:
        logger.warning("SMOKE TEST: %s", smoke)
    per_seed = [run_seed(cfg, s, out / f"seed_{s}") for s in cfg.seeds]
    if not all("val" in s for s in per_seed):  # non-main DDP ranks
        return {"task": "prompt_tune", "seeds": per_seed}
    problem = per_seed[0]["problem"]
    metric = "mean_auroc" if problem == "multilabel" else "qwk"
    tm, tsd = mean_sd([s.get("test", {}).get("score") for s in per_seed])
    vm, vsd = mean_sd([s["val"]["score"] for s in per_seed])
    first = per_seed[0]
    summary: dict[str, Any] = {
        **({"smoke_test": smoke} if smoke else {}),
        "task": "prompt_tune", "method": cfg.method, "dataset": cfg.dataset, "problem": problem, "metric": metric,
        "backbone": cfg.backbone, "pretrained": cfg.pretrained,
        f"test_{metric}": tm, f"test_{metric}_sd": tsd, f"val_{metric}": vm, f"val_{metric}_sd": vsd,
        "trainable_params": first["trainable_params"], "backbone_params": first["backbone_params"],
        "trainable_pct": first["trainable_pct"], "adapter_mb": first["adapter_mb"],
        **({"reading": first["reading"]} if "reading" in first else {}),
        "step_time_ms": statistics.median(s["step_time_ms"] for s in per_seed), "seeds": per_seed,
    }
    ops = [s["test_operating"] for s in per_seed if "test_operating" in s]
    if ops:  # agreement next to what "no finding" everywhere scores
        summary.update(test_agreement=mean_sd([o["agreement"] for o in ops])[0],
                       test_all_negative_agreement=mean_sd([o["all_negative_agreement"] for o in ops])[0])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    rows = [f"| {s['seed']} | {s['val']['score']:.4f} | {s.get('test', {}).get('score', math.nan):.4f} | "
            f"{s['trainable_params']:,} | {s['trainable_pct']:.3f} | {s['adapter_mb']:.3f} | {s['step_time_ms']:.1f} |"
            for s in per_seed]
    (out / "results.md").write_text(
        f"# prompt_tune: {cfg.method} on {cfg.dataset} ({problem}, {metric})\n\n"
        + (f"**SMOKE TEST**: {smoke}\n\n" if smoke else "")
        + f"test {metric}: {tm:.4f} ± {tsd:.4f} over {len(per_seed)} seed(s); validation {vm:.4f} ± {vsd:.4f}\n\n"
        + _operating_lines(per_seed) +
        "| seed | val | test | trainable params | % of backbone | adapter MB | step ms |\n"
        "|---|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n"
    )
    return summary


# registered when medvit.tasks is imported
register_task("prompt_tune", PromptTuneConfig,
              "parameter-efficient tuning (DVPT, LoRA, VPT, ...) for multi-label AUROC or ordinal QWK")(run)
