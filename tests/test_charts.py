"""Chart builders: traces, colours, dash styles and uirevision from plain inputs."""

from __future__ import annotations

from typing import NamedTuple

import plotly.graph_objects as go
import pytest

from dropout_demo import charts
from dropout_demo.charts import Series


class M(NamedTuple):  # the fields of training.EpochMetrics that charts read
    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float


def metrics(n: int, offset: float = 0.0) -> tuple[M, ...]:
    return tuple(
        M(e, 1.0 / e + offset, 0.9 + e / 100, 1.2 / e + 0.05 + offset, 0.88 + e / 100)
        for e in range(1, n + 1)
    )


RUNS = [
    Series("p=0.00", charts.colour_for(0), metrics(4), epochs=30),
    Series("p=0.50", charts.colour_for(1), metrics(3, 0.1), epochs=30),
]


@pytest.mark.parametrize("build", [charts.loss_figure, charts.accuracy_figure])
def test_train_solid_test_dashed_one_colour_per_run(build):
    fig = build(RUNS)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 4
    by_name = {t.name: t for t in fig.data}
    for run in RUNS:
        train, test = by_name[f"{run.name} · train"], by_name[f"{run.name} · test"]
        assert train.line.color == test.line.color == run.colour
        assert train.line.dash == "solid"
        assert test.line.dash == "dash"
        assert list(train.x) == [m.epoch for m in run.metrics]
    assert by_name["p=0.00 · train"].line.color != by_name["p=0.50 · train"].line.color


def test_loss_and_accuracy_values_come_from_the_right_fields():
    loss = {t.name: t for t in charts.loss_figure(RUNS).data}
    acc = {t.name: t for t in charts.accuracy_figure(RUNS).data}
    ms = RUNS[0].metrics
    assert list(loss["p=0.00 · train"].y) == [m.train_loss for m in ms]
    assert list(loss["p=0.00 · test"].y) == [m.test_loss for m in ms]
    assert list(acc["p=0.00 · train"].y) == [m.train_acc for m in ms]
    assert list(acc["p=0.00 · test"].y) == [m.test_acc for m in ms]


def test_gap_is_test_minus_train_loss():
    fig = charts.gap_figure(RUNS)
    assert [t.name for t in fig.data] == ["p=0.00", "p=0.50"]
    for trace, run in zip(fig.data, RUNS, strict=True):
        assert trace.line.color == run.colour
        expected = [m.test_loss - m.train_loss for m in run.metrics]
        assert list(trace.y) == pytest.approx(expected)


def test_each_chart_keeps_its_own_constant_uirevision():
    revisions = []
    for build in (charts.loss_figure, charts.accuracy_figure, charts.gap_figure):
        a, b = build(RUNS[:1]), build(RUNS)
        assert a.layout.uirevision == b.layout.uirevision  # same across redraws
        revisions.append(a.layout.uirevision)
    assert len(set(revisions)) == 3


def test_axes_titled_and_epoch_ticks_are_integers():
    for build in (charts.loss_figure, charts.accuracy_figure, charts.gap_figure):
        fig = build(RUNS)
        assert fig.layout.xaxis.title.text == "epoch"
        assert fig.layout.yaxis.title.text
        assert fig.layout.xaxis.tickmode == "linear"
        assert float(fig.layout.xaxis.dtick).is_integer()
        # the planned 30 epochs fix the frame, so live curves grow into it
        assert tuple(fig.layout.xaxis.range) == (0.5, 30.5)


def test_tick_step_stays_readable():
    assert charts._epoch_step(5) == 1
    assert charts._epoch_step(30) == 5
    assert charts._epoch_step(200) == 20


def test_empty_input_says_what_to_do():
    for runs in ([], [Series("p=0.50", "#000", (), epochs=5)]):
        fig = charts.loss_figure(runs)
        assert not fig.data
        assert fig.layout.annotations[0].text == charts.EMPTY_MESSAGE
    assert not charts.loss_figure(RUNS).layout.annotations


def test_colours_are_stable_and_distinct():
    assert len({charts.colour_for(i) for i in range(10)}) == 10
    assert charts.colour_for(10) == charts.colour_for(0)


def test_apply_view_restores_zoom_and_hidden_traces():
    fig = charts.apply_view(
        charts.loss_figure(RUNS), {"x": [3, 12], "y": None, "hidden": ["p=0.50 · test"]}
    )
    assert tuple(fig.layout.xaxis.range) == (3, 12)
    assert tuple(fig.layout.yaxis.range or ()) == ()  # y keeps its default
    visible = {t.name: t.visible for t in fig.data}
    assert visible["p=0.50 · test"] == "legendonly"
    assert visible["p=0.00 · test"] is None
    assert charts.apply_view(charts.loss_figure(RUNS), None).layout.xaxis.range == (0.5, 30.5)


class MI(NamedTuple):  # EpochMetrics with the number of test images each test point used
    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    test_images: int


def subset_then_whole(n: int, offset: float = 0.0, done: bool = True) -> tuple[MI, ...]:
    """Epochs 1..n-1 on a 2,000-image subset, epoch n on all 10,000 (when ``done``)."""
    return tuple(MI(*m, 10_000 if done and m.epoch == n else 2_000) for m in metrics(n, offset))


def test_the_whole_set_point_is_set_apart_and_the_chart_says_what_was_used():
    runs = [
        Series("p=0.00", charts.colour_for(0), subset_then_whole(4), epochs=4),
        Series("p=0.50", charts.colour_for(1), subset_then_whole(4, 0.1), epochs=4),
    ]
    for build, field in ((charts.loss_figure, "test_loss"), (charts.accuracy_figure, "test_acc")):
        fig = build(runs)
        by_name = {t.name: t for t in fig.data}
        for run in runs:
            test, train = by_name[f"{run.name} · test"], by_name[f"{run.name} · train"]
            # the line stops at epoch 3; epoch 4 (other images) stands apart as a diamond
            assert list(test.x) == [1, 2, 3, None, 4]
            ys = [getattr(m, field) for m in run.metrics]
            assert list(test.y) == [*ys[:3], None, ys[3]]
            assert list(test.marker.symbol) == ["circle"] * 4 + [charts.FINAL_SYMBOL]
            assert list(train.x) == [1, 2, 3, 4]  # training points are all alike
        note = fig.layout.annotations[0].text
        assert "2,000-image subset" in note and "all 10,000 test images at the end" in note
    gap = charts.gap_figure(runs)
    assert list(gap.data[0].x) == [1, 2, 3, None, 4]
    assert gap.data[0].y[4] == pytest.approx(
        runs[0].metrics[3].test_loss - runs[0].metrics[3].train_loss
    )
    assert "2,000-image subset" in gap.layout.annotations[0].text


def test_note_while_live_and_for_old_records():
    live = [Series("p=0.50", "#000", subset_then_whole(3, done=False), epochs=30)]
    fig = charts.loss_figure(live)
    assert list(fig.data[1].x) == [1, 2, 3]  # nothing set apart yet
    assert "fixed 2,000-image subset" in fig.layout.annotations[0].text
    every_epoch = [Series("old", "#000", tuple(MI(*m, 10_000) for m in metrics(3)), epochs=3)]
    assert charts.loss_figure(every_epoch).layout.annotations[0].text == (
        "test points: all 10,000 test images"
    )
    assert not charts.loss_figure(RUNS).layout.annotations  # not recorded: nothing claimed
