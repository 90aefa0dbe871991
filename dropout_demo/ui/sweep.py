"""Sweep: a grid of runs (dropout rates × seeds, or training-set sizes × p), trained through the
shared job manager a few at a time, with charts that fill as cells finish.

The grid lives in the URL (``Grid.to_query``), so a link restores it. Cells are ordinary runs:
a cell anyone trained before is a cached result at once, and a cell someone is training now is
shared. The class board (:mod:`.classroom`) reuses the table, charts and reading below.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from .. import sweep_charts
from ..charts import frozen
from ..classes import cell_key, cell_results
from ..config import ConfigError
from ..jobs import JobError, JobSnapshot
from ..jobs.admission import check_config
from ..sweeps import (
    BASE_PRESETS,
    GRID_PRESETS,
    MAX_CELLS,
    Cell,
    CellResult,
    Grid,
    GridError,
    grid_csv,
    reading,
)
from ..training import evaluated_images
from . import state

POLL_SECONDS = 1.0
TEST_PRESETS_ENV = "DROPOUT_DEMO_TEST_PRESETS"  # "1": offer the Tiny (test) base, as the Lab does
# A session may have 4 runs needing compute queued or running at once (the manager refuses more):
# the sweep keeps at most this many of its own in flight and submits the next as one finishes.
IN_FLIGHT = 4
BASE_LABELS = {"overfit": "Overfitting lab", "seed": "Seed recipe", "tiny": "Tiny (test)"}
BASE_CAPTIONS = {
    "overfit": "1,000 images · 30 epochs",
    "seed": "60,000 images · 5 epochs",
    "tiny": "256 images · 3 epochs",
}
P_KIND, SIZE_KIND = "Dropout rates × seeds", "Training-set sizes × p"
GRID_KEYS = ("preset", "sizes", "p", "seeds", *("epochs", "lr", "batch_size", "train_size"))
GRID_KEYS += ("eval_size", "precision")
_PLAN = "sweep_plan"  # {"grid": Grid, "pending": [cell indices], "errors": {index: text}}
_LOADED = "sweep_loaded_query"  # the URL grid the widgets were last filled from
_LAST = "sweep_last_grid"  # the grid this session last showed (not a widget: survives pages)


def _nums(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _ints(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)


# ---------------------------------------------------------------------------- shared pieces
class _StoreResults:
    """The run store's results of a grid's cells, looked up once per change of the store's
    directory for every session showing that grid: a class board's cost per tick does not grow
    with the number of students watching it. (A save or delete replaces files in the
    directory, which changes its modification time.)"""

    def __init__(self, size: int = 64):
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple, dict[int, CellResult]] = OrderedDict()

    def get(self, cells: Sequence[Cell]) -> dict[int, CellResult]:
        store = state.store()
        try:
            stamp = os.stat(store.root).st_mtime_ns
        except OSError:
            return {}
        # The time bucket bounds staleness where directory times are coarse (whole seconds).
        key = (str(store.root), stamp, int(time.time() // 5), tuple(cells))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        results = cell_results(cells, store)  # outside the lock: a directory scan
        with self._lock:
            self._items[key] = results
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return results


_store_results = _StoreResults()


def results_of(cells: Sequence[Cell], live: Sequence[JobSnapshot]) -> dict[int, CellResult]:
    """Finished cells: this session's finished rows (at once, even before they are saved), then
    the run store's (whoever trained them)."""
    return {**_store_results.get(cells), **cell_results(cells, None, live)}


def status_of(cell: Cell, snap: JobSnapshot | None, result: CellResult | None) -> str:
    """A short status: done (cached) / running k/N / queued #n / failed / stopped / ..."""
    if result is not None:
        return "done"
    if snap is None:
        return ""
    if snap.status == "running":
        return f"running {snap.epoch}/{snap.config.epochs}"
    if snap.status == "queued":
        return f"queued #{snap.queue_position}" if snap.queue_position else "queued"
    return {"cancelled": "stopped"}.get(snap.status, snap.status)


def cell_table(
    cells: Sequence[Cell],
    results: Mapping[int, CellResult],
    statuses: Mapping[int, str],
) -> pd.DataFrame:
    """One row per seed (and size), one column per p: the final test loss of a finished cell,
    else its status (empty: not started)."""
    sizes = len({c.train_size for c in cells}) > 1
    rows: dict[tuple, dict[str, str]] = {}
    for c in cells:
        label = (f"{c.train_size:,} imgs · " if sizes else "") + f"seed {c.seed}"
        row = rows.setdefault((c.train_size, c.seed), {"cell": label})
        r = results.get(c.index)
        text = f"✓ {r.final_test_loss:.3f}" if r is not None else statuses.get(c.index, "")
        row[f"p = {c.p:g}"] = text or "·"
    ordered = [rows[k] for k in sorted(rows)]
    return pd.DataFrame(ordered).set_index("cell")


