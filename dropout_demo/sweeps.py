"""Sweeps: grids of runs (p × seeds, training-set size × p), their hand-out to a class,
their aggregates (mean ± std per grid point) and a one-line reading. Pure: no training here.

A *grid* is a base ``TrainConfig`` and the values it varies. A *cell* is one run of it: the base
with ``p``, ``seed`` (and, for a size grid, ``train_size``) replaced. A grid *point* is a cell
without its seed, ``(train_size, p)``; aggregates pool the seeds of a point.
"""

from __future__ import annotations

import csv
import io
import math
import zlib
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .config import MNIST_TRAIN_SIZE, PRESETS, ConfigError, TrainConfig

# A class of 30 fills a 10 × 3 grid; a bigger grid would keep a 2-core server busy for hours.
MAX_CELLS = 100

# Base presets by the short name used in links (``preset=overfit``).
BASE_PRESETS: dict[str, TrainConfig] = {
    "overfit": PRESETS["Overfitting lab"],
    "seed": PRESETS["Seed recipe"],
    "tiny": PRESETS["Tiny (test)"],
}

# Base-config fields a link may override, by query key. ``device`` is left out on purpose: it
# belongs to the machine that trains, not to the experiment a link describes.
QUERY_FIELDS = ("epochs", "lr", "batch_size", "train_size", "eval_size", "precision")

# What each finished cell reports; aggregates give mean ± std of each per grid point.
METRICS = (
    "final_test_loss",
    "best_test_loss",
    "final_test_acc",
    "final_test_error",
    "final_train_loss",
    "gap",
)

# Reading rules (see ``reading``). Training "underfits" from the smallest p above the best p
# from which on every p has a final train loss at least this many times the best p's (and above
# it by more than their combined std) and a final test loss worse than the best's by more than
# their combined std.
UNDERFIT_TRAIN_RATIO = 1.5


