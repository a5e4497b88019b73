"""review34 F2: an adapter's contract follows the one label-count rule of save_checkpoint / load_model, at save time
(not only later in `medvit infer`), and `medvit infer` words a mismatch with that same rule."""

from __future__ import annotations

import pytest

from medvit.models import WeightContract
from medvit.peft import AdapterError, apply_peft, save_adapter
from tests.peft.conftest import make_base


def _contract(names):
    return WeightContract(in_chans=1, input_size=(32, 32), label_names=list(names))


def test_save_adapter_refuses_a_contract_whose_labels_do_not_name_each_output(tmp_path):
    model = apply_peft(make_base(), "lora", {"r": 2})  # 3 outputs
    with pytest.raises(AdapterError, match=r"refusing to save adapter .*bad: contract\.label_names names 2 labels but "
                                           r"the model has 3 outputs"):
        save_adapter(model, tmp_path / "bad", contract=_contract("AB"))
    assert not (tmp_path / "bad").exists()  # nothing written
    save_adapter(model, tmp_path / "good", contract=_contract("ABC"))
    assert (tmp_path / "good" / "adapter_config.json").is_file()


def test_infer_words_a_label_count_mismatch_with_the_shared_rule(tmp_path):
    """An adapter written before the save-time check (contract edited here) is refused by load_for_inference with
    the text of medvit.models.checkpoint.label_count_problem."""
    import json

    import torch

    from medvit.infer.predictor import load_for_inference
    from medvit.models import create_model, save_checkpoint
    from medvit.models.checkpoint import sha256_file
    from medvit.models.mae_convert import load_pretrained_encoder

    args = dict(img_size=32, in_chans=1, embed_dim=48, depth=2, num_heads=4)
    torch.manual_seed(1)
    base = save_checkpoint(create_model("vit_tiny_patch16_224", num_classes=0, **args), tmp_path / "base")
    m = create_model("vit_tiny_patch16_224", num_classes=3, **args)
    load_pretrained_encoder(m, base)
    m = apply_peft(m, "lora", {"r": 2}, base_weights=str(base), base_weights_sha256=sha256_file(base /
                                                                                                 "model.safetensors"))
    ad = save_adapter(m, tmp_path / "ad", contract=_contract("ABC"))
    assert load_for_inference(ad)[1].label_names == ["A", "B", "C"]
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["contract"].update(label_names=["A", "B"], thresholds=[0.5, 0.5])
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"ad: contract\.label_names names 2 labels but the model has 3 outputs "
                                         r"\(model_args\.num_classes\)"):
        load_for_inference(ad)
