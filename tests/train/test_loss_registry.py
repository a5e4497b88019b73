"""Registry kind ``loss``: every registered loss runs forward/backward on its example; specs from YAML; the loop
uses a loss by name; hand-computed values for the basic losses."""

from __future__ import annotations

import math

import pytest
import torch

from medvit.config import ConfigError, from_dict
from medvit.registry import REGISTRY
from medvit.train.losses import LossSpec, build_loss, loss_step


def _float_leaves(out):
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        return [t for v in out.values() for t in _float_leaves(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _float_leaves(v)]
    return []


def _with_grad(out):
    if isinstance(out, torch.Tensor):
        return out.detach().clone().requires_grad_(True) if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: _with_grad(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_with_grad(v) for v in out)
    return out


@pytest.mark.parametrize("name", REGISTRY.names("loss"))
def test_every_registered_loss_forward_backward(name):
    entry = REGISTRY.entry("loss", name)
    assert callable(entry.meta.get("example")), f"loss {name} registered without an example"
    output, batch, *args = entry.meta["example"](torch.Generator().manual_seed(0))
    output = _with_grad(output)
    loss_fn = build_loss({"name": name, "args": args[0] if args else {}})
    batch = loss_fn.prepare(batch)
    res = loss_fn(output, batch)
    loss = res if isinstance(res, torch.Tensor) else res["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss), name
    loss.backward()
    grads = [t.grad for t in _float_leaves(output) if t.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads), f"{name}: no gradient reaches the output"


def test_basic_losses_registered():
    assert {"masked_bce", "cross_entropy"} <= set(REGISTRY.names("loss"))


def test_masked_bce_hand_computed():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[True, True], [True, False]])
    want = (math.log(2) + math.log(1 + math.exp(2)) + math.log(1 + math.exp(-1))) / 3
    got = build_loss("masked_bce")(logits, {"label": y, "label_mask": mask})
    assert float(got) == pytest.approx(want, rel=1e-6)
    # pos_weight scales the positive term only
    got = build_loss({"name": "masked_bce", "args": {"pos_weight": [2.0, 1.0]}})(logits, {"label": y,
                                                                                         "label_mask": mask})
    assert float(got) == pytest.approx((2 * math.log(2) + math.log(1 + math.exp(2)) + math.log(1 + math.exp(-1)))
                                       / 3, rel=1e-6)


def test_cross_entropy_hand_computed_with_smoothing():
    logits = torch.tensor([[1.0, 0.0, -1.0]])
    lse = math.log(math.e + 1 + math.exp(-1))
    logp = [1 - lse, -lse, -1 - lse]
    eps = 0.3
    want = -((1 - eps) * logp[0] + eps / 3 * sum(logp))
    got = build_loss(LossSpec("cross_entropy", {"label_smoothing": eps}))(logits, {"label": torch.tensor([0])})
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_spec_errors_name_the_key():
    with pytest.raises(ValueError, match=r"loss.name: unknown loss 'masked_bc'.*masked_bce"):
        LossSpec("masked_bc")
    with pytest.raises(ValueError, match=r"loss.args.label_smothing.*label_smoothing"):
        LossSpec("cross_entropy", {"label_smothing": 0.1})
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        build_loss({"name": "cross_entropy", "args": {"label_smoothing": 2.0}})
    with pytest.raises(KeyError, match=r"needs batch keys \['label'\]"):
        loss_step("cross_entropy")(torch.nn.Identity(), {"image": torch.zeros(2, 3)})


