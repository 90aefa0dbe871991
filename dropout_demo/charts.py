"""Plotly figures for training curves: pure functions from plain data to ``go.Figure``.

A run is a :class:`Series` (name, colour, per-epoch metrics). Each chart sets a constant
``layout.uirevision`` so that a live redraw keeps the user's zoom and legend choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import plotly.graph_objects as go

# Tableau 10: distinct hues that stay readable on a projector and for most colour-blind viewers.
PALETTE: tuple[str, ...] = (
    "#4E79A7",
    "#F28E2B",
    "#E15759",
    "#76B7B2",
    "#59A14F",
    "#EDC948",
    "#B07AA1",
    "#FF9DA7",
    "#9C755F",
    "#BAB0AC",
)

TRAIN_DASH = "solid"
TEST_DASH = "dash"
EMPTY_MESSAGE = "Start a run: its curves appear here after its first epoch."


def colour_for(index: int) -> str:
    """Colour of the ``index``-th run (0-based submission order); wraps after 10 runs."""
    return PALETTE[index % len(PALETTE)]


class Series(NamedTuple):
    """One run to draw. ``metrics`` holds objects with the fields of ``EpochMetrics``
    (epoch, train_loss, train_acc, test_loss, test_acc); ``epochs`` is the planned length,
    used to fix the x range so that live curves grow into a stable frame."""

    name: str
    colour: str
    metrics: Sequence[Any]
    epochs: int | None = None


def _epoch_step(last_epoch: int) -> int:
    """A 1-2-5 tick step that gives at most about 10 integer ticks."""
    for step in (1, 2, 5, 10, 20, 50, 100):
        if last_epoch / step <= 10:
            return step
    return math.ceil(last_epoch / 10)


def _base_figure(runs: Sequence[Series], *, revision: str, y_title: str) -> go.Figure:
    fig = go.Figure()
    last = max([r.epochs or 0 for r in runs] + [m.epoch for r in runs for m in r.metrics] + [1])
    fig.update_layout(
        uirevision=revision,
        template="plotly_white",
        height=340,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        hovermode="x unified",
        legend={"groupclick": "toggleitem", "orientation": "h", "y": -0.22},
    )
    fig.update_xaxes(
        title_text="epoch",
        tickmode="linear",
        tick0=0,
        dtick=_epoch_step(last),
        range=[0.5, last + 0.5],
        tickformat="d",
    )
    fig.update_yaxes(title_text=y_title)
    if not any(r.metrics for r in runs):
        fig.add_annotation(
            text=EMPTY_MESSAGE,
            showarrow=False,
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
            font={"size": 14, "color": "#666"},
        )
    return fig


def _add_pair(fig: go.Figure, run: Series, train: list[float], test: list[float], fmt: str) -> None:
    epochs = [m.epoch for m in run.metrics]
    for split, ys, dash in (("train", train, TRAIN_DASH), ("test", test, TEST_DASH)):
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=ys,
                name=f"{run.name} · {split}",
                legendgroup=run.name,
                mode="lines+markers",
                line={"color": run.colour, "dash": dash, "width": 2},
                marker={"size": 5},
                hovertemplate=f"%{{y:{fmt}}}",
            )
        )


def loss_figure(runs: Sequence[Series]) -> go.Figure:
    """Cross-entropy per epoch: train solid, test dashed, one colour per run."""
    fig = _base_figure(runs, revision="loss", y_title="loss (cross-entropy)")
    for run in (r for r in runs if r.metrics):
        _add_pair(
            fig,
            run,
            [m.train_loss for m in run.metrics],
            [m.test_loss for m in run.metrics],
            ".3f",
        )
    return fig


def accuracy_figure(runs: Sequence[Series]) -> go.Figure:
    """Accuracy per epoch (fractions, shown as percent): train solid, test dashed."""
    fig = _base_figure(runs, revision="accuracy", y_title="accuracy")
    fig.update_yaxes(tickformat=".1%")
    for run in (r for r in runs if r.metrics):
        _add_pair(
            fig,
            run,
            [m.train_acc for m in run.metrics],
            [m.test_acc for m in run.metrics],
            ".2%",
        )
    return fig


def gap_figure(runs: Sequence[Series]) -> go.Figure:
    """Generalisation gap per epoch: test loss minus train loss (above 0: overfitting)."""
    fig = _base_figure(runs, revision="gap", y_title="test − train loss")
    fig.add_hline(y=0, line={"color": "#999", "width": 1})
    for run in (r for r in runs if r.metrics):
        fig.add_trace(
            go.Scatter(
                x=[m.epoch for m in run.metrics],
                y=[m.test_loss - m.train_loss for m in run.metrics],
                name=run.name,
                legendgroup=run.name,
                mode="lines+markers",
                line={"color": run.colour, "dash": "solid", "width": 2},
                marker={"size": 5},
                hovertemplate="%{y:.3f}",
            )
        )
    return fig