@functools.lru_cache(maxsize=256)
def _figures(cells: tuple[Cell, ...], content: tuple) -> dict[str, Any]:
    results = {i: r for i, r in content}
    # drawn on every tick of every page showing this grid: plotly's to_dict() once, not per tick
    return {name: frozen(fig) for name, fig in sweep_charts.figures_for(cells, results).items()}


@functools.lru_cache(maxsize=256)
def _summaries(cells: tuple[Cell, ...], content: tuple) -> dict[str, str]:
    results = {i: r for i, r in content}
    return sweep_charts.summaries_for(cells, results)


def content_of(results: Mapping[int, CellResult]) -> tuple:
    # CellResults hold per-epoch metrics; two results with equal numbers draw the same.
    return tuple(
        (
            i,
            CellResult(r.final_test_loss, r.best_test_loss, r.final_test_acc, r.final_train_loss),
        )
        for i, r in sorted(results.items())
    )


def grid_charts(
    cells: Sequence[Cell], results: Mapping[int, CellResult], key: str, height: int | None = None
) -> None:
    """The sweep charts (built once per new result, for every session showing them)."""
    content = content_of(results)
    figs = _figures(tuple(cells), content)
    texts = _summaries(tuple(cells), content)  # each chart's numbers, for screen readers
    names = list(figs)
    columns = st.columns(2) if len(names) > 1 else [st.container()]
    for i, name in enumerate(names):
        fig = figs[name]
        if height is not None:  # the presenter view: taller, larger type for the back row
            fig = sweep_charts.for_projector(fig, height)
        with columns[i % len(columns)]:
            st.plotly_chart(
                fig, key=f"{key}_{name}", config={"displaylogo": False}, alt=texts[name]
            )


def reading_line(cells: Sequence[Cell], results: Mapping[int, CellResult]) -> str:
    return reading(cells, results)


# ---------------------------------------------------------------------------- grid picking
def _bases() -> list[str]:
    slugs = ["overfit", "seed"]
    current = st.session_state.get("sweep_base")
    if os.environ.get(TEST_PRESETS_ENV) == "1" or current == "tiny":
        slugs.append("tiny")
    return slugs


def _fill_widgets(grid: Grid, slug: str) -> None:
    """Put ``grid`` into the widgets' state (before they are drawn)."""
    st.session_state["sweep_kind"] = SIZE_KIND if grid.sizes else P_KIND
    st.session_state["sweep_ps"] = _nums(grid.ps)
    st.session_state["sweep_seeds"] = _ints(grid.seeds)
    st.session_state["sweep_sizes"] = _ints(grid.sizes) if grid.sizes else "100, 300, 1000"
    st.session_state["sweep_base"] = slug
    st.session_state["sweep_epochs"] = grid.base.epochs
    # Link fields the page has no widget for (lr, batch, ...) are kept as they came.
    query = grid.to_query()
    st.session_state["sweep_extra"] = {
        k: v for k, v in query.items() if k not in ("preset", "sizes", "p", "seeds", "epochs")
    }


def _apply_preset() -> None:
    name = st.session_state.get("sweep_grid_preset")
    grid = GRID_PRESETS.get(name)
    if grid is not None:
        slug = st.session_state.get("sweep_base", "overfit")
        _fill_widgets(grid, "overfit")
        st.session_state["sweep_base"] = slug
        st.session_state["sweep_epochs"] = BASE_PRESETS[slug].epochs
        st.session_state["sweep_extra"] = {}


def _base_changed() -> None:
    slug = st.session_state.get("sweep_base", "overfit")
    st.session_state["sweep_epochs"] = BASE_PRESETS[slug].epochs
    st.session_state["sweep_extra"] = {}


def _url_grid() -> tuple[Grid | None, str | None]:
    """The grid the URL describes (None when it has none), or a readable problem."""
    query = {k: st.query_params.get(k) for k in GRID_KEYS if k in st.query_params}
    if not query:
        return None, None
    try:
        return Grid.from_query(query), None
    except GridError as exc:
        problems = "\n".join(f"- {p}" for p in exc.problems)
        return (
            None,
            f"This link's sweep grid can't be used, so the default grid is shown:\n{problems}",
        )