def test_loss_args_are_coerced_once_per_build(monkeypatch):
    """review-A 6: build_loss coerced the arguments LossSpec had already coerced (type hints parsed, names and
    finite values checked twice per build). One coercion per spec; the loss gets the coerced values."""
    import medvit.train.losses as losses

    calls = []
    real = losses.coerce_loss_args
    monkeypatch.setattr(losses, "coerce_loss_args", lambda name, args: calls.append(name) or real(name, args))
    loss = build_loss({"name": "cross_entropy", "args": {"label_smoothing": 0}})  # int 0 -> float 0.0
    assert calls == ["cross_entropy"]
    assert isinstance(loss.label_smoothing, float) and loss.label_smoothing == 0.0
    calls.clear()
    spec = LossSpec("masked_bce")
    build_loss(spec)
    assert calls == ["masked_bce"]


def test_task_config_takes_loss_from_yaml():
    from medvit.tasks.finetune_multilabel import FinetuneMultilabelConfig

    cfg = from_dict(FinetuneMultilabelConfig, {"backbone": "vit_tiny_patch16_224", "image_size": 32,
                                               "backbone_args": {"patch_size": 8},
                                               "loss": {"name": "masked_bce", "args": {"pos_weight": [1.0]}}})
    assert cfg.loss.name == "masked_bce" and cfg.loss.args == {"pos_weight": [1.0]}
    with pytest.raises((ConfigError, ValueError), match="loss"):
        from_dict(FinetuneMultilabelConfig, {"loss": {"name": "nope"}})


def test_loop_trains_with_a_loss_by_name_and_calls_its_hooks():
    from medvit.train import TrainConfig, Trainer
    from medvit.train.losses import CrossEntropy

    class Counting(CrossEntropy):
        def __init__(self):
            super().__init__()
            self.calls = []

        def on_train_step(self, step, total):
            self.calls.append((step, total))

    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    y = (x[:, 0] > 0).long()
    data = [{"image": x[i], "label": y[i]} for i in range(32)]
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    loss = Counting()
    cfg = TrainConfig(steps=20, batch_size=8, lr=0.1, weight_decay=0.0, progress=False, schedule="constant")
    res = Trainer(model, cfg, data, loss_step(loss)).fit()
    assert loss.calls == [(s, 20) for s in range(20)]
    assert res.losses[-1] < res.losses[0]


@pytest.mark.parametrize("preset,override,match", [
    ("cxr_student_tinyvit_tiny_cpu", "loss.args.k=abc", r"loss\.args\.k: expected an integer, got 'abc'"),
    ("cxr_student_tinyvit_tiny_cpu", "loss.args.gt_weight=[1]", r"loss\.args\.gt_weight: expected a number"),
    ("cxr_ewa_tiny_cpu", "ewa.experts=0", r"ewa\.experts must be >= 2, got 0"),
    ("cxr_ewa_tiny_cpu", "ewa.share_rate=2", r"ewa\.share_rate must be in \[0, 1\], got 2"),
    ("cxr_ewa_tiny_cpu", "ewa.bogus=1", r"unknown config key 'ewa\.bogus'"),
    ("cxr_ewa_tiny_cpu", "ewa.layers=[99]", r"ewa\.layers \[99\] outside the model's blocks 0\.\.3"),
])
def test_loss_and_ewa_value_errors_are_caught_at_config_time_naming_the_field(preset, override, match):
    """Breaker F5: these passed --dry-run (or named no field: 'fits none of EWAConfig | None') and failed only
    after the teacher pass / model build had started."""
    from medvit.tasks import build_config
    from medvit.tasks.presets import preset_path

    with pytest.raises(ValueError, match=match):
        build_config(preset_path(f"distill20/{preset}"), [override])


