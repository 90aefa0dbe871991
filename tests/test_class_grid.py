"""bench/class_grid.py's readers of the Class page and its board figures (no server here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.class_grid import (  # noqa: E402
    board_figures,
    board_progress,
    my_cell,
    target_grid,
    ui_preset_of,
    uncaught_exceptions,
)
from dropout_demo.sweeps import CellResult, Grid  # noqa: E402


def test_board_progress_line():
    assert board_progress("12 of 30 runs finished · 18 claimed or running") == (12, 30)
    assert board_progress("30 of 30 runs finished · 0 claimed or running") == (30, 30)
    assert board_progress("Your cell: p = 0.5, seed 0, 1,000 images · done") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Your cell: p = 0.3, seed 1, 1,000 images.", (0.3, 1, "assigned")),  # the notice
        ("Your cell: p = 0, seed 2, 256 images", (0.0, 2, "claimed")),
        ("Your cell: p = 0.9, seed 0, 1,000 images · queued", (0.9, 0, "queued")),
        ("Your cell: p = 0.5, seed 0, 1,000 images · epoch 3 of 30", (0.5, 0, "running")),
        ("Your cell: p = 0.5, seed 0, 1,000 images · done", (0.5, 0, "done")),
        ("Your cell: p = 0.5, seed 0, 1,000 images · failed", (0.5, 0, "failed")),
        ("Every cell of this class is finished: the board below has them all.", None),
    ],
)
def test_my_cell_lines(text, expected):
    assert my_cell(text) == expected


def test_default_grid_is_the_class_pages_p_curve():
    class Args:
        base, ps, seeds, epochs, train_size = (
            "overfit",
            [i / 10 for i in range(10)],
            [0, 1, 2],
            None,
            None,
        )

    grid = target_grid(Args)
    assert len(grid) == 30 and grid.base.epochs == 30 and grid.base.train_size == 1_000
    assert ui_preset_of(grid, "overfit") == "p-curve"
    Args.epochs = 1
    assert ui_preset_of(target_grid(Args), "overfit") is None


def test_board_figures_against_numpy():
    grid = Grid(ps=(0.0, 0.5, 0.9), seeds=(0, 1))
    cells = grid.cells()
    rng = np.random.default_rng(0)
    losses = {c.index: 0.2 + 0.1 * abs(c.p - 0.5) + 0.01 * rng.random() for c in cells}
    results = {i: CellResult(v, v - 0.01, 0.95, 0.05) for i, v in losses.items()}
    figs = board_figures(cells, results)
    at = {p: [losses[c.index] for c in cells if c.p == p] for p in grid.ps}
    assert figs["best"]["p"] == 0.5
    for name, p in (("best", 0.5), ("lowest_p", 0.0), ("highest_p", 0.9)):
        assert figs[name]["final_test_loss"] == pytest.approx(np.mean(at[p]))
        assert figs[name]["std"] == pytest.approx(np.std(at[p], ddof=1))
        assert figs[name]["n"] == 2
    assert board_figures(cells, {}) == {}


def test_uncaught_exceptions_from_a_server_log():
    log = (
        "x Uncaught app execution\nTraceback (most recent call last):\n  File 'a'\n"
        "ValueError: bad\ny Uncaught app execution\nTraceback (most recent call last):\n"
        "ValueError: bad\n"
    )
    assert uncaught_exceptions(log) == {"ValueError: bad": 2}
