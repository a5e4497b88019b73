"""A VLM output folder inside the vision (or an expert) checkpoint it copies (breaker34 B14): refused before any
copy (it used to recurse until RecursionError, leaving a 499-level tree) and, for the training configs, before
any work (``medvit run --dry-run`` refuses it too)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medvit.vlm.paths import bundle_checkpoint, bundle_expert_specs


def _ckpt(tmp_path: Path) -> Path:
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "model.safetensors").write_text("w")
    (src / "config.json").write_text("{}")
    return src


def _files(root: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(root)) for d, _, fs in os.walk(root) for f in fs)


@pytest.mark.parametrize("sub", ["vlm_out", "a/b", "."])
def test_output_inside_the_checkpoint_is_refused_before_any_copy(tmp_path, sub):
    src = _ckpt(tmp_path)
    out = src / sub
    out.mkdir(parents=True, exist_ok=True)
    with pytest.raises(ValueError, match=r"output folder .* lies inside vision_checkpoint .*ckpt"):
        bundle_checkpoint(src, out, "vision", "vision_checkpoint")
    assert _files(src) == ["config.json", "model.safetensors"]  # nothing copied


def test_output_inside_the_checkpoint_through_a_link_is_refused(tmp_path):
    src = _ckpt(tmp_path)
    (src / "real").mkdir()
    (tmp_path / "outlink").symlink_to(src / "real")
    with pytest.raises(ValueError, match="lies inside"):
        bundle_checkpoint(src, tmp_path / "outlink", "vision")
    assert not (src / "real" / "vision").exists()


def test_expert_checkpoint_holding_the_output_is_refused_by_key(tmp_path):
    src = _ckpt(tmp_path)
    with pytest.raises(ValueError, match=r"experts\[0\]\.checkpoints"):
        bundle_expert_specs([{"kind": "cxr", "checkpoints": [str(src)]}], src / "m")


def test_bundle_beside_the_checkpoint_still_copies(tmp_path):
    src = _ckpt(tmp_path)
    out = tmp_path / "model"
    assert bundle_checkpoint(src, out, "vision") == "vision"
    assert _files(out) == ["vision/config.json", "vision/model.safetensors"]
    assert bundle_checkpoint(out / "vision", out, "vision") == "vision"  # already there: no-op


def test_training_configs_refuse_it_before_any_work(tmp_path):
    from medvit.vlm.model import VLMConfig
    from medvit.vlm.retina.train import TrainConfig
    from medvit.vlm.train import DataSettings, PhantomData, VilaM3Config

    src = _ckpt(tmp_path)
    with pytest.raises(ValueError, match=r"lies inside vlm\.vision_checkpoint"):
        VilaM3Config(output_dir=str(src / "vlm"), vlm=VLMConfig(vision_checkpoint=str(src)))
    with pytest.raises(ValueError, match=r"lies inside data\.phantom\.expert_checkpoints\[1\]"):
        VilaM3Config(output_dir=str(src), data=DataSettings(phantom=PhantomData(
            expert_checkpoints=[str(tmp_path / "other"), str(src)])))
    with pytest.raises(ValueError, match=r"lies inside vlm\.vision_checkpoint"):
        TrainConfig(output_dir=str(src / "r"), vlm={"vision_checkpoint": str(src)})
    VilaM3Config(output_dir=str(tmp_path / "run"), vlm=VLMConfig(vision_checkpoint=str(src)))  # beside it: fine
    TrainConfig(output_dir=str(tmp_path / "run"), vlm={"vision_checkpoint": str(src)})