def grid_picker() -> tuple[Grid | None, str | None]:
    """The grid widgets, filled from the URL on arrival; returns (grid, None) or (None, why)."""
    current = {k: st.query_params.get(k) for k in GRID_KEYS if k in st.query_params}
    if st.session_state.get(_LOADED) != current or "sweep_ps" not in st.session_state:
        grid, problem = _url_grid()
        if problem:
            st.error(problem)
        if grid is None and not current:
            # Back from another page (its link carries no grid): the grid this session had.
            grid = st.session_state.get(_LAST)
        if grid is None:
            _fill_widgets(GRID_PRESETS["p-curve"], "overfit")
        else:
            _fill_widgets(grid, grid.to_query()["preset"])
        st.session_state[_LOADED] = current

    top = st.columns([1.3, 1.3, 2.4], vertical_alignment="bottom")
    top[0].selectbox(
        "Grid preset",
        list(GRID_PRESETS),
        index=None,
        placeholder="fill the values from a preset",
        key="sweep_grid_preset",
        on_change=_apply_preset,
        help="p-curve: 10 dropout rates × 3 seeds; data-size: 5 sizes × p ∈ {0, 0.5} × 3 seeds.",
    )
    kind = top[1].radio("Grid", [P_KIND, SIZE_KIND], key="sweep_kind")
    slugs = _bases()
    top[2].radio(
        "Base preset",
        slugs,
        format_func=lambda s: f"{BASE_LABELS[s]} ({BASE_CAPTIONS[s]})",
        key="sweep_base",
        on_change=_base_changed,
        horizontal=True,
    )
    cols = st.columns([2.4, 1.2, 1.6, 0.8] if kind == SIZE_KIND else [3.2, 1.4, 0.8])
    cols[0].text_input("Dropout rates p (comma-separated)", key="sweep_ps")
    cols[1].text_input("Seeds", key="sweep_seeds")
    if kind == SIZE_KIND:
        cols[2].text_input("Training-set sizes", key="sweep_sizes")
    cols[-1].number_input("Epochs", min_value=1, max_value=200, step=1, key="sweep_epochs")

    query = dict(st.session_state.get("sweep_extra") or {})
    query.update(
        preset=st.session_state["sweep_base"],
        p=st.session_state["sweep_ps"],
        seeds=st.session_state["sweep_seeds"],
        epochs=str(int(st.session_state["sweep_epochs"])),
    )
    if kind == SIZE_KIND:
        query["sizes"] = st.session_state["sweep_sizes"]
        query.pop("train_size", None)
    try:
        grid = Grid.from_query(query)
    except (GridError, ConfigError) as exc:
        problems = "\n".join(f"- {p}" for p in getattr(exc, "problems", [str(exc)]))
        return None, f"This grid can't be run:\n{problems}"
    return grid, None


def _sync_url(grid: Grid) -> None:
    """Write the grid into the URL (other parameters, e.g. ``class``, stay)."""
    wanted = grid.to_query()
    current = {k: st.query_params.get(k) for k in GRID_KEYS if k in st.query_params}
    if current != wanted:
        for k in current:
            del st.query_params[k]
        st.query_params.update(wanted)
    st.session_state[_LOADED] = wanted
    st.session_state[_LAST] = grid


# ---------------------------------------------------------------------------- running
def _submit_next(plan: dict, cells: Sequence[Cell], snaps: Sequence[JobSnapshot], owner: str):
    """Submit pending cells while this session has fewer than IN_FLIGHT runs in flight."""
    manager = state.manager()
    client = state.client_address()
    in_flight = sum(not s.is_terminal for s in snaps)
    by_index = {c.index: c for c in cells}
    while plan["pending"] and in_flight < IN_FLIGHT:
        index = plan["pending"][0]
        try:
            manager.submit(by_index[index].config, owner, client=client, group="sweep")
        except JobError as exc:
            if any(w in str(exc) for w in ("already have", "already has", "queue is full")):
                plan["note"] = f"Waiting for room in the queue: {exc}"
                return  # capacity: try again on the next tick
            plan["errors"][index] = str(exc)
        plan["pending"].pop(0)
        plan.pop("note", None)
        in_flight += 1


def too_large(grid: Grid) -> str | None:
    """Why this server would refuse the grid's largest cell, or None."""
    biggest = max(grid.cells(), key=lambda c: (c.config.work, c.config.eval_size))
    try:
        check_config(biggest.config, state.manager().limits, evaluated_images(biggest.config))
    except JobError as exc:
        return f"This grid can't run on this server: {exc}"
    return None


