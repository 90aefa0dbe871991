"""Class mode: a teacher starts a class (a code, a join link, a QR code), poses a question, and
every student's "Run my cell" takes the next free cell of the class experiment; the class board
pools every finished run, live, with the histogram of guesses beside the result.

``?class=CODE`` opens a class; ``&present=1`` is the presenter view for the projector (large
type, no controls). The class itself is a JSON file (:mod:`dropout_demo.classes`); results are
looked up in the run store by each cell's run key, so the board shows cells whoever trained
them, and a server restart loses nothing.
"""

from __future__ import annotations

import functools
import io
import os
import threading
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import streamlit as st

from .. import sweep_charts
from ..charts import FrozenFigure, frozen
from ..classes import (
    DEFAULT_QUESTION,
    ClassError,
    Classes,
    ClassRoom,
    cell_key,
    guesses_csv,
    normal_code,
    p_choices,
)
from ..jobs import JobError, JobSnapshot
from ..sweeps import BASE_PRESETS, GRID_PRESETS, Cell, CellResult, Grid, aggregate, reading
from . import state
from .lab import refresh_share, staggered
from .sweep import (
    BASE_CAPTIONS,
    BASE_LABELS,
    TEST_PRESETS_ENV,
    cell_table,
    content_of,
    grid_charts,
    results_of,
)

POLL_SECONDS = 2.0  # the board's refresh interval with few viewers
BOARD_VIEWER_WINDOW = 15.0  # s: a board that refreshed within this counts as watched


class RecentPollers:
    """Which boards refreshed lately, process-wide: every open board shares the server's
    refresh budget with the Lab's live panels, so 31 boards refresh less often than one."""

    def __init__(self, window: float = BOARD_VIEWER_WINDOW, clock=time.monotonic):
        self.window, self.clock = window, clock
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}

    def seen(self, who: str) -> None:
        with self._lock:
            self._seen[who] = self.clock()

    def count(self) -> int:
        with self._lock:
            cutoff = self.clock() - self.window
            self._seen = {k: t for k, t in self._seen.items() if t >= cutoff}
            return len(self._seen)


_board_viewers = RecentPollers()


def board_interval(pollers: int, watching: bool = True) -> float:
    """The board's refresh interval when ``pollers`` pages poll this server in all.

    ``watching``: the projector's board, or a student whose own run is training (its progress
    is on the page). Other students' boards (waiting in the queue, or done) change only when
    some cell finishes, every ten seconds or so in a class: they refresh half as often, which
    leaves the training more of the server's two cores (bench/class_grid.py)."""
    share = refresh_share(pollers)
    return max(POLL_SECONDS, share if watching else 2 * share)


def _own_run_training(owner: str, snaps: Sequence[JobSnapshot] | None = None) -> bool:
    if snaps is None:
        snaps = state.manager().snapshot(owner, group="class")
    return any(s.status == "running" for s in snaps)


def _board_interval(owner: str, watching: bool) -> float:
    pollers = _board_viewers.count() + state.manager().active_owners()
    return staggered(board_interval(pollers, watching), owner, pollers)


CLASS_PATH = "class"  # the board's url path (see app.PAGES)
_NOTICE = "class_notice"

PRESENTER_CSS = """
<style>
[data-testid="stHeader"], [data-testid="stToolbar"], [data-testid="stSidebar"],
[data-testid="stDecoration"] { display: none !important; }
.block-container { padding-top: 1rem !important; max-width: 100% !important; }
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li { font-size: 1.7rem; }
[data-testid="stAlert"] p { font-size: 1.8rem; line-height: 1.35; }
h1 { font-size: 3.6rem !important; }
h2 { font-size: 2.6rem !important; }
</style>
"""


def classes() -> Classes:
    return Classes(state.store().root / "classes")


# ---------------------------------------------------------------------------- links
def _registered(url_path: str) -> bool:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:
        return False
    return any(
        info.get("url_pathname") == url_path for info in ctx.pages_manager.get_pages().values()
    )


def class_page_link(code: str, label: str, present: bool = False) -> None:
    """An in-app link to the class board of ``code`` (same session, runs kept)."""
    query = {"class": code, **({"present": "1"} if present else {})}
    if _registered(CLASS_PATH):
        from .app import page

        st.page_link(page(CLASS_PATH), label=label, icon=":material/groups:", query_params=query)
    else:
        st.markdown(f"[{label}](/{CLASS_PATH}?" + "&".join(f"{k}={v}" for k, v in query.items()))


