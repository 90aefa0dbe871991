"""TrainConfig validation: every bad field named in one error."""

import pytest

from dropout_demo.config import PRESETS, ConfigError, TrainConfig


def test_defaults_are_the_seed_recipe():
    c = TrainConfig()
    assert (c.p, c.epochs, c.lr, c.batch_size, c.train_size) == (0.5, 5, 1e-3, 64, 60_000)


def test_all_problems_listed_at_once():
    with pytest.raises(ConfigError) as err:
        TrainConfig(p=1.0, epochs=0, lr=0, batch_size=0, train_size=60_001)
    message = str(err.value)
    for field in ("p must", "epochs must", "lr must", "batch_size must", "train_size must"):
        assert field in message
    assert len(err.value.problems) == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p": -0.01},
        {"p": float("nan")},
        {"epochs": 2.5},
        {"lr": float("inf")},
        {"lr": -1e-3},
        {"train_size": 0},
        {"eval_size": 10_001},
        {"epoch_eval_size": 0},
        {"epoch_eval_size": 10_001},
        {"epoch_eval_size": 2.0},
        {"seed": -1},
        {"device": "tpu"},
        {"epochs": True},
    ],
)
def test_single_invalid_field(kwargs):
    with pytest.raises(ConfigError):
        TrainConfig(**kwargs)


def test_boundaries_accepted():
    TrainConfig(p=0.0, epochs=1, train_size=1, batch_size=1, eval_size=1, device="cuda:1")
    TrainConfig(p=0.99, train_size=60_000)


def test_round_trip_and_label():
    c = TrainConfig(p=0.25, train_size=1_000, epochs=30)
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert c.label() == "p=0.25 · 1,000 imgs · 30 ep"
    assert c.work == 30_000
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({**c.to_dict(), "momentum": 0.9})


def test_old_dicts_without_epoch_eval_size_still_load():
    old = TrainConfig().to_dict()
    del old["epoch_eval_size"]
    assert TrainConfig.from_dict(old) == TrainConfig()
    assert TrainConfig(epoch_eval_size=10_000).epoch_eval_size == 10_000


def test_presets():
    assert PRESETS["Seed recipe"] == TrainConfig()
    lab = PRESETS["Overfitting lab"]
    assert (lab.train_size, lab.epochs, lab.p) == (1_000, 30, 0.5)
