"""Task ``finetune_multilabel``: fine-tune a ViT for multi-label findings (thorax-MAE recipe, §1.4 of the notes).

Per seed: build the datasets, keep ``label_fraction`` of the training images, create the backbone (random init or
``pretrained`` weights: a medvit checkpoint, a released CXR-MAE / HF ViT-MAE file, a weight tag, or the
``encoder/`` written by ``mae_pretrain``), train with the registered ``loss`` (default masked BCE-with-logits,
unknown labels excluded), select the
checkpoint on validation mean AUROC, choose per-label operating thresholds on validation, evaluate the test split
once. The model of the seed with the best validation score is saved with its :class:`WeightContract` in
``output_dir/model``; ``summary.json`` / ``results.md`` hold per-class AUROC tables and mean ± sd over seeds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medvit.config import option
from medvit.data.fraction import fraction_subset
from medvit.eval.metrics import mean_sd
from medvit.nn.ewa import EWAConfig
from medvit.tasks.base import register_task
from medvit.train.config import TrainConfig
from medvit.train.losses import LossFeed, LossSpec, TrainContext, loss_step, masked_bce

logger = logging.getLogger(__name__)


@dataclass
class FinetuneMultilabelConfig:
    """Multi-label fine-tuning of a registered backbone; every field can be overridden as ``key=value``."""

    output_dir: str = option("runs/finetune_multilabel", "run folder: one seed_<s>/ per seed, model/, summary.json")
    dataset: str = option("cxr_phantom", "registered dataset name (`medvit list dataset`)")
    dataset_args: dict[str, Any] = option(default_factory=dict, help="build_dataset kwargs, e.g. {root: DIR} or {n: "
                                                                     "2000}")
    train_split: str = option("train", "split used for training")
    val_split: str = option("val", "split used for checkpoint selection and thresholds (never test)")
    test_split: str = option("test", 'split evaluated once at the end ("" = none)')
    label_fraction: float = option(1.0, "fraction of training images kept (label-efficiency studies), drawn per seed")
    backbone: str = option("vit_small_patch16_224", "registered backbone")
    backbone_args: dict[str, Any] = option(default_factory=dict, help="constructor overrides (depth, embed_dim, ...)")
    pretrained: str | None = option(None, "checkpoint dir / weights file / weight tag; None = random init")
    image_size: int = option(224, "training and evaluation size (square)")
    in_chans: int = option(1, "model input channels (grey images are repeated when 3)")
    global_pool: str = option("avg", '"avg" (mean of patch tokens + fc_norm, the paper) or "token"')
    drop_path: float = option(0.2, "stochastic depth rate")
    mean: list[float] | None = option(None, "normalisation mean per channel; None = the dataset's registered default")
    std: list[float] | None = option(None, "normalisation std per channel; None = the dataset's registered default")
    rrc_scale: tuple[float, float] = option((0.08, 1.0), "random resized crop area range (timm default in the paper)")
    hflip: float = option(0.5, "horizontal flip probability")
    randaug: str = option("rand-m6-mstd0.5-inc1", 'timm RandAugment spec ("" = off)')
    eval_crop_pct: float = option(1.0, "eval resize+centre crop fraction (0.875 = Resize(256)+CenterCrop(224))")
    crop_mode: str = option("crop", "eval/serving geometry to the input's aspect: crop (centre) | pad | squash")
    interpolation: str = option("bicubic", "resize filter for training, evaluation and serving: bicubic | bilinear")
    train: TrainConfig = option(default_factory=TrainConfig, help="optimisation; train.output_dir is set per seed")
    loss: LossSpec = option(default_factory=lambda: LossSpec("masked_bce"),
                            help="training loss by registered name (`medvit list loss`), e.g. {name: masked_bce, "
                                 "args: {pos_weight: [...]}}; loss.args alone = masked_bce's")
    ewa: EWAConfig | None = option(None, "Experts Weights Averaging: chosen MLPs trained as a randomly routed MoE "
                                         "whose experts are averaged after each step, converted back to the plain "
                                         "backbone before evaluation/saving (null = off)")
    seeds: list[int] = option(default_factory=lambda: [0], help="one full run per seed; results as mean ± sd")
    threshold_rule: str = option("youden", 'per-label operating threshold chosen on validation: "youden", "f1" or '
                                                 '"accuracy" (medvit.eval.thresholds)')
    eval_batch_size: int = option(128, "batch size for validation/test prediction")
    cache_data: bool = option(True, "hold decoded images in memory (MONAI CacheDataset; phantoms, small sets); false "
                                    "= read every epoch (MONAI Dataset)")
    cache_dir: str = option("", "on-disk cache of decoded, preprocessed images (MONAI PersistentDataset keyed by file "
                                "SHA-256 and the loading/preprocessing config); overrides cache_data")
    augment: list[dict[str, Any]] = option(
        default_factory=list, help="extra MONAI dictionary transforms after flip/RandAugment, e.g. [{name: "
                                   "RandAffined, prob: 0.5, rotate_range: 0.1}, {name: RandGaussianNoised, prob: 0.2, "
                                   "std: 0.02}]")
    source: str = option("", "free text stored in the weight contract (data, recipe, who trained it)")
    ood_fpr: float = option(
        0.05, "OOD reference (medvit.eval.ood): flag threshold at this FPR on validation (0 = none)")
    ood_max_train: int = option(10000, "training images (evenly spaced) the OOD reference is fitted on (bounds its "
                                       "cost)")
    model_name: str = option("", 'contract name shown in tables, SR, viewer ("" = "<dataset>-<backbone>")')
    model_version: str = option("", 'contract version ("" = the training date, YYYY.MM.DD)')
    modalities: list[str] = option(default_factory=list, help="contract scope, e.g. [CR, DX]; batch inference selects "
                                                              "on it")
    view_positions: list[str] = option(default_factory=list, help="contract scope, e.g. [PA, AP]; empty = any view")
    body_parts: list[str] = option(default_factory=list, help="contract scope, e.g. [CHEST]; empty = any body part")
    report: bool = option(True, "write seed_<s>/report/: ROC and PR curves per label, reliability diagram, confusion "
                                "table at the validation-chosen thresholds, on the test split (validation if none)")

    def loss_feed(self, meta: dict[str, Any]) -> LossFeed:
        """What the loop hands the loss (config-time check by :func:`medvit.tasks.base.check_loss_values`):
        dataset items' keys, multi-hot labels, one output per registered label."""
        return LossFeed(("image", "label", "label_mask", "id", "patient_id"), "multilabel",
                        default=LossSpec("masked_bce"), where="finetune_multilabel")

    def __post_init__(self) -> None:
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if self.global_pool not in ("avg", "token"):
            raise ValueError(f"global_pool must be 'avg' or 'token', got {self.global_pool!r}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")
        if self.in_chans < 1 or self.image_size < 1 or self.eval_batch_size < 1:
            raise ValueError("in_chans, image_size and eval_batch_size must be >= 1")
        if not (0.0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1.0):
            raise ValueError(f"rrc_scale must satisfy 0 < lo <= hi <= 1, got {self.rrc_scale}")
        if not 0.0 < self.eval_crop_pct <= 1.0:
            raise ValueError(f"eval_crop_pct must be in (0, 1], got {self.eval_crop_pct}")
        if self.crop_mode not in ("pad", "crop", "squash"):
            raise ValueError(f"crop_mode must be pad, crop or squash, got {self.crop_mode!r}")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation must be bilinear or bicubic, got {self.interpolation!r}")
        if not 0.0 <= self.ood_fpr < 1.0:
            raise ValueError(f"ood_fpr must be in [0, 1) (0 = no OOD reference), got {self.ood_fpr}")
        from medvit.eval.thresholds import THRESHOLD_RULES

        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be one of {', '.join(THRESHOLD_RULES)}, got {self.threshold_rule!r}")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if self.randaug:
            from medvit.data.augment import RandAugment

            try:
                RandAugment.from_string(self.randaug)
            except ValueError as e:
                raise ValueError(f"randaug: {e}") from e
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither (dataset default)")
        from medvit.data.augment import monai_augment

        for e in self.augment:
            try:
                monai_augment(e)
            except ValueError as err:
                raise ValueError(f"augment: {err}") from err
        args = check_backbone(self.backbone, self.backbone_args, self.image_size)
        depth = args.get("depth")
        if self.ewa is not None and self.ewa.layers and isinstance(depth, int):
            from medvit.nn.ewa import ewa_layers

            ewa_layers(depth, self.ewa.layers)  # ValueError naming ewa.layers at config time (--dry-run)