def join_url(code: str) -> str:
    """The link students open: this server's class page with ``?class=CODE``."""
    from .app import PAGES

    try:
        url = st.context.url
    except Exception:
        url = None
    if not url:
        return f"/{CLASS_PATH}?class={code}"
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if segments and segments[-1] in PAGES:
        segments = segments[:-1]
    prefix = "".join(f"/{s}" for s in segments)
    return f"{parts.scheme}://{parts.netloc}{prefix}/{CLASS_PATH}?class={code}"


@functools.lru_cache(maxsize=64)
def qr_png(text: str, scale: int = 8) -> bytes:
    import segno

    buffer = io.BytesIO()
    segno.make(text, error="m").save(buffer, kind="png", scale=scale, border=2)
    return buffer.getvalue()


# ---------------------------------------------------------------------------- board data
def board_state(
    room: ClassRoom, snaps: Sequence[JobSnapshot]
) -> tuple[list[Cell], dict[int, CellResult], dict[int, str]]:
    """Cells, results (run store + this session's live rows) and a status per cell:
    done / running k/N (this session's) / claimed / free."""
    cells = room.cells()
    keys = {cell_key(c): c.index for c in cells}
    mine = {keys[s.key]: s for s in snaps if s.key in keys}
    results = results_of(cells, list(mine.values()))
    statuses = {}
    for c in cells:
        s = mine.get(c.index)
        if c.index in results:
            statuses[c.index] = "done"
        elif s is not None and s.status == "running":
            statuses[c.index] = f"running {s.epoch}/{s.config.epochs}"
        elif s is not None and s.status == "queued":
            statuses[c.index] = "queued"
        elif c.index in room.claims:
            statuses[c.index] = "claimed"
        else:
            statuses[c.index] = "free"
    return cells, results, statuses


def favoured_choice(
    room: ClassRoom, cells: Sequence[Cell], results: Mapping[int, CellResult]
) -> str | None:
    """The choice naming the p with the lowest mean final test loss so far (p grids whose
    question offers p's as ``p = 0.5``), else None."""
    if room.grid.sizes:
        return None
    best = _lowest_p(tuple(cells), content_of(results))
    if best is None:
        return None
    label = f"p = {best:g}"
    return label if label in room.choices else None


# Every page on a class board redraws it every few seconds, and thirty pages draw the same
# results: what follows from the results alone is computed once per change of them.
@functools.lru_cache(maxsize=256)
def _lowest_p(cells: tuple[Cell, ...], content: tuple) -> float | None:
    points = aggregate(cells, dict(content))
    if not points:
        return None
    return min(points, key=lambda pt: (pt["final_test_loss"].mean, pt.p)).p


@functools.lru_cache(maxsize=256)
def _reading(cells: tuple[Cell, ...], content: tuple) -> str:
    return reading(cells, dict(content))


@functools.lru_cache(maxsize=256)
def _table(cells: tuple[Cell, ...], content: tuple, statuses: tuple):
    return cell_table(cells, dict(content), dict(statuses))


@functools.lru_cache(maxsize=256)
def _guesses_figure(
    choices: tuple[str, ...], counts: tuple, answer: str | None, present: bool
) -> FrozenFigure:
    fig = sweep_charts.guesses_figure(
        choices,
        dict(counts),
        answer=answer,
        title=f"The class's guesses ({sum(n for _, n in counts)})",
        height=380 if present else 280,
    )
    return frozen(sweep_charts.for_projector(fig, 420) if present else fig)


# ---------------------------------------------------------------------------- actions
def _notify(kind: str, text: str) -> None:
    st.session_state[_NOTICE] = (kind, text)


def _run_my_cell(code: str, owner: str) -> None:
    manager = state.manager()
    try:
        room = classes().get(code)
        _, results, _ = board_state(room, manager.snapshot(owner, group="class"))
        room, cell = classes().claim(code, owner, finished=set(results))
    except ClassError as exc:
        _notify("error", str(exc))
        return
    if cell.index in results:
        _notify("info", "Every cell of this class is finished: the board below has them all.")
        return
    try:
        manager.submit(cell.config, owner, client=state.client_address(), group="class")
    except JobError as exc:
        _notify("error", str(exc))
        return
    _notify("success", f"Your cell: p = {cell.p:g}, seed {cell.seed}, {cell.train_size:,} images.")


def _save_guess(code: str, owner: str) -> None:
    choice = st.session_state.get(f"class_guess_{code}")
    if choice is None:
        return
    try:
        classes().guess(code, owner, choice)
    except ClassError as exc:
        _notify("error", str(exc))


# ---------------------------------------------------------------------------- views
def _bases() -> list[str]:
    slugs = ["overfit", "seed"]
    if os.environ.get(TEST_PRESETS_ENV) == "1":
        slugs.append("tiny")
    return slugs


