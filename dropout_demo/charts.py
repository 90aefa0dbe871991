"""Plotly figures for training curves: pure functions from plain data to ``go.Figure``.

A run is a :class:`Series` (name, colour, per-epoch metrics). Each chart sets a constant
``layout.uirevision``; since ``st.plotly_chart`` remounts a changed figure, that alone does not
keep a user's zoom and legend choices through live redraws: :func:`apply_view` re-applies the
view that ``dropout_demo/ui/plot_view.py`` reports.
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


def _figure(
    runs: Sequence[Series],
    traces: list[dict[str, Any]],
    *,
    revision: str,
    y_title: str,
    **layout: Any,
) -> go.Figure:
    # Plain dicts wrapped once: building through go.Scatter/update_layout (and a named template)
    # costs ~50 ms a figure, and the live panel redraws three of them every second.
    last = max([r.epochs or 0 for r in runs] + [m.epoch for r in runs for m in r.metrics] + [1])
    base: dict[str, Any] = {
        "uirevision": revision,
        "height": 340,
        "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
        "hovermode": "x unified",
        "legend": {"groupclick": "toggleitem", "orientation": "h", "y": -0.22},
        "xaxis": {
            "title": {"text": "epoch"},
            "tickmode": "linear",
            "tick0": 0,
            "dtick": _epoch_step(last),
            "range": [0.5, last + 0.5],
            "tickformat": "d",
        },
        "yaxis": {"title": {"text": y_title}},
    }
    if not traces:
        base["annotations"] = [
            {
                "text": EMPTY_MESSAGE,
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "font": {"size": 14, "color": "#666"},
            }
        ]
    for key, value in layout.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return go.Figure({"data": traces, "layout": base})


def _trace(run: Series, name: str, ys: list[float], dash: str, fmt: str) -> dict[str, Any]:
    return {
        "type": "scatter",
        "x": [m.epoch for m in run.metrics],
        "y": ys,
        "name": name,
        "legendgroup": run.name,
        "mode": "lines+markers",
        "line": {"color": run.colour, "dash": dash, "width": 2},
        "marker": {"size": 5},
        "hovertemplate": f"%{{y:{fmt}}}",
    }


def _pairs(runs: Sequence[Series], train: str, test: str, fmt: str) -> list[dict[str, Any]]:
    traces = []
    for run in runs:
        if not run.metrics:
            continue
        for split, field, dash in (("train", train, TRAIN_DASH), ("test", test, TEST_DASH)):
            ys = [getattr(m, field) for m in run.metrics]
            traces.append(_trace(run, f"{run.name} · {split}", ys, dash, fmt))
    return traces


def loss_figure(runs: Sequence[Series]) -> go.Figure:
    """Cross-entropy per epoch: train solid, test dashed, one colour per run."""
    traces = _pairs(runs, "train_loss", "test_loss", ".3f")
    return _figure(runs, traces, revision="loss", y_title="loss (cross-entropy)")


def accuracy_figure(runs: Sequence[Series]) -> go.Figure:
    """Accuracy per epoch (fractions, shown as percent): train solid, test dashed."""
    traces = _pairs(runs, "train_acc", "test_acc", ".2%")
    return _figure(
        runs, traces, revision="accuracy", y_title="accuracy", yaxis={"tickformat": ".1%"}
    )


def gap_figure(runs: Sequence[Series]) -> go.Figure:
    """Generalisation gap per epoch: test loss minus train loss (above 0: overfitting)."""
    traces = [
        _trace(run, run.name, [m.test_loss - m.train_loss for m in run.metrics], "solid", ".3f")
        for run in runs
        if run.metrics
    ]
    zero = {
        "type": "line",
        "xref": "paper",
        "x0": 0,
        "x1": 1,
        "y0": 0,
        "y1": 0,
        "line": {"color": "#999", "width": 1},
    }
    return _figure(runs, traces, revision="gap", y_title="test − train loss", shapes=[zero])


def apply_view(fig: go.Figure, view: dict[str, Any] | None) -> go.Figure:
    """Re-apply what the user did to the chart in the browser: ``view`` holds ``x``/``y``
    axis ranges (``None`` = default) and ``hidden``, the names of traces switched off in the
    legend. Streamlit redraws a changed figure from scratch, so this is what keeps zoom and
    legend choices through live updates."""
    if not view:
        return fig
    for axis in ("x", "y"):
        bounds = view.get(axis)
        if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
            fig.layout[f"{axis}axis"].range = list(bounds)
            fig.layout[f"{axis}axis"].autorange = False
    hidden = set(view.get("hidden") or ())
    for trace in fig.data:
        if trace.name in hidden:
            trace.visible = "legendonly"
    return fig
