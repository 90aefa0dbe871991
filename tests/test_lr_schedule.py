"""The learning-rate schedule: "constant" keeps the seed recipe (and its run keys), "one-cycle"
rises to lr and falls to 0, and fit applies it batch by batch."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dropout_demo import training
from dropout_demo.config import PRESETS, ConfigError, TrainConfig
from dropout_demo.jobs.identity import resolved, run_key
from dropout_demo.training import ONE_CYCLE_START, ONE_CYCLE_WARMUP, scheduled_lr


def test_constant_by_default_and_validated():
    assert TrainConfig().lr_schedule == "constant"
    assert all(c.lr_schedule == "constant" for n, c in PRESETS.items() if n != "Pen strokes")
    with pytest.raises(ConfigError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "lr_schedule"}
    assert TrainConfig.from_dict(old) == TrainConfig()  # records saved before the field
    assert TrainConfig().lr_label() == "lr 0.001"
    assert TrainConfig(lr=3e-3, lr_schedule="one-cycle").lr_label() == "lr 0.003 one-cycle"


def test_run_keys_leave_the_default_out():
    config = TrainConfig(device="cpu", precision="fp32")
    assert "lr_schedule" not in resolved(config)
    cycled = config.replace(lr_schedule="one-cycle")
    assert resolved(cycled)["lr_schedule"] == "one-cycle"
    assert run_key(cycled) != run_key(config)


def test_constant_schedule_is_the_learning_rate_throughout():
    config = TrainConfig(lr=2e-3)
    assert {scheduled_lr(config, s, 100) for s in range(100)} == {2e-3}


@pytest.mark.parametrize("steps", [1, 2, 7, 938, 2814])
def test_one_cycle_rises_then_falls_to_zero(steps):
    config = TrainConfig(lr=3e-3, lr_schedule="one-cycle")
    lrs = [scheduled_lr(config, s, steps) for s in range(steps)]
    assert all(0.0 <= v <= 3e-3 + 1e-12 for v in lrs)
    if steps == 1:
        assert lrs == [pytest.approx(3e-3 * ONE_CYCLE_START)]
        return
    assert lrs[0] == pytest.approx(3e-3 * ONE_CYCLE_START)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    top = max(range(steps), key=lrs.__getitem__)
    assert all(a <= b for a, b in itertools.pairwise(lrs[: top + 1]))  # up to the peak
    assert all(a >= b for a, b in itertools.pairwise(lrs[top:]))  # then down
    if steps > 100:
        assert top / (steps - 1) == pytest.approx(ONE_CYCLE_WARMUP, abs=2 / steps)
        assert lrs[top] == pytest.approx(3e-3, rel=1e-3)
        mid = round((steps - 1) * (ONE_CYCLE_WARMUP + 1) / 2)  # half-way down the cosine
        assert lrs[mid] == pytest.approx(1.5e-3, rel=0.01)


def test_fit_applies_the_schedule_batch_by_batch(mnist, monkeypatch):
    seen: list[float] = []

    class Recording(torch.optim.Adam):
        def step(self, closure=None):
            if self.defaults["lr"] == 2e-3:  # the run's optimizer, not the layout probe's
                seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(training.torch.optim, "Adam", Recording)
    config = TrainConfig(
        train_size=256, epochs=2, batch_size=64, eval_size=200, lr=2e-3, lr_schedule="one-cycle"
    )
    result = training.fit(config, mnist)
    assert result.status == "done"
    steps = config.epochs * math.ceil(config.train_size / config.batch_size)
    assert seen == [scheduled_lr(config, s, steps) for s in range(steps)]
    seen.clear()
    constant = training.fit(config.replace(lr_schedule="constant"), mnist)
    assert seen == [2e-3] * steps
    changed = [
        not torch.equal(a, b)
        for a, b in zip(
            result.model.state_dict().values(), constant.model.state_dict().values(), strict=True
        )
    ]
    assert any(changed)
