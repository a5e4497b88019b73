"""Shared test fixtures: deterministic seeds, offline HF, tiny model configs."""

from __future__ import annotations

import inspect
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: overrides that make any registered backbone tiny enough for unit tests
TINY = dict(embed_dim=48, depth=2, num_heads=4)


def tiny_args(name: str) -> dict:
    """Tiny overrides for registered backbone ``name`` (small image, small width)."""
    from medvit.models import backbone_args
    from medvit.registry import REGISTRY

    args = backbone_args(name)  # raises KeyError (with close matches) for an unregistered name
    kw = dict(TINY, img_size=32, patch_size=16)  # 2 patches a side in 2D and 3D
    if args.get("hcs"):  # ChannelViT: random channel dropping would leave the dropped channels'
        kw["hcs"] = False  # embeddings without gradient in a one-step backward test; HCS has own tests
    own = inspect.signature(REGISTRY.entry("backbone", name).obj).parameters
    if args.get("spatial_dims") == 3 and "local_up_to_layer" in own:
        kw["num_heads"] = 8  # 3D ConViT: the GPSA local init needs a cube number of heads (48 / 8 = 6 per head)
    if max(args.get("freqs", (1,))) > 1:  # FMViT: a 2-side grid pooled by 2 is one key, leaving its
        kw["patch_size"] = 8  # queries without gradient; 4 patches a side keep 2 pooled keys per side
    return kw


@pytest.fixture(scope="session", autouse=True)
def _compile_cache(tmp_path_factory):
    """Compiled models (``medvit infer --compile``/int8) cache into the session's temporary folder, not ~/.cache."""
    old = os.environ.get("MEDVIT_COMPILE_CACHE")
    os.environ["MEDVIT_COMPILE_CACHE"] = str(tmp_path_factory.mktemp("compile_cache"))
    yield
    if old is None:
        os.environ.pop("MEDVIT_COMPILE_CACHE", None)
    else:
        os.environ["MEDVIT_COMPILE_CACHE"] = old


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _torch_threads():
    """In-process runs set torch's process-wide thread count (``run_inference(threads=1)``, ``--threads``); put it
    back after each test so that a test's numerics never depend on which tests ran before it in the same worker."""
    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _deid_key_dir(tmp_path_factory, monkeypatch):
    """De-identification keys of tests go to a temporary per-site key folder, never to the user's home."""
    monkeypatch.setenv("MEDVIT_DEID_KEY_DIR", str(tmp_path_factory.mktemp("deid-keys")))
    monkeypatch.delenv("MEDVIT_DEID_KEY", raising=False)
    yield