@pytest.mark.parametrize("preset,override,match", [
    ("cxr_student_tinyvit_tiny_cpu", "loss.args.k=1000", r"loss\.args\.k: top-1000 of a run with 7 labels"),
    ("cxr_student_tinyvit_tiny_cpu", "loss.args.k=0", r"loss\.args\.k must be >= 1, got 0"),
    ("cxr_student_tinyvit_tiny_cpu", "loss.args.gt_weight=5", r"loss\.args\.gt_weight must be in \[0, 1\], got 5"),
    ("cxr_lt_deit_lt_tiny_cpu", "loss.args.alpha=5", r"loss\.args \(deit_lt\): alpha and drw_start must be in"),
    ("cxr_lt_deit_lt_tiny_cpu", "loss.args.class_counts=[1,2]", r"loss\.args\.class_counts: 2 counts for a run "
                                                                r"with 7 labels"),
])
def test_loss_values_are_checked_at_config_time_against_the_dataset_labels(preset, override, match):
    """Breaker F5 (re-check): `loss.args.k=1000` (and k=0, gt_weight=5) passed `--dry-run` and were refused only at
    run start, after the teacher pass had begun. Config resolution now checks the values as the loss will, and
    top-k against the registered dataset's label count; the DeiT-LT teacher is not read at config time."""
    from medvit.tasks import build_config
    from medvit.tasks.presets import preset_path

    with pytest.raises(ConfigError, match=match):
        build_config(preset_path(f"distill20/{preset}"), [override, "loss.args.teacher=/nonexistent/teacher"])
    spec, cfg = build_config(preset_path(f"distill20/{preset}"), ["loss.args.teacher=/nonexistent/teacher"])
    assert cfg.loss.args["teacher"] == "/nonexistent/teacher"  # valid values (teacher written later) still resolve


def test_dry_run_refuses_a_top_k_above_the_label_count(capsys):
    from medvit.cli.main import main
    from medvit.tasks.presets import preset_path

    rc = main(["run", "--dry-run", str(preset_path("distill20/cxr_student_tinyvit_tiny_cpu")), "loss.args.k=1000"])
    assert rc == 2
    assert "loss.args.k: top-1000 of a run with 7 labels; give k <= 7" in capsys.readouterr().err


def test_unknown_loss_lists_the_registered_losses():
    with pytest.raises(ValueError, match="Registered losses: "):
        build_loss("no_such_loss_xyz")


def _grad_and_value(fn, logits):
    x = logits.detach().clone().requires_grad_(True)
    v = fn(x)
    v.backward()
    return v.detach(), x.grad


def test_task_default_losses_equal_the_formulas_they_replace():
    """prompt_tune / BenchX / finetune_segmentation now build their default loss from the registry: the value and
    gradient are bit-identical (torch.equal) to the code each task held before."""
    import torch.nn.functional as F

    from medvit.train.losses import direct_loss, masked_bce

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, generator=g)
    y = (torch.rand(6, 7, generator=g) > 0.5).float()
    mask = torch.rand(6, 7, generator=g) > 0.2
    grades = torch.randint(0, 7, (6,), generator=g)
    seg = torch.randn(4, 2, 16, 16, generator=g)
    masks = (torch.rand(4, 2, 16, 16, generator=g) > 0.6).float()

    def soft_dice(lg, t, eps=1.0):  # finetune_segmentation.soft_dice_loss as it was
        p = torch.sigmoid(lg)
        inter = (p * t).sum((2, 3))
        return (1 - (2 * inter + eps) / (p.sum((2, 3)) + t.sum((2, 3)) + eps)).mean()

    cases = [  # (default spec of the task, former formula, logits, batch)
        (LossSpec("masked_bce"), lambda lg: masked_bce(lg, y, mask), logits, {"label": y, "label_mask": mask}),
        (LossSpec("cross_entropy"), lambda lg: F.cross_entropy(lg.float(), grades.long()), logits, {"label": grades}),
        (LossSpec("bce"), lambda lg: F.binary_cross_entropy_with_logits(lg.float(), y.float()), logits, {"label": y}),
        (LossSpec("bce", {"target": "mask"}), lambda lg: F.binary_cross_entropy_with_logits(lg.float(), masks),
         seg, {"mask": masks}),
        (LossSpec("bce_dice"), lambda lg: F.binary_cross_entropy_with_logits(lg, masks) + soft_dice(lg, masks), seg,
         {"mask": masks}),
    ]
    for spec, former, lg, batch in cases:
        loss = direct_loss(None, spec)
        new_v, new_g = _grad_and_value(lambda x, loss=loss, batch=batch: loss(x, batch), lg)
        old_v, old_g = _grad_and_value(former, lg)
        assert torch.equal(new_v, old_v) and torch.equal(new_g, old_g), spec


