"""Chart builders: traces, colours, dash styles and uirevision from plain inputs."""

from __future__ import annotations

import copy
import itertools
import json
import math
from typing import NamedTuple

import plotly.graph_objects as go
import plotly.io as pio
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


def notes(fig: go.Figure) -> list[str]:
    """The chart's notes (placed on the paper), not the values written at the lines' ends."""
    return [a.text for a in fig.layout.annotations if a.xref == "paper"]


def end_labels(fig: go.Figure) -> list:
    return [a for a in fig.layout.annotations if a.xref == "x"]


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
    assert not notes(charts.loss_figure(RUNS))


def test_colours_and_markers_are_stable_and_distinct():
    n = len(charts.PALETTE)
    assert len({charts.colour_for(i) for i in range(n)}) == n == 8
    assert charts.colour_for(n) == charts.colour_for(0)
    assert len({(charts.colour_for(i), charts.marker_for(i)) for i in range(n)}) == n
    assert len({charts.marker_for(i) for i in range(len(charts.MARKERS))}) == len(charts.MARKERS)
    # a run's marker never looks like the whole-test-set point
    assert charts.FINAL_SYMBOL not in charts.MARKERS
    assert all(m in charts.MARKER_GLYPHS for m in charts.MARKERS)


OKABE_ITO = {"#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"}
TABLEAU_10 = (
    "#4E79A7",
    "#F28E2B",
    "#E15759",
    "#76B7B2",
    "#59A14F",
    "#EDC948",
    "#B07AA1",
    "#FF9DA7",
)
# Machado, Oliveira & Fernandes (2009): full-severity dichromacy, applied to linear RGB.
DICHROMACY = {
    "protanopia": (
        (0.152286, 1.052583, -0.204868),
        (0.114503, 0.786281, 0.099216),
        (-0.003882, -0.048116, 1.051998),
    ),
    "deuteranopia": (
        (0.367322, 0.860646, -0.227968),
        (0.280085, 0.672501, 0.047413),
        (-0.011820, 0.042940, 0.968881),
    ),
    "tritanopia": (
        (1.255528, -0.076749, -0.178779),
        (-0.078411, 0.930809, 0.147602),
        (0.004733, 0.691367, 0.303900),
    ),
}


def _lab_as_seen(hex_colour: str, matrix) -> tuple[float, float, float]:
    """CIELAB (D65) of ``hex_colour`` as a dichromat sees it (matrix on linear sRGB)."""
    srgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in srgb]
    seen = [min(1.0, max(0.0, sum(m * c for m, c in zip(row, lin, strict=True)))) for row in matrix]
    to_xyz = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
    white = (0.95047, 1.0, 1.08883)
    x, y, z = (
        sum(m * c for m, c in zip(row, seen, strict=True)) / w
        for row, w in zip(to_xyz, white, strict=True)
    )
    f = [t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29 for t in (x, y, z)]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def _closest_pair(palette, matrix) -> float:
    return min(
        math.dist(_lab_as_seen(a, matrix), _lab_as_seen(b, matrix))
        for a, b in itertools.combinations(palette, 2)
    )


def test_the_palette_is_okabe_ito_and_stays_apart_for_colour_blind_viewers():
    assert set(charts.PALETTE) == OKABE_ITO
    for name, matrix in DICHROMACY.items():
        # every two of the eight run colours differ by > 15 ΔE*ab as a dichromat sees them
        assert _closest_pair(charts.PALETTE, matrix) > 15, name
        assert _closest_pair(charts.PALETTE[:2], matrix) > 80, name  # a comparison: far apart
    # the check has teeth: the old Tableau palette puts two runs ~1 ΔE apart for deuteranopes
    assert _closest_pair(TABLEAU_10, DICHROMACY["deuteranopia"]) < 5


def test_each_run_has_its_own_marker_on_every_chart():
    runs = [r._replace(symbol=charts.marker_for(i)) for i, r in enumerate(RUNS)]
    for build in (charts.loss_figure, charts.accuracy_figure, charts.gap_figure):
        for trace in build(runs).data:
            run = next(r for r in runs if trace.name.startswith(r.name))
            assert trace.marker.symbol == run.symbol
            assert trace.marker.size >= 7


