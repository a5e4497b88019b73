"""One DDP rank (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set as torchrun sets them): two MAE steps on phantoms (gloo);
saves its weights and the image ids it trained on to ``OUT/rank<r>.safetensors`` / ``OUT/rank<r>.json`` (with the
names of its gloo threads before and after ``finish_distributed``).

``python ddp_worker.py OUT [INIT_METHOD]``: with ``INIT_METHOD`` (e.g. ``file:///tmp/x/rendezvous``) the process group
is started on it before the trainer joins it; without, the trainer starts it from torchrun's environment. Used by
test_ddp.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def main(out: str, init_method: str | None = None) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    from medvit.data import build_dataset
    from medvit.data.augment import build_train_transform
    from medvit.models.mae import create_mae
    from medvit.train import TrainConfig, Trainer
    from medvit.train.distributed import finish_distributed

    torch.set_num_threads(1)
    if init_method:
        dist.init_process_group("gloo", init_method=init_method, rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]))
    torch.manual_seed(0)  # same init on every rank (DDP also broadcasts rank 0's weights)
    mae = create_mae("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4,
                     in_chans=1, decoder_dim=32, decoder_depth=1, decoder_heads=4, mask_ratio=0.75)
    ds = build_dataset("cxr_phantom", "train", n=64, seed=0, image_size=32)
    seen: list[str] = []

    def step(model: torch.nn.Module, batch: dict) -> dict:
        seen.extend(batch["id"])
        return model(batch["image"])

    cfg = TrainConfig(steps=2, batch_size=4, blr=1.5e-4, betas=(0.9, 0.95), progress=False, log_every=1,
                      output_dir=str(Path(out) / "run"), ckpt_every=2)
    res = Trainer(mae, cfg, ds, step, transform=build_train_transform(32, (0.5,), (0.25,), (0.5, 1.0))).fit()
    rank = int(os.environ.get("RANK", "0"))
    save_file({k: v.contiguous() for k, v in mae.state_dict().items()}, str(Path(out) / f"rank{rank}.safetensors"))
    during = _gloo_threads()
    finish_distributed()  # as `medvit run` ends a torchrun rank: barrier (rank 0 may still write), then destroy
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({
        "ids": seen, "losses": res.losses, "world": int(os.environ.get("WORLD_SIZE", "1")),
        "gloo_threads": {"during": during, "after": _gloo_threads()}}))


def _gloo_threads() -> list[str]:
    """Names of this process's gloo threads (Linux: /proc/self/task/*/comm; elsewhere none)."""
    task = Path("/proc/self/task")
    if not task.is_dir():
        return []
    return sorted(n for n in ((t / "comm").read_text().strip() for t in task.iterdir()) if "gloo" in n)


if __name__ == "__main__":
    main(*sys.argv[1:3])
