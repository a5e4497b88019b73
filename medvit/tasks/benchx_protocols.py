"""BenchX's four unified protocols (medical-notes §3.4), on medvit's training loop, models, MAE weights and PEFT.

One function per task, each ``run_<task>(method, data, proto, seed, out) -> metrics`` for one grid cell:

- :func:`run_classification`: full fine-tuning (or the method's PEFT), encoder LR × ``encoder_lr_mult`` (0.1,
  BenchX ``lr_multiplier_ve``), warmup + cosine, gradient clipping 1.0, BCE-with-logits (multi-label) or CE with
  2+ logits (binary/multi-class), early stopping on validation AUROC (multi-label) or macro F1; test metrics of the
  selected checkpoint: AUROC (per class + mean), accuracy, F1 (scikit-learn).
- :func:`run_segmentation`: UperNet on the plain ViT (segmentation kind ``upernet_vit``, :mod:`medvit.models.upernet`,
  ``out_indices`` [3, 5, 7, 11] scaled to the depth, neck scales [4, 2, 1, 0.5]), AdamW + linear warmup + poly
  decay, one sigmoid foreground map with BCE (the kind's convention; BenchX: CE on 2 classes, the same binary
  problem), checkpoint chosen by validation Dice; Dice / IoU via MONAI (:mod:`medvit.eval.dense_metrics`), plus
  the empty-mask baseline's Dice on the same test images. A PEFT method with its own feature pyramid (``hst``) feeds
  UPerHead directly (:class:`medvit.models.upernet.UperNetPyramid`) instead of the neck over ViT blocks.
- :func:`run_report_generation`: R2Gen-style decoder (:mod:`medvit.models.r2gen`) on the frozen encoder's patch
  tokens (frontal + lateral when the item has ``image_lateral``), early stopping on validation BLEU-4; test
  BLEU-1..4, ROUGE-L, METEOR, CIDEr (:mod:`medvit.eval.text_metrics`) of beam-3 trigram-blocked decoding.
- :func:`run_retrieval`: for a vision-only backbone, a contrastive pair is trained on the training split (image
  projection on the frozen encoder + bag-of-words text encoder, InfoNCE); image-to-text Hits@K / Precision@K on the
  test split and zero-shot classification (prompt = class name) scored by AUROC. Options: a from-scratch BERT text
  encoder (``text_encoder: bert``) with FIBER fusion in its last ``fiber_fused`` blocks and the image encoder's
  (ITC on the unfused streams, ITM on the fused ones re-ranking each image's top candidates:
  :class:`medvit.models.fiber.FiberRetrieval`), and PTP position prompts on the training captions (``ptp: true``:
  :func:`medvit.data.ptp.position_prompt` from the items' ``boxes`` / ``box_labels``; test captions stay plain).

Deviations (where BenchX's code cannot be followed on medvit's loop): AdamW everywhere (the loop's optimiser; BenchX
uses SGD/Adam per method for classification and Adam + amsgrad + ReduceLROnPlateau for R2Gen); classification
augmentation is medvit's random resized crop + flip; segmentation trains on resized images without crops/flips.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvit.config import option
from medvit.train.config import TrainConfig
from medvit.train.losses import LossFeed, LossSpec, check_direct_loss, direct_loss

logger = logging.getLogger(__name__)

TASKS = ("classification", "segmentation", "report_generation", "retrieval")


# --------------------------------------------------------------------------------------------------- configs
@dataclass
class MethodSpec:
    """One compared method (a leaderboard row): backbone, weights, optional PEFT, per-task overrides as data."""

    name: str = option("random", "row name in the leaderboard")
    backbone: str = option("vit_tiny_patch16_224", "registered backbone")
    backbone_args: dict[str, Any] = option(default_factory=dict, help="constructor overrides (depth, embed_dim, ...)")
    pretrained: str | None = option(None, "checkpoint dir / weights file / weight tag (MAE encoder, converted "
                                          "timm/HF, medvit); None = random init")
    peft: str | None = option(None, "PEFT method (`medvit list peft`) applied to the backbone; None = full tuning")
    peft_config: dict[str, Any] = option(default_factory=dict, help="the PEFT method's config")
    overrides: dict[str, dict[str, Any]] = option(
        default_factory=dict, help="per task: protocol field overrides, e.g. {classification: {lr: 3e-2}} (BenchX's "
                                   "per-method tuned LR as data)")

    def __post_init__(self) -> None:
        bad = [k for k in self.overrides if k not in TASKS]
        if bad:
            raise ValueError(f"method {self.name!r}: overrides for unknown task {bad[0]!r}; tasks: {', '.join(TASKS)}")


@dataclass
class ProtocolConfig:
    """Hyper-parameters of one protocol (BenchX defaults; the CPU preset shrinks epochs and sizes)."""

    lr: float = option(5e-4, "head/decoder learning rate (the encoder gets lr × encoder_lr_mult)")
    encoder_lr_mult: float = option(0.1, "encoder LR multiplier (BenchX lr_multiplier_ve 0.1)")
    weight_decay: float = option(0.05, "AdamW weight decay")
    epochs: float = option(10.0, "passes over the training split (upper bound with early stopping); see steps")
    steps: int = option(0, "schedule length in optimizer steps, whatever the label fraction (BenchX t_total 3000); "
                           "0 = from epochs")
    batch_size: int = option(32, "training batch size")
    warmup_steps: int = option(50, "linear warmup steps")
    schedule: str = option("cosine", "cosine | poly | constant")
    clip_grad: float | None = option(1.0, "gradient clipping norm")
    patience: int = option(10, "early stopping: evaluations without a better validation score")
    eval_every: int = option(0, "evaluate every N steps (0 = each epoch)")
    precision: str = option("fp32", "fp32 | bf16 (AMP)")
    hflip: float = option(0.5, "classification: flip probability")
    rrc_scale: tuple[float, float] = option((0.6, 1.0), "classification: random resized crop area range")
    freeze_encoder: bool = option(False, "train only the head/decoder (report generation: True, as BenchX)")
    loss: LossSpec | None = option(None, "classification / segmentation: training loss by registered name (`medvit "
                                         "list loss`); null = bce (multi-label; segmentation on batch 'mask') or "
                                         "cross_entropy (single-label)")
    # report generation
    d_model: int = option(512, "R2Gen width")
    num_layers: int = option(3, "R2Gen encoder/decoder layers")
    heads: int = option(8, "R2Gen attention heads")
    slots: int = option(3, "R2Gen relational memory slots")
    max_len: int = option(60, "R2Gen maximum report length (tokens)")
    beam: int = option(3, "beam size (trigram blocking on)")
    min_count: int = option(3, "vocabulary: words seen at least this often in training reports")
    text_metrics: list[str] = option(default_factory=lambda: ["bleu", "rouge_l", "meteor", "cider"],
                                     help="report generation test metrics (METEOR starts a JVM: ~10 CPU-s)")
    # retrieval
    embed_dim: int = option(128, "retrieval: joint embedding width")
    temperature: float = option(0.07, "retrieval: InfoNCE temperature")
    ks: list[int] = option(default_factory=lambda: [1, 5, 10], help="retrieval: Hits@K / Precision@K cut-offs")
    text_encoder: str = option("bow", 'retrieval text tower: "bow" (bag of words) | "bert" (from-scratch BERT over '
                                      "the report vocabulary; needed for FIBER)")
    text_layers: int = option(2, "retrieval, bert: encoder layers")
    text_width: int = option(64, "retrieval, bert: hidden width")
    text_heads: int = option(4, "retrieval, bert: attention heads (also FIBER's cross-attention heads)")
    fiber_fused: int = option(0, "retrieval, bert: FIBER-fused top blocks of both towers (0 = dual encoder); ITM "
                                 "re-ranks each image's top max(ks) texts")
    ptp: bool = option(False, "retrieval: PTP position prompts on training captions from the items' boxes")
    ptp_grid: int = option(3, "retrieval: PTP blocks per side (paper: 3)")

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.encoder_lr_mult < 0 or self.epochs <= 0 or self.batch_size < 1 or self.steps < 0:
            raise ValueError("lr and epochs must be > 0, encoder_lr_mult >= 0, batch_size >= 1, steps >= 0")
        if self.schedule not in ("cosine", "poly", "constant"):
            raise ValueError(f"schedule must be cosine, poly or constant, got {self.schedule!r}")
        if self.loss is not None:
            check_direct_loss(self.loss.name)
            try:
                self.loss.check()  # argument values too, so --dry-run refuses what a cell would
            except ValueError as e:  # a plain ValueError: from_dict prefixes protocols.<task>
                raise ValueError(str(e)) from None
        from medvit.eval.text_metrics import METRIC_FAMILIES

        bad = [m for m in self.text_metrics if m not in METRIC_FAMILIES]
        if bad:
            raise ValueError(f"text_metrics: unknown {bad[0]!r}; choose from {', '.join(METRIC_FAMILIES)}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by heads {self.heads}")
        if self.text_encoder not in ("bow", "bert"):
            raise ValueError(f"text_encoder must be 'bow' or 'bert', got {self.text_encoder!r}")
        if self.fiber_fused < 0 or (self.fiber_fused and self.text_encoder != "bert"):
            raise ValueError("fiber_fused must be >= 0 and needs text_encoder: bert")
        if self.text_width % self.text_heads or self.text_layers < 1 or self.ptp_grid < 1:
            raise ValueError("text_width must be divisible by text_heads; text_layers and ptp_grid must be >= 1")


#: what each protocol hands a configured ``loss`` (None: the protocol trains with its own loss and takes none)
LOSS_FEEDS: dict[str, LossFeed | None] = {
    "classification": LossFeed(("image", "label"), where="the classification protocol"),  # kind: from the data
    "segmentation": LossFeed(("image", "mask"), None, 1, LossSpec("bce", {"target": "mask"}),
                             "the segmentation protocol"),
    "report_generation": None,
    "retrieval": None,
}


def check_protocol_loss(task: str, proto: ProtocolConfig) -> None:
    """``proto.loss`` checked against what protocol ``task`` feeds it (:data:`LOSS_FEEDS`; ``ConfigError`` naming
    ``loss``): refused where the protocol takes no loss (report generation, retrieval), resolved to the protocol's
    default when only ``loss.args`` is given (segmentation; classification resolves at run time, by problem)."""
    from medvit.config import ConfigError

    if proto.loss is None:
        return
    feed = LOSS_FEEDS[task]
    if feed is None:
        raise ConfigError(f"loss: the {task} protocol trains with its own objective and takes no loss (loss "
                          "applies to classification and segmentation)")
    if not proto.loss.name:
        if feed.default is None:
            raise ConfigError(f"loss.name: not given, and the {task} protocol's default loss depends on the data "
                              "(bce multi-label, cross_entropy single-label); give loss.name with loss.args")
        proto.loss = proto.loss.or_default(feed.default)
    proto.loss.check(None, feed)


def default_protocols() -> dict[str, ProtocolConfig]:
    """BenchX's values per task (medical-notes §3.4)."""
    return {
        "classification": ProtocolConfig(lr=5e-4, weight_decay=0.05, warmup_steps=50, schedule="cosine", steps=3000),
        "segmentation": ProtocolConfig(lr=1e-3, weight_decay=0.05, warmup_steps=1500, schedule="poly", batch_size=8,
                                       encoder_lr_mult=1.0),
        "report_generation": ProtocolConfig(lr=1e-3, weight_decay=5e-5, warmup_steps=0, schedule="constant",
                                            batch_size=16, freeze_encoder=True, patience=10),
        "retrieval": ProtocolConfig(lr=1e-3, weight_decay=1e-4, warmup_steps=0, schedule="cosine", batch_size=64,
                                    freeze_encoder=True),
    }


