"""A class fills the class experiment's grid: N simulated students, one class, one board.

    DROPOUT_DEMO_DATA=../shared/mnist .venv/bin/python bench/class_grid.py \\
        [--students 30] [--timeout 600] [--json OUT] [--teacher ui|api] [--no-guess] \\
        [--base overfit|seed|tiny] [--ps 0 0.1 ... 0.9] [--seeds 0 1 2] [--epochs E] \\
        [--train-size N] [--stagger 0.2] [--extra-flag=--some.streamlit=flag]

Issue 9's target: 30 students in one class fill the 10 × 3 grid of the Overfitting lab
(p = 0, 0.1 … 0.9 × seeds 0–2, 1,000 images, 30 epochs) on this 2-core server, and the board
shows all 30 cells, within 5 minutes. The defaults are that target. A smoke run:

    DROPOUT_DEMO_DATA=../shared/mnist .venv/bin/python bench/class_grid.py \\
        --students 2 --base tiny --ps 0 0.5 --seeds 0 --epochs 1

Figures, not a test: it asserts nothing and prints one table. Every browser is a
``bench/st_client.py`` session (Streamlit's own websocket protocol and protobufs, fragment
``run_every`` timers emulated as a browser runs them). Loopback only; every wait is bounded;
the server is started and stopped by its PID (``classroom_load.app_server``: the way
``make run`` starts it, bound to 127.0.0.1, with a fresh temporary run store).

The flow, as a class would do it:

1. **Teacher** (``--teacher ui``, the default) opens the Class page (url path ``class``), picks
   the class experiment (grid preset ``p-curve``) and the base preset, and presses "Start the
   class" with the default question ("Which p will give the lowest test loss?"); the class code
   is read from the URL the app moves to (``?class=CODE``). A grid no UI preset offers (smoke
   runs: other p's, seeds or epochs) is then set, with its question's choices, through the
   package API on the run store the server shares (``Classes.set_grid``), and the table says
   so. ``--teacher api`` creates the whole class through the package API instead.
2. **Board**: a separate session opens the presenter view (``?class=CODE&present=1``), as the
   projector would, before any student comes; it records each change of the board's progress
   line ("k of N runs finished") and the reading line.
3. **Students** connect ``--stagger`` s apart to ``class?class=CODE``, record a guess (unless
   ``--no-guess``), press "Run my cell" and stay on the page (their board fragment polling as a
   browser's does) until the board is full or ``--timeout`` s after the first click passed.

Per student, from its click: the cell assigned (the "Your cell: p = …, seed …" notice), its run
seen training ("epoch k of N" on its own page) and done ("· done"). A student who got no cell
of its own (more students than cells) counts as done when its own board shows every cell.
Overall: the first click -> the board showing all cells (the target), refusals and errors,
fragment tick latency (students' board panels and the presenter's), server CPU, RSS and threads,
``/_stcore/health`` latency, runs trained (server log, see ``classroom_load.runs_trained``).
Last, the board's figures from the run store (what the board pools): best p with its final test
loss mean ± std over seeds, and the loss at the lowest and highest p; and the board's own
reading line as the presenter view showed it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python bench/...` from anywhere

from bench.classroom_load import (  # noqa: E402
    HealthProbe,
    ProcSampler,
    alerts,
    app_server,
    med_p90,
    require_mnist_env,
    runs_trained,
    self_cpu,
)
from bench.st_client import Node, StClient  # noqa: E402

CLASS_PATH = "class"
UI_GRID_PRESET = "p-curve"  # the Class page's experiment for a p grid of seeds 0-2
BASE_LABELS = {"overfit": "Overfitting lab", "seed": "Seed recipe", "tiny": "Tiny (test)"}
TEST_PRESETS_ENV = "DROPOUT_DEMO_TEST_PRESETS"  # "1": the app offers the Tiny (test) base
PAGE_LOAD_S = 120.0  # connect -> page drawn, per session
TARGET_S = 300.0  # issue 9: the board shows all 30 cells within 5 minutes

BOARD_PROGRESS = re.compile(r"(\d+) of (\d+) runs finished")
MY_CELL = re.compile(r"^Your cell: p = ([\d.]+), seed (\d+), ([\d,]+) images(?: · (.+))?$")
EPOCH = re.compile(r"epoch (\d+) of (\d+)")
GUESS_COUNT = re.compile(r"\((\d+)\)\s*$")
TERMINAL_BAD = ("failed", "stopped", "diverged")
UNCAUGHT_LAST = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*")


# ---------------------------------------------------------------------------- reading pages
def board_progress(text: str) -> tuple[int, int] | None:
    """``"12 of 30 runs finished · 18 claimed or running"`` -> ``(12, 30)``."""
    m = BOARD_PROGRESS.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def my_cell(text: str) -> tuple[float, int, str] | None:
    """A student's own-cell line -> ``(p, seed, status)``. The notice after the click
    (``"Your cell: p = 0.3, seed 1, 1,000 images."``) gives status ``"assigned"``; the board's
    line gives ``"done"``, ``"queued"``, ``"running"`` (``"… · epoch 3 of 30"``), ``"failed"``…,
    or ``"claimed"`` without a run of this session."""
    text = text.strip()
    notice = text.endswith(" images.")
    m = MY_CELL.match(text[:-1] if notice else text)
    if m is None:
        return None
    p, seed, status = float(m.group(1)), int(m.group(2)), m.group(4)
    if notice:
        return p, seed, "assigned"
    if status is None:
        return p, seed, "claimed"
    if EPOCH.match(status):
        return p, seed, "running"
    return p, seed, status.split()[0]


def guesses_on_board(node: Node) -> int | None:
    """Guesses counted in the board's histogram title ("The class's guesses (12)")."""
    title = node.plotly_figure().get("layout", {}).get("title", {})
    text = title.get("text", "") if isinstance(title, dict) else str(title)
    m = GUESS_COUNT.search(text)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------- the grid
