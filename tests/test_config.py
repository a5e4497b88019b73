from dataclasses import dataclass, field
from typing import Literal

import pytest

from medvit.config import ConfigError, apply_overrides, from_dict, load_yaml, save_resolved


@dataclass
class Optim:
    lr: float = 1e-3  # learning rate
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Cfg:
    name: str = "x"
    epochs: int = 1
    mode: Literal["a", "b"] = "a"
    optim: Optim = field(default_factory=Optim)
    tags: list[str] = field(default_factory=list)
    weights: str | None = None

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


def test_nested_and_overrides(tmp_path):
    d = apply_overrides({"optim": {"lr": 0.1}}, ["optim.betas=[0.9, 0.95]", "epochs=3", "tags=[a, b]"])
    c = from_dict(Cfg, d)
    assert c.optim.lr == 0.1 and c.optim.betas == (0.9, 0.95) and c.epochs == 3 and c.tags == ["a", "b"]
    p = save_resolved(c, tmp_path)
    assert load_yaml(p)["optim"]["betas"] == [0.9, 0.95]


@pytest.mark.parametrize(
    "data, match",
    [
        ({"epoch": 3}, r"unknown config key 'epoch'.*did you mean 'epochs'"),
        ({"optim": {"lrr": 1}}, r"'optim.lrr'.*'lr'"),
        ({"epochs": "many"}, r"epochs: expected an integer"),
        ({"mode": "c"}, r"mode: 'c' is not one of"),
        ({"epochs": 0}, r"epochs must be >= 1"),
        ({"optim": {"betas": [1]}}, r"optim.betas: expected 2 values"),
    ],
)
def test_bad_config(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Cfg, data)


