"""vila_m3 pipeline: freeze pattern per stage (frozen tensors bit-identical after a step, trainable ones changed),
stage chaining, skip of finished stages and exact resume of an interrupted stage, and the tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medvit.config import from_dict
from medvit.train.config import TrainConfig
from medvit.vlm.train import STAGE_PATTERNS, LoraSettings, StageConfig, VilaM3Config, _StageModule, apply_stage, run

DEMO = str(Path(__file__).resolve().parents[2] / "pipelines" / "demo" / "model")
TINY_VLM = {"backbone": "vit_tiny_patch16_224",
            "backbone_args": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2,
                              "in_chans": 1}, "max_length": 160}


def _snap(m):
    return {n: p.detach().clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("stage,lm_mode", [(0, "full"), (1, "full"), (1, "lora"), (2, "full"), (3, "lora")])
def test_freeze_pattern_per_stage(make_vlm, stage, lm_mode):
    from medvit.train.loop import fit
    from medvit.vlm import collate_conversations
    from medvit.vlm.data import ConversationDataset

    vlm = make_vlm()
    vis, proj, lm = apply_stage(vlm, StageConfig(stage=stage, lm=lm_mode), LoraSettings(r=2, alpha=4))
    assert (vis, proj, lm) == STAGE_PATTERNS[stage]
    if lm_mode == "lora" and lm:
        with torch.no_grad():  # LoRA B = 0 at start would make A's gradient 0: make both move
            for n, p in vlm.lm.named_parameters():
                if "lora_B" in n:
                    p.normal_(std=0.1)
    recs = [{"id": f"r{i}", "images": [], "conversations": [{"from": "human", "value": "Is there a mass?"},
                                                           {"from": "gpt", "value": "yes" if i % 2 else "no"}]}
            for i in range(4)]
    ds = ConversationDataset(vlm, records=recs)
    # images: feed random pixels through a record with an image placeholder too
    before = _snap(vlm)
    pix = torch.randn(1, 1, 32, 32)

    class WithImage(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            it = ds[i]
            n = vlm.num_image_tokens
            it["input_ids"] = torch.cat([torch.zeros(n, dtype=torch.long), it["input_ids"]])
            it["labels"] = torch.cat([torch.full((n,), -100), it["labels"]])
            it["image_mask"] = torch.cat([torch.ones(n, dtype=torch.bool), it["image_mask"]])
            it["pixel_values"] = pix
            return it

    cfg = TrainConfig(steps=1, batch_size=4, lr=1e-2, weight_decay=0.0, progress=False, device="cpu")
    fit(_StageModule(vlm), cfg, WithImage(), lambda m, b: m(b), collate_fn=collate_conversations)
    after = _snap(vlm)
    for n, p in vlm.named_parameters():
        part = n.split(".")[0]
        should = {"vision": vis, "projector": proj, "lm": lm}[part] and (lm_mode == "full" or part != "lm"
                                                                          or "lora_" in n)
        assert p.requires_grad == should, n
        if should:
            continue
        assert torch.equal(before[n], after[n]), f"frozen {n} changed"
    changed = {part: any(not torch.equal(before[n], after[n]) for n in before if n.startswith(part + "."))
               for part in ("vision", "projector", "lm")}
    assert changed == {"vision": vis, "projector": proj, "lm": lm}


def _cfg(tmp_path, **over):
    raw = {"output_dir": str(tmp_path / "run"), "lm": {"preset": "tiny_llama"}, "vlm": TINY_VLM,
           "data": {"phantom": {"n": 20, "image_size": 32, "expert_checkpoints": [DEMO]}},
           "stages": [{"stage": s, "lm": "lora" if s else "full", "packing": s == 3,
                       "train": {"steps": 2, "batch_size": 4, "lr": 1e-3, "weight_decay": 0.0, "progress": False,
                                 "device": "cpu", "ckpt_every": 1}} for s in range(4)],
           "lora": {"r": 2, "alpha": 4},
           "eval": {"max_images": 1, "report_images": 1, "vqa_items": 1, "max_new_tokens": 3, "meteor": False}}
    for k, v in over.items():
        raw[k] = v
    return from_dict(VilaM3Config, raw)


@pytest.mark.slow
def test_tiny_pipeline_runs_all_stages_then_skips_on_rerun(tmp_path):
    s = run(_cfg(tmp_path))
    assert [r["stage"] for r in s["stages"]] == [0, 1, 2, 3] and not any(r["skipped"] for r in s["stages"])
    assert [r["lm_mode"] for r in s["stages"]] == ["full", "lora", "lora", "lora"]
    assert [r["packing"] for r in s["stages"]] == [False, False, False, True]  # stage 3 trains on packed rows
    from medvit.vlm.instruct import read_mixture

    n_conv = sum(e.factor * len(p.read_text().splitlines())
                 for e, p in read_mixture(tmp_path / "run" / "data" / "mixture.yaml", stage=3))
    assert s["stages"][3]["samples"] < n_conv  # fewer packed sequences than conversations
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    for k in ("f1_without_expert", "f1_with_expert", "f1_majority", "f1_expert_alone", "vqa_exact_match",
              "report_BLEU_4", "report_ROUGE_L"):
        assert k in ev, k
    meta = json.loads((tmp_path / "run" / "model" / "vlm_config.json").read_text())
    assert meta["lm_mode"] == "lora" and meta["trained"] == {"vision": True, "projector": True, "lm": True}
    from medvit.vlm import VisionLanguageModel

    a = VisionLanguageModel.load(tmp_path / "run" / "model")
    s2 = run(_cfg(tmp_path, eval={"enabled": False}))
    assert all(r["skipped"] for r in s2["stages"])
    b = VisionLanguageModel.load(tmp_path / "run" / "model")
    for (n, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(x, y), n


@pytest.mark.slow
def test_interrupted_stage_resumes_exactly(tmp_path):
    one = {"stage": 0, "train": {"steps": 4, "batch_size": 2, "lr": 1e-2, "weight_decay": 0.0, "progress": False,
                                  "device": "cpu", "ckpt_every": 1}}
    ref = run(_cfg(tmp_path / "a", stages=[one], eval={"enabled": False}))
    stop = json.loads(json.dumps(one))
    stop["train"]["stop_at_step"] = 2
    s = run(_cfg(tmp_path / "b", stages=[stop], eval={"enabled": False}))
    assert s["status"].startswith("stopped") and s["stages"][0]["steps"] == 2
    s = run(_cfg(tmp_path / "b", stages=[one], eval={"enabled": False}))
    assert s["stages"][0]["steps"] == 4 and not s["stages"][0]["skipped"]
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "a" / "run" / "model" / "trainable.safetensors"))
    wb = load_file(str(tmp_path / "b" / "run" / "model" / "trainable.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert ref["stages"][0]["last_loss"] == pytest.approx(s["stages"][0]["last_loss"], abs=0)


def test_config_refuses_mixed_lm_modes():
    with pytest.raises(Exception, match="same lm mode"):
        from_dict(VilaM3Config, {"stages": [{"stage": 1, "lm": "full"}, {"stage": 3, "lm": "lora"}]})


@pytest.mark.parametrize("name", ["tiny_cpu.yaml", "m3_8b_stage3.yaml"])
def test_presets_validate(name):
    from medvit.tasks import build_config

    root = Path(__file__).resolve().parents[2]
    spec, cfg = build_config(root / "pipelines" / "vila_m3" / name, [])
    assert spec.name == "vila_m3" and cfg.stages
    assert [s.stage for s in cfg.stages] == ([0, 1, 2, 3] if name == "tiny_cpu.yaml" else [3])


def test_reference_mixture_file_reads():
    from medvit.vlm.instruct import read_mixture

    root = Path(__file__).resolve().parents[2]
    mix = read_mixture(root / "pipelines" / "vila_m3" / "mixture_m3_8b.yaml")
    assert {e.name: e.factor for e, _ in mix}["expert_brats"] == 16 and len(mix) == 9


def test_config_refuses_bad_expert_factor():
    with pytest.raises(Exception, match="expert_factor"):
        from_dict(VilaM3Config, {"data": {"phantom": {"expert_factor": 0}}})
    with pytest.raises(Exception, match="expert_answer"):
        from_dict(VilaM3Config, {"data": {"phantom": {"expert_answer": "expert"}}})


def test_phantom_draw_settings_like_pipeline(tmp_path):
    from medvit.config import ConfigError
    from medvit.vlm.train import PhantomData, phantom_draw_settings

    (tmp_path / "p.yaml").write_text("dataset_args: {n: 10, image_size: 128, lesion_contrast: 2.5, anatomy: 0.5}\n")
    ph = PhantomData(image_size=64, like_pipeline=str(tmp_path / "p.yaml"), knobs={"anatomy": 0.75})
    assert phantom_draw_settings(ph) == (128, {"lesion_contrast": 2.5, "anatomy": 0.75})
    assert phantom_draw_settings(PhantomData(image_size=64)) == (64, {})
    with pytest.raises(ConfigError, match="unknown"):
        phantom_draw_settings(PhantomData(knobs={"contrast": 2.0}))
    with pytest.raises(ConfigError, match="cannot read"):
        phantom_draw_settings(PhantomData(like_pipeline=str(tmp_path / "missing.yaml")))