@dataclass
class CellData:
    """The prepared splits of one dataset for one cell: lists of items (images already at the model size, not
    normalised) plus label names and the classification problem."""

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    test: list[dict[str, Any]]
    label_names: list[str]
    problem: str  # multilabel | binary | multiclass
    mean: tuple[float, ...] = (0.4978,)
    std: tuple[float, ...] = (0.2449,)
    image_size: int = 224
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------- helpers
class _Items(torch.utils.data.Dataset):
    """Items with ``keys`` kept (collate-friendly), normalised lazily."""

    def __init__(self, items: list[dict[str, Any]], keys: tuple[str, ...], mean: tuple[float, ...],
                 std: tuple[float, ...]):
        self.items, self.keys, self.mean, self.std = items, keys, mean, std

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from medvit.data.augment import normalize

        it = self.items[i]
        out = {k: it[k] for k in self.keys if k in it}
        for k in ("image", "image_lateral"):
            if k in out:
                out[k] = normalize(out[k].float(), self.mean, self.std)
        out["index"] = i
        return out


def _loader(ds: torch.utils.data.Dataset, batch_size: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)


def build_backbone(method: MethodSpec, data: CellData, num_classes: int = 0) -> nn.Module:
    """The method's backbone at the data's size: random or ``pretrained`` weights, fresh head of ``num_classes``."""
    from medvit.models import create_model
    from medvit.models.mae_convert import load_pretrained_encoder

    in_chans = int(data.train[0]["image"].shape[0])
    model = create_model(method.backbone, img_size=data.image_size, in_chans=in_chans, num_classes=num_classes,
                         global_pool="token" if method.backbone_args.get("class_token", True) else "avg",
                         **method.backbone_args)
    if method.pretrained:
        load_pretrained_encoder(model, method.pretrained)
    if num_classes:
        model.reset_classifier(num_classes)
    return model