def _experiment_grid(prefix: str) -> Grid:
    """The experiment widgets (grid preset × base preset) and the grid they give."""
    left, right = st.columns(2)
    name = left.selectbox(
        "Class experiment", list(GRID_PRESETS), key=f"{prefix}_grid", on_change=_reset_question
    )
    slug = right.radio(
        "Base preset",
        _bases(),
        format_func=lambda s: f"{BASE_LABELS[s]} ({BASE_CAPTIONS[s]})",
        key=f"{prefix}_base",
    )
    preset = GRID_PRESETS[name]
    grid = Grid(ps=preset.ps, seeds=preset.seeds, sizes=preset.sizes, base=BASE_PRESETS[slug])
    st.caption(grid.describe())
    return grid


def _default_question(grid: Grid) -> tuple[str, str]:
    if grid.sizes:
        sizes = ", ".join(str(s) for s in grid.sizes)
        return "At which training-set size does dropout help most?", sizes
    return DEFAULT_QUESTION, ", ".join(p_choices(grid))


def _reset_question() -> None:
    for key in ("class_new_question", "class_new_choices"):
        st.session_state.pop(key, None)


def landing(owner: str) -> None:
    st.title("Class: one experiment, the whole class")
    st.caption(
        "Every student trains one cell of a sweep; the board pools everyone's runs into one "
        "curve with error bars, next to the class's guesses."
    )
    join, start = st.columns(2, gap="large")
    with join.container(border=True):
        st.subheader("Join a class")
        code = st.text_input("Class code", max_chars=8, key="class_join_code")
        if st.button("Join", type="primary", key="class_join"):
            try:
                code = normal_code(code)
                classes().get(code)
            except ClassError as exc:
                st.error(str(exc))
            else:
                st.query_params["class"] = code
                st.rerun()
    with start.container(border=True):
        st.subheader("Start a class (teacher)")
        grid = _experiment_grid("class_new")
        question, choices = _default_question(grid)
        st.session_state.setdefault("class_new_question", question)
        st.session_state.setdefault("class_new_choices", choices)
        q = st.text_input("Question to ask first (empty: none)", key="class_new_question")
        c = st.text_input("Choices (comma-separated)", key="class_new_choices")
        if st.button("Start the class", key="class_create"):
            try:
                room = classes().create(owner, grid, q, c.split(","))
            except ClassError as exc:
                st.error(str(exc))
            else:
                st.query_params["class"] = room.code
                st.rerun()


def _teacher_tools(room: ClassRoom) -> None:
    with st.expander("Teacher: question, experiment, presenter view, CSV"):
        class_page_link(room.code, "Presenter view (for the projector)", present=True)
        q = st.text_input("Question", value=room.question, key="class_edit_question")
        c = st.text_input("Choices", value=", ".join(room.choices), key="class_edit_choices")
        if st.button("Ask this question (clears the guesses)", key="class_set_question"):
            try:
                classes().set_question(room.code, q, c.split(","))
            except ClassError as exc:
                st.error(str(exc))
            else:
                st.rerun()
        grid = _experiment_grid("class_edit")
        if grid != room.grid and st.button(
            "Switch to this experiment (forgets who took which cell)", key="class_set_grid"
        ):
            classes().set_grid(room.code, grid)
            st.rerun()


def _guess_panel(room: ClassRoom, owner: str) -> None:
    if not room.question:
        return
    mine = room.guesses.get(owner)
    st.radio(
        f"**{room.question}**",
        room.choices,
        index=room.choices.index(mine) if mine in room.choices else None,
        horizontal=True,
        key=f"class_guess_{room.code}",
        on_change=_save_guess,
        args=(room.code, owner),
    )
    st.caption(
        f"Your guess: {mine} (you can change it)"
        if mine
        else "Guess before the results come in: pick one."
    )


def _my_cell(room: ClassRoom, owner: str, snaps: Sequence[JobSnapshot]) -> None:
    index = room.cell_of(owner)
    if index is None:
        return
    cell = room.cells()[index]
    snap = next((s for s in snaps if s.key == cell_key(cell)), None)
    what = f"Your cell: p = {cell.p:g}, seed {cell.seed}, {cell.train_size:,} images"
    if snap is None:
        st.caption(what)
    elif snap.status == "running":
        st.progress(
            snap.overall_progress,
            text=f"{what} · epoch {min(snap.epoch + 1, snap.config.epochs)} of "
            f"{snap.config.epochs}",
        )
    else:
        st.caption(f"{what} · {snap.status}")