def target_grid(args: argparse.Namespace):
    """The class experiment the run asks for (a ``sweeps.Grid``)."""
    from dropout_demo.sweeps import BASE_PRESETS, Grid

    base = BASE_PRESETS[args.base]
    changes = {k: v for k, v in (("epochs", args.epochs), ("train_size", args.train_size)) if v}
    return Grid(ps=tuple(args.ps), seeds=tuple(args.seeds), base=base.replace(**changes))


def ui_preset_of(grid, base: str) -> str | None:
    """The Class page's grid preset that gives ``grid`` with base ``base``, if any."""
    from dropout_demo.sweeps import BASE_PRESETS, GRID_PRESETS, Grid

    for name, g in GRID_PRESETS.items():
        if Grid(ps=g.ps, seeds=g.seeds, sizes=g.sizes, base=BASE_PRESETS[base]) == grid:
            return name
    return None


def classes_at(runs: Path):
    from dropout_demo.classes import Classes

    return Classes(runs / "classes")


# ---------------------------------------------------------------------------- teacher
async def wait_run(client: StClient, before: int, what: str) -> None:
    if not await client.wait_page_run(before, PAGE_LOAD_S):
        raise TimeoutError(f"no page run after {what} ({client.close_reason})")


async def teacher_ui(url: str, preset: str, base: str) -> tuple[str, float]:
    """The teacher starts a class on the Class page; returns (code, seconds it took)."""
    start = time.monotonic()
    client = StClient(url, path=CLASS_PATH, name="teacher")
    try:
        await client.connect()
        if not await client.wait_until(lambda: client.widget("class_create"), PAGE_LOAD_S):
            raise TimeoutError(f"the Class page did not load ({client.close_reason})")
        grid_box = client.widget("class_new_grid")
        current = client.widget_states.get(grid_box.widget_id)
        if current is None or current.string_value != preset:
            before = client.stats.full_runs_finished
            await client.set_value("class_new_grid", preset)
            await wait_run(client, before, "picking the experiment")
        radio = client.widget("class_new_base")
        options = list(radio.proto.options)
        label = next((o for o in options if o.startswith(BASE_LABELS[base])), None)
        if label is None:
            raise LookupError(f"base {base!r} is not offered (options: {options})")
        current = client.widget_states.get(radio.widget_id)
        if current is None or current.string_value != label:
            before = client.stats.full_runs_finished
            await client.set_value("class_new_base", label)
            await wait_run(client, before, "picking the base preset")
        await client.click("class_create")
        ok = await client.wait_until(
            lambda: "class=" in client.query_string and client.widget("class_run"), PAGE_LOAD_S
        )
        if not ok:
            _, errors = alerts(client)
            raise TimeoutError(f"no class page after 'Start the class' ({errors})")
        code = urllib.parse.parse_qs(client.query_string)["class"][0]
        return code, time.monotonic() - start
    finally:
        await client.close()


