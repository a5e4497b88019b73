"""Tiny backbones and per-method tiny configs shared by the PEFT tests."""

from __future__ import annotations

import pytest
import torch

#: tiny config per registered method (every registered method must appear here)
TINY_CONFIGS: dict[str, dict] = {
    "full": {},
    "linear": {},
    "vpt_shallow": {"num_prompts": 3},
    "vpt_deep": {"num_prompts": 3},
    "dvpt": {"rank": 4, "num_prompts": 3, "share_every": 2},
    "lora": {"r": 4, "targets": ["attention", "mlp"]},
    "loha": {"r": 2, "targets": ["attention"]},
    "lokr": {"r": 2, "targets": ["all-linear"]},
    "ia3": {},
    "adalora": {"init_r": 4, "target_r": 2, "total_step": 8, "tinit": 1, "tfinal": 2},
    "oft": {"block_size": 8, "targets": ["attention", "mlp"]},
    "vera": {"r": 4, "targets": ["attention", "mlp"]},
    "spt": {"lora_targets": ["blocks.0.attn.qkv", "blocks.1.mlp.fc2"], "r": 2,
            "sparse": {"blocks.0.mlp.fc1": 10, "blocks.1.attn.proj": 5}},
    "hst": {"side_dims": [4, 6, 8, 8]},
    "vivit": {"temporal_depth": 1, "adapter_dim": 8, "max_frames": 4},
    "still_moving": {"temporal_depth": 1, "adapter_dim": 8, "max_frames": 4, "still_frames": 2, "spatial_r": 2,
                     "motion_r": 3},
}

#: regex a parameter name must match exactly when it requires grad (and only then)
EXPECTED_TRAINABLE: dict[str, str] = {
    "full": r".*",
    "linear": r"^head\.(weight|bias)$",
    "vpt_shallow": r"^(prompts|backbone\.head\.(weight|bias))$",
    "vpt_deep": r"^(prompts|backbone\.head\.(weight|bias))$",
    "dvpt": r"^(prompt_tokens|dvpt\.\d+\.((down|up)\.(weight|bias)|queries|gate)|backbone\.head\.(weight|bias))$",
    "lora": r"^(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])\.lora_[AB]\.default\.weight|head\.(weight|bias))$",
    "loha": r"^(blocks\.\d+\.attn\.(qkv|proj)\.hada_w[12]_[ab]\.default|head\.(weight|bias))$",
    "lokr": r"^(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])\.lokr_w[12](_[ab])?\.default|head\.(weight|bias))$",
    "ia3": r"^(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])\.ia3_l\.default|head\.(weight|bias))$",
    "adalora": r"^(blocks\.\d+\.attn\.(qkv|proj)\.lora_[ABE]\.default|head\.(weight|bias))$",
    "oft": r"^(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])\.oft_R\.default\.weight|head\.(weight|bias))$",
    "vera": r"^(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])\.vera_lambda_[bd]\.default|head\.(weight|bias))$",
    "spt": r"^(blocks\.0\.attn\.qkv\.lora_[AB]\.default\.weight|blocks\.1\.mlp\.fc2\.lora_[AB]\.default\.weight"
           r"|blocks\.0\.mlp\.fc1\.spt_values|blocks\.1\.attn\.proj\.spt_values|head\.(weight|bias))$",
    "hst": r"^(meta_tokens|(stem|down|bridges|stages|neck)\..+|backbone\.head\.(weight|bias))$",
    "vivit": r"^(temporal\.0\..+|temporal_(pos|cls)|temporal_norm\.(weight|bias)|pool_score\.(weight|bias)"
             r"|adapter_(down|up)\.(weight|bias)|backbone\.head\.(weight|bias))$",
    "still_moving": r"^((backbone\.blocks\.\d+|temporal\.0)\.attn\.(qkv|proj)\.lora_[AB]\.default\.weight"
                    r"|backbone\.head\.(weight|bias))$",
}

MERGEABLE = {"lora", "loha", "lokr", "ia3", "adalora", "oft", "vera"}


def make_base(seed: int = 123, **kw):
    """Deterministic tiny backbone: ViT-Ti layout at 48 wide, 2 blocks, 32 px, 1 channel, 3 classes."""
    from medvit.models import create_model

    torch.manual_seed(seed)
    args = dict(embed_dim=48, depth=2, num_heads=4, img_size=32, in_chans=1, num_classes=3)
    args.update(kw)
    return create_model("vit_tiny_patch16_224", **args)


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.rand(4, 1, 32, 32, generator=g)
