"""Plotly figures for training curves: pure functions from plain data to ``go.Figure``.

A run is a :class:`Series` (name, colour, marker, per-epoch metrics): colour is never the only
cue, each run has its own marker shape and train/test differ by dash. Each chart sets a constant
``layout.uirevision``; since ``st.plotly_chart`` remounts a changed figure, that alone does not
keep a user's zoom and legend choices through live redraws: :func:`apply_view` re-applies the
view that ``dropout_demo/ui/plot_view.py`` reports.

Made to be read from the back of a room: each run's latest test value is written at the end of
its line, and a long run's loss and accuracy axes open on the later epochs (:func:`focus_range`)
instead of on the first ones, whose loss of ~2 would squash 0.15 against 0.22.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import plotly.graph_objects as go

from .config import MNIST_TEST_SIZE

# Okabe & Ito (2008), "Color Universal Design": eight hues that stay apart for the common kinds
# of colour blindness. The darker ones first (a comparison is usually two runs); yellow, faint on
# white, last. Every chart of the app takes its colours from here.
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#000000",  # black
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
)
NEUTRAL = "#8C8C8C"  # what is not one of the series (other bars, reference lines)
# The second cue beside colour: each run or curve also has its own marker (and, where lines of
# one chart need it, dash). Runs' markers leave out the diamond: it marks whole-set points.
MARKERS: tuple[str, ...] = (
    "circle",
    "square",
    "triangle-up",
    "x",
    "star",
    "triangle-down",
    "cross",
    "pentagon",
)
# The same shapes as text, for tables and captions that stand for a run.
MARKER_GLYPHS = {
    "circle": "●",
    "square": "■",
    "triangle-up": "▲",
    "x": "✕",
    "star": "★",
    "triangle-down": "▼",
    "cross": "✚",
    "pentagon": "⬟",
    "diamond": "◆",
}
DASHES: tuple[str, ...] = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")

TRAIN_DASH = "solid"
TEST_DASH = "dash"
EMPTY_MESSAGE = "Start a run: its curves appear here after its first epoch."


def colour_for(index: int) -> str:
    """Colour of the ``index``-th run (0-based submission order); wraps after 8 runs."""
    return PALETTE[index % len(PALETTE)]


def marker_for(index: int) -> str:
    """Marker of the ``index``-th run: with :func:`colour_for`, a run is told apart by shape too
    (the pair repeats only after 8 runs)."""
    return MARKERS[index % len(MARKERS)]


class Series(NamedTuple):
    """One run to draw. ``metrics`` holds objects with the fields of ``EpochMetrics``
    (epoch, train_loss, train_acc, test_loss, test_acc, and optionally test_images: how many
    test images the test metrics used); ``epochs`` is the planned length, used to fix the x
    range so that live curves grow into a stable frame."""

    name: str
    colour: str
    metrics: Sequence[Any]
    epochs: int | None = None
    symbol: str = MARKERS[0]


FINAL_SYMBOL = "diamond"
FINAL_SIZE = 11
MARKER_SIZE = 7  # big enough to tell a square from a circle
# A run planned this long (or longer) gets axes that open on its later epochs: its first fifth,
# where the loss falls from ~2.3, would otherwise own the scale.
FOCUS_MIN_EPOCHS = 8
FOCUS_NOTE = "y axis fitted to the later epochs · double-click: the whole curves"
END_FONT_SIZE = 15
END_NAME_MAX = 12  # longer run names are left out of the end labels (colour and shape tell)


def _test_images(m: Any) -> int:
    return int(getattr(m, "test_images", 0) or 0)


def _whole_set_points(run: Series) -> set[int]:
    """Indices of a run's epochs whose test metrics used more images than its other epochs
    (the last epoch evaluates the whole test set, the earlier ones a fixed subset)."""
    counts = [_test_images(m) for m in run.metrics]
    if len(set(counts)) < 2:
        return set()
    most = max(counts)
    return {i for i, c in enumerate(counts) if c == most}


def test_points_note(runs: Sequence[Series]) -> str:
    """One line saying what the test points were computed on ("" when nothing to say)."""
    subset, whole = set(), set()
    for run in runs:
        final = _whole_set_points(run)
        for i, m in enumerate(run.metrics):
            if _test_images(m):
                (whole if i in final else subset).add(_test_images(m))
    if not whole:  # one evaluation per epoch so far (live), or every epoch alike (old runs)
        if len(subset) != 1:
            return ""
        count = subset.pop()
        if count >= MNIST_TEST_SIZE:
            return f"test points: all {count:,} test images"
        return f"test points: a fixed {count:,}-image subset of the test set after each epoch"

    k = f"{subset.pop():,}-image subset" if len(subset) == 1 else "subset"
    n = f"all {whole.pop():,}" if len(whole) == 1 else "the whole set of"
    return (
        f"test points: a fixed {k} of the test set after each epoch; ◆ {n} test images at the end"
    )


def _epoch_step(last_epoch: int) -> int:
    """A 1-2-5 tick step that gives at most about 10 integer ticks."""
    for step in (1, 2, 5, 10, 20, 50, 100):
        if last_epoch / step <= 10:
            return step
    return math.ceil(last_epoch / 10)


def _last_epoch(runs: Sequence[Series]) -> int:
    return max([r.epochs or 0 for r in runs] + [m.epoch for r in runs for m in r.metrics] + [1])


def focus_from(last_epoch: int) -> int:
    """The first epoch a focused axis is fitted to: the first fifth of the run is left out."""
    return max(2, math.ceil(last_epoch / 5) + 1)


def _finite(values: Any) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def focus_range(
    runs: Sequence[Series],
    fields: Sequence[str],
    floor: float | None = None,
    ceiling: float | None = None,
) -> list[float] | None:
    """The default y range of a long run's chart: fitted to the epochs from
    :func:`focus_from` on, from ``floor`` (else a margin below them) to a margin above them,
    at most ``ceiling``. None (autorange) for short runs, before the later epochs exist, or
    when the first epochs fit inside anyway."""
    last = _last_epoch(runs)
    if last < FOCUS_MIN_EPOCHS:
        return None
    start = focus_from(last)
    later = _finite(
        getattr(m, f) for r in runs for m in r.metrics if m.epoch >= start for f in fields
    )
    every = _finite(getattr(m, f) for r in runs for m in r.metrics for f in fields)
    if not later:
        return None
    lo, hi = min(later), max(later)
    if min(every) >= lo and max(every) <= hi:
        return None
    pad = 0.12 * max(hi - lo, 0.05 * abs(hi), 1e-3)
    bottom = floor if floor is not None else lo - pad
    top = hi + pad if ceiling is None else min(hi + pad, ceiling)
    return [bottom, top]


def _end_labels(
    runs: Sequence[Series], value_of: Any, fmt: str, y_range: list[float] | None
) -> list[dict[str, Any]]:
    """Each run's latest value written at the end of its line, in its colour; labels that
    would overlap are pushed apart (the text keeps the exact value)."""
    ends = []
    for run in runs:
        if not run.metrics:
            continue
        value = value_of(run.metrics[-1])
        if value is None or not math.isfinite(value):
            continue
        ends.append([float(value), run, run.metrics[-1].epoch])
    if not ends:
        return []
    if y_range is not None:
        span = y_range[1] - y_range[0]
    else:
        shown = _finite(value_of(m) for r in runs for m in r.metrics)
        span = max(shown) - min(shown)
    gap = 0.08 * (span or 1.0)
    ends.sort(key=lambda e: e[0])
    ys = [e[0] for e in ends]
    for i in range(1, len(ys)):
        ys[i] = max(ys[i], ys[i - 1] + gap)
    drift = (sum(ys) - sum(e[0] for e in ends)) / len(ys)  # keep the group centred
    labels = []
    for (value, run, epoch), y in zip(ends, ys, strict=True):
        number = f"<b>{format(value, fmt)}</b>"
        # A long name is left out; the run's marker shape stands for it beside the colour.
        glyph = MARKER_GLYPHS.get(run.symbol, "")
        text = f"{run.name}: {number}" if len(run.name) <= END_NAME_MAX else f"{glyph} {number}"
        labels.append(
            {
                "text": text,
                "x": epoch,
                "y": y - drift,
                "xref": "x",
                "yref": "y",
                "xanchor": "left",
                "xshift": 9,
                "showarrow": False,
                "font": {"size": END_FONT_SIZE, "color": run.colour},
            }
        )
    return labels


def _end_margin(labels: list[dict[str, Any]]) -> int:
    """Right margin wide enough for the end labels (~8.5 px a character at their size)."""
    longest = max((len(a["text"]) - 7 for a in labels), default=0)  # 7: the <b></b> tags
    return 20 if not labels else min(220, 24 + int(8.5 * longest))


def _figure(
    runs: Sequence[Series],
    traces: list[dict[str, Any]],
    *,
    revision: str,
    y_title: str,
    labels: Sequence[dict[str, Any]] = (),
    focused: bool = False,
    **layout: Any,
) -> go.Figure:
    # Plain dicts wrapped once, unvalidated (plain_figure): the live panel builds three of these
    # at every new epoch.
    last = _last_epoch(runs)
    base: dict[str, Any] = {
        "uirevision": revision,
        "height": 340,
        "margin": {"l": 60, "r": _end_margin(list(labels)), "t": 30, "b": 50},
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
    note = test_points_note(runs)
    if traces and note:
        base["annotations"] = [
            {
                "text": note,
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0,
                "y": 1,
                "xanchor": "left",
                "yanchor": "bottom",
                "font": {"size": 11, "color": "#666"},
            }
        ]
    if traces and focused:
        # A line above the test-points note (both left-aligned: side by side they would collide
        # on a half-width chart).
        base["margin"]["t"] = 46 if note else 30
        base.setdefault("annotations", []).append(
            {
                "text": FOCUS_NOTE,
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0,
                "y": 1,
                "yshift": 15 if note else 0,
                "xanchor": "left",
                "yanchor": "bottom",
                "font": {"size": 11, "color": "#666"},
            }
        )
    if traces and labels:
        base.setdefault("annotations", []).extend(labels)
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
    return plain_figure({"data": traces, "layout": base})


def plain_figure(spec: dict[str, Any]) -> go.Figure:
    """A figure from a plain ``{"data": [...], "layout": {...}}`` spec, without plotly's checks
    of each value (property names are still checked).

    ``go.Figure(spec)`` checks and coerces every value against plotly's schema: 10 to 30 ms for
    one of these small charts on a 2-core server (1 to 2 ms without), and a class's live panels
    build them at every new epoch, holding the GIL the training threads need. The specs here are
    fixed in code; the tests pass every builder's output through the full validation instead
    (``tests/test_charts.py``). Later changes (``fig.layout...``) are not checked either.
    """
    return go.Figure(spec, _validate=False)


class FrozenFigure(go.Figure):
    """A figure that is not changed after it is built, whose ``to_dict()`` is computed once.

    ``st.plotly_chart`` calls ``to_dict()`` on every script run, and plotly deep-copies the
    whole figure each time: on a class board thirty pages redraw the same cached charts every
    few seconds, and ``st.plotly_chart`` was a third of the server's time for the board, over
    half of that in these copies (``py-spy`` of ``bench/class_grid.py``). ``to_dict()``
    returns one shared dict: callers must not change it (copy it first, as
    ``sweep_charts.for_projector`` does)."""

    def __init__(self, fig: go.Figure):
        spec = fig.to_dict()
        super().__init__(spec, _validate=False)
        self._frozen_dict = spec  # as ``fig`` serialises (its template included)

    def to_dict(self) -> dict[str, Any]:
        return self._frozen_dict


def frozen(fig: go.Figure) -> FrozenFigure:
    """``fig`` as a :class:`FrozenFigure` (for figures cached and drawn many times)."""
    return fig if isinstance(fig, FrozenFigure) else FrozenFigure(fig)


def _trace(
    run: Series, name: str, ys: list[float], dash: str, fmt: str, whole: set[int] = frozenset()
) -> dict[str, Any]:
    """A run's curve. Points in ``whole`` (evaluated on the whole test set, the others on a
    subset) are drawn as diamonds, cut off from the line: they measure on other images."""
    xs: list[int | None] = [m.epoch for m in run.metrics]
    ys_: list[float | None] = list(ys)
    symbols = [run.symbol] * len(xs)
    sizes = [MARKER_SIZE] * len(xs)
    for i in sorted(whole, reverse=True):
        symbols[i], sizes[i] = FINAL_SYMBOL, FINAL_SIZE
        if i > 0 and i - 1 not in whole:  # a gap in the line before it
            xs.insert(i, None)
            ys_.insert(i, None)
            symbols.insert(i, run.symbol)
            sizes.insert(i, MARKER_SIZE)
    marker: dict[str, Any] = {"size": MARKER_SIZE, "symbol": run.symbol}
    if whole:
        marker = {"size": sizes, "symbol": symbols}
    return {
        "type": "scatter",
        "x": xs,
        "y": ys_,
        "name": name,
        "legendgroup": run.name,
        "mode": "lines+markers",
        "line": {"color": run.colour, "dash": dash, "width": 2},
        "marker": marker,
        "hovertemplate": f"%{{y:{fmt}}}",
    }


def _pairs(runs: Sequence[Series], train: str, test: str, fmt: str) -> list[dict[str, Any]]:
    traces = []
    for run in runs:
        if not run.metrics:
            continue
        for split, field, dash in (("train", train, TRAIN_DASH), ("test", test, TEST_DASH)):
            ys = [getattr(m, field) for m in run.metrics]
            whole = _whole_set_points(run) if split == "test" else set()
            traces.append(_trace(run, f"{run.name} · {split}", ys, dash, fmt, whole))
    return traces


def _y_axis(y_range: list[float] | None, **axis: Any) -> dict[str, Any]:
    return {**axis, "range": y_range, "autorange": False} if y_range else axis


def loss_figure(runs: Sequence[Series]) -> go.Figure:
    """Cross-entropy per epoch: train solid, test dashed, one colour per run; each run's latest
    test loss written at its line's end; a long run's axis opens on its later epochs."""
    traces = _pairs(runs, "train_loss", "test_loss", ".3f")
    y_range = focus_range(runs, ("train_loss", "test_loss"), floor=0.0)
    return _figure(
        runs,
        traces,
        revision="loss",
        y_title="loss (cross-entropy)",
        labels=_end_labels(runs, lambda m: m.test_loss, ".3f", y_range),
        focused=y_range is not None,
        yaxis=_y_axis(y_range),
    )


def accuracy_figure(runs: Sequence[Series]) -> go.Figure:
    """Accuracy per epoch (fractions, shown as percent): train solid, test dashed; each run's
    latest test accuracy at its line's end; a long run's axis opens on its later epochs."""
    traces = _pairs(runs, "train_acc", "test_acc", ".2%")
    y_range = focus_range(runs, ("train_acc", "test_acc"), ceiling=1.005)
    return _figure(
        runs,
        traces,
        revision="accuracy",
        y_title="accuracy",
        labels=_end_labels(runs, lambda m: m.test_acc, ".1%", y_range),
        focused=y_range is not None,
        yaxis=_y_axis(y_range, tickformat=".1%"),
    )


def gap_figure(runs: Sequence[Series]) -> go.Figure:
    """Generalisation gap per epoch: test loss minus train loss (above 0: overfitting), each
    run's latest gap written at its line's end."""
    traces = [
        _trace(
            run,
            run.name,
            [m.test_loss - m.train_loss for m in run.metrics],
            "solid",
            ".3f",
            _whole_set_points(run),
        )
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
    labels = _end_labels(runs, lambda m: m.test_loss - m.train_loss, "+.3f", None)
    return _figure(
        runs, traces, revision="gap", y_title="test − train loss", labels=labels, shapes=[zero]
    )


def _at(metrics: Sequence[Any], value_of: Any, fmt: str) -> str:
    last = metrics[-1]
    return f"{format(value_of(last), fmt)} at epoch {last.epoch}"


def _lowest(metrics: Sequence[Any], value_of: Any, fmt: str) -> str:
    best = min(metrics, key=value_of)
    if best is metrics[-1]:
        return ""
    return f" (lowest {format(value_of(best), fmt)} at epoch {best.epoch})"


def _summary(runs: Sequence[Series], what: str, describe: Any) -> str:
    shown = [r for r in runs if r.metrics]
    if not shown:
        return f"{what}: no epochs yet, the chart is empty."
    return f"{what}. " + "; ".join(f"{r.name}: {describe(r.metrics)}" for r in shown) + "."


def loss_summary(runs: Sequence[Series]) -> str:
    """The loss chart in words, with its numbers (a screen reader's text for the chart)."""

    def describe(ms: Sequence[Any]) -> str:
        test = _at(ms, lambda m: m.test_loss, ".3f")
        low = _lowest(ms, lambda m: m.test_loss, ".3f")
        return f"test loss {test}{low}, train loss {ms[-1].train_loss:.3f}"

    return _summary(runs, "Loss per epoch, train solid and test dashed", describe)


def accuracy_summary(runs: Sequence[Series]) -> str:
    def describe(ms: Sequence[Any]) -> str:
        test = _at(ms, lambda m: m.test_acc, ".1%")
        return f"test accuracy {test}, train {ms[-1].train_acc:.1%}"

    return _summary(runs, "Accuracy per epoch, train solid and test dashed", describe)


def gap_summary(runs: Sequence[Series]) -> str:
    def describe(ms: Sequence[Any]) -> str:
        return f"gap {_at(ms, lambda m: m.test_loss - m.train_loss, '+.3f')}"

    return _summary(runs, "Test minus train loss per epoch (above 0: overfitting)", describe)


def apply_view(fig: go.Figure, view: dict[str, Any] | None) -> go.Figure:
    """Re-apply what the user did to the chart in the browser: ``view`` holds ``x``/``y``
    axis ranges (``None`` = default) and ``hidden``, the names of traces switched off in the
    legend. Streamlit redraws a changed figure from scratch, so this is what keeps zoom and
    legend choices through live updates. A ``y`` of ``"auto"`` (the user asked for the whole
    curve, e.g. double-click) drops a focused default range; the x frame is whole already."""
    if not view:
        return fig
    if view.get("y") == "auto":
        fig.layout.yaxis.range = None
        fig.layout.yaxis.autorange = True
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