# ---------------------------------------------------------------------------- the board
@dataclass
class Board:
    """What the presenter view showed."""

    cells: int
    load_s: float | None = None
    progress: list[tuple[float, int]] = field(default_factory=list)  # (s after 1st click, k)
    full_s: float | None = None  # first click -> every cell finished on the board
    reading: str = ""
    guesses: int | None = None
    errors: list[str] = field(default_factory=list)
    ticks_ms: list[float] = field(default_factory=list)
    ticks_unanswered: int = 0


@dataclass
class Clock:
    """The first click of the class, shared by every session (time.monotonic())."""

    first_click: float | None = None
    full: asyncio.Event = field(default_factory=asyncio.Event)

    def since_click(self, now: float) -> float | None:
        return None if self.first_click is None else now - self.first_click


async def board_session(url: str, code: str, board: Board, clock: Clock, ready, stop) -> None:
    client = StClient(url, path=CLASS_PATH, query_string=f"class={code}&present=1", name="board")

    def listen(c: StClient, msg, node: Node | None) -> None:
        if node is None or node.element is None:
            return
        now = time.monotonic()
        if node.kind == "progress" and (prog := board_progress(node.text)):
            k, n = prog
            if not ready.is_set():
                ready.set()
            if not board.progress or board.progress[-1][1] != k:
                board.progress.append((round(clock.since_click(now) or 0.0, 2), k))
            if k >= n and board.full_s is None and clock.first_click is not None:
                board.full_s = now - clock.first_click
                clock.full.set()
        elif node.kind == "alert" and "test loss" in node.text:
            board.reading = node.text
        elif node.key == "class_guesses":
            board.guesses = guesses_on_board(node)
        elif node.kind == "exception" and node.text not in board.errors:
            board.errors.append(node.text)

    client.listeners.append(listen)
    start = time.monotonic()
    try:
        await client.connect()
        if await client.wait_until(ready.is_set, PAGE_LOAD_S):
            board.load_s = time.monotonic() - start
        await stop.wait()
    except Exception as exc:
        board.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        ready.set()  # the students never wait on a board that failed
        await client.close()
        board.ticks_ms = [t.latency * 1e3 for t in client.ticks if t.latency is not None]
        board.ticks_unanswered = sum(t.latency is None for t in client.ticks)


# ---------------------------------------------------------------------------- one student
@dataclass
class Student:
    index: int
    connected_s: float | None = None  # since the class's first connection
    page_load_s: float | None = None
    guess: str | None = None
    assigned_s: float | None = None  # these three: seconds after its click
    running_s: float | None = None
    done_s: float | None = None
    cell: tuple[float, int] | None = None  # (p, seed)
    outcome: str = "not started"  # done | done (board) | refused | failed | timeout | error
    refusals: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ticks_ms: list[float] = field(default_factory=list)
    ticks_unanswered: int = 0
    messages: int = 0
    bytes: int = 0


