"""Lab: start dropout experiments, watch their curves grow live, compare p = 0 with p > 0."""

from __future__ import annotations

import html
import io
import json
import logging
import math
import os
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import plotly.graph_objects as go
import streamlit as st
import torch

from .. import charts, insights, links
from ..config import PRESETS, ConfigError, TrainConfig
from ..jobs import TERMINAL, JobError, JobSnapshot
from ..model import make_checkpoint
from ..runs import metrics_csv
from . import state
from .plot_view import plot_views

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # live-panel refresh while one of the session's runs trains
# ... and while its runs only wait: in a busy class most sessions wait, and a tick costs the
# server the same whether or not anything changed.
POLL_QUEUED_SECONDS = 3.0
# Live-panel refreshes per second the whole server affords: every tick is a script run that
# holds the GIL for some milliseconds, so a class shares this budget (30 polling sessions
# refresh every 2.5 s) instead of starving the training threads.
TICK_BUDGET_ENV = "DROPOUT_DEMO_TICKS_PER_SECOND"
DEFAULT_TICK_BUDGET = 12.0
# Pages that refresh at one interval stay in step: a class whose pages loaded in the same
# second (a fresh server) or pressed the button together would tick in bursts of 30 script
# runs, each waiting for all the others (bench/classroom_load.py measured ticks every 5 s in
# bursts of 24). Each session stretches its interval by a fraction of its own, fixed by its id,
# so a class drifts out of step within a few ticks and the ticks spread over the interval.
STAGGER = 0.2  # the slowest session refreshes this much less often than the fastest
STAGGER_STEPS = 10
TEST_PRESETS_ENV = "DROPOUT_DEMO_TEST_PRESETS"  # "1": offer the seconds-long "Tiny (test)" preset
SEED, OVERFIT, TINY, CUSTOM = "Seed recipe", "Overfitting lab", "Tiny (test)", "Custom"
PRESET_CAPTIONS = {
    SEED: "60,000 images · 5 epochs: the tutorial as written",
    OVERFIT: "1,000 images · 30 epochs: where dropout visibly helps",
    TINY: "256 images · 3 epochs: for tests",
    CUSTOM: "your own size, epochs, learning rate, batch, seed",
}
STATUS_TEXT = {
    "queued": "queued",
    "running": "running",
    "done": "done",
    "cancelled": "stopped",
    "failed": "failed",
    "diverged": "diverged",
}
_COLOURS_KEY = "lab_colours"  # job id -> palette index, in submission order, per session
CHART_KEYS = ("lab_loss_chart", "lab_acc_chart", "lab_gap_chart")
_NOTICE_KEY = "lab_notice"  # (kind, text) left by a button callback for the next render
_LOADED = "lab_loaded_query"  # the URL settings the widgets were last filled from
_LAST = "lab_last_settings"  # the settings this session last showed (survives other pages)


# ---------------------------------------------------------------------------- settings
def preset_names() -> list[str]:
    names = [SEED, OVERFIT]
    if os.environ.get(TEST_PRESETS_ENV) == "1":
        names.append(TINY)
    return [*names, CUSTOM]


