"""Task ``mae_pretrain``: masked-autoencoder pretraining of a registered backbone (thorax-MAE recipe, notes §1.3).

Writes ``output_dir/mae/`` (full MAE state: encoder + decoder, to continue pretraining), ``output_dir/encoder/``
(a medvit checkpoint of the encoder with its weight contract; ``finetune_multilabel pretrained=output_dir`` picks
it up), ``reconstruction.png`` (original / masked / reconstruction grid on held-out images), ``log.csv`` and
``summary.json``. Checkpoints every ``train.ckpt_every`` steps resume exactly (``train.resume=auto``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medvit.config import option
from medvit.tasks.base import register_task
from medvit.train.config import TrainConfig

logger = logging.getLogger(__name__)


def _default_train() -> TrainConfig:
    return TrainConfig(blr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, min_lr=0.0)


@dataclass
class MAEPretrainConfig:
    """MAE pretraining; every field can be overridden as ``key=value`` (unknown keys are rejected)."""

    output_dir: str = option("runs/mae_pretrain", "run folder: mae/, encoder/, checkpoints/, log.csv, "
                                                  "reconstruction.png")
    dataset: str = option("cxr_phantom", "registered dataset (labels are ignored)")
    dataset_args: dict[str, Any] = option(default_factory=dict, help="build_dataset kwargs, e.g. {root: DIR} or {n: "
                                                                     "2000}")
    splits: list[str] = option(default_factory=lambda: ["train"], help="splits pooled for pretraining (never test)")
    more_datasets: list[dict[str, Any]] = option(
        default_factory=list, help="extra sources pooled in, each {name: registered dataset, args: {...}, splits: "
                                   "[train]}; each is normalised with its own registered mean/std")
    figure_split: str = option("val", 'split whose first images appear in reconstruction.png ("" = no figure)')
    backbone: str = option("vit_small_patch16_224", "registered encoder backbone (set from preset when given)")
    backbone_args: dict[str, Any] = option(
        default_factory=dict, help="encoder overrides (depth, embed_dim, patch_size)")
    preset: str | None = option(None, "MAE preset, e.g. mae_vit_small_patch16_dec512d2b (fixes backbone and decoder)")
    decoder_dim: int = option(512, "decoder width (set from preset when given)")
    decoder_depth: int = option(8, "decoder blocks (set from preset when given)")
    decoder_heads: int = option(16, "decoder attention heads (set from preset when given)")
    mask_ratio: float = option(
        0.75, "fraction of patches removed (0.90 in the thorax-MAE recipe); must keep >= 1 patch")
    norm_pix_loss: bool = option(False, "per-patch normalised target (off in the thorax-MAE recipe)")
    encoder_mask: str = option("random", 'encoder mask: "random" (MAE) or "tube" (VideoMAE; 3D/2D+t backbones: one '
                                         "spatial mask repeated along axis 0)")
    decoder_mask_ratio: float = option(
        0.0, "VideoMAE V2 running-cell decoder mask ratio (0.5 in the paper; 0 = decode every masked token); "
             "> 0 needs a 3D backbone with an even token grid in H and W")
    dual_loss_on: str = option("masked", 'dual masking: loss over decoded tokens the encoder did not see ("masked") '
                                         'or over every decoded token ("decoded", the official engine)')
    image_size: int = option(224, "square training size")
    in_chans: int = option(1, "encoder input channels (grey images are repeated when 3)")
    mean: list[float] | None = option(None, "normalisation mean; None = the dataset's registered default")
    std: list[float] | None = option(None, "normalisation std; None = the dataset's registered default")
    rrc_scale: tuple[float, float] = option((0.5, 1.0), "random resized crop area range (0.5-1.0 thorax-MAE; MAE "
                                                        "0.2-1.0)")
    hflip: float = option(0.5, "horizontal flip probability")
    pretrained: str | None = option(None, "MAE checkpoint (reference/HF/medvit, decoder included) to continue from")
    train: TrainConfig = option(default_factory=_default_train, help="optimisation (AdamW betas 0.9/0.95, blr 1.5e-4)")
    cache_data: bool = option(True, "hold decoded images in memory (MONAI CacheDataset; phantoms, small sets); false "
                                    "= read every epoch (MONAI Dataset)")
    cache_dir: str = option("", "on-disk cache of decoded images (MONAI PersistentDataset keyed by file SHA-256 and "
                                "the loading config); overrides cache_data")
    figure_images: int = option(6, "rows of reconstruction.png")

    def __post_init__(self) -> None:
        from medvit.models.mae import MAE_PRESETS, check_mask_ratio
        from medvit.tasks.finetune_multilabel import check_backbone

        if self.preset is not None and self.preset not in MAE_PRESETS:
            raise ValueError(f"preset {self.preset!r} is unknown; known: {', '.join(MAE_PRESETS)}")
        if self.preset:  # the preset fixes encoder and decoder: show those values (dry run, resolved config)
            p = MAE_PRESETS[self.preset]
            self.backbone, self.decoder_dim, self.decoder_depth, self.decoder_heads = (
                p.backbone, p.decoder_dim, p.decoder_depth, p.decoder_heads)
        backbone = MAE_PRESETS[self.preset].backbone if self.preset else self.backbone
        args = check_backbone(backbone, self.backbone_args, self.image_size)
        import math

        from medvit.nn.patch_embed import to_tuple

        sd = args.get("spatial_dims", 2)
        grid = [s // p for s, p in zip(to_tuple(self.image_size, sd, "image_size"),
                                       to_tuple(args["patch_size"], sd, "patch_size"))]
        check_mask_ratio(self.mask_ratio, math.prod(grid))
        if self.dual_masking:
            from medvit.models.videomae import LOSS_ON, running_cell_patterns, tube_mask

            if sd != 3:
                raise ValueError("encoder_mask=tube / decoder_mask_ratio > 0 need a 3D backbone (backbone_args."
                                 "spatial_dims=3, e.g. vit_small_patch16_96_3d)")
            if self.encoder_mask == "tube":
                tube_mask(1, tuple(grid), self.mask_ratio)
            if self.decoder_mask_ratio > 0:
                running_cell_patterns(tuple(grid), self.decoder_mask_ratio)
            if self.dual_loss_on not in LOSS_ON:
                raise ValueError(f"dual_loss_on must be one of {LOSS_ON}, got {self.dual_loss_on!r}")
        if self.encoder_mask not in ("random", "tube"):
            raise ValueError(f"encoder_mask must be 'random' or 'tube', got {self.encoder_mask!r}")
        if not 0.0 <= self.decoder_mask_ratio < 1.0:
            raise ValueError(f"decoder_mask_ratio must be in [0, 1), got {self.decoder_mask_ratio}")
        for k in ("decoder_dim", "decoder_depth", "decoder_heads", "in_chans", "figure_images"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(f"decoder_dim {self.decoder_dim} must be divisible by decoder_heads {self.decoder_heads}")
        if not (0.0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1.0):
            raise ValueError(f"rrc_scale must satisfy 0 < lo <= hi <= 1, got {self.rrc_scale}")
        if not self.splits:
            raise ValueError("splits must name at least one split")
        if "test" in self.splits:
            raise ValueError("splits must not include 'test' (pretraining on test images leaks into evaluation)")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither (dataset default)")
        for i, d in enumerate(self.more_datasets):
            bad = set(d) - {"name", "args", "splits"}
            if "name" not in d or bad:
                raise ValueError(f"more_datasets[{i}] needs 'name' (and optional 'args', 'splits'); unknown keys "
                                 f"{sorted(bad)}")
            if "test" in d.get("splits", ["train"]):
                raise ValueError(f"more_datasets[{i}].splits must not include 'test'")


    @property
    def dual_masking(self) -> bool:
        """True when the VideoMAE (V2) masks are asked for (tube encoder mask or a running-cell decoder mask)."""
        return self.encoder_mask == "tube" or self.decoder_mask_ratio > 0


class _Tagged(torch.utils.data.Dataset):
    """Adds ``item["source"] = name`` so the transform can normalise each source with its own statistics."""

    def __init__(self, base: Any, name: str):
        self.base, self.name = base, name

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.base[i]["image"], "source": self.name}


def build_mae(cfg: MAEPretrainConfig) -> torch.nn.Module:
    """The MAE of ``cfg`` (random init, or continued from ``cfg.pretrained``)."""
    from medvit.models.mae import create_mae
    from medvit.models.mae_convert import load_mae_weights

    kw: dict[str, Any] = dict(img_size=cfg.image_size, in_chans=cfg.in_chans, **cfg.backbone_args)
    if cfg.dual_masking:
        from medvit.models.videomae import create_dual_mae

        mae = create_dual_mae(cfg.backbone, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.mask_ratio,
                              cfg.decoder_mask_ratio, cfg.encoder_mask, cfg.dual_loss_on, cfg.norm_pix_loss, **kw)
    elif cfg.preset:
        mae = create_mae(preset=cfg.preset, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss, **kw)
    else:
        mae = create_mae(cfg.backbone, decoder_dim=cfg.decoder_dim, decoder_depth=cfg.decoder_depth,
                         decoder_heads=cfg.decoder_heads, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss,
                         **kw)
    if cfg.pretrained:
        load_mae_weights(mae, cfg.pretrained)
    return mae


def _step(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    return model(batch["image"])


def run(cfg: MAEPretrainConfig) -> dict[str, Any]:
    """Pretrain; returns a summary (steps, losses of this process, throughput, output paths)."""
    from safetensors.torch import save_file
    from torch.utils.data import ConcatDataset

    from medvit.data import build_dataset, dataset_normalization
    from medvit.data.augment import build_eval_transform, build_train_transform
    from medvit.data.monai_data import cache_mode, monai_dataset
    from medvit.models import save_checkpoint
    from medvit.models.mae_convert import export_encoder
    from medvit.train import Trainer

    mean, std = (tuple(cfg.mean), tuple(cfg.std)) if cfg.mean and cfg.std else dataset_normalization(cfg.dataset)
    sources = [(cfg.dataset, dict(cfg.dataset_args), list(cfg.splits), (mean, std))]
    for d in cfg.more_datasets:
        sources.append((d["name"], dict(d.get("args", {})), list(d.get("splits", ["train"])),
                        dataset_normalization(d["name"])))
    parts, transforms = [], {}
    for name, args, splits, (m, s) in sources:
        for split in splits:
            part = build_dataset(name, split, **args)
            part = monai_dataset(part, cache_mode(cfg.cache_data, cfg.cache_dir), cfg.cache_dir or None,
                                 {"dataset": name, "args": args, "split": split}, keys=("image",))
            parts.append(_Tagged(part, name))
        transforms[name] = build_train_transform(cfg.image_size, m, s, cfg.rrc_scale, hflip_prob=cfg.hflip,
                                                 in_chans=cfg.in_chans)
    ds = parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def tf(item: dict[str, Any], g: torch.Generator) -> dict[str, Any]:
        return transforms[item["source"]](item, g)
    tcfg = dataclasses.replace(cfg.train, output_dir=cfg.output_dir)
    torch.manual_seed(tcfg.seed)
    mae = build_mae(cfg)
    trainer = Trainer(mae, tcfg, ds, _step, transform=tf)
    result = trainer.fit()
    out = Path(cfg.output_dir)
    summary: dict[str, Any] = {"task": "mae_pretrain", "steps": result.steps, "total_steps": result.total_steps,
                               "losses": result.losses, "samples_per_s": result.samples_per_s,
                               "n_images": len(ds), "wall_s": result.wall_s}
    if not trainer.dist.is_main or not result.finished:
        return summary
    mae_dir = out / "mae"
    mae_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in mae.state_dict().items()}
    save_file(state, str(mae_dir / "model.safetensors"))
    (mae_dir / "config.json").write_text(json.dumps({
        "format": "medvit-mae/1", "backbone": mae.encoder.arch_name, "backbone_args": mae.encoder.model_args,
        "decoder_dim": mae.decoder_dim, "decoder_depth": len(mae.decoder_blocks), "mask_ratio": mae.mask_ratio,
        "norm_pix_loss": mae.norm_pix_loss, "steps": result.steps,
        **({"encoder_mask": cfg.encoder_mask, "decoder_mask_ratio": cfg.decoder_mask_ratio,
            "dual_loss_on": cfg.dual_loss_on} if cfg.dual_masking else {})}, indent=2, default=list))
    from medvit.tasks.finetune_multilabel import preprocessing_contract

    contract = dataclasses.replace(  # preprocessing (intensity rules of the readers) + provenance; no outputs
        preprocessing_contract(cfg, mean, std), research_only=True,
        source=f"medvit mae_pretrain on {cfg.dataset} ({result.steps} steps)",
        description="MAE-pretrained encoder (no classification head)")
    save_checkpoint(mae.encoder, out / "encoder", contract=contract, state_dict=export_encoder(mae),
                    extra={"task": "mae_pretrain", "mask_ratio": mae.mask_ratio, "steps": result.steps})
    summary.update(mae_dir=str(mae_dir), encoder_dir=str(out / "encoder"))
    if cfg.figure_split and cfg.dual_masking:
        logger.info("reconstruction.png is not drawn for dual-masked MAE (the decoder predicts a subset of tokens)")
    elif cfg.figure_split:
        from medvit.visualize.mae_figure import reconstruction_figure

        fig_ds = build_dataset(cfg.dataset, cfg.figure_split, **cfg.dataset_args)
        ev = build_eval_transform(cfg.image_size, mean, std, in_chans=cfg.in_chans)
        n = min(cfg.figure_images, len(fig_ds))
        imgs = torch.stack([ev(fig_ds[i])["image"] for i in range(n)]).to(next(mae.parameters()).device)
        g = torch.Generator().manual_seed(0)
        noise = torch.rand(n, mae.encoder.patch_embed.num_patches, generator=g).to(imgs.device)
        summary["figure"] = str(reconstruction_figure(mae, imgs, out / "reconstruction.png", mean, std, noise))
    (out / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=2))
    return summary


# registered when medvit.tasks is imported
register_task("mae_pretrain", MAEPretrainConfig,
              "masked-autoencoder pretraining (patchify, random masking, decoder, masked MSE)")(run)