def check_backbone(name: str, overrides: dict[str, Any], image_size: int) -> dict[str, Any]:
    """Resolve backbone args; raise ValueError naming the key when the name/args/patch size cannot work."""
    from medvit.models import backbone_args
    from medvit.nn.patch_embed import to_tuple

    try:
        args = backbone_args(name, **{**overrides, "img_size": image_size})
    except KeyError as e:
        raise ValueError(f"backbone: {e.args[0]}") from e
    except TypeError as e:
        raise ValueError(f"backbone_args: {e}") from e
    sd = args.get("spatial_dims", 2)
    for s, p in zip(to_tuple(image_size, sd, "image_size"), to_tuple(args["patch_size"], sd, "patch_size")):
        if s % p:
            raise ValueError(f"image_size {image_size} is not divisible by the backbone's patch_size {p}; change "
                             "image_size or backbone_args.patch_size")
    return args


def _normalization(cfg: FinetuneMultilabelConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if cfg.mean is not None and cfg.std is not None:
        return tuple(cfg.mean), tuple(cfg.std)
    from medvit.data import dataset_normalization

    return dataset_normalization(cfg.dataset, cfg.in_chans)


def preprocessing_contract(cfg: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """The preprocessing half of the weight contract a task's evaluation uses and its checkpoints carry.

    Intensity rules: what the file datasets read with (``dataset_args.intensity`` over
    :data:`medvit.data.preprocess.TRAINING_DEFAULT_INTENSITY`); geometry from ``crop_mode`` / ``eval_crop_pct`` /
    ``interpolation`` when the task config has them.
    """
    from medvit.data.preprocess import TRAINING_DEFAULT_INTENSITY
    from medvit.models import WeightContract

    rules = {**TRAINING_DEFAULT_INTENSITY, **dict(cfg.dataset_args.get("intensity") or {})}
    return WeightContract(in_chans=cfg.in_chans, input_size=(cfg.image_size, cfg.image_size), mean=mean, std=std,
                          intensity=rules, crop_mode=getattr(cfg, "crop_mode", "crop"),
                          crop_pct=getattr(cfg, "eval_crop_pct", 1.0),
                          interpolation=getattr(cfg, "interpolation", "bicubic"))


class _Mapped(torch.utils.data.Dataset):
    """``ds`` with ``tf`` applied to each item (a view; nothing is copied)."""

    def __init__(self, ds: Any, tf: Any, indices: list[int] | None = None):
        self.ds, self.tf = ds, tf
        self.indices = list(range(len(ds))) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        it = self.ds[self.indices[i]]
        return {"image": self.tf(it)["image"] if self.tf is not None else it["image"]}


def require_nonempty(ds: Any, cfg: FinetuneMultilabelConfig, split: str, n_train: int) -> None:
    """Raise ValueError naming the split and how to fill it when ``ds`` has no images (a small folder whose
    patient-level split leaves validation empty would otherwise fail deep inside ``torch.cat``)."""
    if ds is None or len(ds) > 0:
        return
    import inspect

    from medvit.registry import REGISTRY

    params = inspect.signature(REGISTRY.entry("dataset", cfg.dataset).obj).parameters
    fraction = f"{split}_fraction" if f"{split}_fraction" in params else None
    hints = ([f"raise dataset_args.{fraction} (now {cfg.dataset_args.get(fraction, params[fraction].default)})"]
             if fraction else []) + ["add images (splits are made by patient, so few patients give empty splits)",
                                     f"or set {'val_split' if split == cfg.val_split else 'test_split'} to a split "
                                     "that has images" + ("" if split != cfg.test_split else " (or \"\" for none)")]
    raise ValueError(f"fine-tuning: the {split!r} split of dataset {cfg.dataset!r} has no images "
                     f"({n_train} in {cfg.train_split!r}); " + ", ".join(hints))


def fit_ood(model: torch.nn.Module, train_ds: Any, val_ds: Any, test_ds: Any, eval_tf: Any, target_fpr: float,
            max_train: int, batch_size: int, device: Any, ckpt_dir: Path) -> dict[str, Any]:
    """Fit the OOD reference (:mod:`medvit.eval.ood`) on training images seen through the evaluation transform
    (``val_ds`` / ``test_ds`` already transformed), threshold at ``target_fpr`` on validation, FPR measured on
    test; writes ``ckpt_dir/ood.safetensors`` and returns the contract's ``ood`` entry."""
    from medvit.eval.ood import fit_for_model, save_reference

    n = len(train_ds)
    idx = list(range(n)) if n <= max_train else [int(i * n / max_train) for i in range(max_train)]
    ref = fit_for_model(model, _Mapped(train_ds, eval_tf, idx), val_ds, test_ds, target_fpr, batch_size, device)
    return save_reference(ref, ckpt_dir)


def _today() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y.%m.%d")


def build_model(cfg: FinetuneMultilabelConfig, num_classes: int) -> torch.nn.Module:
    """The backbone with a fresh ``num_classes`` head, loaded from ``cfg.pretrained`` when given."""
    from medvit.models import create_model
    from medvit.models.mae_convert import load_pretrained_encoder

    model = create_model(cfg.backbone, img_size=cfg.image_size, in_chans=cfg.in_chans, num_classes=num_classes,
                         global_pool=cfg.global_pool, drop_path_rate=cfg.drop_path, **cfg.backbone_args)
    if cfg.pretrained:
        load_pretrained_encoder(model, cfg.pretrained)
    model.reset_classifier(num_classes)  # the paper's head init (trunc normal, std 2e-5), pretrained or not
    return model


def run_seed(cfg: FinetuneMultilabelConfig, seed: int, out: Path) -> dict[str, Any]:
    """One seed: train, select on validation, thresholds on validation, test once. Returns the seed summary."""
    from medvit.data import build_dataset
    from medvit.data.augment import build_contract_eval_transform, build_train_transform
    from medvit.data.monai_data import task_datasets
    from medvit.eval import choose_thresholds, mean_auroc
    from medvit.eval.predict import predict_multilabel
    from medvit.models import save_checkpoint
    from medvit.train import Trainer

    mean, std = _normalization(cfg)
    pre_contract = preprocessing_contract(cfg, mean, std)
    eval_tf = build_contract_eval_transform(pre_contract)  # the serving preprocessing (medvit infer, viewer)
    train_tf = build_train_transform(cfg.image_size, mean, std, cfg.rrc_scale, hflip_prob=cfg.hflip,
                                     randaug=cfg.randaug, in_chans=cfg.in_chans, interpolation=cfg.interpolation,
                                     extra=cfg.augment)
    args = dict(cfg.dataset_args)
    train_ds = build_dataset(cfg.dataset, cfg.train_split, **args)
    label_names = list(train_ds.label_names)
    train_ds = fraction_subset(train_ds, cfg.label_fraction, seed)
    source_train = train_ds  # before caching wrappers (keeps e.g. the long-tail split's label_counts)
    val_ds = build_dataset(cfg.dataset, cfg.val_split, **args)
    test_ds = build_dataset(cfg.dataset, cfg.test_split, **args) if cfg.test_split else None
    for name, d in ((cfg.train_split, train_ds), (cfg.val_split, val_ds), (cfg.test_split, test_ds)):
        require_nonempty(d, cfg, name, len(train_ds))
    train_ds, val_ds, test_ds = task_datasets(
        cfg.dataset, args, [(cfg.train_split, train_ds, True), (cfg.val_split, val_ds, False),
                            (cfg.test_split, test_ds, False)], pre_contract, cfg.cache_data, cfg.cache_dir)
    torch.manual_seed(seed)
    model = build_model(cfg, len(label_names))
    if cfg.ewa is not None:
        from medvit.nn.ewa import apply_ewa

        moe = apply_ewa(model, cfg.ewa.experts, cfg.ewa.share_rate, cfg.ewa.layers)
        logger.info("EWA: MLPs of blocks %s trained as %d-expert MoEs", moe, cfg.ewa.experts)
    tcfg = dataclasses.replace(cfg.train, seed=seed, output_dir=str(out))
    dev = torch.device("cuda" if tcfg.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if tcfg.device == "auto" else tcfg.device))
    step = loss_step(cfg.loss)
    step.loss.setup(TrainContext(train_set=train_ds, transform=train_tf, train=tcfg, device=dev, multilabel=True,
                                 output_dir=str(out), source_set=source_train, model=model,
                                 contract=pre_contract, label_names=label_names))

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        logits, y, mask = predict_multilabel(m, val_ds, cfg.eval_batch_size, dev, tcfg.precision)
        res = mean_auroc(y, logits, mask)
        return {"val_mean_auroc": res.mean, "val_loss": float(masked_bce(logits, y, mask))}

    from medvit.data.fraction import label_table

    trainer = Trainer(model, tcfg, train_ds, step, evaluate=evaluate, select_metric="val_mean_auroc",
                      transform=train_tf, sample_labels=label_table(source_train) if tcfg.sampler else None)
    result = trainer.fit()
    if cfg.ewa is not None:
        from medvit.nn.ewa import convert_ewa

        convert_ewa(model)  # the averaged experts: the plain registered backbone is evaluated and saved
    summary: dict[str, Any] = {"seed": seed, "n_train": len(train_ds), "n_val": len(val_ds),
                               "steps": result.steps, "train_samples_per_s": result.samples_per_s,
                               "best": result.best, "final_loss": result.losses[-1] if result.losses else None}
    if result.stopped_early:
        summary["stopped_early"] = True
    if not trainer.dist.is_main or not result.finished:
        return summary  # interrupted (stop_at_step): no thresholds, test or model from a partial schedule
    logits, y, mask = predict_multilabel(model, val_ds, cfg.eval_batch_size, dev, tcfg.precision)
    val = mean_auroc(y, logits, mask, label_names)
    thresholds = choose_thresholds(y.numpy(), torch.sigmoid(logits).numpy(), mask.numpy(), cfg.threshold_rule)
    summary["val"] = val.as_dict()
    summary["thresholds"] = dict(zip(label_names, thresholds))
    if test_ds is not None:
        from medvit.eval.operating import operating_at

        logits, y, mask = predict_multilabel(model, test_ds, cfg.eval_batch_size, dev, tcfg.precision)
        test = mean_auroc(y, logits, mask, label_names)
        summary["test"] = test.as_dict()
        summary["test_table"] = test.table()
        op = operating_at(logits.numpy(), y.numpy(), mask.numpy(), thresholds, label_names)
        summary["test_operating"] = op.as_dict()  # agreement vs the all-negative baseline, sens/spec per finding
        summary["test_operating_table"] = f"{op.headline()}\n\n{op.table()}"
    if cfg.report:
        from medvit.visualize.report import write_report

        split = cfg.test_split if test_ds is not None else cfg.val_split
        rep = write_report(out / "report", y.numpy(), torch.sigmoid(logits.float()).numpy(), mask.numpy(),
                           label_names, thresholds, title=f"{cfg.backbone} on {cfg.dataset}/{split} (seed {seed})")
        summary["report"] = str(out / "report" / "report.md")
        summary["ece"] = rep["ece"]
    contract = dataclasses.replace(
        pre_contract, name=cfg.model_name or f"{cfg.dataset}-{cfg.backbone}",
        version=cfg.model_version or _today(), label_names=label_names, thresholds=thresholds,
        multilabel=True, research_only=True,
        modalities=list(cfg.modalities), view_positions=list(cfg.view_positions), body_parts=list(cfg.body_parts),
        source=cfg.source or f"medvit finetune_multilabel on {cfg.dataset} (seed {seed})",
        description=f"{cfg.backbone} fine-tuned for {len(label_names)} findings; thresholds: "
                    f"{cfg.threshold_rule} on the {cfg.val_split} split; research use only",
    )
    if cfg.ood_fpr > 0:
        try:
            ref = fit_ood(model, train_ds, val_ds, test_ds, eval_tf, cfg.ood_fpr, cfg.ood_max_train,
                          cfg.eval_batch_size, dev, out / "model")
        except ValueError as e:  # e.g. too few images: the trained model is saved anyway, without a reference
            logger.warning("no OOD reference for %s: %s", out / "model", e)
            summary["ood_error"] = str(e)
        else:
            contract = dataclasses.replace(contract, ood=ref)
            summary["ood"] = ref
    save_checkpoint(model, out / "model", contract=contract,
                    extra={"task": "finetune_multilabel", "seed": seed, "best": result.best,
                           "val_mean_auroc": val.mean, "test_mean_auroc": summary.get("test", {}).get("mean_auroc")})
    return summary


def run(cfg: FinetuneMultilabelConfig) -> dict[str, Any]:
    """Fine-tune over ``cfg.seeds``; returns the summary written to ``output_dir/summary.json``."""
    from medvit.train.distributed import DistInfo, init_distributed, resolve_device

    out = Path(cfg.output_dir)
    per_seed = [run_seed(cfg, s, out / f"seed_{s}") for s in cfg.seeds]
    info: DistInfo = init_distributed(resolve_device(cfg.train.device))
    summary: dict[str, Any] = {"task": "finetune_multilabel", "dataset": cfg.dataset, "backbone": cfg.backbone,
                               "pretrained": cfg.pretrained, "label_fraction": cfg.label_fraction,
                               "seeds": per_seed}
    if not info.is_main or not all("val" in s for s in per_seed):
        return summary
    tm, tsd = mean_sd([s.get("test", {}).get("mean_auroc") for s in per_seed])
    vm, vsd = mean_sd([s["val"]["mean_auroc"] for s in per_seed])
    summary.update(test_mean_auroc=tm, test_mean_auroc_sd=tsd, val_mean_auroc=vm, val_mean_auroc_sd=vsd)
    ops = [s["test_operating"] for s in per_seed if "test_operating" in s]
    if ops:  # a single AUROC is not the whole story: agreement next to what "no finding" everywhere scores
        summary.update(test_agreement=mean_sd([o["agreement"] for o in ops])[0],
                       test_all_negative_agreement=mean_sd([o["all_negative_agreement"] for o in ops])[0])
    best = max(per_seed, key=lambda s: s["val"]["mean_auroc"] or -1.0)
    src = out / f"seed_{best['seed']}" / "model"
    if (out / "model").exists():
        shutil.rmtree(out / "model")
    shutil.copytree(src, out / "model")
    summary["model_dir"] = str(out / "model")
    summary["model_seed"] = best["seed"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    lines = [f"# finetune_multilabel: {cfg.backbone} on {cfg.dataset}", "",
             f"- pretrained: {cfg.pretrained or 'random init'}; label fraction {cfg.label_fraction}",
             f"- seeds {list(cfg.seeds)}: test mean AUROC {tm:.4f} ± {tsd:.4f}; val {vm:.4f} ± {vsd:.4f}",
             f"- saved model (seed {best['seed']}, selected on validation): {out / 'model'}", ""]
    for s in per_seed:
        if "test_table" in s:
            head = f"## seed {s['seed']} (test, checkpoint of step {s['best']['step']:.0f})"
            lines += [head, "", s["test_table"], ""]
        if "test_operating_table" in s:
            lines += [f"test at the validation thresholds ({cfg.threshold_rule}):", "", s["test_operating_table"], ""]
    (out / "results.md").write_text("\n".join(lines))
    logger.info("test mean AUROC %.4f ± %.4f over %d seeds", tm, tsd, len(per_seed))
    return summary


# registered when medvit.tasks is imported
register_task("finetune_multilabel", FinetuneMultilabelConfig,
              "multi-label fine-tuning (masked BCE, per-class AUROC, selection on validation, seeds)")(run)