def test_a_long_run_name_left_out_of_an_end_label_leaves_its_marker_shape():
    long = Series("a run with a long name", charts.colour_for(1), metrics(3), 3, "square")
    (label,) = end_labels(charts.loss_figure([long]))
    assert label.text == f"■ <b>{long.metrics[-1].test_loss:.3f}</b>"


def test_the_summaries_say_what_the_charts_show_in_numbers():
    runs = overfit_pair()
    loss = charts.loss_summary(runs)
    assert "p = 0: test loss 0.221 at epoch 30" in loss
    assert "p = 0.5: test loss 0.153 at epoch 30" in loss
    assert "train loss 0.002" in loss
    assert "p = 0.5: test accuracy 96.0% at epoch 30" in charts.accuracy_summary(runs)
    assert f"p = 0: gap {0.221 - 0.002:+.3f} at epoch 30" in charts.gap_summary(runs)
    assert "no epochs yet" in charts.loss_summary([])
    # a curve that turned upward says where its lowest point was
    rising = Series("p = 0", "#000", (*metrics(4)[:2], M(3, 0.1, 0.9, 2.0, 0.8)), 3)
    assert "(lowest 0.650 at epoch 2)" in charts.loss_summary([rising])


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
    assert not notes(charts.loss_figure(RUNS))  # not recorded: nothing claimed


# ---------------------------------------------------------------------------- the pair made plain
def overfit_pair(epochs: int = 30, done: bool = True) -> list[Series]:
    """Curves shaped like the Overfitting lab's: losses from ~2 down to test 0.221 (p = 0) and
    0.153 (p = 0.5) at the end, accuracy from ~68% up to 95.0% and 96.0%; the last test point on
    the whole test set."""

    def run(name, colour, final_train, final_test, final_acc):
        ms = []
        for e in range(1, epochs + 1):
            fall = math.exp(-(e - 1) / 2)
            ms.append(
                MI(
                    e,
                    final_train + 2.0 * fall,
                    final_acc + 0.02 - 0.3 * fall,
                    final_test + 1.2 * fall,
                    final_acc - 0.3 * fall,
                    10_000 if done and e == epochs else 2_000,
                )
            )
        return Series(name, colour, tuple(ms), epochs=30)

    return [
        run("p = 0", charts.colour_for(0), 0.002, 0.221, 0.950),
        run("p = 0.5", charts.colour_for(1), 0.031, 0.153, 0.960),
    ]


def test_a_long_runs_loss_axis_opens_on_its_later_epochs():
    runs = overfit_pair()
    fig = charts.loss_figure(runs)
    bottom, top = fig.layout.yaxis.range
    assert fig.layout.yaxis.autorange is False
    start = charts.focus_from(30)
    assert 2 <= start <= 10
    later = [
        v for r in runs for m in r.metrics if m.epoch >= start for v in (m.train_loss, m.test_loss)
    ]
    assert bottom == 0.0 and max(later) <= top < 1.5 * max(later)
    first = max(m.train_loss for r in runs for m in r.metrics if m.epoch == 1)
    assert first > 2 * top  # epoch 1's ~2.0 no longer sets the scale
    # 0.153 and 0.221 now lie more than a sixth of the axis apart (~2/70 of it before)
    assert (0.221 - 0.153) / (top - bottom) > 1 / 6
    assert any("later epochs" in n for n in notes(fig))
    # The diamond of the whole-test-set point is still there.
    test = next(t for t in fig.data if t.name == "p = 0 · test")
    assert test.marker.symbol[-1] == charts.FINAL_SYMBOL and test.x[-1] == 30


def test_the_accuracy_axis_opens_on_the_later_epochs_too():
    fig = charts.accuracy_figure(overfit_pair())
    bottom, top = fig.layout.yaxis.range
    assert 0.8 < bottom < 0.95 and 0.97 < top <= 1.005
    assert fig.layout.yaxis.tickformat == ".1%"


