"""Sequence packing: several conversations per row with block-diagonal causal attention and per-conversation
positions — the packed row's summed loss equals the sum of the separate losses, no token attends across a
conversation boundary, and the packing rule keeps every conversation whole within the length bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medvit.vlm import (
    IGNORE_INDEX,
    ConversationDataset,
    PackedConversationDataset,
    collate_conversations,
    collate_packed,
    pack_by_length,
)
from medvit.vlm.model import packed_attention_mask

QUESTIONS = [("Is there a mass?", "yes"), ("Describe the image briefly.", "a small left effusion, no mass"),
             ("Where is the nodule?", "right upper zone")]


def _records(tmp_path, n_img=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n_img):
        Image.fromarray((rng.random((40, 40)) * 255).astype("uint8")).save(tmp_path / f"i{i}.png")
    recs = [{"id": f"c{k}", "images": [f"i{k}.png"],
             "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]}
            for k, (q, a) in enumerate(QUESTIONS)]
    recs.append({"id": "c-text", "images": [], "conversations": [
        {"from": "human", "value": "Is this a chest film?"}, {"from": "gpt", "value": "yes"},
        {"from": "human", "value": "Any effusion?"}, {"from": "gpt", "value": "no"}]})
    return recs


def _sum_ce(logits, labels):
    """Summed next-token CE over labelled tokens of each row (the HF causal-LM shift)."""
    lg, lab = logits[:, :-1].float(), labels[:, 1:]
    return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lab.reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction="sum")


def _forward(vlm, b):
    return vlm(b["input_ids"], b["attention_mask"], b["image_mask"], b["pixel_values"], labels=b["labels"],
               position_ids=b.get("position_ids"), segment_ids=b.get("segment_ids"))


@pytest.mark.parametrize("lm_fixture,attn", [("tiny_llama", "sdpa"), ("tiny_llama", "eager"), ("tiny_qwen", "sdpa")])
def test_packed_loss_equals_sum_of_separate_losses(make_vlm, request, tmp_path, lm_fixture, attn):
    vlm = make_vlm(lm=request.getfixturevalue(lm_fixture))
    vlm.lm.set_attn_implementation(attn)
    vlm.eval()
    ds = ConversationDataset(vlm, records=_records(tmp_path), image_root=tmp_path)
    items = [ds[i] for i in range(len(ds))]
    with torch.no_grad():
        sep = [_forward(vlm, collate_conversations([it])) for it in items]
        sep_sum = sum(_sum_ce(o.logits, collate_conversations([it])["labels"]) for o, it in zip(sep, items))
        # two packed rows (3 + 1 conversations, padded) in one batch
        b = collate_packed([items[:3], items[3:]], pad_id=0)
        out = _forward(vlm, b)
        packed_sum = _sum_ce(out.logits, b["labels"])
    assert torch.allclose(packed_sum, sep_sum, rtol=1e-5, atol=1e-4), (float(packed_sum), float(sep_sum))
    # HF's mean loss over the packed batch == summed separate losses / labelled-token count
    n_lab = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert torch.allclose(out.loss, sep_sum / n_lab, rtol=1e-5, atol=1e-5)
    # each conversation's logits inside the packed row equal its logits alone
    for r, rows in enumerate([(0, 1, 2), (3,)]):
        for k, i in enumerate(rows, 1):
            where = b["segment_ids"][r] == k
            assert torch.allclose(out.logits[r, where], sep[i].logits[0], atol=1e-4)
    # the first label of every packed conversation is ignored (no loss across a boundary)
    starts = torch.nonzero(b["position_ids"][0] == 0).flatten()
    assert (b["labels"][0, starts] == IGNORE_INDEX).all()


def test_no_attention_across_conversations(make_vlm, tmp_path):
    vlm = make_vlm()
    vlm.eval()
    ds = ConversationDataset(vlm, records=_records(tmp_path), image_root=tmp_path)
    a, b_, c = ds[0], ds[1], ds[2]
    other = dict(ds[3])  # replace the first conversation by a different one (other text, no image)
    with torch.no_grad():
        x = collate_packed([[a, b_, c]])
        y = collate_packed([[other, b_, c]])
        lx, ly = _forward(vlm, x).logits, _forward(vlm, y).logits
    la = len(a["input_ids"])
    lo = len(other["input_ids"])
    n_bc = len(b_["input_ids"]) + len(c["input_ids"])
    # conversations 2 and 3 see the same logits whatever precedes them
    assert torch.allclose(lx[0, la:la + n_bc], ly[0, lo:lo + n_bc], atol=1e-5)
    # and their gradient w.r.t. conversation 1's input embeddings is exactly 0
    emb = vlm.embed(x["input_ids"], x["image_mask"], x["pixel_values"]).detach().requires_grad_(True)
    mask = packed_attention_mask(x["segment_ids"], emb.dtype, boolean=False)
    out = vlm.lm(inputs_embeds=emb, attention_mask=mask, position_ids=x["position_ids"], use_cache=False)
    out.logits[0, la:].sum().backward()
    assert emb.grad[0, :la].abs().max() == 0
    assert emb.grad[0, la:].abs().max() > 0


def test_packed_attention_mask_table():
    seg = torch.tensor([[1, 1, 2, 2, 2, 0]])
    m = packed_attention_mask(seg, boolean=True)[0, 0].int()
    assert m.tolist() == [[1, 0, 0, 0, 0, 0],
                          [1, 1, 0, 0, 0, 0],
                          [0, 0, 1, 0, 0, 0],
                          [0, 0, 1, 1, 0, 0],
                          [0, 0, 1, 1, 1, 0],
                          [0, 0, 0, 0, 0, 1]]
    f = packed_attention_mask(seg, torch.float32)[0, 0]
    assert ((f == 0) == m.bool()).all() and (f[m == 0] == torch.finfo(torch.float32).min).all()


def test_pack_by_length_rules():
    lengths = [30, 70, 50, 120, 0, 20, 100, 10]
    bins = pack_by_length(lengths, 100, seed=3)
    used = sorted(i for b in bins for i in b)
    assert used == [0, 1, 2, 3, 5, 6, 7]  # every usable item exactly once, the unusable (0) one left out
    for b in bins:
        assert len(b) == 1 or sum(lengths[i] for i in b) <= 100  # whole conversations, within the bound
    assert [3] in bins  # the over-long item alone
    assert pack_by_length(lengths, 100, seed=3) == bins
    assert len(bins) < len(used)
    with pytest.raises(ValueError, match="max_length"):
        pack_by_length(lengths, 0)


def test_packed_dataset_trains_a_stage(make_vlm, tmp_path):
    """One training step of a stage with packing through the task's stage module: finite loss, gradients."""
    from medvit.vlm.train import LoraSettings, StageConfig, _StageModule, apply_stage

    vlm = make_vlm()
    apply_stage(vlm, StageConfig(stage=2, lm="full", packing=True), LoraSettings())
    base = ConversationDataset(vlm, records=_records(tmp_path), image_root=tmp_path, max_length=160)
    ds = PackedConversationDataset(base, max_length=160, seed=0)
    assert len(ds) < len(base) and sum(len(b) for b in ds.bins) == len(base)
    batch = collate_packed([ds[i] for i in range(len(ds))])
    assert batch["input_ids"].shape[1] <= 160
    loss = _StageModule(vlm)(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert vlm.projector.parameters().__next__().grad is not None