def board_panel(code: str, owner: str, present: bool, watching: bool = True) -> None:
    """The class board, re-read from the class file and the run store every tick (drawn at
    the rate :func:`board_interval` gives for ``watching``)."""
    _board_viewers.seen(f"{owner}:{present}")
    state.touch(owner)
    try:
        room = classes().get(code)
    except ClassError as exc:
        st.error(str(exc))
        return
    snaps = state.manager().snapshot(owner, group="class")
    if not present and _own_run_training(owner, snaps) != watching:
        st.rerun(scope="app")  # this student's run started or ended: redraw at the other rate
    cells, results, statuses = board_state(room, snaps)
    if not present:
        _my_cell(room, owner, snaps)
    running = sum(1 for s in statuses.values() if s not in ("done", "free"))
    st.progress(
        len(results) / len(cells),
        text=f"{len(results)} of {len(cells)} runs finished · {running} claimed or running",
    )
    shown = (tuple(cells), content_of(results))  # the key of everything cached below
    line = _reading(*shown)
    if room.question:
        left, right = st.columns([3, 2])
        left.info(line, icon=":material/insights:")
        favoured = favoured_choice(room, cells, results)
        with right:
            st.markdown(f"**{room.question}**")
            counts = room.guess_counts()
            fig = _guesses_figure(
                tuple(room.choices), tuple(sorted(counts.items())), favoured, present
            )
            st.plotly_chart(
                fig,
                key="class_guesses",
                config={"displaylogo": False},
                alt=sweep_charts.guesses_summary(room.choices, counts, favoured),
            )
            if favoured is not None:
                st.caption(
                    f"{sweep_charts.BEST_MARK} (blue, hatched): {favoured}, the lowest mean "
                    "final test loss so far."
                )
    else:
        st.info(line, icon=":material/insights:")
    grid_charts(cells, results, "class", height=460 if present else None)
    if not present:
        with st.expander("Cells (final test loss of each finished run)"):
            table = _table(*shown, tuple(sorted(statuses.items())))
            st.dataframe(table, key="class_cells")
        left, right = st.columns(2)
        left.download_button(
            "Download the class's grid (CSV)",
            data=classes().csv(room, results),
            file_name=f"class-{room.code}.csv",
            mime="text/csv",
            key="class_csv",
            on_click="ignore",
        )
        if room.question:
            right.download_button(
                "Download the guesses (CSV)",
                data=guesses_csv(room),
                file_name=f"class-{room.code}-guesses.csv",
                mime="text/csv",
                key="class_guesses_csv",
                on_click="ignore",
            )


def presenter_view(room: ClassRoom, owner: str) -> None:
    st.markdown(PRESENTER_CSS, unsafe_allow_html=True)
    url = join_url(room.code)
    left, right = st.columns([4, 1], vertical_alignment="center")
    left.title(f"Class {room.code}")
    left.markdown(f"Join at **{url}** · {room.grid.describe()}")
    right.image(qr_png(url, scale=6), width=180, alt=f"QR code of the join link {url}")
    _board_viewers.seen(f"{owner}:True")
    st.fragment(run_every=_board_interval(owner, True))(board_panel)(room.code, owner, True)


def class_view() -> None:
    owner = state.session_id()
    raw = st.query_params.get("class")
    if not raw:
        landing(owner)
        return
    try:
        room = classes().get(raw)
    except ClassError as exc:
        st.title("Class")
        st.error(str(exc))
        del st.query_params["class"]
        st.button("Back", key="class_back")
        return
    if st.query_params.get("present") == "1":
        presenter_view(room, owner)
        return

    st.title(f"Class {room.code}")
    url = join_url(room.code)
    info, qr = st.columns([4, 1], vertical_alignment="center")
    with info:
        st.markdown(f"Join link: **{url}** · code **{room.code}**")
        st.caption(
            f"Experiment: {room.grid.describe()}. Press **Run my cell**: you get the next "
            "cell nobody has taken, and your finished run joins the board for everyone."
        )
    qr.image(
        qr_png(url, scale=4),
        width=130,
        caption="scan to join",
        alt=f"QR code of the join link {url}",
    )
    if owner == room.teacher:
        _teacher_tools(room)

    notice = st.session_state.pop(_NOTICE, None)
    if notice:
        getattr(st, notice[0])(notice[1])
    with st.container(border=True):
        _guess_panel(room, owner)
        st.button(
            "Run my cell",
            type="primary",
            key="class_run",
            on_click=_run_my_cell,
            args=(room.code, owner),
        )
    st.subheader("Class board")
    _board_viewers.seen(f"{owner}:False")
    watching = _own_run_training(owner)
    st.fragment(run_every=_board_interval(owner, watching))(board_panel)(
        room.code, owner, False, watching
    )
