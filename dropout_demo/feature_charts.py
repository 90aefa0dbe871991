"""Plotly figures of fc1's activations and conv1's filters (:mod:`dropout_demo.features`).

Two models are drawn with Okabe–Ito colours and different line styles and markers, so they
can be told apart without colour.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .charts import PALETTE
from .features import FeatureSummary, common_edges, filter_grid, histogram

MODEL_COLOURS = PALETTE[:2]  # Okabe–Ito blue and vermillion
MODEL_DASHES = ("solid", "dash")
MODEL_MARKERS = ("circle", "square")
HEIGHT = 300


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str) -> go.Figure:
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=HEIGHT,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.3},
    )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return fig


def activation_histogram_figure(
    named: Sequence[tuple[str, FeatureSummary]], bins: int = 40
) -> go.Figure:
    """Distribution of fc1's non-zero activations of each model, on shared bins."""
    edges = common_edges(*(s.acts for _, s in named), bins=bins)
    centres = ((edges[:-1] + edges[1:]) / 2).tolist()
    fig = go.Figure()
    for i, (name, s) in enumerate(named):
        fig.add_scatter(
            x=centres,
            y=histogram(s.acts, edges).tolist(),
            mode="lines+markers",
            line={"color": MODEL_COLOURS[i % 2], "dash": MODEL_DASHES[i % 2], "shape": "hvh"},
            marker={"symbol": MODEL_MARKERS[i % 2], "size": 5},
            name=f"{name} ({s.zero_fraction:.0%} zeros not shown)",
            hovertemplate="activation %{x:.2f}: %{y:.1%} of the active ones<extra></extra>",
        )
    return _layout(
        fig, "fc1 activations (the non-zero ones)", "activation", "share of active values"
    )


def unit_means_figure(named: Sequence[tuple[str, FeatureSummary]]) -> go.Figure:
    """Each model's mean activation per fc1 unit, sorted from the largest."""
    fig = go.Figure()
    for i, (name, s) in enumerate(named):
        fig.add_scatter(
            x=list(range(1, len(s.unit_means) + 1)),
            y=s.unit_means.tolist(),
            mode="lines+markers",
            line={"color": MODEL_COLOURS[i % 2], "dash": MODEL_DASHES[i % 2]},
            marker={"symbol": MODEL_MARKERS[i % 2], "size": 4},
            name=f"{name} (mean {s.mean:.2f})",
            hovertemplate="unit rank %{x}: mean %{y:.3f}<extra></extra>",
        )
    return _layout(
        fig, "Mean activation per fc1 unit, sorted", "unit (largest mean first)", "mean activation"
    )


def filters_figure(filters: np.ndarray, title: str) -> go.Figure:
    """conv1's filters (K, 3, 3) in [0, 1] as a grid of small grey images (0.5 = weight 0)."""
    grid = filter_grid(filters)
    fig = go.Figure(
        go.Heatmap(
            z=np.where(np.isnan(grid), None, grid).tolist(),
            colorscale="gray",
            zmin=0.0,
            zmax=1.0,
            showscale=False,
            hovertemplate="%{z:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=200,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        plot_bgcolor="#ffffff",
    )
    fig.update_xaxes(visible=False, scaleanchor="y", constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed")
    return fig


def features_text_summary(name: str, s: FeatureSummary) -> str:
    top = s.unit_means[: max(1, len(s.unit_means) // 10)].mean()
    return (
        f"{name}: over {s.n_images:,} test images, mean fc1 activation {s.mean:.2f}, "
        f"{s.zero_fraction:.0%} of activations are zero, {s.dead_units} of "
        f"{len(s.unit_means)} units never fire; the top tenth of units average {top:.2f}."
    )


def histogram_summary(named: Sequence[tuple[str, FeatureSummary]]) -> str:
    parts = [
        f"{name}: {s.zero_fraction:.0%} of activations are zero, the others average "
        f"{s.mean_active:.2f}"
        for name, s in named
    ]
    return "Histogram of fc1's non-zero activations. " + "; ".join(parts) + "."


def unit_means_summary(named: Sequence[tuple[str, FeatureSummary]]) -> str:
    parts = []
    for name, s in named:
        m = s.unit_means
        parts.append(
            f"{name}: largest {m[0]:.2f}, median {float(np.median(m)):.2f}, "
            f"{s.dead_units} of {len(m)} units never fire"
        )
    return "Mean activation of each fc1 unit, sorted from the largest. " + "; ".join(parts) + "."


def filters_summary(filters: np.ndarray, name: str) -> str:
    return (
        f"{name}: conv1's {len(filters)} filters of 3×3 weights as small grey images "
        "(white positive, black negative)."
    )