@pytest.mark.parametrize(
    "runs",
    [
        [Series("p = 0", "#000", metrics(5), epochs=5)],  # a short run: the whole curve
        [Series("p = 0", "#000", metrics(3), epochs=30)],  # live, no later epochs yet
        [Series("flat", "#000", tuple(M(e, 0.3, 0.9, 0.3, 0.9) for e in range(1, 31)), 30)],
    ],
)
def test_short_live_or_flat_runs_keep_the_automatic_axis(runs):
    fig = charts.loss_figure(runs)
    assert fig.layout.yaxis.range is None and fig.layout.yaxis.autorange is None
    assert not any("later epochs" in n for n in notes(fig))


def test_the_final_numbers_are_written_at_the_lines_ends():
    runs = overfit_pair()
    loss = {a.font.color: a for a in end_labels(charts.loss_figure(runs))}
    assert len(loss) == 2
    zero, half = loss[runs[0].colour], loss[runs[1].colour]
    assert zero.text == "p = 0: <b>0.221</b>" and half.text == "p = 0.5: <b>0.153</b>"
    assert zero.x == half.x == 30 and zero.xanchor == "left"
    assert zero.y == pytest.approx(0.221, abs=1e-3) and half.y == pytest.approx(0.153, abs=1e-3)
    assert zero.font.size >= 14  # readable from the back of the room
    fig = charts.loss_figure(runs)
    assert fig.layout.margin.r >= 8 * len("p = 0.5: 0.153")  # room for them on the right

    acc = sorted(a.text for a in end_labels(charts.accuracy_figure(runs)))
    assert acc == ["p = 0.5: <b>96.0%</b>", "p = 0: <b>95.0%</b>"]
    gap = {a.font.color: a.text for a in end_labels(charts.gap_figure(runs))}
    assert gap == {
        runs[0].colour: f"p = 0: <b>{0.221 - 0.002:+.3f}</b>",
        runs[1].colour: f"p = 0.5: <b>{0.153 - 0.031:+.3f}</b>",
    }


def test_end_labels_follow_a_live_run_and_never_overlap():
    live = overfit_pair(done=False)
    live = [r._replace(metrics=r.metrics[:12]) for r in live]
    labels = end_labels(charts.loss_figure(live))
    assert {a.x for a in labels} == {12}
    assert sorted(a.text for a in labels) == sorted(
        f"{r.name}: <b>{r.metrics[-1].test_loss:.3f}</b>" for r in live
    )
    close = [
        Series("a", "#111", metrics(30, 0.0), epochs=30),
        Series("b", "#222", metrics(30, 0.001), epochs=30),
        Series("c", "#333", metrics(30, 0.002), epochs=30),
    ]
    fig = charts.loss_figure(close)
    ys = sorted(a.y for a in end_labels(fig))
    span = fig.layout.yaxis.range[1] - fig.layout.yaxis.range[0]
    assert all(b - a >= 0.07 * span for a, b in itertools.pairwise(ys))  # pushed apart
    finals = [r.metrics[-1].test_loss for r in close]
    assert sum(ys) / 3 == pytest.approx(sum(finals) / 3)  # around where the lines end
    assert [a.text for a in end_labels(fig)] == [
        f"{n}: <b>{v:.3f}</b>" for n, v in zip("abc", finals, strict=True)
    ]


def test_a_long_name_leaves_its_marker_and_number_and_a_diverged_run_is_skipped():
    nan = tuple(M(e, float("nan"), 0.1, float("nan"), 0.1) for e in range(1, 4))
    runs = [
        Series("p=0.50 · 1,000 imgs · 30 ep (#2)", "#111", metrics(4), epochs=4),
        Series("diverged", "#222", nan, epochs=4),
    ]
    (label,) = end_labels(charts.loss_figure(runs))
    assert label.text == f"● <b>{metrics(4)[-1].test_loss:.3f}</b>"  # the marker stands for it


