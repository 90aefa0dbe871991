"""A one-line reading of training curves in words, computed from per-epoch metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# Test loss must rise this much (relative) above its minimum, at least two epochs after it,
# before we call it a turn: epoch-level test loss wobbles by a percent or two.
RISE_TOLERANCE = 0.05

Trend = Literal["falling", "rising", "flat"]


@dataclass(frozen=True)
class Curve:
    """One run as the reading sees it: a short label (e.g. ``p = 0.50``) and its metrics
    (objects with epoch, train_loss, test_loss, test_acc)."""

    label: str
    metrics: Sequence[Any]


@dataclass(frozen=True)
class LossTrend:
    trend: Trend
    best_epoch: int
    best: float
    last: float
    epochs: int


def p_label(p: float) -> str:
    """``p = 0`` for no dropout, else ``p = 0.50``."""
    return "p = 0" if p == 0 else f"p = {p:.2f}"


def short_labels(ps: Sequence[float], names: Sequence[str]) -> list[str]:
    """Label runs by their dropout rate when that tells them apart, else by their full names."""
    labels = [p_label(p) for p in ps]
    if len(set(labels)) == len(labels):
        return labels
    names = list(names)
    if len(set(names)) == len(names):
        return names
    return [f"{name} (#{i})" for i, name in enumerate(names, 1)]  # same settings, started twice


def trend_of(metrics: Sequence[Any]) -> LossTrend:
    """Whether a run's test loss is still falling, has turned upward, or has levelled off."""
    if not metrics:
        raise ValueError("no epochs yet")
    losses = [m.test_loss for m in metrics]
    i_best = min(range(len(losses)), key=losses.__getitem__)
    best, last, n = losses[i_best], losses[-1], len(losses)
    if i_best >= n - 2 and last <= best * (1 + RISE_TOLERANCE):
        trend: Trend = "falling"
    elif last > best * (1 + RISE_TOLERANCE):
        trend = "rising"
    else:
        trend = "flat"
    return LossTrend(trend, metrics[i_best].epoch, best, last, metrics[-1].epoch)


def _single(curve: Curve) -> str:
    m = curve.metrics[-1]
    t = trend_of(curve.metrics)
    head = f"{curve.label} after {_epochs(t.epochs)}: test loss {t.last:.2f}"
    acc = f"test accuracy {m.test_acc:.1%}"
    if t.epochs == 1:
        return f"{head}, {acc}. The trend shows from epoch 2."
    if t.trend == "rising":
        return (
            f"{curve.label} test loss turned upward after epoch {t.best_epoch} "
            f"({t.best:.2f} → {t.last:.2f}) while train loss is {m.train_loss:.2f}: overfitting."
        )
    if t.trend == "flat":
        return f"{head}, levelled off since epoch {t.best_epoch}; {acc}."
    return f"{head} and still falling; {acc}."


def _epochs(n: int) -> str:
    return "1 epoch" if n == 1 else f"{n} epochs"


def reading(curves: Sequence[Curve]) -> str:
    """One sentence on what the curves show, e.g. ``p = 0 test loss turned upward after epoch
    14 while p = 0.50 kept falling (0.20 vs 0.14)``."""
    started = [c for c in curves if c.metrics]
    if not curves:
        return "Nothing yet: start a run and its curves appear after its first epoch."
    if not started:
        return "Training: the first point appears when epoch 1 finishes."
    if len(started) == 1:
        return _single(started[0])

    trends = {id(c): trend_of(c.metrics) for c in started}  # labels need not be unique
    best = min(started, key=lambda c: trends[id(c)].last)
    worst = max(started, key=lambda c: trends[id(c)].last)
    tb, tw = trends[id(best)], trends[id(worst)]
    rising = [c for c in started if trends[id(c)].trend == "rising"]

    if rising and trends[id(best)].trend != "rising":
        over = max(rising, key=lambda c: trends[id(c)].last)
        to = trends[id(over)]
        verb = "kept falling" if tb.trend == "falling" else "held steady"
        return (
            f"{over.label} test loss turned upward after epoch {to.best_epoch} while "
            f"{best.label} {verb} ({to.last:.2f} vs {tb.last:.2f})."
        )
    if rising and len(rising) == len(started):
        turns = ", ".join(f"{c.label} after epoch {trends[id(c)].best_epoch}" for c in rising)
        return (
            f"Every test loss has turned upward ({turns}); lowest now {best.label} "
            f"at {tb.last:.2f}."
        )
    if rising:
        to = trends[id(best)]
        return (
            f"{best.label} test loss turned upward after epoch {to.best_epoch} but is still the "
            f"lowest ({tb.last:.2f} vs {worst.label} {tw.last:.2f})."
        )
    if abs(tw.last - tb.last) < 0.005:
        return f"The runs are level so far: test loss {tb.last:.2f}."
    still = "still falling" if all(t.trend == "falling" for t in trends.values()) else "so far"
    return (
        f"Test loss {still}: {best.label} lowest at {tb.last:.2f}, "
        f"{worst.label} highest at {tw.last:.2f}."
    )