async def student_session(
    url: str, code: str, s: Student, args: argparse.Namespace, clock: Clock, t0: float
) -> None:
    client = StClient(url, path=CLASS_PATH, query_string=f"class={code}", name=f"s{s.index}")
    state: dict[str, Any] = {"clicked": None, "over": False, "own": False}

    def listen(c: StClient, msg, node: Node | None) -> None:
        clicked = state["clicked"]
        if clicked is None or state["over"]:
            return
        now = time.monotonic()
        if node is not None and node.element is not None:
            seen = my_cell(node.text) if node.kind in ("alert", "markdown", "progress") else None
            if seen is not None:
                p, seed, status = seen
                s.cell = (p, seed)
                state["own"] = state["own"] or status != "assigned"
                if s.assigned_s is None:
                    s.assigned_s = now - clicked
                if status == "running" and s.running_s is None:
                    s.running_s = now - clicked
                if status == "done":
                    s.done_s, s.outcome, state["over"] = now - clicked, "done", True
                elif status in TERMINAL_BAD:
                    s.outcome, state["over"] = status, True
            elif node.kind == "progress" and (prog := board_progress(node.text)):
                # no cell of its own (more students than cells): the whole board is its result
                if prog[0] >= prog[1] and not state["own"] and s.assigned_s is not None:
                    s.done_s, s.outcome, state["over"] = now - clicked, "done (board)", True
            elif node.kind == "alert" and s.assigned_s is None and "finished" in node.text:
                s.assigned_s = now - clicked  # "Every cell of this class is finished"
        if msg.WhichOneof("type") == "script_finished":
            refusals, errors = alerts(c)
            s.refusals.extend(t for t in refusals if t not in s.refusals)
            s.errors.extend(t for t in errors if t not in s.errors)
            if s.assigned_s is None and (s.refusals or s.errors):
                s.outcome, state["over"] = ("refused" if s.refusals else "failed"), True

    client.listeners.append(listen)
    deadline = None
    try:
        start = time.monotonic()
        s.connected_s = start - t0
        await client.connect()
        if not await client.wait_until(lambda: client.widget("class_run"), PAGE_LOAD_S):
            raise TimeoutError(f"the class page did not load ({client.close_reason})")
        s.page_load_s = time.monotonic() - start
        radio = client.widget(f"class_guess_{code}")
        if radio is not None and not args.no_guess:
            options = list(radio.proto.options)
            s.guess = options[(s.index * 7 + 3) % len(options)]  # spread, not all alike
            before = client.stats.full_runs_finished
            await client.set_value(f"class_guess_{code}", s.guess)
            await wait_run(client, before, "the guess")
        state["clicked"] = time.monotonic()
        if clock.first_click is None:
            clock.first_click = state["clicked"]
        deadline = clock.first_click + args.timeout
        await client.click("class_run")
        await client.wait_until(lambda: state["over"], deadline - time.monotonic())
        if not state["over"]:
            s.outcome = "error" if client.closed else "timeout"
            if client.closed:
                s.errors.append(f"connection lost: {client.close_reason}")
        # A class stays to watch the board fill (its board panel keeps polling meanwhile).
        left = deadline - time.monotonic()
        if left > 0 and not clock.full.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(clock.full.wait(), left)
    except Exception as exc:  # one student's failure is a figure, not the end of the run
        s.outcome = "error"
        s.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        await client.close()
        s.ticks_ms = [t.latency * 1e3 for t in client.ticks if t.latency is not None]
        s.ticks_unanswered = sum(t.latency is None for t in client.ticks)
        s.messages, s.bytes = client.stats.messages, client.stats.bytes


# ---------------------------------------------------------------------------- the run
@dataclass
class Result:
    students: list[Student]
    board: Board
    command: list[str]
    code: str = ""
    grid: str = ""
    created_by: str = ""
    teacher_s: float | None = None
    wall_s: float = 0.0
    cpu_pct: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    threads_idle: int = 0
    threads_peak: int = 0
    health_ms: list[float] = field(default_factory=list)
    runs_trained: int | None = None
    runs_signal: str = ""
    client_cpu_pct: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    cells_in_store: int = 0
    uncaught: dict[str, int] = field(default_factory=dict)  # server log: exception -> count
    log_tail: str = ""