def _stop(owner: str, keys: set[str]) -> None:
    manager = state.manager()
    plan = st.session_state.get(_PLAN)
    if plan:
        plan["pending"] = []
    for s in manager.snapshot(owner, group="sweep"):
        if s.key in keys and not s.is_terminal:
            with contextlib.suppress(JobError):
                manager.cancel(s.id, owner)


def _active(grid: Grid, snaps: Sequence[JobSnapshot]) -> bool:
    """Cells of this grid still to submit, waiting or training: the page polls while so (the
    page and its panel must agree, or the panel's redraw of the page would loop)."""
    plan = st.session_state.get(_PLAN)
    if plan is not None and plan["grid"] == grid and plan["pending"]:
        return True
    keys = {cell_key(c) for c in grid.cells()}
    return any(s.key in keys and not s.is_terminal for s in snaps)


def sweep_panel(owner: str, grid: Grid, polling: bool) -> None:
    """Progress per cell, the charts and the reading; re-run alone every tick while polling."""
    state.touch(owner)
    manager = state.manager()
    cells = grid.cells()
    snaps = manager.snapshot(owner, group="sweep")
    plan = st.session_state.get(_PLAN)
    if plan is not None and plan["grid"] == grid and plan["pending"]:
        _submit_next(plan, cells, snaps, owner)
        snaps = manager.snapshot(owner, group="sweep")
    keys = {cell_key(c): c.index for c in cells}
    by_index: dict[int, JobSnapshot] = {}
    for s in snaps:  # the newest row per cell
        if s.key in keys:
            by_index[keys[s.key]] = s
    results = results_of(cells, [s for s in snaps if s.key in keys])
    pending = set(plan["pending"]) if plan is not None and plan["grid"] == grid else set()
    statuses = {
        c.index: status_of(c, by_index.get(c.index), results.get(c.index))
        or ("waiting" if c.index in pending else "")
        for c in cells
    }
    if polling and not _active(grid, snaps):
        st.rerun(scope="app")  # all finished: redraw the page once, without polling

    done = len(results)
    st.progress(done / len(cells), text=f"{done} of {len(cells)} cells finished")
    if plan is not None and plan.get("note"):
        st.caption(plan["note"])
    if plan is not None and plan["errors"]:
        (first, error), n = min(plan["errors"].items()), len(plan["errors"])
        more = f" (and {n - 1} more cell{'s' if n > 2 else ''})" if n > 1 else ""
        st.error(f"Cell {first}{more} was refused: {error}")
    for i, s in sorted(by_index.items()):
        if s.status in ("failed", "diverged") and i not in results:
            st.error(f"Cell {i} ({s.name}, seed {s.config.seed}) {s.status}: {s.error or ''}")
    st.dataframe(cell_table(cells, results, statuses), key="sweep_cells")

    grid_charts(cells, results, "sweep")
    st.info(reading_line(cells, results), icon=":material/insights:")
    st.download_button(
        "Download the grid (CSV)",
        data=grid_csv(cells, results, statuses={i: s or "pending" for i, s in statuses.items()}),
        file_name=f"dropout-sweep-{grid.kind}-{len(cells)}cells.csv",
        mime="text/csv",
        key="sweep_csv",
        on_click="ignore",
    )


def sweep_view() -> None:
    st.title("Sweep: dropout rate and data size, with error bars")
    st.caption(
        "One run per cell: every dropout rate (or training-set size) with several seeds. "
        "A cell anyone has already trained is instant."
    )
    owner = state.session_id()
    code = st.query_params.get("class")
    if code:
        from .classroom import class_page_link

        class_page_link(code, f"Open class {code}")

    with st.container(border=True):
        grid, problem = grid_picker()
        if grid is not None:
            problem = too_large(grid)
            grid = None if problem else grid
        if problem:
            st.error(problem)
        b1, b2, info = st.columns([1, 1, 3.5], vertical_alignment="center")
        run = b1.button("Run sweep", type="primary", disabled=grid is None, key="sweep_run")
        stop = b2.button("Stop sweep", disabled=grid is None, key="sweep_stop")
        if grid is not None:
            info.caption(f"{grid.describe()} · at most {MAX_CELLS} cells")
    if grid is None:
        return
    _sync_url(grid)
    cells = grid.cells()
    if run:
        results = results_of(cells, state.manager().snapshot(owner, group="sweep"))
        todo = [c.index for c in cells if c.index not in results]
        st.session_state[_PLAN] = {"grid": grid, "pending": todo, "errors": {}}
    elif stop:
        _stop(owner, {cell_key(c) for c in cells})

    polling = _active(grid, state.manager().snapshot(owner, group="sweep"))
    st.fragment(run_every=POLL_SECONDS if polling else None)(sweep_panel)(owner, grid, polling)