def test_a_double_click_for_the_whole_curve_drops_the_focused_range():
    fig = charts.apply_view(charts.loss_figure(overfit_pair()), {"x": "auto", "y": "auto"})
    assert fig.layout.yaxis.range is None and fig.layout.yaxis.autorange is True
    assert tuple(fig.layout.xaxis.range) == (0.5, 30.5)  # the x frame is whole already
    zoomed = charts.apply_view(charts.loss_figure(overfit_pair()), {"y": [0.1, 0.3]})
    assert tuple(zoomed.layout.yaxis.range) == (0.1, 0.3)  # the user's zoom wins


def _strict(fig: go.Figure) -> go.Figure:
    """The same spec through plotly's full validation: raises ValueError on a property or value
    plotly does not know (the builders skip that check for speed, ``charts.plain_figure``)."""
    return go.Figure(fig.to_dict())


def _chart_figures() -> list[go.Figure]:
    from dropout_demo import sweep_charts
    from dropout_demo.config import TrainConfig
    from dropout_demo.sweeps import CellResult, Grid

    long = [Series("p=0.50", charts.colour_for(0), metrics(30), epochs=30, symbol="square")]
    figs = [build(runs) for build in BUILDERS for runs in (RUNS, [], long)]
    views = [{"x": [2, 5], "y": [0.1, 0.4]}, {"y": "auto", "hidden": ["p=0.00 train"]}]
    figs += [charts.apply_view(build(RUNS), view) for build in BUILDERS for view in views]
    base = TrainConfig(train_size=256, epochs=3, eval_size=1_000)
    for grid in (
        Grid(ps=(0.0, 0.5), seeds=(0, 1), base=base),
        Grid(ps=(0.0, 0.5), seeds=(0, 1), sizes=(100, 1_000), base=base),
    ):
        cells = grid.cells()
        results = {
            c.index: CellResult(
                final_test_loss=0.2 + c.p / 10,
                best_test_loss=0.19,
                final_test_acc=0.9,
                final_train_loss=0.1,
            )
            for c in cells
        }
        for partial in (results, {}):
            figs += list(sweep_charts.figures_for(cells, partial).values())
    guesses = sweep_charts.guesses_figure(["0", "0.5"], {"0.5": 2}, answer="0.5")
    figs += [
        guesses,
        sweep_charts.for_projector(guesses, 400),
        sweep_charts.for_projector(figs[-1], 500),
    ]
    return figs


BUILDERS = (charts.loss_figure, charts.accuracy_figure, charts.gap_figure)


def test_every_builders_figure_passes_plotlys_full_validation():
    """The builders wrap plain specs without plotly's validation (it cost the live panel
    10-30 ms a chart); their output must still be exactly what a validated figure holds."""
    figs = _chart_figures()
    assert len(figs) == 28  # 9 + 6 Lab charts, 3 + 3 + 2 + 2 sweep charts, 3 class-board ones
    for fig in figs:
        strict = _strict(fig)  # raises on anything plotly does not accept
        assert json.loads(pio.to_json(strict)) == json.loads(pio.to_json(fig))


def test_plain_figure_skips_the_value_checks_that_go_figure_does():
    bad = {"data": [{"type": "scatter", "x": [1], "y": [2], "opacity": 5}], "layout": {}}
    with pytest.raises(ValueError):
        go.Figure(bad)
    assert charts.plain_figure(bad).to_dict()["data"][0]["opacity"] == 5  # hence the test above


def test_a_frozen_figure_serialises_as_built_and_is_not_changed_by_the_projector_view():
    from dropout_demo import sweep_charts
    from dropout_demo.charts import FrozenFigure, frozen

    fig = sweep_charts.guesses_figure(["p = 0", "p = 0.5"], {"p = 0.5": 3}, answer="p = 0.5")
    ice = frozen(fig)
    assert isinstance(ice, FrozenFigure) and frozen(ice) is ice
    assert ice.to_dict() is ice.to_dict()  # computed once
    assert ice.to_dict() == fig.to_dict()
    # what st.plotly_chart sends: the figure's to_dict(), as JSON
    assert pio.to_json(ice.to_dict(), validate=False) == pio.to_json(fig.to_dict(), validate=False)
    before = copy.deepcopy(ice.to_dict())
    big = sweep_charts.for_projector(ice, 420)
    assert big.layout.height == 420
    assert ice.to_dict() == before  # the shared dict is left as it was
