"""Sweep and class-board figures: means, error bars and seeds against numpy; empty states."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from dropout_demo import sweep_charts
from dropout_demo.config import TrainConfig
from dropout_demo.sweeps import CellResult, Grid

BASE = TrainConfig(train_size=256, epochs=3, eval_size=1_000)


def result(loss: float, acc: float = 0.9, train: float = 0.1) -> CellResult:
    return CellResult(
        final_test_loss=loss, best_test_loss=loss - 0.01, final_test_acc=acc, final_train_loss=train
    )


def traces(fig) -> dict[str, dict]:
    return {t["name"]: t for t in fig.to_dict()["data"]}


def test_p_figures_show_mean_std_and_every_seed():
    grid = Grid(ps=(0.0, 0.5), seeds=(0, 1, 2), base=BASE)
    cells = grid.cells()
    losses = {0.0: [0.30, 0.34, 0.29], 0.5: [0.20, 0.22, 0.25]}
    results = {c.index: result(losses[c.p][c.seed], acc=1 - losses[c.p][c.seed]) for c in cells}
    figs = sweep_charts.figures_for(cells, results)
    assert set(figs) == {"p_loss", "p_acc", "p_gap"}
    loss = traces(figs["p_loss"])
    mean = loss["final test loss"]
    assert list(mean["x"]) == [0.0, 0.5]
    np.testing.assert_allclose(mean["y"], [np.mean(losses[0.0]), np.mean(losses[0.5])])
    np.testing.assert_allclose(
        mean["error_y"]["array"], [np.std(losses[0.0], ddof=1), np.std(losses[0.5], ddof=1)]
    )
    seeds = loss["final test loss · each seed"]
    assert len(seeds["y"]) == 6
    assert sorted(seeds["y"]) == sorted(losses[0.0] + losses[0.5])
    # seeds sit beside their p, not on top of each other
    xs = [x for x in seeds["x"] if abs(x) < 0.1]
    assert len(set(xs)) == 3
    best = loss["best test loss (any epoch)"]
    np.testing.assert_allclose(best["y"], np.array(mean["y"]) - 0.01)
    acc = traces(figs["p_acc"])["final test accuracy"]
    np.testing.assert_allclose(acc["y"], 1 - np.array(mean["y"]))
    assert figs["p_acc"].layout.yaxis.tickformat == ".1%"
    gap = traces(figs["p_gap"])["generalisation gap (test − train loss)"]
    np.testing.assert_allclose(gap["y"], np.array(mean["y"]) - 0.1)


def test_partial_and_empty_grids_keep_the_whole_x_range():
    cells = Grid(ps=(0.0, 0.3, 0.9), seeds=(0,), base=BASE).cells()
    empty = sweep_charts.loss_vs_p_figure(cells, {})
    assert not empty.data
    assert sweep_charts.EMPTY_MESSAGE in empty.layout.annotations[0].text
    lo, hi = empty.layout.xaxis.range
    assert lo < 0 and hi > 0.9
    one = sweep_charts.loss_vs_p_figure(cells, {1: result(0.2)})
    mean = traces(one)["final test loss"]
    assert list(mean["x"]) == [0.3] and list(mean["error_y"]["array"]) == [0.0]
    assert tuple(one.layout.xaxis.range) == (lo, hi)


def test_size_figure_has_a_curve_per_p_on_a_log_axis():
    grid = Grid(ps=(0.0, 0.5), seeds=(0, 1), sizes=(100, 1_000), base=BASE)
    cells = grid.cells()
    err = {(100, 0.0): 0.2, (100, 0.5): 0.21, (1_000, 0.0): 0.08, (1_000, 0.5): 0.06}
    results = {c.index: result(0.5, acc=1 - err[c.train_size, c.p] - 0.01 * c.seed) for c in cells}
    figs = sweep_charts.figures_for(cells, results)
    assert set(figs) == {"size_error", "size_loss"}
    fig = figs["size_error"]
    assert fig.layout.xaxis.type == "log"
    t = traces(fig)
    off, on = t["no dropout (p = 0)"], t["dropout p = 0.5"]
    assert list(off["x"]) == [100, 1_000]
    np.testing.assert_allclose(off["y"], [0.205, 0.085])
    np.testing.assert_allclose(on["y"], [0.215, 0.065])
    np.testing.assert_allclose(on["error_y"]["array"], [np.std([0.21, 0.22], ddof=1)] * 2)
    assert len(t["dropout p = 0.5 · each seed"]["y"]) == 4


def test_guess_histogram_counts_each_choice_and_marks_the_answer():
    fig = sweep_charts.guesses_figure(["0", "0.5", "0.9"], {"0.5": 3, "0": 1}, answer="0.5")
    (bar,) = fig.data
    assert list(bar.x) == ["0", "0.5", "0.9"] and list(bar.y) == [1, 3, 0]
    assert bar.marker.color[1] != bar.marker.color[0] == bar.marker.color[2]
    # not by colour alone: the answer's bar is hatched and labelled
    assert list(bar.marker.pattern.shape) == ["", "/", ""]
    assert list(bar.text) == ["1", f"3 {sweep_charts.BEST_MARK}", ""]
    summary = sweep_charts.guesses_summary(["0", "0.5", "0.9"], {"0.5": 3, "0": 1}, "0.5")
    assert summary.startswith("The class's guesses, 4 in all: 0: 1, 0.5: 3, 0.9: 0.")
    assert "favour 0.5" in summary
    empty = sweep_charts.guesses_figure(["a", "b"], {})
    assert "No guesses yet" in empty.layout.annotations[0].text


def test_projector_copies_are_larger_and_leave_the_original_alone():
    cells = Grid(ps=(0.0, 0.5), seeds=(0,), base=BASE).cells()
    fig = sweep_charts.loss_vs_p_figure(cells, {0: result(0.3)})
    big = sweep_charts.for_projector(fig, 500).to_dict()
    assert big["layout"]["height"] == 500
    assert big["layout"]["xaxis"]["tickfont"]["size"] >= 18
    assert big["layout"]["title"]["text"] == "Test loss against p"
    assert fig.layout.height == 360 and fig.layout.xaxis.tickfont.size is None
    bars = sweep_charts.for_projector(sweep_charts.guesses_figure(["a"], {"a": 2}), 400)
    assert bars.to_dict()["data"][0]["textfont"]["size"] >= 18


def test_a_projector_copy_of_an_empty_board_can_be_drawn():
    # Before the first cell finishes the board's charts have no traces; st.plotly_chart
    # refused the dict this used to return (seen in bench/class_grid.py's smoke run).
    import plotly.tools

    empty = sweep_charts.loss_vs_p_figure(Grid(ps=(0.0, 0.5), seeds=(0,), base=BASE).cells(), {})
    big = sweep_charts.for_projector(empty, 420)
    assert isinstance(big, go.Figure) and big.layout.height == 420
    assert plotly.tools.return_figure_from_figure_or_data(big, validate_figure=True) is not None


def test_curves_of_one_chart_differ_in_marker_and_dash_not_only_colour():
    grid = Grid(ps=(0.0, 0.5), seeds=(0,), base=BASE)
    results = {c.index: result(0.3) for c in grid.cells()}
    loss = traces(sweep_charts.loss_vs_p_figure(grid.cells(), results))
    final, best = loss["final test loss"], loss["best test loss (any epoch)"]
    assert final["marker"]["symbol"] != best["marker"]["symbol"]
    assert final["line"]["dash"] != best["line"]["dash"]
    assert loss["final test loss · each seed"]["marker"]["symbol"].endswith("-open")
    sizes = Grid(ps=(0.0, 0.5), seeds=(0,), sizes=(100, 1_000), base=BASE)
    fig = sweep_charts.size_figure(sizes.cells(), {c.index: result(0.2) for c in sizes.cells()})
    means = [t for t in fig.to_dict()["data"] if t.get("showlegend", True)]
    assert len({t["marker"]["symbol"] for t in means}) == len(means) == 2
    assert len({t["line"]["color"] for t in means}) == 2


def test_summaries_say_each_charts_numbers():
    grid = Grid(ps=(0.0, 0.5), seeds=(0, 1), base=BASE)
    cells = grid.cells()
    losses = {0.0: [0.30, 0.34], 0.5: [0.20, 0.22]}
    results = {c.index: result(losses[c.p][c.seed], acc=1 - losses[c.p][c.seed]) for c in cells}
    texts = sweep_charts.summaries_for(cells, results)
    assert set(texts) == set(sweep_charts.figures_for(cells, results))
    std0 = np.std(losses[0.0], ddof=1)
    assert f"p = 0: 0.320 ± {std0:.3f} (2 seeds)" in texts["p_loss"]
    assert "final test loss:" in texts["p_loss"] and "lowest at p = 0.5" in texts["p_loss"]
    assert "p = 0.5: 79.0%" in texts["p_acc"] and "highest at p = 0.5" in texts["p_acc"]
    assert "no finished runs yet" in sweep_charts.summaries_for(cells, {})["p_gap"]
    sizes = Grid(ps=(0.0, 0.5), seeds=(0,), sizes=(100, 1_000), base=BASE)
    one = {c.index: result(0.2, acc=0.95) for c in sizes.cells()}
    size_texts = sweep_charts.summaries_for(sizes.cells(), one)
    assert (
        "no dropout (p = 0): 100 images: 5.0% (1 seed), 1,000 images: 5.0%"
        in (size_texts["size_error"])
    )
