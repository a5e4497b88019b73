"""VisionLanguageModel core: splice positions and masks, assistant-only labels/loss, templates, generation,
projectors, checkpoints (LoRA adapter save → load bit-exact)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from medvit.vlm import (
    IGNORE_INDEX,
    TEMPLATES,
    ConversationDataset,
    VisionLanguageModel,
    VLMConfig,
    collate_conversations,
    encode_conversation,
    normalize_messages,
)
from medvit.vlm.projectors import build_projector

CONV = [{"from": "human", "value": "<image>\nIs there an effusion?"},
        {"from": "gpt", "value": "Yes, a small left effusion."},
        {"from": "human", "value": "And here? <image>"},
        {"from": "gpt", "value": "No."}]


def test_templates_render_exact():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    assert TEMPLATES["llama3"].render(msgs) == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS"
                                                "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
                                                "<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>")
    assert TEMPLATES["qwen2"].render(msgs[1:], add_generation_prompt=False) == (
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n")
    assert TEMPLATES["chatml"].render(msgs[1:2], add_generation_prompt=True) == (
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
    assert TEMPLATES["plain"].render(msgs) == "S\n\nUSER: Q\nASSISTANT: A</s>\n"
    # assistant segments: reply + end-of-turn only
    segs = TEMPLATES["chatml"].segments(msgs[1:])
    assert [t for t, a in segs if a] == ["A<|im_end|>"]


def test_normalize_merges_expert_turn_and_rejects_bad_roles():
    m = normalize_messages([{"from": "human", "value": "q"}, {"from": "gpt", "value": "<CXR()>"},
                            {"from": "expert", "value": "r"}, {"from": "human", "value": "Use this"}])
    assert [x["role"] for x in m] == ["user", "assistant", "user"] and m[2]["content"] == "r\nUse this"
    with pytest.raises(ValueError, match="message 0 has unknown role 'bot'"):
        normalize_messages([{"from": "bot", "value": "x"}])


@pytest.mark.parametrize("lm_fixture", ["tiny_llama", "tiny_qwen"])
def test_splice_positions_and_masks(make_vlm, request, lm_fixture):
    vlm = make_vlm(lm=request.getfixturevalue(lm_fixture))
    n = vlm.num_image_tokens
    assert n == 16  # 32 px / patch 8 -> 4x4 patch tokens
    enc = encode_conversation(vlm.tokenizer, vlm.template, CONV, n)
    mask = torch.tensor(enc["image_mask"])
    assert int(mask.sum()) == 2 * n and enc["n_images"] == 2
    # two contiguous blocks, each right where "<image>" stood in the rendered text
    idx = mask.nonzero().flatten().tolist()
    starts = [i for i in idx if i == 0 or not mask[i - 1]]
    assert len(starts) == 2 and all(mask[s:s + n].all() for s in starts)
    text = vlm.template.render(normalize_messages(CONV))
    prefix = text.split("<image>")[0]
    assert starts[0] == len(vlm.tokenizer(prefix, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([enc["input_ids"]])
    pix = torch.randn(2, 1, 32, 32)
    emb = vlm.embed(ids, mask[None], pix)
    assert emb.shape == (1, len(enc["input_ids"]), vlm.lm.config.hidden_size)
    feats = vlm.encode_images(pix)
    assert torch.equal(emb[0, starts[0]:starts[0] + n], feats[0])
    assert torch.equal(emb[0, starts[1]:starts[1] + n], feats[1])
    text_pos = (~mask).nonzero().flatten()
    assert torch.equal(emb[0, text_pos], vlm.lm.get_input_embeddings()(ids[0, text_pos]))
    with pytest.raises(ValueError, match="every <image> needs exactly one image"):
        vlm.embed(ids, mask[None], pix[:1])


def test_loss_only_on_assistant_tokens(make_vlm):
    vlm = make_vlm()
    tok = vlm.tokenizer
    enc = encode_conversation(tok, vlm.template, CONV, vlm.num_image_tokens)
    labelled = [t for t in enc["labels"] if t != IGNORE_INDEX]
    expected = (tok("Yes, a small left effusion.<|eot_id|>", add_special_tokens=False)["input_ids"]
                + tok("No.<|eot_id|>", add_special_tokens=False)["input_ids"])
    assert labelled == expected
    # the loss equals next-token CE over exactly those positions
    ids, labels = torch.tensor([enc["input_ids"]]), torch.tensor([enc["labels"]])
    mask = torch.tensor([enc["image_mask"]])
    pix = torch.randn(2, 1, 32, 32)
    out = vlm(ids, torch.ones_like(ids), mask, pix, labels=labels)
    lg = out.logits[0, :-1]
    tgt = labels[0, 1:]
    keep = tgt != IGNORE_INDEX
    manual = F.cross_entropy(lg[keep], tgt[keep])
    assert torch.allclose(out.loss, manual, atol=1e-5)
    # the user's text and the image tokens carry no label
    assert all(lab == IGNORE_INDEX for lab, im in zip(enc["labels"], enc["image_mask"]) if im)


def test_generate_greedy_bounded_and_deterministic(make_vlm):
    vlm = make_vlm()
    pix = torch.randn(1, 1, 32, 32)
    msgs = [{"role": "user", "content": "<image>\nDescribe the image in detail."}]
    a = vlm.generate(msgs, pix, max_new_tokens=5)
    b = vlm.generate(msgs, pix, max_new_tokens=5)
    assert a == b and isinstance(a, str)
    ids = vlm.generate_ids(msgs, pix, max_new_tokens=5)
    assert 1 <= len(ids) <= 5 and vlm.tokenizer.decode(ids).startswith(a[:3])
    s1 = vlm.generate(msgs, pix, max_new_tokens=4, temperature=1.0, top_p=0.9, seed=3)
    s2 = vlm.generate(msgs, pix, max_new_tokens=4, temperature=1.0, top_p=0.9, seed=3)
    assert s1 == s2
    with pytest.raises(ValueError, match="max_new_tokens"):
        vlm.generate(msgs, pix, max_new_tokens=0)


@pytest.mark.parametrize("name,kw,tokens", [("linear", {}, 16), ("mlp2x_gelu", {}, 16),
                                            ("resampler", {"num_queries": 5, "depth": 1, "num_heads": 2}, 5)])
def test_projectors_shapes(name, kw, tokens):
    p = build_projector(name, 24, 32, **kw)
    y = p(torch.randn(3, 16, 24))
    assert y.shape == (3, tokens, 32) and p.out_tokens(16) == tokens


def test_token_selection_and_downsample(make_vlm):
    v = make_vlm(select="cls_patch")
    assert v.num_image_tokens == 17 and v.encode_images(torch.randn(2, 1, 32, 32)).shape[1] == 17
    v = make_vlm(downsample=2, vision_layer=-2)
    assert v.num_image_tokens == 4 and v.projector.proj[0].in_features == 32 * 4
    with pytest.raises(ValueError, match="must divide the token grid"):
        make_vlm(downsample=3)
    v = make_vlm(projector="resampler", projector_args={"num_queries": 6, "depth": 1, "num_heads": 2})
    assert v.num_image_tokens == 6


def _lora_state(vlm):
    return {k: v.clone() for k, v in vlm.lm.state_dict().items() if "lora_" in k}


def test_checkpoint_lora_save_load_bit_exact(make_vlm, tmp_path):
    vlm = make_vlm()
    vlm.enable_lora(r=4, alpha=8)
    vlm.set_trainable(vision=False, projector=True, lm=True)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter non-trivial
        for n, p in vlm.lm.named_parameters():
            if "lora_B" in n:
                p.normal_()
    assert vlm.trainable_parts() == {"vision": False, "projector": True, "lm": True}
    vlm.save(tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "vlm_config.json").read_text())
    assert meta["lm_mode"] == "lora" and len(meta["lm"]["sha256"]) == 64
    assert (tmp_path / "ck" / "lm_adapter" / "adapter_model.safetensors").is_file()
    back = VisionLanguageModel.load(tmp_path / "ck")
    a, b = _lora_state(vlm), _lora_state(back)
    assert a.keys() == b.keys() and len(a) > 0 and all(torch.equal(a[k], b[k]) for k in a)
    for x, y in zip(vlm.projector.state_dict().values(), back.projector.state_dict().values()):
        assert torch.equal(x, y)
    for x, y in zip(vlm.vision.state_dict().values(), back.vision.state_dict().values()):
        assert torch.equal(x, y)
    ids = torch.tensor([[1, 2, 3, 4]])
    m = torch.zeros_like(ids, dtype=torch.bool)
    vlm.eval()
    assert torch.equal(vlm(ids, torch.ones_like(ids), m).logits, back(ids, torch.ones_like(ids), m).logits)


def test_checkpoint_full_lm_and_hash_check(make_vlm, tmp_path, tiny_qwen):
    vlm = make_vlm()
    with torch.no_grad():
        vlm.lm.get_input_embeddings().weight.add_(1.0)
    vlm.save(tmp_path / "ck", trained={"vision": False, "projector": True, "lm": True})
    back = VisionLanguageModel.load(tmp_path / "ck")
    assert torch.equal(back.lm.get_input_embeddings().weight, vlm.lm.get_input_embeddings().weight)
    with pytest.raises(ValueError, match="lm.sha256"):
        VisionLanguageModel.load(tmp_path / "ck", lm_path=tiny_qwen)


def test_dataset_jsonl_truncation_bad_lines_and_paths(make_vlm, tmp_path):
    import numpy as np
    from PIL import Image

    vlm = make_vlm()
    (tmp_path / "img").mkdir()
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype("uint8")).save(tmp_path / "img/a.png")
    good = {"id": "g", "images": ["img/a.png"], "conversations": CONV[:2]}
    lines = [json.dumps(good), "{not json", json.dumps({"id": "x", "conversations": [{"from": "human", "value": "q"}]}),
             json.dumps({"id": "esc", "images": ["../a.png"], "conversations": CONV[:2]}),
             json.dumps({"id": "two", "images": ["img/a.png"], "conversations": CONV})]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    ds = ConversationDataset(vlm, [tmp_path / "c.jsonl"])
    assert len(ds) == 2 and len(ds.problems) == 3  # bad JSON, no gpt turn, 2 markers for 1 image
    assert any("no 'gpt'" in p["reason"] for p in ds.problems)
    it = ds[0]
    assert it["pixel_values"].shape == (1, 1, 32, 32) and int(it["image_mask"].sum()) == 16
    it = ds[1]  # the '..' path is refused and reported, the next good item is returned
    assert it["id"] == "g" and any("no '..'" in p["reason"] for p in ds.problems)
    batch = collate_conversations([ds[0], ds[0]], pad_id=vlm.tokenizer.pad_token_id)
    out = vlm(batch["input_ids"], batch["attention_mask"], batch["image_mask"], batch["pixel_values"],
              labels=batch["labels"])
    assert torch.isfinite(out.loss)
    # truncation never cuts an image block: cut before it, the image is dropped
    enc = encode_conversation(vlm.tokenizer, vlm.template, normalize_messages(CONV), 16, max_length=10)
    assert enc["truncated"] and enc["n_images"] == 0 and not any(enc["image_mask"])


_TINY_EVIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "in_chans": 1}


def test_token_changing_backbone_is_refused_with_a_clear_error(tiny_llama):
    """An EViT that drops patch tokens cannot feed the projector's fixed patch grid: clear ValueError, no
    silent mis-splice (found when LookupViT gained forward_until)."""
    cfg = VLMConfig(lm_path=str(tiny_llama), backbone="evit_tiny_patch16_224",
                    backbone_args={**_TINY_EVIT, "keep_rate": 0.5, "keep_locs": (0,)})
    vlm = VisionLanguageModel(cfg)
    with pytest.raises(ValueError, match="patch tokens.*token-changing"):
        vlm.encode_images(torch.zeros(1, 1, 32, 32))
    cfg_full = VLMConfig(lm_path=str(tiny_llama), backbone="evit_tiny_patch16_224",
                         backbone_args={**_TINY_EVIT, "keep_rate": 1.0, "keep_locs": (0,)})
    assert VisionLanguageModel(cfg_full).encode_images(torch.zeros(1, 1, 32, 32)).shape[1] == 16


@pytest.mark.parametrize("gguf", ["/etc/hostname", "../../etc/hostname", "sub/model.gguf", "..", 5])
def test_gguf_file_from_a_config_stays_a_file_name_inside_the_lm_directory(tmp_path, gguf):
    """breaker B20: ``config.gguf_file`` read from vlm_config.json was joined to the LM path unchecked
    (``lm_files('/some/lm', '/etc/hostname') == [/etc/hostname]``), then hashed and handed to transformers."""
    import json

    from medvit.vlm.model import FORMAT, VisionLanguageModel, lm_files

    assert lm_files(tmp_path, "model.gguf") == [tmp_path / "model.gguf"]
    with pytest.raises(ValueError, match=r"gguf_file: must be a GGUF file name inside lm_path"):
        lm_files(tmp_path, gguf)
    d = tmp_path / "vlm"
    d.mkdir()
    (d / "vlm_config.json").write_text(json.dumps({"format": FORMAT, "config": {"gguf_file": gguf},
                                                   "lm": {"path": str(tmp_path)}}))
    with pytest.raises(ValueError, match=r"vlm_config\.json: key 'config\.gguf_file': must be a GGUF file name"):
        VisionLanguageModel.load(d)
    (d / "vlm_config.json").write_text(json.dumps({"format": FORMAT, "config": "x"}))
    with pytest.raises(ValueError, match=r"vlm_config\.json: key 'config' must be an object, got string"):
        VisionLanguageModel.load(d)
