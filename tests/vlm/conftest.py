"""Fixtures: tiny random Llama / Qwen2 LMs built offline once per session, and a tiny VLM factory."""

from __future__ import annotations

import pytest
import torch

from medvit.vlm import VisionLanguageModel, VLMConfig
from medvit.vlm.testing import build_tiny_lm

TINY_BACKBONE = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "in_chans": 1}


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("lm") / "llama", "llama", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("lm") / "qwen2", "qwen2", seed=0)


@pytest.fixture
def make_vlm(tiny_llama):
    def make(lm=None, seed=0, **kw):
        torch.manual_seed(seed)
        cfg = VLMConfig(lm_path=str(lm or tiny_llama), backbone="vit_tiny_patch16_224",
                        backbone_args=dict(TINY_BACKBONE), **kw)
        return VisionLanguageModel(cfg)
    return make