def _peft(model: nn.Module, method: MethodSpec, proto: ProtocolConfig) -> nn.Module:
    if proto.freeze_encoder:
        for p in model.parameters():
            p.requires_grad_(False)
        return model
    if method.peft:
        from medvit.peft import apply_peft

        return apply_peft(model, method.peft, dict(method.peft_config), base_weights=method.pretrained)
    return model


def _groups(model: nn.Module, encoder: nn.Module, proto: ProtocolConfig) -> list[dict[str, Any]]:
    """AdamW groups (medvit.train.optim.param_groups) with the encoder's LR scaled by ``encoder_lr_mult``."""
    from medvit.train.optim import param_groups

    enc_ids = {id(p) for p in encoder.parameters()}
    out = []
    for g in param_groups(model, proto.weight_decay):
        enc = [p for p in g["params"] if id(p) in enc_ids]
        rest = [p for p in g["params"] if id(p) not in enc_ids]
        for ps, scale, tag in ((enc, proto.encoder_lr_mult, "encoder"), (rest, 1.0, "head")):
            if ps and scale > 0:
                out.append({**g, "params": ps, "param_names": [], "lr_scale": g["lr_scale"] * scale,
                            "group_name": f"{g['group_name']}_{tag}"})
    return out


def _train_cfg(proto: ProtocolConfig, seed: int, out: Path, n_train: int) -> TrainConfig:
    steps_per_epoch = max(1, math.ceil(n_train / proto.batch_size))
    total = proto.steps or max(1, math.ceil(proto.epochs * steps_per_epoch))
    return TrainConfig(steps=total, batch_size=min(proto.batch_size, max(1, n_train)), lr=proto.lr,
                       warmup_steps=min(proto.warmup_steps, total), schedule=proto.schedule,
                       weight_decay=proto.weight_decay, clip_grad=proto.clip_grad, seed=seed,
                       output_dir=str(out), eval_every=proto.eval_every or steps_per_epoch,
                       early_stop_patience=proto.patience, precision=proto.precision, progress=False,
                       log_every=max(1, steps_per_epoch), device="auto")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------------------- classification