def uncaught_exceptions(log_text: str) -> dict[str, int]:
    """Streamlit's "Uncaught app execution" tracebacks in a server log: last line -> count."""
    out: dict[str, int] = {}
    for block in log_text.split("Uncaught app execution")[1:]:
        lines = [ln for ln in block.splitlines() if ln.strip()]
        last = next((ln for ln in lines if UNCAUGHT_LAST.match(ln)), "?")
        out[last] = out.get(last, 0) + 1
    return out


def board_figures(cells, results) -> dict[str, Any]:
    """Best p (lowest mean final test loss), and the lowest and highest p, mean ± std over
    seeds, from the finished cells (what the board aggregates)."""
    from dropout_demo.sweeps import aggregate

    points = aggregate(cells, results)
    if not points:
        return {}

    def point(pt) -> dict[str, Any]:
        loss, acc = pt["final_test_loss"], pt["final_test_acc"]
        return {
            "p": pt.p,
            "final_test_loss": loss.mean,
            "std": loss.std,
            "n": pt.n,
            "text": loss.text(),
            "test_acc": acc.mean,
            "best_test_loss": pt["best_test_loss"].mean,
        }

    best = min(points, key=lambda pt: (pt["final_test_loss"].mean, pt.p))
    by_p = sorted(points, key=lambda pt: pt.p)
    return {"best": point(best), "lowest_p": point(by_p[0]), "highest_p": point(by_p[-1])}


async def run_class(args: argparse.Namespace, work: Path) -> Result:
    grid = target_grid(args)
    preset = ui_preset_of(grid, args.base)
    runs = work / "runs"
    with (
        app_server(args.app_dir, work, list(args.extra_flag or [])) as server,
        ProcSampler(server.pid) as sampler,
        HealthProbe(server.url) as probe,
    ):
        await asyncio.sleep(2.0)  # the idle server
        idle = sampler.read()[2]
        t0, cpu0 = time.monotonic(), self_cpu()
        result = Result([], Board(len(grid)), server.command, grid=grid.describe())
        if args.teacher == "ui":
            code, result.teacher_s = await teacher_ui(
                server.url, preset or UI_GRID_PRESET, args.base
            )
            result.created_by = "teacher on the Class page"
            if preset is None:
                from dropout_demo.classes import p_choices

                room = classes_at(runs).set_grid(code, grid)
                classes_at(runs).set_question(code, room.question, p_choices(grid))
                result.created_by += "; grid set through the package API (no UI preset has it)"
        else:
            from dropout_demo.classes import DEFAULT_QUESTION, p_choices

            room = classes_at(runs).create("bench-teacher", grid, DEFAULT_QUESTION, p_choices(grid))
            code, result.created_by = room.code, "package API (Classes.create)"
        result.code = code
        room = classes_at(runs).get(code)
        assert room.grid == grid, (room.grid, grid)

        clock, ready, stop = Clock(), asyncio.Event(), asyncio.Event()
        board_task = asyncio.create_task(
            board_session(server.url, code, result.board, clock, ready, stop)
        )
        await asyncio.wait_for(ready.wait(), PAGE_LOAD_S + 10)
        students = [Student(i) for i in range(args.students)]
        result.students = students

        async def one(s: Student) -> None:
            await asyncio.sleep(s.index * args.stagger)
            await student_session(server.url, code, s, args, clock, t0)

        bound = args.students * args.stagger + 2 * PAGE_LOAD_S + args.timeout + 60
        with contextlib.suppress(TimeoutError):  # past the bound students keep what they saw
            await asyncio.wait_for(asyncio.gather(*(one(s) for s in students)), bound)
        stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(board_task, 30)
        t1 = time.monotonic()
        window = sampler.window(t0, t1)
        result.wall_s = t1 - t0
        result.cpu_pct = [s.cpu for s in window]
        result.rss_mb = [s.rss_mb for s in window]
        result.threads_idle = idle
        result.threads_peak = max((s.threads for s in window), default=idle)
        result.health_ms = [lat * 1e3 for lat in probe.window(t0, t1)]
        result.client_cpu_pct = 100.0 * (self_cpu() - cpu0) / max(t1 - t0, 1e-6)
        log_text = server.log_text()
        result.runs_trained, result.runs_signal = runs_trained(log_text)
        result.uncaught = uncaught_exceptions(log_text)
        result.log_tail = log_text[-4000:]

    from dropout_demo.classes import cell_results
    from dropout_demo.runs import RunStore

    cells = room.cells()
    results = cell_results(cells, RunStore(runs))
    result.cells_in_store = len(results)
    result.figures = board_figures(cells, results)
    return result


