"""The one-line reading: checked on curves shaped like the design's Overfitting lab."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from dropout_demo.insights import Curve, p_label, reading, short_labels, trend_of


class M(NamedTuple):
    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float


def run(test_losses, train_loss=0.05, acc=0.95):
    return tuple(M(e, train_loss, 0.99, t, acc) for e, t in enumerate(test_losses, start=1))


# p = 0: minimum at epoch 14, then up to 0.20 by epoch 30.  p = 0.5: keeps falling to 0.14.
OVERFIT = run([0.5 - 0.027 * e for e in range(1, 15)] + [0.122 + 0.0049 * e for e in range(1, 17)])
HEALTHY = run([0.5 - 0.012 * e for e in range(1, 31)])


def test_trend_of_an_overfitting_run_names_the_turning_epoch():
    t = trend_of(OVERFIT)
    assert t.trend == "rising"
    assert t.best_epoch == 14
    assert t.last == pytest.approx(0.2004, abs=1e-3)
    assert trend_of(HEALTHY).trend == "falling"
    assert trend_of(run([0.3, 0.2, 0.201, 0.2, 0.202])).trend == "flat"


def test_small_wobble_after_the_minimum_is_not_a_turn():
    assert trend_of(run([0.3, 0.2, 0.203])).trend == "falling"


def test_overfitting_lab_reading_matches_the_design_example():
    text = reading([Curve("p = 0", OVERFIT), Curve("p = 0.50", HEALTHY)])
    assert text == (
        "p = 0 test loss turned upward after epoch 14 while p = 0.50 kept falling (0.20 vs 0.14)."
    )


def test_order_of_runs_does_not_change_the_story():
    a = reading([Curve("p = 0", OVERFIT), Curve("p = 0.50", HEALTHY)])
    b = reading([Curve("p = 0.50", HEALTHY), Curve("p = 0", OVERFIT)])
    assert a == b


def test_nothing_yet_and_waiting_for_first_epoch():
    assert reading([]).startswith("Nothing yet")
    assert "epoch 1" in reading([Curve("p = 0.50", ())])


def test_single_run_readings():
    one = reading([Curve("p = 0.50", run([0.31], acc=0.91))])
    assert one.startswith("p = 0.50 after 1 epoch: test loss 0.31")
    assert "91.0%" in one
    assert "still falling" in reading([Curve("p = 0.50", HEALTHY)])
    over = reading([Curve("p = 0", OVERFIT)])
    assert "turned upward after epoch 14" in over
    assert "overfitting" in over


def test_both_falling_names_the_lower_one():
    lower = run([0.5 - 0.013 * e for e in range(1, 11)])
    higher = run([0.5 - 0.010 * e for e in range(1, 11)])
    text = reading([Curve("p = 0", higher), Curve("p = 0.50", lower)])
    assert text == "Test loss still falling: p = 0.50 lowest at 0.37, p = 0 highest at 0.40."


def test_all_rising():
    a = run([0.3, 0.2, 0.25, 0.3])
    b = run([0.3, 0.15, 0.2, 0.25])
    text = reading([Curve("p = 0", a), Curve("p = 0.20", b)])
    assert text.startswith("Every test loss has turned upward")
    assert "lowest now p = 0.20 at 0.25" in text


def test_labels():
    assert p_label(0.0) == "p = 0"
    assert p_label(0.5) == "p = 0.50"
    assert short_labels([0.0, 0.5], ["a", "b"]) == ["p = 0", "p = 0.50"]
    assert short_labels([0.5, 0.5], ["a", "b"]) == ["a", "b"]
    # two runs with the same settings (e.g. differing only in learning rate or seed)
    assert short_labels([0.5, 0.5], ["a", "a"]) == ["a (#1)", "a (#2)"]


def test_runs_with_the_same_label_are_read_apart():
    text = reading([Curve("p = 0.50", OVERFIT), Curve("p = 0.50", HEALTHY)])
    assert "turned upward after epoch 14" in text