@pytest.mark.parametrize("data,get", [
    ({"task": "prompt_tune", "loss": {"name": "masked_bce", "args": {"pos_weight": [2.0] * 7}}},
     lambda c: c.loss),
    ({"task": "finetune_segmentation", "loss": {"name": "bce_dice", "args": {"dice_weight": 0.5}}},
     lambda c: c.loss),
    ({"task": "benchx_grid", "methods": [{"name": "r", "backbone": "vit_tiny_patch16_224"}],
      "protocols": {"segmentation": {"loss": {"name": "bce_dice"}}}},
     lambda c: c.protocol("segmentation", None).loss),
])
def test_prompt_tune_benchx_and_segmentation_take_their_loss_by_name(data, get):
    from medvit.tasks import build_config

    spec, cfg = build_config(None, [], data)
    loss = get(cfg)
    assert isinstance(loss, LossSpec) and loss.name == data.get("loss", {}).get("name", "bce_dice")


@pytest.mark.parametrize("data,match", [
    ({"task": "prompt_tune", "loss": {"name": "cross_entropy", "args": {"label_smoothing": 2}}},
     r"loss\.args \(cross_entropy\): label_smoothing must be in \[0, 1\), got 2"),
    ({"task": "finetune_segmentation", "loss": {"name": "bce_dice", "args": {"dice_weight": -1}}},
     r"loss\.args \(bce_dice\): dice_weight must be >= 0"),
    ({"task": "benchx_grid", "methods": [{"name": "r", "backbone": "vit_tiny_patch16_224"}],
      "protocols": {"segmentation": {"loss": {"name": "bce_dice", "args": {"eps": 0}}}}},
     r"protocols\.segmentation.*eps > 0"),
])
def test_task_loss_values_are_refused_at_config_time(data, match):
    from medvit.tasks import build_config

    with pytest.raises(ValueError, match=match):
        build_config(None, [], data)


@pytest.mark.parametrize("task", ["prompt_tune", "finetune_segmentation"])
def test_a_loss_needing_the_loops_hooks_is_refused_by_a_task_that_calls_it_directly(task):
    from medvit.tasks import build_config

    with pytest.raises(ValueError, match=r"loss\.name: loss 'deit_lt' needs the training loop's setup / prepare"):
        build_config(None, [], {"task": task, "loss": {"name": "deit_lt", "args": {"teacher": "/x"}}})


def test_prompt_tune_trains_with_the_loss_from_yaml(tmp_path):
    """The YAML loss is the one trained with: the default equals an explicit masked_bce bit for bit, a positive
    weight changes the run."""
    from medvit.tasks import run_task

    base = dict(task="prompt_tune", dataset="cxr_phantom", dataset_args=dict(n=40, image_size=32, seed=0),
                method="lora", method_config=dict(r=2), seeds=[0], ood_fpr=0.0, backbone="vit_tiny_patch16_224",
                backbone_args=dict(embed_dim=32, depth=1, num_heads=2, patch_size=8), image_size=32,
                train=dict(epochs=1, batch_size=16, lr=1e-2, progress=False))
    runs = {}
    for name, loss in (("default", None), ("explicit", {"name": "masked_bce"}),
                       ("weighted", {"name": "masked_bce", "args": {"pos_weight": [5.0] * 7}})):
        s = run_task(None, [], data={**base, "output_dir": str(tmp_path / name), "loss": loss})
        runs[name] = s["seeds"][0]["final_loss"]
    assert runs["default"] == runs["explicit"] != runs["weighted"]
