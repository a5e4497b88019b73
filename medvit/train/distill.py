"""Distillation losses (registry kind ``loss``): TinyViT sparse-logit soft cross-entropy and DeiT-LT.

- ``tinyvit_kd``: Wu et al., "TinyViT: Fast Pretraining Distillation for Small Vision Transformers", ECCV 2022,
  §3.2: the teacher's top-K probabilities, stored once per (epoch, image) by :mod:`medvit.train.logit_store`,
  rebuilt into a dense distribution and used as the soft target; no teacher forward during the student run.
- ``deit_lt``: Rangwani et al., "DeiT-LT: Distillation Strikes Back for Vision Transformer Training on Long-Tailed
  Datasets", CVPR 2024, §3-4: ``L = (1-α)·CE(cls, y) + α·CE_w(dist, argmax teacher(x̃))`` on out-of-distribution
  (Mixup/CutMix) images x̃ labelled by a CNN teacher, with class-balanced weights from the effective number of
  samples (Cui et al., CVPR 2019, eq. 4) switched on late in training (deferred re-weighting, DRW).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvit.train.logit_store import LogitStore, check_input, dense_from_topk, save_teacher_logits
from medvit.train.losses import Loss, TrainContext, logits_of, register_loss
from medvit.train.mixing import batch_mix_seed, mix_images

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- TinyViT
def soft_target_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample soft-target cross-entropy ``-Σ_c p_c log softmax(z)_c``: (B, C), (B, C) -> (B,)."""
    return -(target * F.log_softmax(logits.float(), -1)).sum(-1)


def _teacher_sha256(teacher: str | nn.Module) -> str:
    """SHA-256 of a teacher checkpoint's weights file ("" for an in-memory module); FileNotFoundError naming
    ``loss.args.teacher`` when the path does not exist."""
    if isinstance(teacher, nn.Module):
        return ""
    from medvit.models.checkpoint import WEIGHTS_NAME, sha256_file

    p = Path(teacher)
    if not p.exists():
        raise FileNotFoundError(f"loss.args.teacher: {p} does not exist (a medvit checkpoint directory)")
    w = p / WEIGHTS_NAME if p.is_dir() else p
    if not w.is_file():
        raise FileNotFoundError(f"loss.args.teacher: {p} holds no {WEIGHTS_NAME} (a medvit checkpoint directory)")
    return sha256_file(w)


def _load_teacher(teacher: str | nn.Module) -> nn.Module:
    if isinstance(teacher, nn.Module):
        return teacher
    from medvit.models import load_model

    p = Path(teacher)
    if not p.exists():
        raise FileNotFoundError(f"teacher checkpoint {p} does not exist (a medvit checkpoint directory)")
    return load_model(p)


def _check_k(k: int, label_names: list[str] | None) -> None:
    """``ValueError`` naming ``loss.args.k`` when the stored top-k exceeds the run's label count."""
    if label_names and k > len(label_names):
        raise ValueError(f"loss.args.k: top-{k} of a run with {len(label_names)} labels; give k <= "
                         f"{len(label_names)}")


def _example_tinyvit(g: torch.Generator) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    import tempfile

    from medvit.train.logit_store import StoreMeta
    from medvit.train.sampler import sample_seed

    root = tempfile.mkdtemp(prefix="medvit-logits-")
    store = LogitStore.create(root, StoreMeta(k=3, num_classes=6, n=4, epochs=1, seed=0))
    seeds = [sample_seed(0, 0, i) for i in range(4)]
    idx, val = torch.stack([torch.randperm(6, generator=g)[:3] for _ in range(4)]), torch.full((4, 3), 0.25)
    store.write(torch.arange(4).numpy(), torch.tensor(seeds).numpy(), idx, val)
    store.flush()
    return torch.randn(4, 6, generator=g), {"aug_seed": torch.tensor(seeds)}, {"store": root}


@register_loss("tinyvit_kd", example=_example_tinyvit,
               description="TinyViT sparse-logit soft cross-entropy from a stored top-K teacher (replayed seeds)")
