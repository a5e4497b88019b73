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
