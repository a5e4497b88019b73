"""FIBER and PTP in the BenchX retrieval protocol: ITM re-ranking only reorders each image's top-k, PTP prompts
reach the training captions only, and a tiny end-to-end retrieval cell runs with both."""

from __future__ import annotations

import pytest
import torch

from medvit.models.fiber import FiberRetrieval
from medvit.tasks.benchx_protocols import CellData, MethodSpec, ProtocolConfig, run_retrieval


def _pair(num_fused: int = 1) -> FiberRetrieval:
    from transformers import BertConfig, BertModel

    from medvit.models import create_model

    torch.manual_seed(0)
    img = create_model("vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=2, img_size=32, patch_size=8,
                       in_chans=1, num_classes=0)
    txt = BertModel(BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=32), add_pooling_layer=False)
    return FiberRetrieval(img, txt, 16, num_fused=num_fused).eval()


def test_rerank_reorders_only_each_images_top_k():
    model = _pair()
    for g in model.fusion.gates():
        torch.nn.init.constant_(g, 1.0)  # open gates: ITM depends on the pair
    g = torch.Generator().manual_seed(0)
    images, ids = torch.rand(5, 1, 32, 32, generator=g), torch.randint(4, 40, (6, 9), generator=g)
    ids[2, 5:] = 0  # padding
    with torch.no_grad():
        sim = model.image(images) @ model.text(ids).T
        out = model.rerank(sim, images, ids, k=3)
        for i in range(5):
            top = set(sim[i].topk(3).indices.tolist())
            assert set(out[i].topk(3).indices.tolist()) == top  # the same candidates stay on top
            rest = [j for j in range(6) if j not in top]
            assert torch.equal(out[i, rest], sim[i, rest])  # everything else untouched
            itm = torch.sigmoid(model.itm_logits(images[[i] * 3], ids[sorted(top)]))
            order = [sorted(top)[j] for j in itm.argsort(descending=True).tolist()]
            assert out[i].topk(3).indices.tolist() == order  # ordered by the fused matching probability
    assert torch.equal(_pair(0).rerank(sim, images, ids, 3), sim)  # no fusion: ITC ranking as is
    with pytest.raises(ValueError, match="needs FIBER fusion"):
        _pair(0).itm_logits(images, ids)


def _cell(n: int = 40) -> CellData:
    from medvit.data import build_dataset

    split = {s: [build_dataset("cxr_phantom_benchx", s, n=n, seed=0, image_size=32)[i]
                 for i in range(len(build_dataset("cxr_phantom_benchx", s, n=n, seed=0, image_size=32)))]
             for s in ("train", "val", "test")}
    names = list(build_dataset("cxr_phantom_benchx", "train", n=4, seed=0, image_size=32).label_names)
    return CellData(split["train"], split["val"], split["test"], names, "multilabel", image_size=32)


@pytest.mark.slow
def test_retrieval_cell_with_fiber_and_ptp(tmp_path, monkeypatch):
    data = _cell()
    assert any(it["boxes"] for it in data.train)  # finding boxes from the phantom masks
    from medvit.data import ptp as ptp_mod

    seen: list[str] = []
    real = ptp_mod.position_prompt
    monkeypatch.setattr(ptp_mod, "position_prompt", lambda *a, **k: seen.append(out := real(*a, **k)) or out)
    method = MethodSpec(name="tiny", backbone="vit_tiny_patch16_224",
                        backbone_args={"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2})
    proto = ProtocolConfig(lr=1e-3, steps=3, batch_size=8, warmup_steps=0, embed_dim=16, ks=[1, 5],
                           text_encoder="bert", text_layers=2, text_width=32, text_heads=4, fiber_fused=1, ptp=True,
                           eval_every=3)
    res = run_retrieval(method, data, proto, seed=0, out=tmp_path / "r")
    assert 0.0 <= res["test"]["hits@1"] <= 1.0 and res["test"]["zeroshot_auroc"] == res["test"]["zeroshot_auroc"]
    assert len(seen) == 3 * 8  # one prompt per training caption per step, none at evaluation
    assert any(" The block " in s for s in seen)


def test_protocol_config_refuses_fiber_without_bert():
    with pytest.raises(ValueError, match="needs text_encoder: bert"):
        ProtocolConfig(fiber_fused=2)
    with pytest.raises(ValueError, match="text_encoder must be"):
        ProtocolConfig(text_encoder="clip")


@pytest.mark.slow
def test_segmentation_cell_with_hst_side_network(tmp_path):
    """HST in the BenchX segmentation protocol: UPerHead on the side network's pyramid, end to end in a cell."""
    from medvit.models.upernet import UperNetPyramid
    from medvit.peft import apply_peft
    from tests.peft.conftest import make_base

    hst = apply_peft(make_base(patch_size=8), "hst", {"side_dims": [4, 6, 8, 8]})
    seg = UperNetPyramid(hst, num_classes=1)
    x = torch.rand(2, 1, 32, 32)
    assert seg(x).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="no forward_pyramid"):
        UperNetPyramid(make_base())
    data = _cell()
    method = MethodSpec(name="hst", backbone="vit_tiny_patch16_224",
                        backbone_args={"patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2},
                        peft="hst", peft_config={"side_dims": [8, 8, 16, 16]})
    from medvit.tasks.benchx_protocols import run_segmentation

    res = run_segmentation(method, data, ProtocolConfig(lr=1e-3, steps=3, batch_size=8, warmup_steps=0, eval_every=3),
                           seed=0, out=tmp_path / "s")
    assert 0.0 <= res["test"]["dice"] <= 1.0 and res["steps"] == 3