# ---------------------------------------------------------------------------- report
def _fig(pt: dict[str, Any] | None) -> str:
    if not pt:
        return "—"
    loss = f"{pt['final_test_loss']:.3f} ± {pt['std']:.3f}"
    return f"p = {pt['p']:g}: {loss} (test acc {100 * pt['test_acc']:.1f}%, {pt['n']} seeds)"


def table(r: Result, args: argparse.Namespace) -> dict[str, str]:
    st = r.students
    n = len(st)

    def times(name: str) -> list[float]:
        return [v for s in st if (v := getattr(s, name)) is not None]

    done = times("done_s")
    kinds = ("done", "done (board)", "refused", "failed", "timeout", "error")
    counts = {k: sum(s.outcome == k for s in st) for k in kinds}
    other = n - sum(counts.values())
    distinct = {s.cell for s in st if s.cell is not None}

    def ticks(values: list[float], unanswered: int) -> str:
        if not values:
            return "—"
        text = f"{med_p90(values, fmt='{:.0f}')} / {max(values):.0f} (n={len(values)}"
        return text + (f", {unanswered} unanswered)" if unanswered else ")")

    b = r.board
    full = "not reached" if b.full_s is None else f"{b.full_s:.1f}"
    verdict = ""
    if b.full_s is not None:
        verdict = f" ({'within' if b.full_s <= TARGET_S else 'over'} the {TARGET_S:.0f} s target)"
    last = b.progress[-1][1] if b.progress else 0
    return {
        "students / cells": f"{n} / {b.cells}",
        "class created by": r.created_by,
        "teacher: open page → class created, s": "—"
        if r.teacher_s is None
        else f"{r.teacher_s:.1f}",
        "board (presenter view) load, s": "—" if b.load_s is None else f"{b.load_s:.1f}",
        "student page load, s (median / p90)": med_p90(times("page_load_s")),
        "click → cell assigned, s (median / p90)": med_p90(times("assigned_s")),
        "click → its run training, s (median / p90)": med_p90(times("running_s")),
        "click → its run done, s (median / p90)": med_p90(done),
        "last student done, s after its click": f"{max(done):.1f}" if done else "—",
        "FIRST CLICK → BOARD SHOWS ALL CELLS, s": full + verdict,
        "board cells finished at the end": f"{last} of {b.cells}",
        "presenter view: distinct exceptions": str(len(b.errors)),
        "server log: uncaught script exceptions": str(sum(r.uncaught.values())),
        "distinct cells students got": str(len(distinct)),
        "done / done(board) / refused / failed / timeout / error": " / ".join(
            str(counts[k]) for k in kinds
        )
        + (f" (+{other} other)" if other else ""),
        "students who saw errors": str(sum(bool(s.errors) for s in st)),
        "guesses recorded / on the board": (
            f"{sum(s.guess is not None for s in st)} / {'—' if b.guesses is None else b.guesses}"
        ),
        "students' board tick, ms (median / p90 / max)": ticks(
            [t for s in st for t in s.ticks_ms], sum(s.ticks_unanswered for s in st)
        ),
        "presenter board tick, ms (median / p90 / max)": ticks(b.ticks_ms, b.ticks_unanswered),
        "server /_stcore/health, ms (median / p90 / max)": (
            f"{med_p90(r.health_ms, fmt='{:.0f}')} / {max(r.health_ms):.0f}" if r.health_ms else "—"
        ),
        "server CPU %, mean / max (100 = 1 core)": (
            f"{statistics.fmean(r.cpu_pct):.0f} / {max(r.cpu_pct):.0f}" if r.cpu_pct else "—"
        ),
        "server RSS, MB max": f"{max(r.rss_mb):.0f}" if r.rss_mb else "—",
        "server threads idle / peak": f"{r.threads_idle} / {r.threads_peak}",
        "runs trained (server log)": "—" if r.runs_trained is None else str(r.runs_trained),
        "wall time, s (teacher connects → all left)": f"{r.wall_s:.1f}",
        "bench client CPU % (all simulated browsers)": f"{r.client_cpu_pct:.0f}",
    }