class GridError(ValueError):
    """An invalid grid or link; the message lists every problem in words."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid sweep grid: " + "; ".join(self.problems))


def _fmt_num(x: float) -> str:
    """Shortest text that reads back as the same float: ``0``, ``0.1``, ``0.001``."""
    s = repr(float(x))
    return s[:-2] if s.endswith(".0") else s


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Cell:
    """One run of a grid: its stable index, its coordinates and the exact config to train."""

    index: int
    p: float
    seed: int
    train_size: int
    config: TrainConfig

    @property
    def point(self) -> tuple[int, float]:
        """The grid point this cell is a seed of: ``(train_size, p)``."""
        return (self.train_size, self.p)


@dataclass(frozen=True)
class Grid:
    """A sweep grid. Without ``sizes``: dropout rates × seeds on ``base`` (a p grid). With
    ``sizes``: training-set sizes × dropout rates × seeds (a size grid; ``base.train_size`` is
    replaced by each size). Values are sorted and the base's replaced fields pinned, so grids
    that run the same cells compare equal.

    Cell indices run seed-major: the first ``len(sizes or 1) × len(ps)`` cells are one whole
    curve at the first seed, so a class filling cells in index order sees a full curve early.
    """

    ps: tuple[float, ...]
    seeds: tuple[int, ...] = (0,)
    sizes: tuple[int, ...] = ()
    base: TrainConfig = field(default_factory=lambda: BASE_PRESETS["overfit"])

    def __post_init__(self) -> None:
        problems: list[str] = []
        ps = self._checked("p", self.ps, problems, self._check_p)
        seeds = self._checked("seeds", self.seeds, problems, self._check_seed)
        sizes = self._checked("sizes", self.sizes, problems, self._check_size, allow_empty=True)
        if not isinstance(self.base, TrainConfig):
            problems.append(f"base must be a TrainConfig, got {type(self.base).__name__}")
        if not problems:
            n = len(ps) * len(seeds) * max(1, len(sizes))
            if n > MAX_CELLS:
                problems.append(f"{n} cells is too many (at most {MAX_CELLS})")
        if problems:
            raise GridError(problems)
        object.__setattr__(self, "ps", tuple(sorted(ps)))
        object.__setattr__(self, "seeds", tuple(sorted(seeds)))
        object.__setattr__(self, "sizes", tuple(sorted(sizes)))
        # The base's p, seed (and train_size in a size grid) are replaced in every cell: pin
        # them to the first cell's so that grids running the same cells compare equal.
        size = self.sizes[0] if self.sizes else self.base.train_size
        canonical = self.base.replace(p=self.ps[0], seed=self.seeds[0], train_size=size)
        object.__setattr__(self, "base", canonical)

    @staticmethod
    def _checked(name, values, problems, check, allow_empty=False) -> tuple:
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            problems.append(f"{name} must be a list of values, got {values!r}")
            return ()
        values = tuple(values)
        if not values and not allow_empty:
            problems.append(f"{name}: give at least one value")
        bad = [msg for v in values if (msg := check(v))]
        if bad:
            problems.append(f"{name}: {bad[0]}")
            return ()
        # p is rounded to 10 decimals: 0.1 * 3 and 0.3 are one cell (and one run identity)
        normal = [round(float(v), 10) if name == "p" else int(v) for v in values]
        dups = sorted(v for v, k in Counter(normal).items() if k > 1)
        if dups:
            problems.append(f"{name}: duplicate value(s) {', '.join(_fmt_num(v) for v in dups)}")
        return tuple(normal)

    @staticmethod
    def _check_p(v: Any) -> str | None:
        ok = isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
        if not ok or not 0.0 <= float(v) < 1.0:
            return f"a dropout rate must be in [0, 1), got {v!r}"
        return None

    @staticmethod
    def _check_seed(v: Any) -> str | None:
        return None if _is_int(v) and v >= 0 else f"a seed must be an integer >= 0, got {v!r}"

    @staticmethod
    def _check_size(v: Any) -> str | None:
        if _is_int(v) and 1 <= v <= MNIST_TRAIN_SIZE:
            return None
        return f"a training-set size must be an integer in 1..{MNIST_TRAIN_SIZE:,}, got {v!r}"

    @property
    def kind(self) -> str:
        """``"p"`` (dropout rates × seeds) or ``"size"`` (sizes × dropout rates × seeds)."""
        return "size" if self.sizes else "p"

    def __len__(self) -> int:
        return len(self.ps) * len(self.seeds) * max(1, len(self.sizes))

    def cells(self) -> list[Cell]:
        sizes = self.sizes or (self.base.train_size,)
        out = []
        for seed in self.seeds:
            for size in sizes:
                for p in self.ps:
                    config = self.base.replace(p=p, seed=seed, train_size=size)
                    out.append(Cell(len(out), p, seed, size, config))
        return out

    def describe(self) -> str:
        """E.g. ``10 dropout rates × 3 seeds = 30 runs (1,000 images, 30 epochs)``."""
        parts = [_count(len(self.sizes), "size")] if self.sizes else []
        parts += [_count(len(self.ps), "dropout rate"), _count(len(self.seeds), "seed")]
        base = f"{self.base.epochs} epochs"
        if not self.sizes:
            base = f"{self.base.train_size:,} images, " + base
        return f"{' × '.join(parts)} = {_count(len(self), 'run')} ({base})"

    # -- links -------------------------------------------------------------------------------

    def to_query(self) -> dict[str, str]:
        """The grid as query parameters, e.g. ``{"preset": "overfit", "p": "0,0.5",
        "seeds": "0,1,2"}``, plus any base field that differs from the preset."""
        slug, diffs = _closest_preset(self.base, skip_train_size=bool(self.sizes))
        q = {"preset": slug}
        if self.sizes:
            q["sizes"] = ",".join(str(s) for s in self.sizes)
        q["p"] = ",".join(_fmt_num(p) for p in self.ps)
        q["seeds"] = ",".join(str(s) for s in self.seeds)
        for name in diffs:
            value = getattr(self.base, name)
            q[name] = _fmt_num(value) if isinstance(value, float) else str(value)
        return q

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> Grid:
        """The grid a link describes. Keys not about grids are ignored (a page's URL carries
        other state); a missing ``preset`` means ``overfit``, missing ``seeds`` means ``0``,
        and a size grid without ``p`` uses ``0,0.5``. Raises ``GridError`` on bad values."""
        q = {k: (v[-1] if isinstance(v, list) and v else v) for k, v in query.items()}
        problems: list[str] = []
        slug = str(q.get("preset", "overfit")).strip()
        if slug not in BASE_PRESETS:
            names = ", ".join(BASE_PRESETS)
            problems.append(f"preset: unknown preset {slug!r} (one of {names})")
            slug = "overfit"
        sizes = _parse_list(q, "sizes", int, problems, default=())
        ps = _parse_list(q, "p", float, problems, default=(0.0, 0.5) if sizes else None)
        seeds = _parse_list(q, "seeds", int, problems, default=(0,))
        if sizes and "train_size" in q:
            problems.append("train_size: a size grid takes its sizes from sizes=")
        overrides: dict[str, Any] = {}
        for name in QUERY_FIELDS:
            if name in q:
                raw = str(q[name]).strip()
                kind = {"lr": float, "precision": str}.get(name, int)
                try:
                    overrides[name] = kind(raw)
                except ValueError:
                    problems.append(f"{name}: {raw!r} is not {_a(kind)}")
        base = BASE_PRESETS[slug]
        try:
            base = base.replace(**overrides)
        except ConfigError as e:
            problems.extend(e.problems)
        if problems:
            raise GridError(problems)
        return cls(ps=ps, seeds=seeds, sizes=sizes, base=base)


def _a(kind: type) -> str:
    return {int: "an integer", float: "a number"}.get(kind, "valid")


def _parse_list(q, key, kind, problems, default) -> tuple:
    if key not in q:
        if default is None:
            problems.append(f"{key}: missing (e.g. {key}=0,0.5)")
            return ()
        return tuple(default)
    raw = str(q[key])
    items = [s.strip() for s in raw.split(",")]
    if not raw.strip() or any(not s for s in items):
        problems.append(f"{key}: {raw!r} is not a comma-separated list")
        return ()
    out = []
    for s in items:
        try:
            value = kind(s)
        except ValueError:
            problems.append(f"{key}: {s!r} is not {_a(kind)}")
            return ()
        if kind is float and not math.isfinite(value):
            problems.append(f"{key}: {s!r} is not a finite number")
            return ()
        out.append(value)
    return tuple(out)


# Base fields a link cannot carry (the grid's axes p and seed aside, and device): a link names
# the preset whose values of these the base has, e.g. the Overfitting lab's per-epoch subset.
UNLINKED_FIELDS = tuple(
    f.name for f in fields(TrainConfig) if f.name not in (*QUERY_FIELDS, "p", "seed", "device")
)


def _closest_preset(base: TrainConfig, skip_train_size: bool) -> tuple[str, list[str]]:
    """The base preset that agrees with ``base`` on the fields a link cannot carry and has the
    fewest differing link fields, and those fields."""
    names = [n for n in QUERY_FIELDS if not (skip_train_size and n == "train_size")]
    best: tuple[tuple[int, int], str, list[str]] | None = None
    for slug, preset in BASE_PRESETS.items():
        diffs = [n for n in names if getattr(base, n) != getattr(preset, n)]
        unlinked = sum(getattr(base, n) != getattr(preset, n) for n in UNLINKED_FIELDS)
        rank = (unlinked, len(diffs))
        if best is None or rank < best[0]:
            best = (rank, slug, diffs)
    assert best is not None
    return best[1], best[2]


# The Overfitting lab's p-curve for a class of 30: 10 dropout rates × 3 seeds.
P_CURVE = Grid(ps=tuple(i / 10 for i in range(10)), seeds=(0, 1, 2))
GRID_PRESETS: dict[str, Grid] = {
    "p-curve": P_CURVE,
    # The same curve with the seeds 1–5 (50 runs): tighter error bars.
    "p-curve, 5 seeds": Grid(ps=P_CURVE.ps, seeds=(1, 2, 3, 4, 5)),
    # Where dropout helps: 5 training-set sizes × p ∈ {0, 0.5} × 3 seeds = 30 runs.
    "data-size": Grid(ps=(0.0, 0.5), seeds=(0, 1, 2), sizes=(100, 300, 1_000, 3_000, 10_000)),
}


# -- handing cells out to a class ------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """Who claimed a cell and when (any clock, e.g. ``time.time()``; only order matters)."""

    student: str
    at: float


def next_cell(
    grid_cells: Sequence[Cell],
    claims: Mapping[int, Claim],
    finished: Collection[int],
    student: str,
) -> Cell | None:
    """The cell to give ``student`` when they press Start. Policy, first match wins:

    1. a cell the student claimed that is not finished (the oldest such claim): pressing Start
       twice, or reloading, never takes a second cell;
    2. the lowest-index cell nobody claimed and nobody finished (cells finished elsewhere, e.g.
       from the shared run cache, count as taken), so no two students share a cell while any
       cell is free;
    3. the grid is fully taken: the claimed-but-unfinished cell with the oldest claim (ties: the
       lower index): the claim most likely to be abandoned; the runs are shared, so the late
       student attaches to it or restarts it;
    4. every cell is finished: a finished cell, the same one for the same student and spread
       over students (by a stable hash of the student id), so a late student has a run to watch.

    Returns None only for an empty grid. Claims and finished indices outside the grid are ignored.
    The caller records a claim (index → student, now) only for a cell that had none (step 2):
    in steps 3 and 4 the student shares a cell and its first claim stays.
    """
    if not grid_cells:
        return None
    by_index = {c.index: c for c in grid_cells}
    done = {i for i in finished if i in by_index}
    claimed = {i: c for i, c in claims.items() if i in by_index}

    def oldest(indices: Iterable[int]) -> Cell | None:
        order = sorted(indices, key=lambda i: (claimed[i].at, i))
        return by_index[order[0]] if order else None

    own = oldest(i for i, c in claimed.items() if c.student == student and i not in done)
    if own is not None:
        return own
    for cell in sorted(grid_cells, key=lambda c: c.index):
        if cell.index not in claimed and cell.index not in done:
            return cell
    running = oldest(i for i in claimed if i not in done)
    if running is not None:
        return running
    ordered = sorted(by_index)
    return by_index[ordered[zlib.crc32(student.encode()) % len(ordered)]]


# -- results and aggregates ------------------------------------------------------------------


@dataclass(frozen=True)
class CellResult:
    """The numbers a finished cell contributes."""

    final_test_loss: float
    best_test_loss: float
    final_test_acc: float  # fraction in [0, 1]
    final_train_loss: float
    best_epoch: int = 0  # 1-based epoch of the best test loss; 0 when unknown
    metrics: tuple[Any, ...] = ()  # per-epoch metrics, optional (for charts)

    @property
    def gap(self) -> float:
        """Generalisation gap: final test loss minus final train loss."""
        return self.final_test_loss - self.final_train_loss

    @property
    def final_test_error(self) -> float:
        return 1.0 - self.final_test_acc

    @classmethod
    def from_metrics(cls, metrics: Sequence[Any]) -> CellResult:
        """From per-epoch metrics: ``EpochMetrics`` objects or their dicts."""
        if not metrics:
            raise ValueError("a cell result needs at least one epoch")

        def get(m: Any, name: str) -> Any:
            return m[name] if isinstance(m, Mapping) else getattr(m, name)

        losses = [float(get(m, "test_loss")) for m in metrics]
        i_best = min(range(len(losses)), key=losses.__getitem__)
        last = metrics[-1]
        return cls(
            final_test_loss=losses[-1],
            best_test_loss=losses[i_best],
            final_test_acc=float(get(last, "test_acc")),
            final_train_loss=float(get(last, "train_loss")),
            best_epoch=int(get(metrics[i_best], "epoch")),
            metrics=tuple(metrics),
        )


@dataclass(frozen=True)
class Stat:
    """Mean ± sample standard deviation (ddof = 1) of ``values``; std is 0 when n < 2."""

    mean: float
    std: float
    n: int
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        v = tuple(float(x) for x in values)
        if not v:
            raise ValueError("no values")
        arr = np.asarray(v)
        std = float(arr.std(ddof=1)) if len(v) >= 2 else 0.0
        return cls(float(arr.mean()), std, len(v), v)

    def text(self, digits: int = 3) -> str:
        """``0.153 ± 0.017`` (n ≥ 2) or ``0.153 (n = 1)``."""
        if self.n < 2:
            return f"{self.mean:.{digits}f} (n = 1)"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def combined_std(a: Stat, b: Stat) -> float:
    """Spread of a difference of one value from each: sqrt(std_a² + std_b²)."""
    return math.hypot(a.std, b.std)


@dataclass(frozen=True)
class PointStats:
    """Aggregates of one grid point ``(train_size, p)`` over its finished seeds."""

    train_size: int
    p: float
    seeds: tuple[int, ...]
    stats: Mapping[str, Stat]  # by metric name, see METRICS

    @property
    def n(self) -> int:
        return len(self.seeds)

    def __getitem__(self, metric: str) -> Stat:
        return self.stats[metric]


def aggregate(grid_cells: Sequence[Cell], results: Mapping[int, CellResult]) -> list[PointStats]:
    """Mean ± std of every metric per grid point, over the seeds finished so far; points with
    no finished seed are left out. Sorted by (train_size, p)."""
    groups: dict[tuple[int, float], list[tuple[int, CellResult]]] = {}
    for cell in grid_cells:
        if cell.index in results:
            groups.setdefault(cell.point, []).append((cell.seed, results[cell.index]))
    out = []
    for (size, p), members in sorted(groups.items()):
        members.sort(key=lambda m: m[0])
        stats = {name: Stat.of(getattr(r, name) for _, r in members) for name in METRICS}
        out.append(PointStats(size, p, tuple(s for s, _ in members), stats))
    return out


@dataclass(frozen=True)
class SizeEffect:
    """At one training-set size: ``metric`` without dropout (the grid's lowest p) and with
    ``p_on``, and the difference on − off (negative: dropout lowered it)."""

    train_size: int
    p_off: float
    p_on: float
    metric: str
    off: Stat
    on: Stat
    wins: int  # seeds present at both p where the dropout run is lower
    pairs: int  # seeds present at both p

    @property
    def diff(self) -> float:
        return self.on.mean - self.off.mean

    @property
    def diff_std(self) -> float:
        return combined_std(self.on, self.off)

    @property
    def verdict(self) -> str:
        """``helps`` / ``hurts`` when the means differ by more than the combined std, else
        ``unclear``."""
        if abs(self.diff) <= self.diff_std:
            return "unclear"
        return "helps" if self.diff < 0 else "hurts"


def size_effects(
    grid_cells: Sequence[Cell],
    results: Mapping[int, CellResult],
    metric: str = "final_test_error",
) -> list[SizeEffect]:
    """Per size and per dropout rate above the lowest: the effect of dropout on ``metric``.
    Only sizes where both rates have a finished seed appear. Sorted by (p_on, size)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (one of {', '.join(METRICS)})")
    points = {(ps.train_size, ps.p): ps for ps in aggregate(grid_cells, results)}
    values = {
        (c.train_size, c.p, c.seed): getattr(results[c.index], metric)
        for c in grid_cells
        if c.index in results
    }
    all_ps = sorted({c.p for c in grid_cells})
    if len(all_ps) < 2:
        return []
    p_off = all_ps[0]
    out = []
    for p_on in all_ps[1:]:
        for size in sorted({c.train_size for c in grid_cells}):
            off, on = points.get((size, p_off)), points.get((size, p_on))
            if off is None or on is None:
                continue
            common = sorted(set(off.seeds) & set(on.seeds))
            wins = sum(values[size, p_on, s] < values[size, p_off, s] for s in common)
            out.append(
                SizeEffect(size, p_off, p_on, metric, off[metric], on[metric], wins, len(common))
            )
    return out


# -- the reading -----------------------------------------------------------------------------


def _p(p: float) -> str:
    return f"p = {_fmt_num(p)}"


def _size(n: int) -> str:
    return f"{n:,}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def reading(grid_cells: Sequence[Cell], results: Mapping[int, CellResult]) -> str:
    """One line that reads the finished cells, by deterministic rules on final test loss.

    Grids with one training-set size (p grids) — *best p*: the lowest mean final test loss
    (ties: the smaller p), with its mean ± std; the other p whose mean is above it by no more
    than the combined std of the two are named as "within noise". The lowest and the highest p
    are quoted when not the best. *Underfitting*: the smallest p above the best p such that
    it and every larger p have a mean final train loss ≥ ``UNDERFIT_TRAIN_RATIO`` × the best
    p's and above it by more than the combined std, and a mean final test loss above the best
    by more than the combined std.

    Size grids — at each size, dropout *helps* when the mean final test loss with dropout is
    below the one without by more than the combined std (``SizeEffect.verdict``), *hurts* when
    above by more, and is *unclear* otherwise.

    A std is 0 at a point with one seed, so every difference counts there; the line then ends
    with a warning that single-seed differences may be noise.
    """
    points = aggregate(grid_cells, results)
    if not points:
        return "No finished runs yet."
    single = any(pt.n < 2 for pt in points)
    if len({c.train_size for c in grid_cells}) > 1:
        line = _size_reading(size_effects(grid_cells, results, "final_test_loss"))
    else:
        line = _p_reading(points)
    if single:
        line += " (Some points have a single seed: no error bars, differences may be noise.)"
    return line


def _p_reading(points: list[PointStats]) -> str:
    loss = "final_test_loss"
    if len(points) == 1:
        pt = points[0]
        return f"Only {_p(pt.p)} so far: final test loss {pt[loss].text()}."
    best = min(points, key=lambda pt: (pt[loss].mean, pt.p))
    b = best[loss]
    near = [
        pt.p
        for pt in points
        if pt is not best and pt[loss].mean - b.mean <= combined_std(pt[loss], b)
    ]
    line = f"Lowest final test loss at {_p(best.p)}: {b.text()}"
    if near:
        line += f" (p = {_join([_fmt_num(p) for p in near])} within noise of it)"
    line += "."
    ends = [pt for pt in (points[0], points[-1]) if pt is not best and pt.p not in near]
    if ends:
        line += " " + "; ".join(f"{_p(pt.p)}: {pt[loss].text()}" for pt in ends)
        line += "."
    under = underfit_from(points)
    if under is not None:
        tr = "final_train_loss"
        line += (
            f" Training underfits from {_p(under.p)}: train loss {under[tr].text()} vs "
            f"{best[tr].text()} at {_p(best.p)}, test loss {under[loss].text()}."
        )
    elif points[-1].p > best.p:
        line += f" No sign of underfitting up to {_p(points[-1].p)}."
    return line


def underfit_from(points: Sequence[PointStats]) -> PointStats | None:
    """The point (same training-set size, sorted by p) from which training underfits, by the
    rule in ``reading``; None when no p qualifies."""
    if not points:
        return None
    loss, tr = "final_test_loss", "final_train_loss"
    best = min(points, key=lambda pt: (pt[loss].mean, pt.p))

    def underfits(pt: PointStats) -> bool:
        t, bt = pt[tr], best[tr]
        return (
            t.mean >= UNDERFIT_TRAIN_RATIO * bt.mean
            and t.mean - bt.mean > combined_std(t, bt)
            and pt[loss].mean - best[loss].mean > combined_std(pt[loss], best[loss])
        )

    above = [pt for pt in sorted(points, key=lambda pt: pt.p) if pt.p > best.p]
    start = None
    for pt in reversed(above):
        if not underfits(pt):
            break
        start = pt
    return start


def _size_reading(effects: list[SizeEffect]) -> str:
    if not effects:
        return "Waiting for runs with and without dropout at the same training-set size."
    parts = []
    for p_on in sorted({e.p_on for e in effects}):
        mine = [e for e in effects if e.p_on == p_on]
        by = {v: [e for e in mine if e.verdict == v] for v in ("helps", "hurts", "unclear")}
        bits = []
        if by["helps"]:
            sizes = _join([_size(e.train_size) for e in by["helps"]])
            diffs = ", ".join(f"{e.diff:+.3f} ± {e.diff_std:.3f}" for e in by["helps"])
            bits.append(f"lowers the final test loss at {sizes} images ({diffs})")
        if by["hurts"]:
            sizes = _join([_size(e.train_size) for e in by["hurts"]])
            diffs = ", ".join(f"{e.diff:+.3f} ± {e.diff_std:.3f}" for e in by["hurts"])
            what = "it" if bits else "the final test loss"
            bits.append(f"raises {what} at {sizes} images ({diffs})")
        if by["unclear"]:
            sizes = _join([_size(e.train_size) for e in by["unclear"]])
            bits.append(f"makes no clear difference at {sizes} images")
        p_off = mine[0].p_off
        who = f"Dropout ({_p(p_on)})" if p_off == 0 else f"{_p(p_on)} (against {_p(p_off)})"
        parts.append(f"{who} " + "; ".join(bits))
    return ". ".join(parts) + "."


# -- CSV -------------------------------------------------------------------------------------

CONFIG_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("p", "seed"))
CSV_FIELDS = (
    "cell",
    "train_size",
    "p",
    "seed",
    *(n for n in CONFIG_FIELDS if n != "train_size"),
    "final_test_loss",
    "best_test_loss",
    "best_epoch",
    "final_test_acc",
    "final_train_loss",
    "gap",
    "status",
)


def grid_csv(
    grid_cells: Sequence[Cell],
    results: Mapping[int, CellResult],
    statuses: Mapping[int, str] | None = None,
) -> str:
    """One row per cell: coordinates, config, results (empty until finished) and a status
    (``statuses[index]`` when given, else ``done`` with a result and ``pending`` without)."""
    statuses = statuses or {}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for cell in grid_cells:
        row: dict[str, Any] = {"cell": cell.index, "p": cell.p, "seed": cell.seed}
        row.update({n: getattr(cell.config, n) for n in CONFIG_FIELDS})
        r = results.get(cell.index)
        if r is not None:
            row.update(
                final_test_loss=r.final_test_loss,
                best_test_loss=r.best_test_loss,
                best_epoch=r.best_epoch or "",
                final_test_acc=r.final_test_acc,
                final_train_loss=r.final_train_loss,
                gap=r.gap,
            )
        row["status"] = statuses.get(cell.index, "done" if r is not None else "pending")
        writer.writerow(row)
    return out.getvalue()