def _custom_config(base: TrainConfig) -> TrainConfig:
    """The Custom fields; raises ConfigError with every problem (lr text included)."""
    defaults = {
        "lab_train_size": base.train_size,
        "lab_epochs": base.epochs,
        "lab_lr": f"{base.lr:g}",
        "lab_batch": base.batch_size,
        "lab_seed": base.seed,
    }
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)  # a link may have filled them already
    c1, c2, c3, c4, c5 = st.columns(5)
    train_size = c1.number_input("Training images", step=500, key="lab_train_size")
    epochs = c2.number_input("Epochs", step=1, key="lab_epochs")
    lr_text = c3.text_input("Learning rate", key="lab_lr")
    batch = c4.number_input(
        "Batch size", min_value=1, max_value=links.BATCH_MAX, step=16, key="lab_batch"
    )
    seed = c5.number_input("Seed", step=1, key="lab_seed")
    try:
        lr = float(lr_text)
    except ValueError:
        lr = None
    problems = [] if lr is not None else [f"learning rate must be a number, got {lr_text!r}"]
    try:
        config = base.replace(
            train_size=int(train_size),
            epochs=int(epochs),
            lr=lr if lr is not None else base.lr,
            batch_size=int(batch),
            seed=int(seed),
        )
    except ConfigError as exc:
        raise ConfigError(problems + exc.problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def _slug(name: str) -> str:
    return next(slug for slug, label in links.LAB_PRESETS.items() if label == name)


def _url_settings() -> dict[str, str]:
    return {k: st.query_params.get(k) for k in links.LAB_KEYS if k in st.query_params}


def _fill_widgets(settings: links.LabSettings) -> None:
    """Put ``settings`` into the widgets' state (before they are drawn)."""
    st.session_state["lab_p"] = settings.config.p
    st.session_state["lab_preset"] = links.LAB_PRESETS[settings.preset]
    if settings.preset == links.CUSTOM:
        c = settings.config
        st.session_state["lab_train_size"] = c.train_size
        st.session_state["lab_epochs"] = c.epochs
        st.session_state["lab_lr"] = links.fmt_number(c.lr)
        st.session_state["lab_batch"] = c.batch_size
        st.session_state["lab_seed"] = c.seed


def _load_link(names: Sequence[str]) -> None:
    """On arrival, and whenever the URL's settings change (a link opened), fill the widgets
    from the URL; a bad value gets a message and its default. Back from another page (whose
    link carries no settings): the settings this session had."""
    current = _url_settings()
    if st.session_state.get(_LOADED) == current and "lab_p" in st.session_state:
        return
    settings, problems = links.lab_from_query(current)
    if links.LAB_PRESETS[settings.preset] not in names:
        problems.append(f"preset: {settings.preset!r} is not offered on this server")
        settings = links.lab_settings("overfit", settings.config.p)
    if problems:
        listed = "\n".join(f"- {p}" for p in problems)
        st.warning(f"Some of this link's settings can't be used, so defaults stand in:\n{listed}")
    last = st.session_state.get(_LAST)
    if not current and last is not None and links.LAB_PRESETS[last.preset] in names:
        settings = last
    _fill_widgets(settings)
    st.session_state[_LOADED] = current


def _sync_url(settings: links.LabSettings) -> None:
    """Write the settings into the URL (other parameters, e.g. ``class``, stay)."""
    wanted = settings.to_query()
    current = _url_settings()
    if current != wanted:
        for k in current:
            del st.query_params[k]
        st.query_params.update(wanted)
    st.session_state[_LOADED] = wanted
    st.session_state[_LAST] = settings


def settings_panel() -> tuple[TrainConfig | None, str | None]:
    """The dropout slider and preset picker, filled from the URL and written back to it (a
    link restores them); returns (config, None) or (None, why not)."""
    names = preset_names()
    _load_link(names)
    left, right = st.columns([2, 3], gap="large")
    p = left.slider(
        "Dropout rate p (probability of dropping a unit)",
        min_value=links.P_MIN,
        max_value=links.P_MAX,
        step=links.P_STEP,
        format="%.2f",
        key="lab_p",
        help="PyTorch's p is the drop probability; the 2014 paper's p is the keep probability.",
    )
    preset = right.radio(
        "Preset",
        names,
        captions=[PRESET_CAPTIONS[n] for n in names],
        horizontal=True,
        key="lab_preset",
    )
    p = round(float(p), 2)  # the slider's 0.15000000000000002 is the p = 0.15 of a shared run
    if preset != CUSTOM:
        _sync_url(links.lab_settings(_slug(preset), p))
        return PRESETS[preset].replace(p=p), None
    try:
        config = _custom_config(PRESETS[OVERFIT].replace(p=p))
    except ConfigError as exc:
        problems = "\n".join(f"- {problem}" for problem in exc.problems)
        return None, f"These custom settings can't be used:\n{problems}"
    _sync_url(links.lab_settings(links.CUSTOM, p, config))
    return config, None


def comparison_configs(config: TrainConfig, snaps: Sequence[JobSnapshot]) -> list[TrainConfig]:
    """The runs that put ``config`` next to p = 0 (or next to p = 0.5 when it is p = 0),
    leaving out any the session already has queued, running or done."""
    partner = config.replace(p=0.5 if config.p == 0 else 0.0)
    have = {s.config for s in snaps if s.status in ("queued", "running", "done")}
    return [c for c in (config, partner) if c not in have]


def _submit(configs: Sequence[TrainConfig], owner: str) -> None:
    try:
        state.manager().submit_many(
            list(configs), owner, client=state.client_address(), group="lab"
        )
    except JobError as exc:
        st.error(str(exc))


# ---------------------------------------------------------------------------- runs table
class Look(NamedTuple):
    """How a run is drawn everywhere on the page: colour and marker shape (never colour alone)."""

    colour: str
    symbol: str

    @property
    def glyph(self) -> str:
        return charts.MARKER_GLYPHS[self.symbol]


def _colours(snaps: Sequence[JobSnapshot]) -> dict[str, Look]:
    """A stable colour and marker per job: the palette indexed by this session's submission
    order."""
    index = st.session_state.setdefault(_COLOURS_KEY, {})
    for s in snaps:
        if s.id not in index:
            index[s.id] = max(index.values(), default=-1) + 1
    return {
        s.id: Look(charts.colour_for(index[s.id]), charts.marker_for(index[s.id])) for s in snaps
    }


def _elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s"


def _clock(epoch_seconds: float | None) -> str:
    return time.strftime("%H:%M", time.localtime(epoch_seconds)) if epoch_seconds else "?"


def _status(s: JobSnapshot) -> str:
    """Starts with the status word (queued, running, done, stopped, failed, diverged)."""
    if s.detached:
        return "stopped · it goes on for the others who asked for it"
    if s.status == "running" and s.stop_requested:
        return "stopping…"
    text = STATUS_TEXT.get(s.status, s.status)
    if s.status == "queued" and s.queue_position:
        text = f"queued · #{s.queue_position} in line"
    if s.status == "done" and s.cached:
        text = f"done · cached result, trained at {_clock(s.trained_at)}"
    if s.shared_with and not s.is_terminal:
        text += f" · shared with {s.shared_with} other{'s' if s.shared_with > 1 else ''}"
    return text


def _details(s: JobSnapshot) -> str:
    c = s.config
    parts = [c.lr_label(), f"batch {c.batch_size}", f"seed {c.seed}"]
    if s.precision:
        parts.append(s.precision)
    return " · ".join(parts)


def _progress(s: JobSnapshot) -> tuple[float, str]:
    """Progress within the current epoch, and the text that says which epoch."""
    total = s.config.epochs
    if s.status == "running":
        return s.progress, f"epoch {min(s.epoch + 1, total)} of {total}"
    if s.status == "queued":
        return 0.0, f"waiting · {total} epochs"
    return (1.0 if s.status == "done" else s.progress), f"{s.epoch} of {total} epochs"


def _notify(kind: str, text: str) -> None:
    st.session_state[_NOTICE_KEY] = (kind, text)


def _gone(job_id: str, owner: str) -> bool:
    # The buttons are drawn with the page, so a click can come a tick after its row has gone
    # (removed in another tab, forgotten after a grace): nothing left to do, nothing to say.
    return all(s.id != job_id for s in state.manager().snapshot(owner))


def _stop(job_id: str, owner: str) -> None:
    if _gone(job_id, owner):
        return
    try:
        state.manager().cancel(job_id, owner)
    except JobError as exc:
        _notify("error", str(exc))


def _remove(job_id: str, owner: str) -> None:
    if _gone(job_id, owner):
        return
    try:
        state.manager().remove(job_id, owner)
    except JobError as exc:
        _notify("error", str(exc))


def _csv(job_id: str, owner: str) -> str:
    """The run's per-epoch metrics now (a header only before its first epoch)."""
    try:
        metrics = state.manager().get(job_id, owner).metrics
    except JobError:  # the click comes after the page was drawn: the run may have gone since
        metrics = ()
    return metrics_csv(metrics)


def _weights(job_id: str, owner: str) -> bytes:
    """The finished model as a checkpoint (``torch.load(..., weights_only=True)`` reads it)."""
    manager = state.manager()
    try:
        model, snap = manager.model(job_id, owner), manager.get(job_id, owner)
    except JobError as exc:
        model, snap, problem = None, None, str(exc)
    else:
        problem = "this run has no model"
    if model is None or snap is None:
        # The click comes after the page was drawn: the run may have gone since.
        return f"No weights: {problem}\n".encode()
    buffer = io.BytesIO()
    torch.save(
        make_checkpoint(model, snap.config, metrics=[m.to_dict() for m in snap.metrics]), buffer
    )
    return buffer.getvalue()


def _file_stem(s: JobSnapshot) -> str:
    c = s.config
    return f"dropout-p{c.p:.2f}-{c.train_size}img-{c.epochs}ep-seed{c.seed}"


ACTION_WIDTHS = [3.0, 1.0, 0.8, 1.0, 3.2]
_CELL = "padding:0.35rem 0.6rem 0.35rem 0;vertical-align:middle"


def _swatch(look: Look) -> str:
    """The run's marker shape in its colour, as on the charts (hidden from screen readers: the
    run's name follows it)."""
    return (
        f'<span aria-hidden="true" title="{look.symbol}" style="color:{look.colour};'
        f'font-size:1.05rem;margin-right:0.4rem">{look.glyph}</span>'
    )


def _progress_cell(s: JobSnapshot) -> str:
    """A bar within the epoch, which epoch, test accuracy and time."""
    value, text = _progress(s)
    acc = "test acc. —"
    if s.metrics:
        last = s.metrics[-1]
        on = f" on {last.test_images:,} images" if getattr(last, "test_images", 0) else ""
        acc = f"test acc. {last.test_acc:.1%}{on}"
    elapsed = _elapsed(s.elapsed) if s.started else "—"
    bar = (
        '<div style="height:0.35rem;border-radius:0.2rem;background:rgba(128,128,128,0.25)">'
        f'<div style="height:100%;width:{value:.0%};border-radius:0.2rem;'
        f'background:{charts.PALETTE[0]}"></div></div>'
    )
    return f'{bar}<span style="font-size:0.85rem">{text} · {acc} · {elapsed}</span>'


def runs_table_html(snaps: Sequence[JobSnapshot], colours: dict[str, Look]) -> str:
    """The runs table as one element: a class's every tick pays for one message, not dozens.

    Each row carries ``data-status`` (queued, running, done, stopped, …) for tools that read
    the page, and its status text starts with the same word.
    """
    rows = []
    for s in snaps:
        status = _status(s)
        rows.append(
            f'<tr data-status="{html.escape(status.split(" ")[0])}">'
            f'<td style="{_CELL}">{_swatch(colours[s.id])}<b>{html.escape(s.name)}</b><br>'
            f'<span style="opacity:0.65;font-size:0.85rem">{html.escape(_details(s))}</span></td>'
            f'<td style="{_CELL}">{html.escape(status)}</td>'
            f'<td style="{_CELL};min-width:14rem">{_progress_cell(s)}</td></tr>'
        )
    return (
        '<table style="width:100%;border-collapse:collapse;border:none">'
        + "".join(rows)
        + "</table>"
    )


def _actions_signature(snaps: Sequence[JobSnapshot]) -> tuple:
    """What the page-level buttons depend on; when it changes the page is drawn again."""
    # Not whether a run has metrics yet: its CSV button is there from the start and reads the
    # metrics when clicked. Otherwise a class's every page redraws at once at the first epoch,
    # just when everyone's first point is due.
    return tuple((s.id, s.is_terminal or s.detached, s.has_model, s.stop_requested) for s in snaps)


def run_actions(snaps: Sequence[JobSnapshot], colours: dict[str, Look], owner: str) -> None:
    """Stop or Remove, and the downloads, for each run: drawn with the page, not every tick
    (the live panel redraws the page when one of these must change)."""
    for s in snaps:
        cols = st.columns(ACTION_WIDTHS, vertical_alignment="center")
        cols[0].markdown(f"{_swatch(colours[s.id])}{html.escape(s.name)}", unsafe_allow_html=True)
        if s.status in TERMINAL or s.detached:
            cols[1].button("Remove", key=f"lab_remove_{s.id}", on_click=_remove, args=(s.id, owner))
        else:
            cols[1].button(
                "Stop",
                key=f"lab_stop_{s.id}",
                on_click=_stop,
                args=(s.id, owner),
                disabled=s.stop_requested,
            )
        cols[2].download_button(
            "CSV",
            data=lambda job_id=s.id: _csv(job_id, owner),  # built only when clicked
            file_name=f"{_file_stem(s)}.csv",
            mime="text/csv",
            key=f"lab_csv_{s.id}",
            on_click="ignore",
            help="Per-epoch metrics, as far as the run has got when you click",
        )
        if s.has_model:
            cols[3].download_button(
                "Weights",
                data=lambda job_id=s.id: _weights(job_id, owner),
                file_name=f"{_file_stem(s)}.pt",
                mime="application/octet-stream",
                key=f"lab_weights_{s.id}",
                on_click="ignore",
                help="PyTorch checkpoint: config + state_dict",
            )


# ---------------------------------------------------------------------------- charts
def chart_series(snaps: Sequence[JobSnapshot], colours: dict[str, Look]) -> list[charts.Series]:
    labels = insights.short_labels([s.config.p for s in snaps], [s.name for s in snaps])
    return [
        charts.Series(label, colours[s.id].colour, s.metrics, s.config.epochs, colours[s.id].symbol)
        for s, label in zip(snaps, labels, strict=True)
    ]


def curves_reading(series: Sequence[charts.Series]) -> str:
    return insights.reading([insights.Curve(r.name, r.metrics) for r in series])


class _FigureCache:
    """Figures built once per new epoch for everyone: every session showing the same runs
    (the same shared runs, colours and view) gets the same figure object from here."""

    def __init__(self, size: int = 512):
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple, object] = OrderedDict()

    def get(self, key: tuple, build: Callable[[], object]) -> object:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = build()  # outside the lock; two sessions may build the same one once
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