def report(r: Result, args: argparse.Namespace) -> None:
    print(f"\nClass grid: class {r.code}, {r.grid}, {len(r.students)} students")
    print(f"server: {' '.join(r.command).replace(str(args.app_dir) + '/', '')}")
    rows = table(r, args)
    width = max(len(k) for k in rows) + 2
    for key, value in rows.items():
        print(f"{key:{width}}{value}")
    print(f"runs trained counted as: {r.runs_signal}")
    f = r.figures
    print(f"\nBoard figures (run store, {r.cells_in_store} of {r.board.cells} cells finished):")
    print(f"  best p        {_fig(f.get('best'))}  (final test loss, mean ± std over seeds)")
    print(f"  lowest p      {_fig(f.get('lowest_p'))}")
    print(f"  highest p     {_fig(f.get('highest_p'))}")
    print(f"  board reading {r.board.reading or '—'}")
    for s in r.students:
        if not s.outcome.startswith("done") or s.errors or s.refusals:
            seen = "; ".join((s.refusals + s.errors)[:2])[:160]
            print(f"  student {s.index} (cell {s.cell}): {s.outcome}  {seen}")
    for e in r.board.errors[:3]:
        print(f"  board: {e[:160]}")
    for line, count in r.uncaught.items():
        print(f"  server log, {count}x: {line[:200]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=600.0, help="s after the first click")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--teacher", choices=("ui", "api"), default="ui")
    parser.add_argument("--no-guess", action="store_true", help="students skip the question")
    parser.add_argument("--base", choices=sorted(BASE_LABELS), default="overfit")
    parser.add_argument("--ps", type=float, nargs="+", default=[i / 10 for i in range(10)])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="override the base's epochs (smoke runs)")
    parser.add_argument("--train-size", type=int, help="override the base's training-set size")
    parser.add_argument("--stagger", type=float, default=0.2, help="s between students")
    parser.add_argument("--extra-flag", action="append", metavar="FLAG")
    parser.add_argument("--app-dir", type=Path, default=REPO, help="where app.py is")
    parser.add_argument("--keep-log", type=Path, help="copy the server log here")
    args = parser.parse_args()
    args.app_dir = args.app_dir.resolve()

    require_mnist_env()
    if args.base == "tiny":
        os.environ[TEST_PRESETS_ENV] = "1"  # so the Class page offers it (server inherits env)

    with tempfile.TemporaryDirectory(prefix="class_grid_") as tmp:
        work = Path(tmp)
        print(f"class grid: starting a fresh server, {args.students} students ...", flush=True)
        try:
            result = asyncio.run(run_class(args, work))
        finally:
            if args.keep_log and (work / "server.log").exists():
                args.keep_log.write_bytes((work / "server.log").read_bytes())
    report(result, args)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}}
                | {"table": table(result, args)}
                | dataclasses.asdict(result),
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
