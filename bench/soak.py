"""Soak: polling sessions on one server for a long time; does its memory stay put?

    DROPOUT_DEMO_DATA=../shared/mnist .venv/bin/python bench/soak.py \\
        [--minutes 30] [--sessions 10] [--cycle 120] [--extra-flag=--runner.postScriptGC=false]

Figures, not a test. One fresh server started as ``make run`` starts it (see
bench/classroom_load.py: same command, empty temporary run store, loopback only, stopped by
PID), and ``--sessions`` simulated browsers (bench/st_client.py, the live panel's 1-second
fragment timer emulated) that keep the Lab busy for ``--minutes``:

Each session picks the **Custom** preset (the Overfitting lab's settings: 1,000 images, 30
epochs) with a seed of its own for every run (session * 1000 + cycle), so every run is a new
experiment that really trains: a result cache or shared runs cannot turn the soak into idle
pages. It presses Start run, watches the run (its live panel polling every second, as a
browser's does) until the run is done or ``--cycle`` s passed, presses Stop if it is still
going, then Remove, moves the slider to its next p (each session walks 0-0.9 in 0.05 steps
from its own starting point) and starts again. So at any moment about ``--sessions`` runs are
queued or running, every page polls, and the work per tick stays the same from start to end
(one row per table, one run per chart): memory that grows over the soak is a leak, not more
data. Without the Custom preset's seed field, it falls back to the Overfitting lab preset and
says so.

Runs beyond the app's running cap wait in its queue; their pages poll all the same. A run
stopped while still queued never trains, so "runs trained" (from the server log, as in
classroom_load) is below the number of Start clicks. At the end each session stops and
removes its current run, then closes its page.

Printed: RSS (the server with its training worker, and each alone), threads, server CPU,
fragment tick latency (request -> that run's ``script_finished``) and runs trained at 1, 2,
5, 10, ... minutes and at the end; then
everyone leaves, and after the server settles (threads back to the idle count, at most
``--settle`` s: a left session's runs are stopped after the app's grace period) the RSS and
thread count again. The line to read: RSS at the end vs at 5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.classroom_load import (  # noqa: E402
    PAGE_LOAD_S,
    TERMINAL,
    ProcSampler,
    alerts,
    app_server,
    med_p90,
    open_lab,
    runs_trained,
    settle_threads,
    spread,
    table_rows,
)
from bench.st_client import StClient, Tick  # noqa: E402

P_STEPS = spread(19)  # 0.00, 0.05, ..., 0.90
CUSTOM, FALLBACK = "Custom", "Overfitting lab"
MARKS_MIN = (1, 2, 5, 10, 15, 20, 25, 30, 45, 60, 90, 120)


@dataclass
class SessionLog:
    index: int
    runs_started: int = 0
    runs_done: int = 0
    runs_stopped: int = 0
    refusals: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    preset: str = ""


async def until(client: StClient, predicate, limit: float, deadline: float) -> bool:
    return await client.wait_until(predicate, max(0.0, min(limit, deadline - time.monotonic())))


async def set_if_needed(client: StClient, key: str, value, deadline: float) -> None:
    node = client.widget(key)
    state = client.widget_states.get(node.widget_id) if node else None
    if node is None:
        raise LookupError(f"no widget {key!r}")
    current = None
    if state is not None:
        kind = state.WhichOneof("value")
        current = getattr(state, kind) if kind else None
        if kind == "double_array_value":
            current = current.data[0] if current.data else None
    if current == value:
        return
    before = client.stats.full_runs_finished
    await client.set_value(key, value)
    ran = await until(client, lambda: client.stats.full_runs_finished > before, 60, deadline)
    if not ran and time.monotonic() < deadline:  # at the deadline a cut wait is no failure
        raise TimeoutError(f"no page run after setting {key}")


def fewer_rows(client: StClient, count: int):
    return lambda: len(table_rows(client)) < count


async def one_run(client: StClient, log: SessionLog, cycle: float, deadline: float) -> None:
    """Start, watch until done or ``cycle`` s, Stop if needed, Remove."""
    rows_before = len(table_rows(client))
    await client.click("lab_start")
    log.runs_started += 1
    if not await until(client, lambda: len(table_rows(client)) > rows_before, 60, deadline):
        refusals, errors = alerts(client)
        log.refusals += refusals
        log.errors += errors or ["no new row after Start run"]
        return

    def all_terminal() -> bool:
        return all(r.status.startswith(TERMINAL) for r in table_rows(client))

    await until(client, all_terminal, cycle, deadline)
    if not all_terminal():
        stop = client.widget(label="Stop")
        if stop is not None and not stop.proto.disabled:
            await client.click(label="Stop")
            log.runs_stopped += 1
        await until(client, all_terminal, 60, deadline + 60)
    else:
        log.runs_done += 1
    # Remove everything terminal, one click (one fragment rerun) at a time, as a person would.
    for _ in range(10):
        rows = table_rows(client)
        remove = client.widget(label="Remove")
        if not rows or remove is None:
            break
        await client.click(label="Remove")
        await until(client, fewer_rows(client, len(rows)), 30, deadline + 60)


async def session(url: str, log: SessionLog, args, deadline: float) -> None:
    client = StClient(url, name=f"soak-{log.index}")
    log.ticks = client.ticks
    try:
        await open_lab(client, FALLBACK, 0.5, PAGE_LOAD_S)
        if CUSTOM in list(client.widget("lab_preset").proto.options):
            await set_if_needed(client, "lab_preset", CUSTOM, deadline)
        log.preset = CUSTOM if client.widget("lab_seed") is not None else FALLBACK
        if log.preset == FALLBACK:  # no seed field: the Overfitting lab, p varies only
            await set_if_needed(client, "lab_preset", FALLBACK, deadline)
        cycle = 0
        while time.monotonic() < deadline and not client.closed:
            p = P_STEPS[(log.index * 7 + cycle) % len(P_STEPS)]
            if log.preset == CUSTOM:
                await set_if_needed(client, "lab_seed", float(log.index * 1000 + cycle), deadline)
            await set_if_needed(client, "lab_p", p, deadline)
            await one_run(client, log, args.cycle, deadline)
            refusals, errors = alerts(client)
            log.refusals += [t for t in refusals if t not in log.refusals]
            log.errors += [t for t in errors if t not in log.errors]
            cycle += 1
        if client.closed:
            log.errors.append(f"connection lost: {client.close_reason}")
    except Exception as exc:
        log.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        await client.close()


@dataclass
class Mark:
    minute: float
    rss_mb: float
    server_rss_mb: float  # the server process alone; rss_mb - this: its training worker
    threads: int
    cpu_mean: float
    ticks: list[float]
    runs_trained: int
    sessions_polling: int


async def soak(args, work: Path) -> None:
    extra = list(args.extra_flag or [])
    with app_server(args.app_dir, work, extra) as server, ProcSampler(server.pid) as sampler:
        await asyncio.sleep(2.0)
        idle = sampler.read()[2]
        print(f"server: {' '.join(server.command)}  (idle: {idle} threads)", flush=True)
        t0 = time.monotonic()
        deadline = t0 + args.minutes * 60
        logs = [SessionLog(i) for i in range(args.sessions)]

        async def staggered(log: SessionLog) -> None:
            await asyncio.sleep(log.index * args.stagger)
            await session(server.url, log, args, deadline)

        tasks = [asyncio.create_task(staggered(log)) for log in logs]
        marks: list[Mark] = []
        minutes = sorted({m for m in MARKS_MIN if m < args.minutes} | {args.minutes})
        last = t0
        print(
            f"{'min':>5} {'RSS MB':>8} {'server':>7} {'worker':>7} {'threads':>8} {'CPU %':>6} "
            f"{'tick ms med / p90':>18} {'ticks':>6} {'trained':>7} {'polling':>8}",
            flush=True,
        )
        for minute in minutes:
            await asyncio.sleep(max(0.0, t0 + minute * 60 - time.monotonic()))
            now = time.monotonic()
            _, rss, threads = sampler.read()
            own = sampler.own_rss()
            window = sampler.window(last, now)
            ticks = [
                t.latency * 1e3
                for log in logs
                for t in log.ticks
                if t.latency is not None and last <= t.sent < now
            ]
            polling = sum(
                any(t.sent >= now - 5 for t in log.ticks[-10:]) for log in logs
            )  # sessions whose timer fired in the last 5 s
            mark = Mark(
                minute,
                rss,
                own,
                threads,
                statistics.fmean(s.cpu for s in window) if window else 0.0,
                ticks,
                runs_trained(server.log_text())[0] or 0,
                polling,
            )
            marks.append(mark)
            last = now
            print(
                f"{minute:5g} {rss:8.0f} {own:7.0f} {rss - own:7.0f} {threads:8d} "
                f"{mark.cpu_mean:6.0f} "
                f"{med_p90(ticks, fmt='{:.0f}'):>18} {len(ticks):6d} {mark.runs_trained:7d} "
                f"{polling:5d}/{len(logs)}",
                flush=True,
            )
        # Sessions end their current step by themselves (all their waits stop at the deadline).
        _, pending = await asyncio.wait(tasks, timeout=180)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        left = time.monotonic()
        settle = await settle_threads(sampler, idle, args.settle)
        _, rss_after, threads_after = sampler.read()
        trained, signal = runs_trained(server.log_text())

    ref = next((m for m in marks if m.minute >= 5), marks[0])
    end = marks[-1]
    print(
        f"\nafter everyone left ({time.monotonic() - left:.0f} s, settled in {settle:.0f} s): "
        f"RSS {rss_after:.0f} MB, threads {threads_after} (idle before: {idle})"
    )
    print(
        f"RSS at {end.minute:g} min vs at {ref.minute:g} min: {end.rss_mb - ref.rss_mb:+.0f} MB "
        f"({(end.rss_mb / ref.rss_mb - 1) * 100:+.1f}%); the server alone "
        f"{end.server_rss_mb - ref.server_rss_mb:+.0f} MB "
        f"({(end.server_rss_mb / max(ref.server_rss_mb, 1e-9) - 1) * 100:+.1f}%), "
        f"its worker {(end.rss_mb - end.server_rss_mb) - (ref.rss_mb - ref.server_rss_mb):+.0f} MB"
    )
    print(
        f"Start clicks {sum(log.runs_started for log in logs)}, runs done "
        f"{sum(log.runs_done for log in logs)}, stopped {sum(log.runs_stopped for log in logs)}; "
        f"runs trained {trained} ({signal}); preset {logs[0].preset or '?'}"
    )
    all_ticks = [t.latency * 1e3 for log in logs for t in log.ticks if t.latency is not None]
    print(f"fragment tick over the soak, ms (median / p90): {med_p90(all_ticks, fmt='{:.0f}')}")
    for log in logs:
        if log.refusals or log.errors:
            print(f"  session {log.index}: {'; '.join((log.refusals + log.errors)[:3])[:200]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--cycle", type=float, default=120.0, help="s before a run is stopped")
    parser.add_argument("--stagger", type=float, default=1.0, help="s between connections")
    parser.add_argument("--settle", type=float, default=240.0, help="s to wait for threads")
    parser.add_argument("--extra-flag", action="append", metavar="FLAG")
    parser.add_argument("--app-dir", type=Path, default=REPO, help="where app.py is")
    args = parser.parse_args()
    args.app_dir = args.app_dir.resolve()
    data = os.environ.get("DROPOUT_DEMO_DATA")
    if not data or not Path(data).is_dir():
        sys.exit("Set DROPOUT_DEMO_DATA to the MNIST directory (e.g. ../shared/mnist)")
    os.environ["DROPOUT_DEMO_DATA"] = str(Path(data).resolve())
    with tempfile.TemporaryDirectory(prefix="soak_") as tmp:
        asyncio.run(soak(args, Path(tmp)))


if __name__ == "__main__":
    main()