def _cls_scores(logits: torch.Tensor, y: torch.Tensor, problem: str, names: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score

    from medvit.eval.metrics import mean_auroc

    if problem == "multilabel":
        res = mean_auroc(y, logits, None, names)
        pred = (logits > 0).float()
        return {"auroc": res.mean, "accuracy": float((pred == y).float().mean()),
                "per_class_auroc": res.as_dict()["per_class"]}
    prob = torch.softmax(logits.float(), -1)
    pred = prob.argmax(-1).numpy()
    yy = y.numpy()
    if logits.shape[1] == 2:
        auroc = mean_auroc(torch.from_numpy(yy).float(), prob[:, 1]).mean
    else:
        onehot = F.one_hot(torch.from_numpy(yy), logits.shape[1]).float()
        auroc = mean_auroc(onehot, prob, None, names).mean
    return {"auroc": auroc, "accuracy": float(accuracy_score(yy, pred)),
            "f1": float(f1_score(yy, pred, average="macro", zero_division=0))}


def run_classification(method: MethodSpec, data: CellData, proto: ProtocolConfig, seed: int,
                       out: Path) -> dict[str, Any]:
    """Fine-tune and test one cell (see the module doc). Returns ``{"val": {...}, "test": {...}, ...}``."""
    from medvit.data.augment import build_train_transform
    from medvit.eval.predict import predict
    from medvit.train import Trainer

    k = len(data.label_names)
    num_out = k if data.problem == "multilabel" else max(2, k)
    if proto.loss is not None and proto.loss.name:  # the label kind is known now (the config check could not)
        proto.loss.check(None, LossFeed(("image", "label"), "multilabel" if data.problem == "multilabel" else
                                        "classes", num_out, where=f"the classification protocol ({data.problem})"))
    torch.manual_seed(seed)
    model = _peft(build_backbone(method, data, num_out), method, proto)
    # the pretrained encoder gets lr × encoder_lr_mult; a PEFT method's new parameters train at the full LR
    encoder = nn.ModuleList() if method.peft else nn.ModuleList(
        m for n, m in model.named_children() if n not in ("head", "fc_norm"))
    keys = ("image", "label")
    train_tf = build_train_transform(data.image_size, (0.0,), (1.0,), proto.rrc_scale, hflip_prob=proto.hflip,
                                     interpolation="bilinear")
    train_ds = _Items(data.train, keys, data.mean, data.std)
    val_ds, test_ds = (_Items(d, keys, data.mean, data.std) for d in (data.val, data.test))
    select = "val_auroc" if data.problem == "multilabel" else "val_f1"
    dev = _device()
    loss = direct_loss(proto.loss, LossSpec("bce" if data.problem == "multilabel" else "cross_entropy")).to(dev)

    def step(m: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return loss(m(batch["image"]), batch)

    def evaluate(m: nn.Module) -> dict[str, float]:
        logits, y, _ = predict(m, val_ds, 256, dev, proto.precision)
        s = _cls_scores(logits, y, data.problem, data.label_names)
        return {"val_auroc": s["auroc"], "val_f1": s.get("f1", s["auroc"])}

    def tf(item: dict[str, Any], g: torch.Generator) -> dict[str, Any]:
        return train_tf(item, g)  # images are normalised by _Items first; the crop/flip act on normalised pixels

    trainer = Trainer(model, _train_cfg(proto, seed, out, len(train_ds)), train_ds, step, evaluate=evaluate,
                      select_metric=select, transform=tf, groups=_groups(model, encoder, proto))
    res = trainer.fit()
    val_logits, val_y, _ = predict(model, val_ds, 256, dev, proto.precision)
    logits, y, _ = predict(model, test_ds, 256, dev, proto.precision)
    return {"val": _cls_scores(val_logits, val_y, data.problem, data.label_names),
            "test": _cls_scores(logits, y, data.problem, data.label_names), "select": select,
            "steps": res.steps, "stopped_early": trainer.stopped_early, "n_train": len(train_ds)}


# --------------------------------------------------------------------------------------------- segmentation
def run_segmentation(method: MethodSpec, data: CellData, proto: ProtocolConfig, seed: int,
                     out: Path) -> dict[str, Any]:
    """UperNet on the method's ViT; selection on validation Dice; test Dice/IoU and the empty-mask baseline."""
    from medvit.eval.dense_metrics import dice_iou
    from medvit.models import create_model
    from medvit.models.mae_convert import load_pretrained_encoder
    from medvit.train import Trainer

    torch.manual_seed(seed)
    in_chans = int(data.train[0]["image"].shape[0])
    model = create_model("upernet_vit", backbone=method.backbone, num_labels=1,
                         backbone_args={**method.backbone_args, "img_size": data.image_size, "in_chans": in_chans})
    if method.pretrained:
        load_pretrained_encoder(model.backbone, method.pretrained)
    backbone = _peft(model.backbone, method, proto)
    if hasattr(backbone, "forward_pyramid"):  # a PEFT side network with its own multi-scale maps (HST)
        from medvit.models.upernet import UperNetPyramid

        model = UperNetPyramid(backbone, num_classes=1)
    else:
        model.backbone = backbone
    keys = ("image", "mask")
    train_ds = _Items(data.train, keys, data.mean, data.std)
    val_ds, test_ds = (_Items(d, keys, data.mean, data.std) for d in (data.val, data.test))
    dev = _device()
    loss = direct_loss(proto.loss, LOSS_FEEDS["segmentation"].default).to(dev)

    def step(m: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return loss(m(batch["image"]), batch)

    @torch.no_grad()
    def predict_masks(m: nn.Module, ds: _Items) -> tuple[torch.Tensor, torch.Tensor]:
        was = m.training
        m.eval()
        preds, targets = [], []
        for b in _loader(ds, 64):
            preds.append((m(b["image"].to(dev))[:, 0] > 0).long().cpu())
            targets.append(b["mask"][:, 0].long())
        m.train(was)
        return torch.cat(preds), torch.cat(targets)

    def evaluate(m: nn.Module) -> dict[str, float]:
        return {f"val_{k}": v for k, v in dice_iou(*predict_masks(m, val_ds)).items()}

    trainer = Trainer(model, _train_cfg(proto, seed, out, len(train_ds)), train_ds, step, evaluate=evaluate,
                      select_metric="val_dice",
                      groups=_groups(model, nn.ModuleList() if method.peft else backbone, proto))
    res = trainer.fit()
    pv, tv = predict_masks(model, val_ds)
    pt, tt = predict_masks(model, test_ds)
    empty = dice_iou(torch.zeros_like(tt), tt)
    return {"val": dice_iou(pv, tv), "test": {**dice_iou(pt, tt), "empty_mask_dice": empty["dice"]},
            "select": "val_dice", "steps": res.steps, "stopped_early": trainer.stopped_early,
            "n_train": len(train_ds)}


# ---------------------------------------------------------------------------------------- report generation
def _patch_features(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, D) normed last-block patch tokens of the (frozen) encoder."""
    return encoder.forward_intermediates(images, indices=1, norm=True, output_fmt="NLC")[-1]


class _ReportModel(nn.Module):
    """Frozen encoder + R2Gen decoder; both views' patch tokens are concatenated."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        feats = [_patch_features(self.encoder, batch["image"])]
        if "image_lateral" in batch:
            feats.append(_patch_features(self.encoder, batch["image_lateral"]))
        return torch.cat(feats, 1)

    def forward(self, batch: dict[str, Any], tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder.loss(self.features(batch), tokens)


def run_report_generation(method: MethodSpec, data: CellData, proto: ProtocolConfig, seed: int,
                          out: Path) -> dict[str, Any]:
    """R2Gen decoder on the frozen encoder; selection on validation BLEU-4; test text metrics."""
    from medvit.eval.text_metrics import normalize_report, report_generation_scores
    from medvit.models.r2gen import R2GenDecoder, ReportTokenizer
    from medvit.train import Trainer

    torch.manual_seed(seed)
    proto = dataclasses.replace(proto, freeze_encoder=True)
    encoder = _peft(build_backbone(method, data, 0), method, proto)
    clean = {id(it): normalize_report(it["report"]) for d in (data.train, data.val, data.test) for it in d}
    tok = ReportTokenizer.build([clean[id(it)] for it in data.train], proto.min_count)
    decoder = R2GenDecoder(int(encoder.embed_dim), len(tok), proto.d_model, proto.d_model, proto.num_layers,
                           proto.heads, proto.slots, proto.max_len)
    model = _ReportModel(encoder, decoder)
    keys = ("image", "image_lateral")
    train_items = [{**it, "tokens": tok.encode(clean[id(it)], proto.max_len)} for it in data.train]
    train_ds = _Items(train_items, keys, data.mean, data.std)
    dev = _device()

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        from medvit.models.r2gen import PAD

        out_b = torch.utils.data.default_collate(batch)
        seqs = [train_items[int(b["index"])]["tokens"] for b in batch]
        out_b["tokens"] = torch.full((len(seqs), max(len(q) for q in seqs)), PAD, dtype=torch.long)
        for j, q in enumerate(seqs):
            out_b["tokens"][j, : len(q)] = torch.tensor(q)
        return out_b

    def step(m: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return m(batch, batch["tokens"])

    @torch.no_grad()
    def generate(m: nn.Module, items: list[dict[str, Any]], limit: int | None = None) -> tuple[list[str], list[str]]:
        was = m.training
        m.eval()
        hyps, refs = [], []
        chosen = items[:limit] if limit else items
        for b in _loader(_Items(chosen, keys, data.mean, data.std), 32):
            b = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in b.items()}
            for ids in m.decoder.generate(m.features(b), beam=proto.beam, max_len=proto.max_len):
                hyps.append(tok.decode(ids))
        refs = [clean[id(it)] for it in chosen]
        m.train(was)
        return refs, hyps

    def evaluate(m: nn.Module) -> dict[str, float]:
        refs, hyps = generate(m, data.val)
        return {"val_bleu4": report_generation_scores(refs, hyps, metrics=("bleu",), normalize=False)["BLEU_4"]}

    trainer = Trainer(model, _train_cfg(proto, seed, out, len(train_ds)), train_ds, step, evaluate=evaluate,
                      select_metric="val_bleu4", collate_fn=collate, groups=_groups(model, encoder, proto))
    res = trainer.fit()
    refs, hyps = generate(model, data.test)
    test = report_generation_scores(refs, hyps, metrics=tuple(proto.text_metrics), normalize=False)
    vrefs, vhyps = generate(model, data.val)
    return {"val": report_generation_scores(vrefs, vhyps, metrics=("bleu",), normalize=False),
            "test": test, "select": "val_bleu4", "steps": res.steps, "stopped_early": trainer.stopped_early,
            "n_train": len(train_ds), "vocab": len(tok), "examples": list(zip(refs[:3], hyps[:3]))}


# ------------------------------------------------------------------------------------------------ retrieval
class _TextEncoder(nn.Module):
    """Bag of words (mean of word embeddings) -> linear; tokens from the report tokenizer."""

    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab, dim, mode="mean", padding_idx=0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.bag(tokens)), dim=-1)


class _Pair(nn.Module):
    def __init__(self, encoder: nn.Module, text: _TextEncoder, dim: int):
        super().__init__()
        self.encoder, self.text = encoder, text
        self.img_proj = nn.Linear(int(encoder.embed_dim), dim)

    def image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.img_proj(_patch_features(self.encoder, images).mean(1)), dim=-1)


def _bert(vocab: int, proto: ProtocolConfig) -> nn.Module:
    """A from-scratch BERT encoder over the report vocabulary (id 0 = padding)."""
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=vocab, hidden_size=proto.text_width, num_hidden_layers=proto.text_layers,
                                num_attention_heads=proto.text_heads, intermediate_size=4 * proto.text_width,
                                max_position_embeddings=256, pad_token_id=0), add_pooling_layer=False)


