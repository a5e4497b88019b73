"""Breaker s32 B7/B7b/B7c/B8/B10: loss configs a task cannot run are refused at config resolution (`--dry-run`)
naming the key and the reason; a non-finite loss never ends in a saved model."""

from __future__ import annotations

import pytest
import torch

from medvit.config import ConfigError

SEG = {"task": "finetune_segmentation", "dataset_args": {"n": 60, "seed": 0, "image_size": 32}, "image_size": 32,
       "backbone_args": {"patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2}, "epochs": 1,
       "batch_size": 8, "labels": ["lung_right"]}


def _build(data, overrides=()):
    from medvit.tasks import build_config

    return build_config(None, list(overrides), dict(data))


@pytest.mark.parametrize("loss,match", [
    ({"name": "bce_dice", "args": {"dice_weight": float("nan")}}, r"loss\.args\.dice_weight must be a finite"),
    ({"name": "bce_dice", "args": {"eps": float("inf")}}, r"loss\.args\.eps must be a finite"),
    ({"name": "masked_bce", "args": {"pos_weight": [1.0, float("nan")]}}, r"loss\.args\.pos_weight\[1\] must be a "
                                                                          r"finite"),
])
def test_non_finite_loss_args_are_refused_naming_the_key(loss, match):
    """B10: NaN passed `dice_weight < 0 or eps <= 0` and trained an all-NaN model (rc 0)."""
    with pytest.raises(ConfigError, match=match):
        _build({**SEG, "loss": loss} if loss["name"] == "bce_dice" else {"task": "finetune_multilabel",
                                                                         "loss": loss})


@pytest.mark.parametrize("args,match", [
    ({"pos_weight": [1.0] * 6 + [-5.0]}, r"loss\.args\.pos_weight\[6\] must be a finite number >= 0, got -5"),
])
def test_negative_per_label_weights_are_refused(args, match):
    """B7b: a negative pos_weight trained to the end (rc 0): it rewards calling positives negative."""
    with pytest.raises(ValueError, match=match):
        _build({"task": "finetune_multilabel", "loss": {"name": "masked_bce", "args": args}})
    with pytest.raises(ValueError, match=r"loss\.args\.weight\[0\] must be a finite number >= 0"):
        _build({"task": "prompt_tune", "loss": {"name": "cross_entropy", "args": {"weight": [-1.0, 1.0]}}})


def test_all_zero_class_weights_are_refused_at_dry_run():
    """recheck N3: weight=[0,0,0,0,0] passed --dry-run; the run died of 0/0 with unrelated lr advice."""
    from medvit.tasks import build_config

    with pytest.raises(ValueError, match=r"loss\.args\.weight: every class weight is 0 .*at least one weight > 0"):
        build_config(RETINA, ["loss.name=cross_entropy", "loss.args.weight=[0,0,0,0,0]"])
    _, cfg = build_config(RETINA, ["loss.name=cross_entropy", "loss.args.weight=[0,1,0,0,0]"])
    assert cfg.loss.args == {"weight": [0, 1, 0, 0, 0]}


def test_segmentation_stops_on_a_non_finite_loss_and_saves_nothing(tmp_path, monkeypatch):
    """B10: finetune_segmentation had no non-finite guard (the Trainer has max_nonfinite): NaN weights were saved."""
    import medvit.tasks.finetune_segmentation as seg
    from medvit.tasks import run_task

    real = seg.direct_loss

    def nan_loss(spec, default, where="loss"):
        fn = real(spec, default, where)
        return lambda out, batch: fn(out, batch) * float("nan")

    monkeypatch.setattr(seg, "direct_loss", nan_loss)
    with pytest.raises(FloatingPointError, match=r"loss is not finite \(nan\) at epoch 1, step 1; nothing saved"):
        run_task(None, data={**SEG, "output_dir": str(tmp_path / "run")})
    assert not (tmp_path / "run" / "model").exists() and not (tmp_path / "run" / "summary.json").exists()


DEMO, PT = "pipelines/demo/cxr_phantom_demo.yaml", "pipelines/peft_fewshot/cxr_hint_aug_tiny_cpu.yaml"
RETINA, SEGY, BX = ("pipelines/dvpt/retina_tiny_cpu.yaml", "pipelines/segmentation/cxr_phantom_seg.yaml",
                    "pipelines/benchx/cpu_phantoms.yaml")


@pytest.mark.parametrize("path,overrides,match", [
    # B7b crash: softmax CE on multi-hot labels raised a raw RuntimeError traceback at run time
    (DEMO, ["loss.name=cross_entropy"], r"loss\.name: loss 'cross_entropy' takes class indices \(B,\); "
                                        r"finetune_multilabel feeds multi-hot labels"),
    (DEMO, ["loss.name=bce_dice"], r"loss 'bce_dice' reads batch \['mask'\], which finetune_multilabel does not feed"),
    (DEMO, ["loss.name=bce", "loss.args.target=nosuchkey"], r"reads batch \['nosuchkey'\]"),
    (DEMO, ["loss.name=look"], r"loss 'look' takes class indices"),
    (DEMO, ["loss.args.pos_weight=[1,2]"], r"loss\.args\.pos_weight: 2 values for a run with 7 outputs"),
    # B7b unclear: 'medvit run: error: label' after the data was built
    (SEGY, ["loss.name=masked_bce"], r"loss 'masked_bce' reads batch \['label'\], which finetune_segmentation does "
                                     r"not feed \(its batch: \['mask'\]\)"),
    (SEGY, ["loss.name=cross_entropy"], r"loss 'cross_entropy' reads batch \['label'\]"),
    (SEGY, ["loss.name=bce_dice", "loss.args.target=label"], r"reads batch \['label'\]"),
    (PT, ["loss.name=cross_entropy"], r"takes class indices \(B,\); prompt_tune \(multilabel\) feeds multi-hot"),
    (PT, ["loss.args.pos_weight=[1]"], r"loss\.args\.pos_weight: 1 values for a run with 7 outputs"),
    (RETINA, ["loss.name=masked_bce"], r"takes multi-hot labels \(B, K\); prompt_tune \(ordinal\) feeds class"),
    (RETINA, ["loss.name=cross_entropy", "loss.args.weight=[1,1]"], r"loss\.args\.weight: 2 values for a run with 5 "
                                                                    r"outputs"),
    # B7c: BenchX protocols
    (BX, ["protocols.classification.loss.name=bce_dice"], r"protocols\.classification\.loss\.name: loss 'bce_dice' "
                                                          r"reads batch \['mask'\]"),
    (BX, ["protocols.segmentation.loss.name=cross_entropy"], r"protocols\.segmentation\.loss\.name: .*\['label'\]"),
    (BX, ["protocols.retrieval.loss.name=bce"], r"protocols\.retrieval\.loss: the retrieval protocol trains with its "
                                                r"own objective and takes no loss"),
    (BX, ["protocols.report_generation.loss.name=bce"], r"protocols\.report_generation\.loss: .* takes no loss"),
    (BX, ["protocols.segmentation.loss.name=bce_dice", "protocols.segmentation.loss.args.dice_weight=.nan"],
     r"loss\.args\.dice_weight must be a finite number"),
    (BX, ["protocols.classification.loss.args.bogus=1"], r"protocols\.classification\.loss\.name: not given, and "
                                                         r"the classification protocol's default loss depends on"),
])
def test_dry_run_refuses_a_loss_the_task_cannot_feed(path, overrides, match):
    """B7 / B7b / B7c: these passed `--dry-run` and crashed, failed unclearly or trained wrongly at run time."""
    from medvit.tasks import build_config

    with pytest.raises(ValueError, match=match):
        build_config(path, overrides)


@pytest.mark.parametrize("path,overrides,name,args", [
    (SEGY, ["loss.args.dice_weight=2"], "bce_dice", {"dice_weight": 2.0}),
    (RETINA, ["loss.args.label_smoothing=0.1"], "cross_entropy", {"label_smoothing": 0.1}),
    (PT, ["loss.args.pos_weight=[1,1,1,1,1,1,1]"], "masked_bce", {"pos_weight": [1.0] * 7}),
    (DEMO, [], "masked_bce", {}),
])
def test_loss_args_without_a_name_tune_the_tasks_default_loss(path, overrides, name, args):
    """B8: `loss.args.X` alone meant masked_bce in every task ('masked_bce takes no argument dice_weight')."""
    from medvit.tasks import build_config

    _, cfg = build_config(path, overrides)
    assert (cfg.loss.name, cfg.loss.args) == (name, args)


def test_benchx_segmentation_loss_args_alone_name_the_protocol_default():
    from medvit.tasks import build_config

    with pytest.raises(ValueError, match=r"loss 'bce' takes no argument 'dice_weight'.*this task's default loss is "
                                         r"'bce'"):
        build_config(BX, ["protocols.segmentation.loss.args.dice_weight=2"])
    _, cfg = build_config(BX, ["protocols.segmentation.loss.args.target=mask"])
    assert cfg.protocol("segmentation", None).loss.name == "bce"


def test_dry_run_cli_refuses_cross_entropy_on_multilabel(capsys):
    from medvit.cli.main import main

    assert main(["run", "--dry-run", DEMO, "loss.name=cross_entropy"]) == 2
    assert "loss 'cross_entropy' takes class indices" in capsys.readouterr().err


def test_list_loss_name_documents_its_args_and_ranges(capsys):
    """B18: every loss error points to `medvit list loss`, which refused a NAME ('only tasks have documented
    configs')."""
    from medvit.cli.main import main

    assert main(["list", "loss", "bce_dice"]) == 0
    out = capsys.readouterr().out
    for text in ("dice_weight: float (default 1.0)", "eps: float (default 1.0)", "target: str (default 'mask')",
                 "dice_weight`` >= 0, ``eps`` > 0", "reads batch: ['mask']"):
        assert text in out, text
    assert main(["list", "loss", "masked_bce"]) == 0
    assert "one value per model output: pos_weight" in capsys.readouterr().out
    assert main(["list", "loss", "no_such_loss"]) == 2
    assert "unknown loss 'no_such_loss'" in capsys.readouterr().err


def test_benchx_classification_checks_the_loss_once_the_label_kind_is_known(tmp_path):
    """B7c: the classification protocol's problem (multi-label or not) is known only from the data; a multi-hot
    loss on class indices is refused naming the loss before any training (was a torch shape error)."""
    from medvit.config import from_dict
    from medvit.tasks.benchx_protocols import CellData, MethodSpec, ProtocolConfig, run_classification

    item = {"image": torch.zeros(1, 32, 32), "label": torch.tensor(1)}
    data = CellData([item] * 4, [item] * 2, [item] * 2, ["a", "b", "c"], "multiclass", image_size=32)
    proto = from_dict(ProtocolConfig, {"loss": {"name": "masked_bce"}})
    with pytest.raises(ConfigError, match=r"loss 'masked_bce' takes multi-hot labels \(B, K\); the classification "
                                          r"protocol \(multiclass\) feeds class indices"):
        run_classification(MethodSpec(), data, proto, 0, tmp_path)


def test_class_weights_are_checked_in_float32_and_a_zero_weight_batch_is_not_nan():
    """breaker33 B16: weight=[1e-320,0,0,0,0] passed (float64 "not all 0") but is all 0 in the float32 buffer, and
    [0,1,1,1,1] on a batch holding only class 0 gave 0/0 = NaN (the non-finite guard then stopped the run)."""
    from medvit.tasks import build_config
    from medvit.train.losses import CrossEntropy, MaskedBCE

    with pytest.raises(ValueError, match=r"loss\.args\.weight: every class weight is 0 in float32"):
        build_config(RETINA, ["loss.name=cross_entropy", "loss.args.weight=[1e-320,0,0,0,0]"])
    with pytest.raises(ValueError, match=r"loss\.args\.weight\[1\] is 1e\+39, beyond float32's range"):
        CrossEntropy(weight=[1.0, 1e39])
    with pytest.raises(ValueError, match=r"loss\.args\.pos_weight\[0\] is 1e\+39, beyond float32's range"):
        MaskedBCE(pos_weight=[1e39])
    ce = CrossEntropy(weight=[0.0, 1.0, 1.0, 1.0, 1.0], label_smoothing=0.1)
    logits = torch.randn(4, 5, requires_grad=True)
    loss = ce(logits, {"label": torch.zeros(4, dtype=torch.long)})
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(4, 5))
    mixed = ce(logits, {"label": torch.tensor([0, 1, 0, 2])})
    want = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 2]), weight=ce.weight,
                                             label_smoothing=0.1)
    assert torch.isfinite(mixed) and torch.equal(mixed, want)