_figures = _FigureCache()


class _FrozenFigure(go.Figure):
    """A figure that is never changed once built. ``st.plotly_chart`` calls ``to_dict()`` on
    every render, a deep copy that was most of a tick's cost; a frozen figure makes it once."""

    def to_dict(self) -> dict:
        frozen = self.__dict__.get("_frozen_dict")
        if frozen is None:
            frozen = super().to_dict()
            object.__setattr__(self, "_frozen_dict", frozen)
        return frozen


def _frozen(fig: go.Figure) -> _FrozenFigure:
    # From the plain dict, unchecked (_FrozenFigure(fig) checked every value again); the dict
    # is a fresh copy, the figure keeps its own.
    spec = fig.to_dict()
    frozen = _FrozenFigure(spec, _validate=False)
    object.__setattr__(frozen, "_frozen_dict", spec)
    return frozen


def _content_key(snaps: Sequence[JobSnapshot], series: Sequence[charts.Series]) -> tuple:
    # A run's key and epoch count pin its metrics: no need to hash every epoch on every tick.
    return tuple(
        (r.name, r.colour, r.symbol, r.epochs, s.key, len(r.metrics))
        for s, r in zip(snaps, series, strict=True)
    )


def tick_budget() -> float:
    try:
        return max(1.0, float(os.environ.get(TICK_BUDGET_ENV, DEFAULT_TICK_BUDGET)))
    except ValueError:
        return DEFAULT_TICK_BUDGET


