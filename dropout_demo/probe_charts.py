"""Plotly figures of an uncertainty probe (:class:`dropout_demo.probes.Sweep`), pure functions.

Colours are Okabe–Ito (safe for colour-blind readers), and every class also has its own
marker, so a line can be told apart without its colour.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from .charts import PALETTE
from .probes import TRANSFORMS, Sweep

# Okabe & Ito (2008), from the app's one palette: blue, vermillion, bluish green, reddish purple,
# orange, sky blue.
CLASS_COLOURS = (*PALETTE[:4], *PALETTE[5:7])
CLASS_MARKERS = ("circle", "square", "diamond", "triangle-up", "x", "star")
ENTROPY_COLOUR = PALETTE[5]
MI_COLOUR = PALETTE[0]
LN10 = math.log(10.0)
HEIGHT = 300


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _figure(traces: list[dict], s: Sweep, title: str, y_title: str, y_range) -> go.Figure:
    # One constructor call with plain dicts: validating each trace and layout update on its
    # own (add_scatter, update_layout) costs about ten times more.
    layout = {
        "title": {"text": title, "font": {"size": 14}},
        "height": HEIGHT,
        "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
        "legend": {"orientation": "h", "y": -0.25},
        "hovermode": "x unified",
        "xaxis": {"title": {"text": TRANSFORMS[s.transform].axis}},
        "yaxis": {"title": {"text": y_title}, "range": y_range},
    }
    return go.Figure(data=traces, layout=layout)


def probe_probability_figure(s: Sweep, title: str = "") -> go.Figure:
    """Against the amount, for the sweep's top classes: Monte-Carlo mean with a ±1 std band
    (solid) and the eval-mode probability (dotted)."""
    x = s.amounts.tolist()
    traces = []
    for i, c in enumerate(s.top_classes):
        colour = CLASS_COLOURS[i % len(CLASS_COLOURS)]
        marker = CLASS_MARKERS[i % len(CLASS_MARKERS)]
        mean, std = s.mc_mean[:, c], s.mc_std[:, c]
        if s.has_spread:
            upper = np.minimum(mean + std, 1.0).tolist()
            lower = np.maximum(mean - std, 0.0).tolist()
            traces.append(
                {
                    "type": "scatter",
                    "x": x + x[::-1],
                    "y": upper + lower[::-1],
                    "fill": "toself",
                    "fillcolor": _rgba(colour, 0.18),
                    "line": {"width": 0},
                    "hoverinfo": "skip",
                    "showlegend": False,
                    "legendgroup": str(c),
                }
            )
        traces.append(
            {
                "type": "scatter",
                "x": x,
                "y": mean.tolist(),
                "mode": "lines+markers",
                "name": f"{c}: MC mean ± std" if s.has_spread else f"{c}: MC mean",
                "line": {"color": colour, "width": 2},
                "marker": {"symbol": marker, "size": 6},
                "legendgroup": str(c),
                "customdata": std.tolist(),
                "hovertemplate": f"digit {c}: %{{y:.1%}} ± %{{customdata:.1%}}<extra></extra>",
            }
        )
        traces.append(
            {
                "type": "scatter",
                "x": x,
                "y": s.eval_probs[:, c].tolist(),
                "mode": "lines",
                "name": f"{c}: dropout off",
                "line": {"color": colour, "width": 1.5, "dash": "dot"},
                "legendgroup": str(c),
                "hovertemplate": f"digit {c}, dropout off: %{{y:.1%}}<extra></extra>",
            }
        )
    title = title or f"Top digits, T = {s.T} passes"
    return _figure(traces, s, title, "probability", [0, 1])


def probe_uncertainty_figure(s: Sweep, title: str = "") -> go.Figure:
    """Predictive entropy and mutual information (nats) against the amount, on a fixed
    0..ln 10 axis so two models' panels compare at a glance."""
    x = s.amounts.tolist()
    traces = [
        {
            "type": "scatter",
            "x": x,
            "y": s.entropy.tolist(),
            "mode": "lines+markers",
            "name": "predictive entropy",
            "line": {"color": ENTROPY_COLOUR, "width": 2},
            "marker": {"symbol": "circle", "size": 5},
            "hovertemplate": "entropy %{y:.3f} nats<extra></extra>",
        },
        {
            "type": "scatter",
            "x": x,
            "y": s.mutual_info.tolist(),
            "mode": "lines+markers",
            "name": "mutual information",
            "line": {"color": MI_COLOUR, "width": 2, "dash": "dash"},
            "marker": {"symbol": "square", "size": 5},
            "hovertemplate": "mutual information %{y:.3f} nats<extra></extra>",
        },
    ]
    return _figure(traces, s, title or "Uncertainty", "nats", [0, LN10 * 1.02])


def probe_text_summary(s: Sweep) -> str:
    """The charts in words, for screen readers and for the record."""
    t = TRANSFORMS[s.transform]
    first, last = 0, len(s.amounts) - 1
    parts = []
    for i in (first, len(s.amounts) // 2, last):
        c = int(s.mc_prediction[i])
        parts.append(
            f"at {t.fmt(s.amounts[i])}: {c} (MC {s.mc_mean[i, c]:.0%} ± {s.mc_std[i, c]:.0%}, "
            f"dropout off {s.eval_probs[i, c]:.0%}), entropy {s.entropy[i]:.2f}, "
            f"mutual information {s.mutual_info[i]:.2f} nats"
        )
    return f"{t.label} from {t.fmt(s.amounts[first])} to {t.fmt(s.amounts[last])}: " + "; ".join(
        parts
    )


def probe_probability_summary(s: Sweep) -> str:
    """The probability chart in words: each drawn class's MC mean at the first, middle and last
    step, and where it peaks (the chart's accessible name)."""
    t = TRANSFORMS[s.transform]
    steps = sorted({0, len(s.amounts) // 2, len(s.amounts) - 1})
    parts = []
    for c in s.top_classes:
        values = ", ".join(f"{s.mc_mean[i, c]:.0%} at {t.fmt(s.amounts[i])}" for i in steps)
        peak = int(np.argmax(s.mc_mean[:, c]))
        parts.append(
            f"digit {c}: {values} (highest {s.mc_mean[peak, c]:.0%} at {t.fmt(s.amounts[peak])})"
        )
    kind = "Monte-Carlo mean" + (" ± std" if s.has_spread else "")
    return (
        f"Probability of the top digits against {t.axis}, {kind} over T = {s.T} passes. "
        + "; ".join(parts)
        + "."
    )


def probe_uncertainty_summary(s: Sweep) -> str:
    """The uncertainty chart in words: range and peak of entropy and mutual information."""
    t = TRANSFORMS[s.transform]

    def line(name: str, v: np.ndarray) -> str:
        peak = int(np.argmax(v))
        return (
            f"{name} from {v.min():.2f} to {v.max():.2f} nats, highest at {t.fmt(s.amounts[peak])}"
        )

    return (
        f"Uncertainty against {t.axis}: {line('predictive entropy', s.entropy)}; "
        f"{line('mutual information', s.mutual_info)}."
    )