def test_bad_override():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["noequals"])
    with pytest.raises(ConfigError, match="is a value"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_every_task_config_key_is_documented_once_and_errors_quote_it():
    """Field documentation lives in dataclass metadata (``medvit.config.option``): every key of every registered
    task (nested TrainConfig included) has it, ``medvit list task NAME`` prints it, validation errors quote it."""
    from medvit.config import describe, format_fields
    from medvit.registry import REGISTRY
    from medvit.tasks import build_config

    names = REGISTRY.names("task")
    assert {"finetune_multilabel", "prompt_tune", "mae_pretrain", "extract_features"} <= set(names)
    for name in names:
        docs = describe(REGISTRY.get("task", name).config_cls)
        missing = [d.key for d in docs if not d.help]
        assert docs and missing == [], f"task {name}: undocumented config keys {missing}"
    text = format_fields(REGISTRY.get("task", "finetune_multilabel").config_cls)
    assert "train.batch_size" in text and "samples per micro-batch per process" in text
    with pytest.raises(ConfigError, match=r"batch_size must be an integer >= 1.*samples per micro-batch per process"):
        build_config(None, ["train.batch_size=0"], {"task": "finetune_multilabel"})
    with pytest.raises(ConfigError, match=r"label_fraction: expected a number.*fraction of training images kept"):
        build_config(None, ["label_fraction=abc"], {"task": "finetune_multilabel"})


@pytest.mark.parametrize("text, value", [("1e-300", 1e-300), ("1e9", 1e9), ("1.0e9", 1e9), ("-2E3", -2000.0),
                                         (".5e-3", 5e-4), ("1.0e+9", 1e9), ("[1e3, 2]", [1000.0, 2])])
def test_exponent_numbers_are_numbers_in_overrides_and_files(tmp_path, text, value):
    # YAML 1.1 (PyYAML's default) reads 1e-300 / 1e9 / 1.0e9 as strings; one YAML 1.2 / JSON rule here
    assert apply_overrides({}, [f"optim.lr={text}"])["optim"]["lr"] == value
    (tmp_path / "c.yaml").write_text(f"optim:\n  lr: {text}\n")
    assert load_yaml(tmp_path / "c.yaml")["optim"]["lr"] == value
    c = from_dict(Cfg, apply_overrides({}, ["optim.lr=1e-4", "epochs=1e1"]))
    assert c.optim.lr == 1e-4 and c.epochs == 10


@pytest.mark.parametrize("text", ["1__e5", "._e5", "1_0e5", "1e5_"])
def test_exponent_forms_with_underscores_stay_text_as_in_yaml_1_2(text):
    # review-fix D2: the exponent pattern took YAML 1.1's '_' separators ('1__e5' -> 100000.0) and '._e5' gave a
    # bare "could not convert string to float: '.e5'" naming no key
    from medvit.config import yaml_loads

    assert yaml_loads(text) == text
    with pytest.raises(ConfigError, match=rf"optim\.lr: expected a number, got '{text}'"):
        from_dict(Cfg, apply_overrides({}, [f"optim.lr={text}"]))


@pytest.mark.parametrize("text", ["0x_", "0b_", "2024-13-45"])
def test_scalars_yaml_matches_but_cannot_convert_name_the_override_and_the_file(tmp_path, text):
    # review-fix D2: PyYAML's constructor raised a bare ValueError for these ("invalid literal for int() with base
    # 16: ''"), which neither parse_override nor load_yaml caught: no override, no file named
    with pytest.raises(ConfigError, match=rf"(?s)override 'optim\.lr={text}': value is not valid YAML \('{text}' "
                                          r"cannot be read as (int|timestamp) .*quote it if it is text"):
        apply_overrides({}, [f"optim.lr={text}"])
    (tmp_path / "c.yaml").write_text(f"optim:\n  lr: [1, {text}]\n")
    with pytest.raises(ConfigError, match=rf"(?s)c\.yaml: not valid YAML \('{text}' cannot be read as "
                                          r".*line 2, column 11"):
        load_yaml(tmp_path / "c.yaml")


def test_saved_strings_that_look_like_numbers_read_back_as_strings(tmp_path):
    c = from_dict(Cfg, {"name": "1e5", "weights": "2.5E3"})
    got = load_yaml(save_resolved(c, tmp_path))
    assert got["name"] == "1e5" and got["weights"] == "2.5E3"
    assert load_yaml(save_resolved(from_dict(Cfg, {"optim": {"lr": 1e-300}}), tmp_path))["optim"]["lr"] == 1e-300


@pytest.mark.parametrize("text", ["1e5", "1.10", "010", "0x10", "1:30", "5297e12", "2024.10", "+5", "7"])
def test_str_fields_keep_the_text_written_numbers_stay_numbers(tmp_path, text):
    # breaker33 B4: model_version=1e5 became '100000.0', 1.10 '1.1', 010 '8' (YAML 1.1 octal)
    c = from_dict(Cfg, apply_overrides({}, [f"name={text}", f"tags=[{text}, a]", f"weights={text}"]))
    assert c.name == text and c.tags == [text, "a"] and c.weights == text
    (tmp_path / "c.yaml").write_text(f"name: {text}\noptim:\n  lr: {text}\n")
    got = from_dict(Cfg, load_yaml(tmp_path / "c.yaml"))
    assert got.name == text and type(got.optim.lr) is float
    assert load_yaml(save_resolved(got, tmp_path))["name"] == text
    c = from_dict(Cfg, apply_overrides({}, ["epochs=010", "optim.lr=1e-3"]))
    assert type(c.epochs) is int and c.epochs == 8 and type(c.optim.lr) is float and c.optim.lr == 1e-3
    with pytest.raises(ConfigError, match=r"name: expected a string, got True .*quote it"):
        from_dict(Cfg, apply_overrides({}, ["name=yes"]))


@pytest.mark.parametrize("text", ["1e400", "-1e400", ".inf", "-.inf", ".nan"])
def test_float_fields_must_be_finite(text):
    # breaker33 B5: 1e400 (-> inf) and .inf passed --dry-run for train.blr / weight_decay
    with pytest.raises(ConfigError, match=rf"optim.lr must be a finite number, got {__import__('re').escape(text)}"):
        from_dict(Cfg, apply_overrides({}, [f"optim.lr={text}"]))