class TinyViTDistill(Loss):
    """TinyViT fast-distillation loss from a sparse teacher-logit store.

    Args:
        store: store folder (:mod:`medvit.train.logit_store`); ``{seed}`` in it is replaced by the run's seed.
        teacher: medvit checkpoint directory; when ``store`` holds no store yet, :meth:`setup` runs this teacher
            once over the training set with the run's transform and seed and writes it ("" = the store must exist).
        k: top-K kept per record (paper: 10; 4 + 4K bytes per record).
        probs: "softmax" (single-label, the paper: dense target = stored values, the rest ``(1-Σv)/(C-K)``) or
            "sigmoid" (multi-label: per-label probabilities, soft-target BCE; unstored labels 0).
        epochs: epochs the teacher pass covers (0 = enough for the run's schedule).
        gt_weight: weight of the ground-truth loss added to the distillation (0 = TinyViT: labels unused).
        batch_size: teacher-pass batch size (without mixing; with mixing the pass forms the loop's batches).
        mixup, cutmix: Beta(α, α) parameters of batch-level Mixup / CutMix (TinyViT paper 0.8 / 1.0; 0 = off, the
            default). The mixing of a batch is drawn from :func:`batch_mix_seed` of its samples' seeds, so the
            teacher pass (which forms the same batches as the loop: ``train.batch_size``, one process) stores the
            teacher's top-K on the mixed images and the student run rebuilds exactly those images (tested bit-exact).
            With ``gt_weight`` > 0 the ground-truth term uses the mixed labels.
    Model output (B, C) logits; batch ``aug_seed`` (B,) (filled by the loop), ``label`` when ``gt_weight`` > 0.
    Records of images that failed in the teacher pass (index -1) are left out of the mean.
    """

    inputs = ("aug_seed",)
    seed_key = "aug_seed"

    def __init__(self, store: str, teacher: str = "", k: int = 10, probs: str = "softmax", epochs: int = 0,
                 gt_weight: float = 0.0, batch_size: int = 64, mixup: float = 0.0, cutmix: float = 0.0):
        super().__init__()
        if mixup < 0 or cutmix < 0:
            raise ValueError(f"loss.args.mixup / cutmix must be >= 0, got {mixup}, {cutmix}")
        self.mixup, self.cutmix = float(mixup), float(cutmix)
        if probs not in ("softmax", "sigmoid"):
            raise ValueError(f"probs must be 'softmax' or 'sigmoid', got {probs!r}")
        for key, value, ok, rule in (("k", k, k >= 1, ">= 1"), ("batch_size", batch_size, batch_size >= 1, ">= 1"),
                                     ("epochs", epochs, epochs >= 0, ">= 0"),
                                     ("gt_weight", gt_weight, 0.0 <= gt_weight <= 1.0, "in [0, 1]")):
            if not ok:
                raise ValueError(f"loss.args.{key} must be {rule}, got {value}")
        self.store_template = str(store)
        self.store_dir, self.teacher, self.k, self.probs = str(store), teacher, int(k), probs
        self.epochs, self.gt_weight, self.batch_size = int(epochs), float(gt_weight), int(batch_size)
        self._store: LogitStore | None = None

    @classmethod
    def check_args(cls, args: dict[str, Any], label_names: list[str] | None = None) -> None:
        """Constructor checks plus top-``k`` <= the run's labels (when the dataset registry names them)."""
        super().check_args(args, label_names)
        _check_k(int(args.get("k", 10)), label_names)

    @property
    def store(self) -> LogitStore:
        if self._store is None:
            self._store = LogitStore.open(self.store_dir)
            if self._store.meta.probs != self.probs:
                raise ValueError(f"{self.store_dir} holds {self._store.meta.probs} probabilities, the loss was "
                                 f"configured with probs={self.probs!r}")
        return self._store

    def setup(self, ctx: TrainContext) -> None:
        """Run the teacher pass when the store does not exist yet (and check an existing one fits the run)."""
        from medvit.train.logit_store import META_NAME

        seed = int(getattr(ctx.train, "seed", 0))
        n = len(ctx.train_set)
        if getattr(ctx.train, "sampler", None) is not None:
            raise ValueError("loss tinyvit_kd with train.sampler: the store holds one record per (epoch, image) of "
                             "the shuffled epochs; a re-sampled run draws images repeatedly with other seeds (give "
                             "train.sampler: null)")
        if "{seed}" in self.store_template:  # one store per run seed; replaced literally (no other format fields)
            self.store_dir, self._store = self.store_template.replace("{seed}", str(seed)), None
        _check_k(self.k, ctx.label_names)
        teacher_sha: str | None = None
        if not (Path(self.store_dir) / META_NAME).is_file():
            if not self.teacher:
                raise FileNotFoundError(f"loss.args.store: {self.store_dir} holds no teacher-logit store; give "
                                        "loss.args.teacher (a medvit checkpoint) to write it")
            epochs = self.epochs or _epochs_needed(ctx.train, n)
            logger.info("tinyvit_kd: teacher pass over %d images x %d epochs -> %s", n, epochs, self.store_dir)
            teacher = _load_teacher(self.teacher)
            teacher_sha = _teacher_sha256(self.teacher)  # hashed once: verified below against what was written
            # the store just written, opened (and its records checked) once: the `store` property reuses it
            self._store = save_teacher_logits(teacher, ctx.train_set, ctx.transform, self.store_dir, k=self.k,
                                              epochs=epochs, seed=seed, probs=self.probs, device=ctx.device,
                                              batch_size=self.batch_size, teacher_name=str(self.teacher),
                                              teacher_sha256=teacher_sha, mixup=self.mixup, cutmix=self.cutmix,
                                              mix_batch_size=self._loop_batch_size(ctx))
        m = self.store.meta
        if m.n != n or m.seed != seed:
            raise ValueError(f"{self.store_dir}: written for {m.n} images with train.seed={m.seed}; this run has "
                             f"{n} images, seed {seed} (one store per training set and seed)")
        if (m.mixup, m.cutmix) != (self.mixup, self.cutmix) or (self.mixing and m.mix_batch_size
                                                                  != self._loop_batch_size(ctx)):
            raise ValueError(f"{self.store_dir}: written with mixup={m.mixup}, cutmix={m.cutmix}, batches of "
                             f"{m.mix_batch_size}; this run has loss.args.mixup={self.mixup}, cutmix={self.cutmix}, "
                             f"train.batch_size={self._loop_batch_size(ctx)} (the stored logits are of other images: "
                             "give a new loss.args.store)")
        if m.k != self.k:
            raise ValueError(f"loss.args.k: {self.k}, but {self.store_dir} holds top-{m.k} records (give k: {m.k} or "
                             "a new loss.args.store)")
        if self.teacher and not isinstance(self.teacher, nn.Module):
            sha = teacher_sha if teacher_sha is not None else _teacher_sha256(self.teacher)  # names a missing teacher
            if not m.teacher_sha256:
                logger.warning("%s records no teacher weights hash (older store): loss.args.teacher %s not verified",
                               self.store_dir, self.teacher)
            elif sha != m.teacher_sha256:
                raise ValueError(f"loss.args.teacher: {self.teacher} (weights SHA-256 {sha[:12]}...) is not the "
                                 f"teacher {self.store_dir} was written with ({m.teacher or '?'}, "
                                 f"{m.teacher_sha256[:12]}...): give that teacher or a new loss.args.store")
        check_input(self.store, ctx.train_set, ctx.transform)

    @property
    def mixing(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    @staticmethod
    def _loop_batch_size(ctx: TrainContext) -> int:
        return int(getattr(ctx.train, "batch_size", 0) or 0)

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Mixup/CutMix of the batch from :func:`batch_mix_seed` of ``batch["aug_seed"]`` (unchanged when off);
        adds ``soft_label`` (mixed labels) when the batch has ``label``."""
        if not self.mixing:
            return batch
        import numpy as np

        rng = np.random.default_rng(batch_mix_seed(batch["aug_seed"]))
        x, lam = mix_images(batch["image"], self.mixup, self.cutmix, rng)
        out = {**batch, "image": x, "mix_lambda": lam}
        if "label" in batch:
            y = batch["label"]
            out["soft_label"] = mix_targets(y, lam, self.store.meta.num_classes, multilabel=y.dim() == 2)
            if "label_mask" in batch:
                out["label_mask"] = batch["label_mask"] & batch["label_mask"].flip(0)
        return out

    def forward(self, output: Any, batch: dict[str, Any]) -> torch.Tensor | dict[str, torch.Tensor]:
        logits = logits_of(output).float()
        _, idx, val = self.store.lookup(batch["aug_seed"].cpu())
        c = logits.shape[-1]
        if c != self.store.meta.num_classes:
            raise ValueError(f"{self.store_dir}: teacher has {self.store.meta.num_classes} outputs, the student "
                             f"{c}")
        target = dense_from_topk(idx, val, c, self.probs).to(logits.device)
        valid = (idx[:, 0] >= 0).to(logits.device).float()
        if self.probs == "softmax":
            per = soft_target_ce(logits, target)
        else:
            per = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(-1)
        kd = (per * valid).sum() / valid.sum().clamp(min=1.0)
        if self.gt_weight == 0:
            return kd
        if "label" not in batch:
            raise KeyError("tinyvit_kd with gt_weight > 0 needs batch key 'label'")
        y = batch["label"]
        soft = batch.get("soft_label")
        if self.probs == "softmax":
            gt = F.cross_entropy(logits, y.long()) if soft is None else soft_target_ce(logits, soft).mean()
        else:
            m = batch.get("label_mask", torch.ones_like(y, dtype=torch.bool)).float()
            t = y.float() if soft is None else soft
            gt = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * m).sum() / m.sum().clamp(
                min=1.0)
        return {"loss": (1 - self.gt_weight) * kd + self.gt_weight * gt, "loss_kd": kd.detach(),
                "loss_gt": gt.detach()}


def _epochs_needed(train: Any, n: int) -> int:
    """Epochs a run's schedule touches (per :class:`medvit.train.Trainer`'s step count), at least 1."""
    if train is None:
        return 1
    per_epoch = max(1, n // train.batch_size)
    steps = train.steps or math.ceil(train.epochs * per_epoch / train.accum_steps)
    return max(1, math.ceil(steps * train.accum_steps / per_epoch))


# ---------------------------------------------------------------------------------------------------- DeiT-LT
def effective_number_weights(counts: Any, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights ``w_c ∝ (1-β)/(1-β^{n_c})`` normalised to ``Σ w = C`` (Cui et al. 2019, eq. 4; the
    DRW weights of DeiT-LT). counts: (C,) samples (positives) per class; a class with 0 samples counts as 1."""
    n = torch.as_tensor(counts, dtype=torch.float64).clamp(min=1.0)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n)) if beta > 0 else torch.ones_like(n)
    return (w / w.sum() * len(n)).float()


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup: float, cutmix: float,
              multilabel: bool, rng: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mix_images` plus the mixed targets: y (B,) class indices or (B, K) multi-hot -> mixed x, soft
    targets (B, K) ``λ·y + (1-λ)·y.flip(0)``."""
    x, lam = mix_images(x, mixup, cutmix, rng)
    return x, mix_targets(y, lam, num_classes, multilabel)


def mix_targets(y: torch.Tensor, lam: float, num_classes: int, multilabel: bool) -> torch.Tensor:
    """Soft targets (B, K) of a batch mixed with its flip at weight ``lam``: ``λ·y + (1-λ)·y.flip(0)``; y (B,) class
    indices (one-hot over ``num_classes``) or (B, K) multi-hot."""
    yt = y.float() if multilabel else F.one_hot(y.long(), num_classes).float()
    return yt if lam == 1.0 else lam * yt + (1 - lam) * yt.flip(0)


def _example_deit_lt(g: torch.Generator) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(1 * 8 * 8, 3))
    x = torch.randn(4, 1, 8, 8, generator=g)
    y = (torch.rand(4, 3, generator=g) > 0.5).float()
    out = (torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g))
    return out, {"image": x, "label": y, "label_mask": torch.ones(4, 3, dtype=torch.bool)}, {
        "teacher": teacher, "class_counts": [100, 10, 1], "mixup": 0.0, "cutmix": 0.0}


@register_loss("deit_lt", example=_example_deit_lt,
               description="DeiT-LT: CE on the CLS head + class-weighted hard distillation of a CNN teacher on "
                           "Mixup/CutMix images through the DIST head (effective-number DRW weights)")
class DeiTLTLoss(Loss):
    """DeiT-LT distillation loss for a model returning ``(cls_logits, dist_logits)`` (a distilled ViT such as
    ``deit_tiny_distilled_patch16_224`` in training mode).

    ``L = (1-α)·L_cls + α·L_dist`` where, single-label (the paper): ``L_cls = CE(cls, ỹ)`` with the mixed targets
    and ``L_dist = CE(dist, argmax t(x̃); weight=w)`` (weighted mean, ``F.cross_entropy``); multi-label (medvit's
    extension for findings): ``L_cls`` = masked BCE on ỹ and ``L_dist`` = BCE against the teacher's hard labels
    ``σ(t(x̃)) > 0.5`` with ``w_c`` weighting label c's positive term. ``w`` = :func:`effective_number_weights`
    of the training set's class (positive) counts, all ones before ``drw_start`` × total steps.

    Args:
        teacher: medvit checkpoint directory of the (CNN) teacher, e.g. a ``monai_cnn`` fine-tuned on the same data
            (or an ``nn.Module``); frozen, evaluated on the same augmented batch as the student.
        alpha: distillation weight α (paper 0.5).
        beta: effective-number β (paper 0.9999).
        drw_start: fraction of the run after which class weights switch on (paper 1100/1200 epochs ≈ 0.92; 0 = from
            the start).
        mixup, cutmix: Beta(α, α) parameters of the out-of-distribution batch augmentation (paper 0.8, 1.0; 0 = off).
        class_counts: per-class training counts; None = counted from the training set in :meth:`setup`.
    """

    inputs = ("image", "label")

    def __init__(self, teacher: Any, alpha: float = 0.5, beta: float = 0.9999, drw_start: float = 0.0,
                 mixup: float = 0.8, cutmix: float = 1.0, class_counts: list[int] | None = None):
        super().__init__()
        self._check_values(alpha, drw_start, mixup, cutmix)
        self.teacher_path = "" if isinstance(teacher, nn.Module) else str(teacher)
        self.teacher = _load_teacher(teacher).eval().requires_grad_(False)
        self.alpha, self.beta, self.drw_start = float(alpha), float(beta), float(drw_start)
        self.mixup, self.cutmix = float(mixup), float(cutmix)
        self.register_buffer("weights", None if class_counts is None else effective_number_weights(class_counts, beta))
        self.weights_on = drw_start == 0.0

    @staticmethod
    def _check_values(alpha: float, drw_start: float, mixup: float, cutmix: float) -> None:
        if not 0.0 <= alpha <= 1.0 or not 0.0 <= drw_start <= 1.0 or mixup < 0 or cutmix < 0:
            raise ValueError(f"alpha and drw_start must be in [0, 1], mixup/cutmix >= 0; got alpha={alpha}, "
                             f"drw_start={drw_start}, mixup={mixup}, cutmix={cutmix}")

    @classmethod
    def check_args(cls, args: dict[str, Any], label_names: list[str] | None = None) -> None:
        """The value checks alone: the teacher checkpoint is read at run start (a chained pipeline may write it
        after this run's config is resolved)."""
        cls._check_values(args.get("alpha", 0.5), args.get("drw_start", 0.0), args.get("mixup", 0.8),
                          args.get("cutmix", 1.0))
        counts = args.get("class_counts")
        if counts is not None and label_names and len(counts) != len(label_names):
            raise ValueError(f"loss.args.class_counts: {len(counts)} counts for a run with {len(label_names)} labels")

    def train(self, mode: bool = True) -> DeiTLTLoss:  # the teacher stays in eval mode
        super().train(mode)
        self.teacher.eval()
        return self

    def setup(self, ctx: TrainContext) -> None:
        switch = getattr(ctx.model, "set_distilled_training", None)
        if callable(switch):
            switch(True)
        if self.weights is None:
            counts = class_counts(ctx.source_set if ctx.source_set is not None else ctx.train_set, ctx.multilabel)
            self.weights = effective_number_weights(counts, self.beta).to(ctx.device)
            logger.info("deit_lt: class counts %s -> weights %s", counts, [round(float(w), 3) for w in self.weights])
        self.check_teacher(ctx)

    def check_teacher(self, ctx: TrainContext) -> None:
        """Refuse a teacher that does not fit the run, naming ``loss.args.teacher``: its contract (when it has one)
        must be a classifier (no segmentation), with the run's label names, input channels, input size and
        normalisation (mean/std) — a teacher fed other images than it was trained on labels them silently wrong;
        and its output on one augmented training image must be ``(1, C)`` logits for the run's C labels."""
        where = f"loss.args.teacher ({self.teacher_path or type(self.teacher).__name__})"
        tc, run = getattr(self.teacher, "contract", None), ctx.contract
        if tc is not None:
            if getattr(tc, "segmentation", None) is not None:
                raise ValueError(f"{where}: a segmentation checkpoint; deit_lt needs a classifier teacher trained on "
                                 "the run's labels")
            if ctx.label_names and tc.label_names and list(tc.label_names) != list(ctx.label_names):
                raise ValueError(f"{where}: teacher labels {list(tc.label_names)} differ from the run's "
                                 f"{list(ctx.label_names)}")
            if run is not None:
                diffs = []
                for f in ("in_chans", "input_size"):
                    if tuple(_as_tuple(getattr(tc, f))) != tuple(_as_tuple(getattr(run, f))):
                        diffs.append(f"{f} {getattr(tc, f)} vs the run's {getattr(run, f)}")
                for f in ("mean", "std"):
                    a, b = _as_tuple(getattr(tc, f)), _as_tuple(getattr(run, f))
                    if len(a) != len(b) or any(abs(float(x) - float(y)) > 1e-6 for x, y in zip(a, b)):
                        diffs.append(f"{f} {list(a)} vs the run's {list(b)}")
                if diffs:
                    raise ValueError(f"{where}: the teacher was trained on other inputs than this run feeds it "
                                     f"({'; '.join(diffs)}): train the teacher with the run's image_size / in_chans "
                                     "/ mean / std")
        if len(ctx.train_set) == 0:
            return
        item = ctx.train_set[0]
        if ctx.transform is not None:
            item = ctx.transform(item, torch.Generator().manual_seed(0))
        x = torch.as_tensor(item["image"]).float()[None]
        dev = next(iter(self.teacher.parameters()), torch.empty(0)).device
        with torch.no_grad():
            try:
                out = logits_of(self.teacher(x.to(dev)))
            except Exception as e:  # noqa: BLE001 - reported with the key that names the teacher
                raise ValueError(f"{where}: the teacher fails on a training image of shape {list(x.shape)}: {e}") \
                    from e
        c = self._num_classes()
        if out.dim() != 2 or out.shape[-1] != c:
            raise ValueError(f"{where}: outputs shape {list(out.shape)} for one training image; deit_lt needs a "
                             f"classifier giving (B, {c}) logits for the run's {c} labels (a segmentation or other-"
                             "task checkpoint?)")

    def on_train_step(self, step: int, total_steps: int) -> None:
        self.weights_on = step >= self.drw_start * total_steps

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        y = batch["label"]
        multilabel = y.dim() == 2
        k = y.shape[-1] if multilabel else self._num_classes()
        x, soft = mix_batch(batch["image"], y, k, self.mixup, self.cutmix, multilabel)
        return {**batch, "image": x, "soft_label": soft}

    def _num_classes(self) -> int:
        if self.weights is None:
            raise ValueError("deit_lt: class counts unknown (give loss.args.class_counts or run setup)")
        return int(self.weights.numel())

    def forward(self, output: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if not (isinstance(output, (tuple, list)) and len(output) == 2):
            raise TypeError("deit_lt needs a model returning (cls_logits, dist_logits) in training, e.g. backbone "
                            "deit_tiny_distilled_patch16_224 with global_pool='token' (setup() switches its "
                            "distilled_training on; or backbone_args.distilled_training: true)")
        cls, dist = output[0].float(), output[1].float()
        y = batch["label"]
        multilabel = y.dim() == 2
        soft = batch.get("soft_label")
        if soft is None:
            soft = y.float() if multilabel else F.one_hot(y.long(), cls.shape[-1]).float()
        with torch.no_grad():
            t = logits_of(self.teacher(batch["image"])).float()
        w = self.weights if (self.weights_on and self.weights is not None) else None
        if w is not None and w.numel() != cls.shape[-1]:
            raise ValueError(f"deit_lt: {w.numel()} class weights for {cls.shape[-1]} outputs")
        if multilabel:
            m = batch.get("label_mask", torch.ones_like(y, dtype=torch.bool)).float()
            l_cls = (F.binary_cross_entropy_with_logits(cls, soft, reduction="none") * m).sum() / m.sum().clamp(
                min=1.0)
            hard = (torch.sigmoid(t) > 0.5).float()
            l_dist = F.binary_cross_entropy_with_logits(dist, hard, pos_weight=w)
        else:
            l_cls = soft_target_ce(cls, soft).mean()
            l_dist = F.cross_entropy(dist, t.argmax(-1), weight=w)
        loss = (1 - self.alpha) * l_cls + self.alpha * l_dist
        return {"loss": loss, "loss_cls": l_cls.detach(), "loss_dist": l_dist.detach()}


def _as_tuple(v: Any) -> tuple[Any, ...]:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def class_counts(ds: Any, multilabel: bool) -> list[int]:
    """Samples per class (single-label) or positives per label (multi-label) of a dataset: its ``label_counts()``
    when it has one (e.g. the long-tailed phantom split), else counted over its items' ``label``."""
    if callable(getattr(ds, "label_counts", None)):
        return [int(c) for c in ds.label_counts()]
    ys = [ds[i]["label"] for i in range(len(ds))]
    if multilabel:
        return [int(c) for c in torch.stack([torch.as_tensor(y).float() for y in ys]).sum(0).tolist()]
    k = int(max(int(y) for y in ys)) + 1
    return torch.bincount(torch.tensor([int(y) for y in ys]), minlength=k).tolist()