def refresh_share(pollers: int) -> float:
    """Seconds between one page's refreshes when ``pollers`` pages share the tick budget,
    rounded up to half seconds so it rarely changes between ticks."""
    return math.ceil(2 * pollers / tick_budget()) / 2


def staggered(interval: float | None, who: str, pollers: int) -> float | None:
    """``interval`` stretched by ``who``'s own fraction of :data:`STAGGER` (one of
    :data:`STAGGER_STEPS`, the same on every call), when more than one page polls."""
    if interval is None or pollers <= 1:
        return interval
    step = zlib.crc32(who.encode()) % STAGGER_STEPS
    return round(interval * (1 + STAGGER * step / STAGGER_STEPS), 2)


def poll_interval(snaps: Sequence[JobSnapshot], pollers: int = 1) -> float | None:
    """How often the live panel refreshes: fast while a run trains, slowly while runs only
    wait, never when nothing is active; slower for everyone when ``pollers`` sessions share
    the server's tick budget. Rounded to half seconds so it rarely changes between ticks."""
    share = refresh_share(pollers)
    if any(s.status == "running" for s in snaps):
        return max(POLL_SECONDS, share)
    if any(not s.is_terminal for s in snaps):
        return max(POLL_QUEUED_SECONDS, 2 * share)
    return None