def _ptp_vocabulary(data: CellData, proto: ProtocolConfig) -> list[str]:
    """The words of every PTP prompt the training items can produce (block numbers and object names)."""
    from medvit.eval.text_metrics import normalize_report

    names = sorted({str(n) for it in data.train for n in it.get("box_labels", [])})
    if not names:
        logger.warning("ptp: no training item has boxes/box_labels; every caption only gets a full stop")
    return [normalize_report(f"x. The block {b} has a {n} .") for b in range(proto.ptp_grid ** 2) for n in names]


def run_retrieval(method: MethodSpec, data: CellData, proto: ProtocolConfig, seed: int, out: Path) -> dict[str, Any]:
    """Contrastive pair on the frozen encoder (training split), then test retrieval and zero-shot AUROC."""
    from medvit.eval.dense_metrics import retrieval_scores
    from medvit.eval.metrics import mean_auroc
    from medvit.eval.text_metrics import normalize_report
    from medvit.models.r2gen import ReportTokenizer
    from medvit.train import Trainer

    torch.manual_seed(seed)
    proto = dataclasses.replace(proto, freeze_encoder=True)
    encoder = _peft(build_backbone(method, data, 0), method, proto)
    clean = lambda it: normalize_report(it["report"])  # noqa: E731
    extra = _ptp_vocabulary(data, proto) if proto.ptp else []
    tok = ReportTokenizer.build([clean(it) for it in data.train] + extra, 1)
    if proto.text_encoder == "bert":
        from medvit.models.fiber import FiberRetrieval

        model: nn.Module = FiberRetrieval(encoder, _bert(len(tok), proto), proto.embed_dim, proto.fiber_fused,
                                          proto.text_heads)
    else:
        model = _Pair(encoder, _TextEncoder(len(tok), proto.embed_dim), proto.embed_dim)
    texts = {id(it): tok.batch([clean(it)], 200)[0] for d in (data.train, data.val, data.test) for it in d}
    ptp_gen = torch.Generator().manual_seed(seed)  # PTP samples one object per caption each time it is used

    def train_text(it: dict[str, Any]) -> torch.Tensor:
        if not proto.ptp:
            return texts[id(it)]
        from medvit.data.ptp import position_prompt

        hw = tuple(it["image"].shape[-2:])
        return tok.batch([normalize_report(position_prompt(clean(it), it.get("boxes", []), it.get("box_labels", []),
                                                           hw, proto.ptp_grid, ptp_gen))], 200)[0]
    train_ds = _Items(data.train, ("image",), data.mean, data.std)
    dev = _device()

    def tokens_of(items: list[dict[str, Any]], idx: list[int], train: bool = False) -> torch.Tensor:
        seqs = [train_text(items[i]) if train else texts[id(items[i])] for i in idx]
        outb = torch.zeros(len(seqs), max(len(s) for s in seqs), dtype=torch.long)
        for j, s in enumerate(seqs):
            outb[j, : len(s)] = s
        return outb

    def step(m: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        img = m.image(batch["image"])
        ids = tokens_of(data.train, batch["index"].tolist(), train=True).to(img.device)
        logits = img @ m.text(ids).T / proto.temperature
        target = torch.arange(len(img), device=img.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        if proto.fiber_fused and len(img) > 1:  # FIBER ITM: matched pairs vs each image's hardest in-batch text
            with torch.no_grad():
                hard = logits.detach().masked_fill(torch.eye(len(img), dtype=torch.bool, device=img.device),
                                                   float("-inf")).argmax(1)
            itm = m.itm_logits(torch.cat([batch["image"], batch["image"]]), torch.cat([ids, ids[hard]]))
            loss = loss + F.binary_cross_entropy_with_logits(
                itm, torch.cat([torch.ones(len(img)), torch.zeros(len(img))]).to(itm))
        return loss

    @torch.no_grad()
    def embed(m: nn.Module, items: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        was = m.training
        m.eval()
        imgs = torch.cat([m.image(b["image"].to(dev)).cpu()
                          for b in _loader(_Items(items, ("image",), data.mean, data.std), 128)])
        txt = m.text(tokens_of(items, list(range(len(items)))).to(dev)).cpu()
        m.train(was)
        return imgs, txt

    def scores(m: nn.Module, items: list[dict[str, Any]]) -> dict[str, Any]:
        imgs, txt = embed(m, items)
        labels = [it["label"].numpy() if torch.is_tensor(it["label"]) else it["label"] for it in items]
        sim = imgs @ txt.T
        if proto.fiber_fused:  # ITM on the fused streams re-ranks each image's top max(ks) texts
            was = m.training
            m.eval()
            pix = torch.stack([b["image"] for b in _Items(items, ("image",), data.mean, data.std)]).to(dev)
            sim = m.rerank(sim, pix, tokens_of(items, list(range(len(items)))).to(dev), max(proto.ks))
            m.train(was)
        s = retrieval_scores(sim, labels, labels, proto.ks)
        prompts = m.text(tok.batch([normalize_report(n).rstrip(" .") for n in data.label_names], 20)
                         .to(dev)).cpu()
        zs = imgs @ prompts.T
        y = torch.stack([torch.as_tensor(lab) for lab in labels]).float()
        if y.ndim == 1:
            y = F.one_hot(y.long(), len(data.label_names)).float()
        s["zeroshot_auroc"] = mean_auroc(y, zs).mean
        return s

    def evaluate(m: nn.Module) -> dict[str, float]:
        return {"val_hits": scores(m, data.val)[f"hits@{min(proto.ks)}"]}

    trainer = Trainer(model, _train_cfg(proto, seed, out, len(train_ds)), train_ds, step, evaluate=evaluate,
                      select_metric="val_hits", groups=_groups(model, encoder, proto))
    res = trainer.fit()
    return {"val": scores(model, data.val), "test": scores(model, data.test), "select": "val_hits",
            "steps": res.steps, "stopped_early": trainer.stopped_early, "n_train": len(train_ds)}


PROTOCOLS = {"classification": run_classification, "segmentation": run_segmentation,
             "report_generation": run_report_generation, "retrieval": run_retrieval}
#: the headline test metric of each task (leaderboard column and plots)
HEADLINE = {"classification": "auroc", "segmentation": "dice", "report_generation": "BLEU_4",
            "retrieval": "hits@1"}
