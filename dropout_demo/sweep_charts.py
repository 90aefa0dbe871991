"""Plotly figures for sweeps and class boards: pure functions from cells and results.

Each curve is a grid's means with ± std error bars over its seeds, and each seed is drawn as a
faint point beside it, so a class sees both the trend and the noise. Figures are plain dicts
wrapped once (as in :mod:`charts`), because a board redraws them live.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from .charts import DASHES, MARKERS, NEUTRAL, PALETTE, plain_figure
from .sweeps import Cell, CellResult, aggregate

EMPTY_MESSAGE = "The curve fills in here as runs finish."

# (metric, label, colour) of the curves on each p chart; a chart's i-th curve also gets the i-th
# marker and dash, so two curves differ in shape as well as colour.
LOSS_CURVES = (
    ("final_test_loss", "final test loss", PALETTE[0]),
    ("best_test_loss", "best test loss (any epoch)", PALETTE[1]),
)
ACC_CURVES = (("final_test_acc", "final test accuracy", PALETTE[2]),)
GAP_CURVES = (("gap", "generalisation gap (test − train loss)", PALETTE[3]),)
BEST_MARK = "★ best so far"
# The seeds of one grid point are spread this far apart on the x axis (in p units).
SEED_SPREAD = 0.012


def _layout(title: str, x: dict[str, Any], y: dict[str, Any], empty: bool, height: int) -> dict:
    layout: dict[str, Any] = {
        "title": {"text": title, "x": 0.01, "xanchor": "left"},
        "uirevision": title,
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "hovermode": "closest",
        "legend": {"orientation": "h", "y": -0.25},
        "xaxis": x,
        "yaxis": y,
    }
    if empty:
        layout["annotations"] = [
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
    return layout


def _offsets(seeds: Sequence[int]) -> dict[int, float]:
    """A small fixed x offset per seed, centred on 0, so a point's seeds don't overlap."""
    ordered = sorted(set(seeds))
    mid = (len(ordered) - 1) / 2
    return {s: (i - mid) * SEED_SPREAD for i, s in enumerate(ordered)}


def _curve_traces(
    cells: Sequence[Cell],
    results: Mapping[int, CellResult],
    metric: str,
    name: str,
    colour: str,
    x_of: Any,
    fmt: str,
    seed_offsets: Mapping[int, float] | None = None,
    style: int = 0,
) -> list[dict[str, Any]]:
    """The mean ± std line of ``metric`` over ``cells`` and the individual seeds as points,
    in the ``style``-th marker and dash."""
    points = aggregate(cells, results)
    if not points:
        return []
    mean = {
        "type": "scatter",
        "mode": "lines+markers",
        "name": name,
        "legendgroup": name,
        "x": [x_of(pt.train_size, pt.p) for pt in points],
        "y": [pt[metric].mean for pt in points],
        "error_y": {
            "type": "data",
            "array": [pt[metric].std for pt in points],
            "visible": True,
            "thickness": 1.5,
            "width": 6,
            "color": colour,
        },
        "customdata": [[pt[metric].std, pt.n] for pt in points],
        "hovertemplate": f"%{{y:{fmt}}} ± %{{customdata[0]:{fmt}}} (n = %{{customdata[1]}})"
        f"<extra>{name}</extra>",
        "line": {"color": colour, "width": 2.5, "dash": DASHES[style % len(DASHES)]},
        "marker": {"size": 9, "color": colour, "symbol": MARKERS[style % len(MARKERS)]},
    }
    done = [c for c in cells if c.index in results]
    offsets = seed_offsets or {}
    seeds = {
        "type": "scatter",
        "mode": "markers",
        "name": f"{name} · each seed",
        "legendgroup": name,
        "showlegend": False,
        "x": [x_of(c.train_size, c.p) + offsets.get(c.seed, 0.0) for c in done],
        "y": [getattr(results[c.index], metric) for c in done],
        "customdata": [c.seed for c in done],
        "hovertemplate": f"seed %{{customdata}}: %{{y:{fmt}}}<extra>{name}</extra>",
        "marker": {
            "size": 6,
            "color": colour,
            "opacity": 0.45,
            "symbol": f"{MARKERS[style % len(MARKERS)]}-open",
        },
    }
    return [mean, seeds]


def p_figure(
    cells: Sequence[Cell],
    results: Mapping[int, CellResult],
    curves: Sequence[tuple[str, str, str]],
    title: str,
    y_title: str,
    percent: bool = False,
    height: int = 360,
) -> go.Figure:
    """``curves`` (metric, label, colour) against the dropout rate p: mean ± std over the
    seeds finished so far, each seed a faint point. The x range covers the whole grid from the
    start, so the curve grows into a fixed frame."""
    fmt = ".2%" if percent else ".3f"
    offsets = _offsets([c.seed for c in cells])
    traces: list[dict[str, Any]] = []
    for i, (metric, label, colour) in enumerate(curves):
        traces += _curve_traces(
            cells, results, metric, label, colour, lambda size, p: p, fmt, offsets, style=i
        )
    ps = [c.p for c in cells] or [0.0]
    pad = max(0.05, 2 * SEED_SPREAD * len(offsets))
    x = {
        "title": {"text": "dropout rate p (probability of dropping)"},
        "range": [min(ps) - pad, max(ps) + pad],
        "tickvals": sorted(set(ps)),
        "zeroline": False,
    }
    y = {"title": {"text": y_title}}
    if percent:
        y["tickformat"] = ".1%"
    return plain_figure({"data": traces, "layout": _layout(title, x, y, not traces, height)})


def loss_vs_p_figure(cells: Sequence[Cell], results: Mapping[int, CellResult]) -> go.Figure:
    return p_figure(cells, results, LOSS_CURVES, "Test loss against p", "test loss")


def accuracy_vs_p_figure(cells: Sequence[Cell], results: Mapping[int, CellResult]) -> go.Figure:
    return p_figure(cells, results, ACC_CURVES, "Test accuracy against p", "accuracy", percent=True)


def gap_vs_p_figure(cells: Sequence[Cell], results: Mapping[int, CellResult]) -> go.Figure:
    return p_figure(cells, results, GAP_CURVES, "Generalisation gap against p", "test − train")


def size_figure(
    cells: Sequence[Cell],
    results: Mapping[int, CellResult],
    metric: str = "final_test_error",
    title: str = "Test error against training-set size",
    y_title: str = "test error",
    percent: bool = True,
    height: int = 360,
) -> go.Figure:
    """``metric`` against the training-set size (log axis), one curve per dropout rate (p = 0
    is "no dropout"), mean ± std over seeds, each seed a faint point."""
    fmt = ".2%" if percent else ".3f"
    traces: list[dict[str, Any]] = []
    for i, p in enumerate(sorted({c.p for c in cells})):
        mine = [c for c in cells if c.p == p]
        label = "no dropout (p = 0)" if p == 0 else f"dropout p = {p:g}"
        colour = PALETTE[i % len(PALETTE)]
        traces += _curve_traces(
            mine, results, metric, label, colour, lambda size, p: size, fmt, style=i
        )
    sizes = sorted({c.train_size for c in cells}) or [1]
    x = {
        "title": {"text": "training images"},
        "type": "log",
        "tickvals": sizes,
        "ticktext": [f"{s:,}" for s in sizes],
    }
    y = {"title": {"text": y_title}}
    if percent:
        y["tickformat"] = ".1%"
    return plain_figure({"data": traces, "layout": _layout(title, x, y, not traces, height)})


def guesses_figure(
    choices: Sequence[str],
    counts: Mapping[str, int],
    answer: str | None = None,
    title: str = "The class's guesses",
    height: int = 300,
) -> go.Figure:
    """A bar per choice (in the given order) with its number of guesses; ``answer`` (the
    choice the results favour so far), when given, is drawn in a stronger colour, hatched, and
    marked "★ best so far" (colour is never the only cue)."""
    ys = [int(counts.get(c, 0)) for c in choices]
    colours = [PALETTE[0] if c == answer else NEUTRAL for c in choices]
    trace = {
        "type": "bar",
        "x": list(choices),
        "y": ys,
        "marker": {
            "color": colours,
            "pattern": {"shape": ["/" if c == answer else "" for c in choices], "solidity": 0.3},
        },
        "text": [
            f"{n} {BEST_MARK}" if c == answer else (str(n) if n else "")
            for c, n in zip(choices, ys, strict=True)
        ],
        "textposition": "outside",
        "hovertemplate": "%{x}: %{y}<extra></extra>",
        "name": "guesses",
    }
    x = {"title": {"text": "answer"}, "type": "category"}
    y: dict[str, Any] = {"title": {"text": "students"}, "rangemode": "tozero"}
    if max(ys, default=0) < 10:
        y["dtick"] = 1
    layout = _layout(title, x, y, False, height)
    layout["showlegend"] = False
    if not any(ys):
        layout["annotations"] = [
            {
                "text": "No guesses yet.",
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "font": {"size": 14, "color": "#666"},
            }
        ]
    return plain_figure({"data": [trace], "layout": layout})


def figures_for(cells: Sequence[Cell], results: Mapping[int, CellResult]) -> dict[str, go.Figure]:
    """The charts that fit the grid, by name: p grids get loss, accuracy and gap against p;
    size grids get test error and final test loss against the training-set size."""
    if len({c.train_size for c in cells}) > 1:
        return {
            "size_error": size_figure(cells, results),
            "size_loss": size_figure(
                cells,
                results,
                "final_test_loss",
                "Final test loss against training-set size",
                "test loss",
                percent=False,
            ),
        }
    return {
        "p_loss": loss_vs_p_figure(cells, results),
        "p_acc": accuracy_vs_p_figure(cells, results),
        "p_gap": gap_vs_p_figure(cells, results),
    }


# ---------------------------------------------------------------------------- in words
def _stat_text(stat: Any, fmt: str) -> str:
    if stat.n < 2:
        return f"{format(stat.mean, fmt)} (1 seed)"
    return f"{format(stat.mean, fmt)} ± {format(stat.std, fmt)} ({stat.n} seeds)"


def _curve_summary(points: Sequence[Any], metric: str, label: str, fmt: str, x_text: Any) -> str:
    values = ", ".join(f"{x_text(pt)}: {_stat_text(pt[metric], fmt)}" for pt in points)
    best = min if metric != "final_test_acc" else max
    top = best(points, key=lambda pt: pt[metric].mean)
    word = "lowest" if best is min else "highest"
    extra = f"; {word} at {x_text(top)}" if len(points) > 1 else ""
    return f"{label}: {values}{extra}"


def _p_text(pt: Any) -> str:
    return f"p = {pt.p:g}"


def p_summary(
    cells: Sequence[Cell],
    results: Mapping[int, CellResult],
    curves: Sequence[tuple[str, str, str]],
    title: str,
    percent: bool = False,
) -> str:
    """A p chart in words with its numbers (the chart's text for screen readers)."""
    points = aggregate(cells, results)
    if not points:
        return f"{title}: no finished runs yet, the chart is empty."
    fmt = ".1%" if percent else ".3f"
    parts = [_curve_summary(points, m, label, fmt, _p_text) for m, label, _ in curves]
    return f"{title}, mean ± std over seeds. " + ". ".join(parts) + "."


def size_summary(
    cells: Sequence[Cell],
    results: Mapping[int, CellResult],
    metric: str = "final_test_error",
    title: str = "Test error against training-set size",
    percent: bool = True,
) -> str:
    points = aggregate(cells, results)
    if not points:
        return f"{title}: no finished runs yet, the chart is empty."
    fmt = ".1%" if percent else ".3f"
    parts = []
    for p in sorted({pt.p for pt in points}):
        mine = [pt for pt in points if pt.p == p]
        label = "no dropout (p = 0)" if p == 0 else f"dropout p = {p:g}"
        values = ", ".join(
            f"{pt.train_size:,} images: {_stat_text(pt[metric], fmt)}" for pt in mine
        )
        parts.append(f"{label}: {values}")
    return f"{title}, mean ± std over seeds. " + ". ".join(parts) + "."


def guesses_summary(
    choices: Sequence[str], counts: Mapping[str, int], answer: str | None = None
) -> str:
    total = sum(int(counts.get(c, 0)) for c in choices)
    if not total:
        return f"The class's guesses: none yet, 0 over the {len(choices)} choices."
    values = ", ".join(f"{c}: {int(counts.get(c, 0))}" for c in choices)
    best = f" The results favour {answer} so far ({BEST_MARK})." if answer is not None else ""
    return f"The class's guesses, {total} in all: {values}.{best}"


def summaries_for(cells: Sequence[Cell], results: Mapping[int, CellResult]) -> dict[str, str]:
    """The charts of :func:`figures_for` in words, by the same names."""
    if len({c.train_size for c in cells}) > 1:
        return {
            "size_error": size_summary(cells, results),
            "size_loss": size_summary(
                cells,
                results,
                "final_test_loss",
                "Final test loss against training-set size",
                percent=False,
            ),
        }
    return {
        "p_loss": p_summary(cells, results, LOSS_CURVES, "Test loss against p"),
        "p_acc": p_summary(cells, results, ACC_CURVES, "Test accuracy against p", percent=True),
        "p_gap": p_summary(cells, results, GAP_CURVES, "Generalisation gap against p"),
    }


def for_projector(fig: go.Figure | dict, height: int) -> go.Figure:
    """A copy of ``fig`` (figure or its dict) readable from the back of a room: taller, with
    large titles, ticks and legend (set per element: a chart theme's template would override a
    plain ``layout.font``). A figure, not a dict: ``st.plotly_chart`` refuses a dict without
    traces (a board before its first finished cell)."""
    d = copy.deepcopy(fig.to_dict() if isinstance(fig, go.Figure) else fig)  # never the cache's
    layout = d.setdefault("layout", {})
    layout["height"] = height
    layout.setdefault("title", {})["font"] = {"size": 28}
    layout.setdefault("legend", {})["font"] = {"size": 18}
    for axis in ("xaxis", "yaxis"):
        ax = layout.setdefault(axis, {})
        ax["tickfont"] = {"size": 18}
        ax.setdefault("title", {})["font"] = {"size": 20}
    for ann in layout.get("annotations", []):
        ann["font"] = {**ann.get("font", {}), "size": 22}
    for trace in d.get("data", []):
        if trace.get("type") == "bar":
            trace["textfont"] = {"size": 22}
    return plain_figure(d)