def _poll_interval(snaps: Sequence[JobSnapshot], owner: str) -> float | None:
    pollers = state.manager().active_owners()
    return staggered(poll_interval(snaps, pollers), owner, pollers)


def live_panel(
    owner: str, interval: float | None, waiting: bool = False, actions: tuple | None = None
) -> None:
    """The runs table, the charts and the reading: re-run alone every ``interval`` seconds
    (``waiting``: the slow rate of a session whose runs only wait in the queue; ``actions``:
    the buttons the page drew, see :func:`run_actions`)."""
    started = time.perf_counter()
    state.touch(owner)  # an open page keeps its lease
    snaps = state.manager().snapshot(owner, group="lab")
    if interval is not None and _poll_interval(snaps, owner) is None:
        # Everything finished since the page was drawn: redraw the page once, without polling.
        st.rerun(scope="app")
    if waiting and any(s.status == "running" for s in snaps):
        st.rerun(scope="app")  # a run started: redraw the page once to refresh faster

    notice = st.session_state.pop(_NOTICE_KEY, None)
    if notice:
        (st.error if notice[0] == "error" else st.success)(notice[1])

    if actions is not None and _actions_signature(snaps) != actions:
        st.rerun(scope="app")  # a run can now be removed or downloaded: redraw its buttons

    colours = _colours(snaps)
    st.subheader("Runs")
    if snaps:
        st.markdown(runs_table_html(snaps, colours), unsafe_allow_html=True)
        for s in snaps:
            if s.status in ("failed", "diverged") and s.error:
                st.error(f"{s.name} {s.status}: {s.error}", icon=":material/error:")
    else:
        st.caption("No runs yet: choose the settings above and start one.")

    series = chart_series(snaps, colours)
    content = _content_key(snaps, series)
    views = plot_views(CHART_KEYS, key="lab_chart_views")

    def chart(build, summarise, key: str) -> None:
        view = views.get(key)
        cache_key = (key, content, json.dumps(view, sort_keys=True) if view else "")
        fig = _figures.get(cache_key, lambda: _frozen(charts.apply_view(build(series), view)))
        # The chart's numbers in words: its accessible name, read out by screen readers.
        text = _figures.get((f"{key}_text", content), lambda: summarise(series))
        st.plotly_chart(fig, key=key, config={"displaylogo": False}, alt=text)

    st.subheader("Loss per epoch")
    st.caption(
        "Train solid, test dashed; one colour and marker shape per run, as in the table. "
        "Zoom and legend clicks stay while the curves grow; double-click resets."
    )
    chart(charts.loss_figure, charts.loss_summary, "lab_loss_chart")
    st.info(
        _figures.get(("reading", content), lambda: curves_reading(series)),
        icon=":material/insights:",
    )
    left, right = st.columns(2)
    with left:
        st.markdown("**Accuracy per epoch**")
        chart(charts.accuracy_figure, charts.accuracy_summary, "lab_acc_chart")
    with right:
        st.markdown("**Generalisation gap** (test − train loss)")
        chart(charts.gap_figure, charts.gap_summary, "lab_gap_chart")
    log.debug("lab live panel: %d runs, %.1f ms", len(snaps), (time.perf_counter() - started) * 1e3)


# ---------------------------------------------------------------------------- page
def _learn_links() -> None:
    from .learn import learn_page_link  # the Learn view owns its section anchors

    left, right = st.columns(2)
    with left:
        learn_page_link("why-it-helps", "Why does dropout fight overfitting?")
    with right:
        learn_page_link(
            "inverted-dropout", "Inverted dropout: what PyTorch does in training and at test"
        )


def lab_view() -> None:
    st.title("Lab: live dropout experiments")
    st.caption(
        "Train the same small CNN with and without dropout and watch the test curves part ways."
    )
    owner = state.session_id()
    manager = state.manager()

    with st.container(border=True):
        config, problem = settings_panel()
        if problem:
            st.error(problem)
        b1, b2, info = st.columns([1, 1.4, 3], vertical_alignment="center")
        start = b1.button("Start run", type="primary", disabled=config is None, key="lab_start")
        compare_label = "Compare with p = 0.5" if config and config.p == 0 else "Compare with p = 0"
        compare = b2.button(
            compare_label,
            disabled=config is None,
            key="lab_compare",
            help="Start the same settings at p = 0 (at p = 0.5 when the slider is at 0) "
            "next to this one, so the two curves sit side by side.",
        )
        if config is not None:
            info.caption(
                f"Next run: {config.label()} · {config.lr_label()} · batch {config.batch_size}"
            )

    if config is not None and start:
        _submit([config], owner)
    elif config is not None and compare:
        todo = comparison_configs(config, manager.snapshot(owner, group="lab"))
        if todo:
            _submit(todo, owner)
        else:
            st.info("Both runs of this comparison are already in your table.")

    # Decide once per page run how often the live panel polls; never when nothing is active.
    snaps = manager.snapshot(owner, group="lab")
    interval = _poll_interval(snaps, owner)
    waiting = interval is not None and not any(s.status == "running" for s in snaps)
    actions = _actions_signature(snaps)
    st.fragment(run_every=interval)(live_panel)(owner, interval, waiting, actions)
    if snaps:
        with st.expander("Stop, remove or download a run", expanded=True):
            run_actions(snaps, _colours(snaps), owner)

    _learn_links()
