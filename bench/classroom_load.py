"""A class in the Lab at once: N simulated students on one server, beside a lone student.

    DROPOUT_DEMO_DATA=../shared/mnist .venv/bin/python bench/classroom_load.py \\
        [--students 30] [--action compare|start] [--preset "Overfitting lab"] [--p 0.5|spread] \\
        [--stagger 0.2] [--timeout 600] [--extra-flag=--runner.postScriptGC=false] [--json OUT] \\
        [--also-env NAME=VALUE] [--also-app-dir DIR]

``--also-env`` and ``--also-app-dir`` add a column each: the class once more on a server with
that setting, or on the app in DIR (a ``git worktree`` of an earlier commit), so that an A/B
is read within one invocation on this shared machine.

Figures, not a test: it asserts nothing and prints one table. Each student is a
``bench/st_client.py`` session: Streamlit's own websocket protocol and protobufs, with the
live panel's ``run_every`` timer emulated as the browser runs it (real browsers are too heavy
for 30 on 2 cores). Only loopback; every wait is bounded; the servers are stopped by PID.

Two phases, each on a FRESH server started the way ``make run`` starts it
(``.venv/bin/streamlit run app.py --server.port P`` from the repository, so its
``.streamlit/config.toml`` applies; no other flags unless ``--extra-flag``; the bind address is
set to 127.0.0.1 through ``STREAMLIT_SERVER_ADDRESS``) with an empty temporary run store
(``DROPOUT_DEMO_RUNS``), so nothing cached leaks between phases or invocations:

1. a lone student (p = the --p value, 0.5 with ``--p spread``);
2. the class: N students connecting ``--stagger`` s apart, each opening the Lab (the app's root
   URL, whose default page is the Lab), picking the preset and p (``spread``: evenly over
   0-0.9 on the slider's 0.05 steps) and pressing the button, then staying on the page, its
   live panel polling as a browser's does, until all of its runs are done (or it was refused
   and has nothing left running, or ``--timeout`` s passed); then it leaves.

Per student, from the click: the first row of its runs table, the first point of the loss chart
(the plotly chart keyed ``lab_loss_chart`` with a trace of >= 1 point), all of its rows "done";
refusals (``st.error`` text about a full queue / too many runs / refused) and other errors
(exception elements, other ``st.error``). Overall: fragment tick latency (auto-rerun request ->
that run's ``script_finished``, see st_client), server CPU and RSS (``/proc``, every second,
the server and its child processes), how long ``/_stcore/health`` takes to answer (polled
every second: the server's event loop, which also reads and writes every websocket), thread
count idle before anyone connects / at peak / after everyone left and the server settled (at
most ``--settle`` s), runs actually trained, and the wall time from the first connection to
the last student leaving.

Runs trained: the server's ``dropout_demo`` loggers are sent to its stderr at INFO by a
``sitecustomize.py`` on its PYTHONPATH; lines ``run started: key=...`` (logger
``dropout_demo.jobs``, once per real training computation) are counted. While the job layer
does not log them, the same hook wraps ``dropout_demo.training.fit`` and logs each call
(``fit started``): every training computation goes through ``fit``. The table says which
signal it used. The hook also turns on the Lab's DEBUG line ``lab live panel: <n> runs, <ms>
ms`` when the app has it, for the server's own time per tick.

``DROPOUT_DEMO_TEST_PRESETS=1`` (passed through) offers the seconds-long "Tiny (test)" preset,
for quick checks: ``--students 3 --preset "Tiny (test)"``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import html
import json
import os
import re
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python bench/...` from anywhere

from bench.st_client import Node, StClient  # noqa: E402

PRESET = "Overfitting lab"
BUTTONS = {"compare": "lab_compare", "start": "lab_start"}
RUNS_PER_CLICK = {"compare": 2, "start": 1}
STATUS = re.compile(r"^(queued|running|done|stopped|stopping|failed|diverged)\b")
TERMINAL = ("done", "stopped", "failed", "diverged")
REFUSAL = re.compile(
    r"queue is full|too many|too large|refus|already ha(ve|s) \d+ runs|no new runs", re.I
)
RUN_STARTED = re.compile(r"run started: key=(\w+)")
RAY_STARTED = re.compile(r"ray computation started: key=(\w+)")
FIT_STARTED = re.compile(r"^BENCH [\d.]+ dropout_demo\.bench: fit started", re.M)
PANEL_TICK = re.compile(r"^BENCH ([\d.]+) \S+: lab live panel: (\d+) runs, ([\d.]+) ms", re.M)
PAGE_LOAD_S = 120.0  # connect -> Lab drawn, per student
SITECUSTOMIZE = '''"""bench/classroom_load.py: the app's log lines, with their time, on stderr."""
import functools
import importlib.abc
import importlib.util
import logging
import sys

_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("BENCH %(created).3f %(name)s: %(message)s"))
_app = logging.getLogger("dropout_demo")
_app.setLevel(logging.INFO)
_app.addHandler(_handler)
_app.propagate = False
logging.getLogger("dropout_demo.ui.lab").setLevel(logging.DEBUG)  # "lab live panel" lines
_bench = logging.getLogger("dropout_demo.bench")


def _wrap(fit):
    @functools.wraps(fit)
    def fit_logged(*args, **kwargs):
        config = args[0] if args else kwargs.get("config")
        _bench.info("fit started: %s", getattr(config, "label", lambda: config)())
        return fit(*args, **kwargs)

    return fit_logged


class _WrapFit(importlib.abc.MetaPathFinder):
    """Wraps dropout_demo.training.fit as the module is first imported."""

    def find_spec(self, name, path=None, target=None):
        if name != "dropout_demo.training":
            return None
        sys.meta_path.remove(self)  # one module, once; and no recursion in find_spec
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            if callable(getattr(module, "fit", None)):
                module.fit = _wrap(module.fit)

        spec.loader.exec_module = exec_and_wrap
        return spec


sys.meta_path.insert(0, _WrapFit())
'''


# ---------------------------------------------------------------------------- the server
@dataclass
class Sample:
    t: float  # seconds since the sampler started
    cpu: float  # percent of one core over the last interval, server + children
    rss_mb: float
    threads: int


class ProcSampler:
    """CPU %, RSS and threads of a process and its descendants from /proc, every second."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        self.pid, self.every = pid, every
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)
        self.started = time.monotonic()

    def _family(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        family, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            family.append(pid)
            todo.extend(children.get(pid, []))
        return family

    def read(self) -> tuple[float, float, int]:
        """(cpu seconds, RSS MB, threads) of the process family now."""
        cpu, rss, threads = 0.0, 0.0, 0
        for pid in self._family():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                statm = Path(f"/proc/{pid}/statm").read_text().split()
            except OSError:
                continue
            cpu += (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime
            threads += int(fields[17])
            rss += int(statm[1]) * self._page_mb
        return cpu, rss, threads

    def own_rss(self) -> float:
        """RSS MB of the process itself, without its children (e.g. a training worker)."""
        try:
            return int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * self._page_mb
        except OSError:
            return 0.0

    def _run(self) -> None:
        last_cpu, last_t = self.read()[0], time.monotonic()
        while not self._stop.wait(self.every):
            cpu, rss, threads = self.read()
            now = time.monotonic()
            pct = 100.0 * (cpu - last_cpu) / max(now - last_t, 1e-6)
            self.samples.append(Sample(now - self.started, pct, rss, threads))
            last_cpu, last_t = cpu, now

    def __enter__(self) -> ProcSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def window(self, start: float, end: float) -> list[Sample]:
        """Samples between two time.monotonic() instants."""
        a, b = start - self.started, end - self.started
        return [s for s in self.samples if a <= s.t <= b]


class HealthProbe:
    """GET /_stcore/health every second: how long the server's event loop takes to answer
    (the same loop reads every browser's requests and writes every reply)."""

    def __init__(self, url: str, every: float = 1.0) -> None:
        self.url, self.every = f"{url}/_stcore/health", every
        self.latencies: list[tuple[float, float]] = []  # (time.monotonic(), seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url, timeout=60) as r:
                r.read()
                self.latencies.append((start, time.monotonic() - start))
            self._stop.wait(max(0.0, self.every - (time.monotonic() - start)))

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=70)

    def window(self, start: float, end: float) -> list[float]:
        return [lat for t, lat in self.latencies if start <= t <= end]


@dataclass
class Server:
    url: str
    pid: int
    log_path: Path
    command: list[str]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def streamlit_command(app_dir: Path, port: int, extra: list[str]) -> list[str]:
    """What `make run` runs (`$(BIN)/streamlit run app.py --server.port $(PORT)`)."""
    script = app_dir / ".venv" / "bin" / "streamlit"
    if not script.exists():
        script = Path(sys.executable).with_name("streamlit")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "streamlit"]
    return [*base, "run", "app.py", "--server.port", str(port), *extra]


@contextlib.contextmanager
def app_server(
    app_dir: Path,
    work: Path,
    extra: list[str],
    timeout: float = 90.0,
    env_extra: dict[str, str] | None = None,
    name: str = "server",
):
    """A fresh server with an empty run store in ``work``; stopped by its PID on exit
    (``env_extra``: environment settings of this server only, e.g. an A/B variant)."""
    hook = work / "hook"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    runs = work / "runs"
    runs.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(
        DROPOUT_DEMO_RUNS=str(runs),
        PYTHONPATH=os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")])),
        STREAMLIT_SERVER_ADDRESS="127.0.0.1",  # loopback only; everything else as `make run`
    )
    env.update(env_extra or {})
    port = free_port()
    command = streamlit_command(app_dir, port, extra)
    log_path = work / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{log_path.read_text()[-3000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp,
            ):
                if resp.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit not healthy in {timeout:.0f} s")
            time.sleep(0.3)
        yield Server(url, proc.pid, log_path, command)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@contextlib.contextmanager
def ray_head(work: Path, timeout: float = 120.0):
    """A Ray head on this machine (loopback, every core), stopped by its PID on exit: the
    `ray start --block` process drains and stops the processes it started."""
    port = free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    # Token authentication with a token of this invocation, given to the head and (through
    # the returned environment) to every server: no token file is written or read.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    command = [
        str(ray_bin), "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
        "--include-dashboard=false", "--disable-usage-stats", "--block",
    ]  # fmt: skip
    log_path = work / "ray-head.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **auth}
        )
    try:
        deadline = time.monotonic() + timeout
        while "--block" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray head did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield {"DROPOUT_DEMO_RAY": f"127.0.0.1:{port}", **auth}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def runs_trained(log_text: str) -> tuple[int | None, str]:
    """(count, what was counted) from the server logs (all replicas')."""
    ray_keys = RAY_STARTED.findall(log_text)
    if ray_keys:
        return len(ray_keys), (
            f"'ray computation started' lines of all replicas ({len(set(ray_keys))} distinct "
            "keys; a replica that joins another's computation logs 'joined')"
        )
    keys = RUN_STARTED.findall(log_text)
    if keys:
        return len(keys), f"'run started' lines ({len(set(keys))} distinct keys)"
    fits = len(FIT_STARTED.findall(log_text))
    return fits, "fit() calls (fallback: no 'run started' lines)"


def panel_ms(log_text: str, start_unix: float, end_unix: float) -> list[float]:
    """The Lab's own server time per live-panel run, from its DEBUG lines, in a time window."""
    return [
        float(ms) for t, _, ms in PANEL_TICK.findall(log_text) if start_unix <= float(t) <= end_unix
    ]


# ---------------------------------------------------------------------------- the Lab page
@dataclass
class Row:
    path: tuple[int, ...]
    status: str
    texts: list[str]


def _is_row_block(node: Node | None) -> bool:
    if node is None or node.block is None:
        return False
    kind = node.block.WhichOneof("type")
    if kind == "horizontal":
        return True
    return kind == "flex_container" and node.block.flex_container.direction == 2  # HORIZONTAL


_HTML_ROW = re.compile(r'<tr data-status="[^"]*">(.*?)</tr>', re.S)
_HTML_CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)
_TAGS = re.compile(r"<[^>]+>")


def _cell_text(cell: str) -> str:
    return html.unescape(_TAGS.sub(" ", cell)).split("  ")[0].strip()


def table_rows(client: StClient) -> list[Row]:
    """The runs table. Today's Lab draws it as one HTML element, a ``<tr data-status=…>`` per
    run whose second cell is the status text; earlier Labs drew a horizontal block (st.columns
    row) per run holding a markdown cell whose text starts with the status word. Both read."""
    rows: dict[tuple[int, ...], Row] = {}
    nodes = client.page.nodes
    for node in client.page:
        if node.kind != "markdown":
            continue
        if "<tr data-status=" in node.text:
            for i, match in enumerate(_HTML_ROW.finditer(node.text)):
                cells = [_cell_text(c) for c in _HTML_CELL.findall(match.group(1))]
                if len(cells) >= 2:
                    rows[(*node.path, i)] = Row((*node.path, i), cells[1], cells)
            continue
        if not STATUS.match(node.text):
            continue
        for cut in range(len(node.path) - 1, 0, -1):
            if _is_row_block(nodes.get(node.path[:cut])):
                row_path = node.path[:cut]
                if row_path not in rows:
                    below = client.page.below(row_path)
                    texts = [n.text for n in below if n.text and not n.text.startswith("<")]
                    rows[row_path] = Row(row_path, node.text, texts)
                break
    return list(rows.values())


def is_row(node: Node) -> bool:
    """A markdown element that is (or holds) a row of the runs table."""
    return node.kind == "markdown" and (
        "<tr data-status=" in node.text or bool(STATUS.match(node.text))
    )


def loss_points(node: Node) -> int:
    """Most points in any trace of the Lab's loss chart."""
    return max(node.plotly_points(), default=0)


def alerts(client: StClient) -> tuple[list[str], list[str]]:
    """(refusals, errors) on the page now: st.error texts and exception elements."""
    refusals, errors = [], []
    for node in client.page:
        if node.kind == "alert" and node.proto.format == 1:  # Alert.ERROR
            (refusals if REFUSAL.search(node.text) else errors).append(node.text)
        elif node.kind == "exception":
            errors.append(node.text)
    return refusals, errors


async def open_lab(client: StClient, preset: str, p: float, timeout: float) -> None:
    """Connect, wait for the Lab, then pick the preset and p as a person would."""
    await client.connect()
    ok = await client.wait_until(
        lambda: client.stats.full_runs_finished >= 1 and client.widget("lab_p") is not None,
        timeout,
    )
    if not ok:
        raise TimeoutError(f"the Lab did not load in {timeout:.0f} s ({client.close_reason})")
    radio = client.widget("lab_preset")
    if radio is None or preset not in list(radio.proto.options):
        options = list(radio.proto.options) if radio is not None else []
        raise LookupError(f"preset {preset!r} is not offered (options: {options})")
    current = client.widget_states.get(radio.widget_id)
    if current is None or current.string_value != preset:
        before = client.stats.full_runs_finished
        await client.set_value("lab_preset", preset)
        if not await client.wait_page_run(before, timeout):
            raise TimeoutError("no page run after picking the preset")
    slider = client.widget("lab_p")
    current = client.widget_states.get(slider.widget_id)
    if current is None or abs(current.double_array_value.data[0] - p) > 1e-9:
        before = client.stats.full_runs_finished
        await client.set_value("lab_p", p)
        if not await client.wait_page_run(before, timeout):
            raise TimeoutError("no page run after moving the slider")


# ---------------------------------------------------------------------------- one student
@dataclass
class Student:
    index: int
    p: float
    connected_s: float | None = None  # since the phase started
    page_load_s: float | None = None  # connect -> Lab drawn with preset and p set
    first_row_s: float | None = None  # all three: seconds after the click
    first_point_s: float | None = None
    done_s: float | None = None
    left_s: float | None = None  # since the phase started
    outcome: str = "not started"  # done | refused | failed | timeout | error
    refusals: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    final_rows: list[str] = field(default_factory=list)
    ticks_ms: list[float] = field(default_factory=list)
    ticks_unanswered: int = 0
    orphan_runs: int = 0
    ref_hits: int = 0
    run_outcomes: dict[str, int] = field(default_factory=dict)  # script_finished statuses
    messages: int = 0  # ForwardMsgs received
    bytes: int = 0
    run_log: list[tuple] = field(default_factory=list)  # (s since click, event, ...), --json


async def student_session(
    url: str,
    s: Student,
    action: str,
    preset: str,
    timeout: float,
    t0: float,
    cookies: dict[str, str] | None = None,
) -> Student:
    client = StClient(url, name=f"student-{s.index}", cookies=cookies)
    expected = RUNS_PER_CLICK[action]
    state: dict[str, float | bool | None] = {"clicked": None, "over": False}

    def listen(c: StClient, msg, node: Node | None) -> None:
        clicked = state["clicked"]
        if clicked is None:
            return
        now = time.monotonic()
        if node is not None and node.element is not None:
            if s.first_row_s is None and is_row(node):
                s.first_row_s = now - clicked
            if s.first_point_s is None and node.key == "lab_loss_chart" and loss_points(node):
                s.first_point_s = now - clicked
        if msg.WhichOneof("type") != "script_finished":
            return
        refusals, errors = alerts(c)
        s.refusals.extend(t for t in refusals if t not in s.refusals)
        s.errors.extend(t for t in errors if t not in s.errors)
        rows = table_rows(c)
        statuses = [r.status for r in rows]
        if len(rows) >= expected and all(st.startswith("done") for st in statuses):
            s.done_s, s.outcome, state["over"] = now - clicked, "done", True
        elif all(st.startswith(TERMINAL) for st in statuses) and (
            len(rows) >= expected or s.refusals or s.errors
        ):
            s.outcome = "refused" if s.refusals else "failed"
            state["over"] = True
        s.final_rows = [" | ".join(r.texts[:4]) for r in rows]

    client.listeners.append(listen)
    try:
        start = time.monotonic()
        s.connected_s = start - t0
        await open_lab(client, preset, s.p, PAGE_LOAD_S)
        s.page_load_s = time.monotonic() - start
        state["clicked"] = time.monotonic()
        await client.click(BUTTONS[action])
        finished = await client.wait_until(lambda: state["over"], timeout)
        if not finished:
            s.outcome = "timeout" if not client.closed else "error"
            if client.closed:
                s.errors.append(f"connection lost: {client.close_reason}")
    except Exception as exc:  # this student's failure is a figure, not the end of the run
        s.outcome = "error"
        s.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        await client.close()
        s.left_s = time.monotonic() - t0
        s.ticks_ms = [t.latency * 1e3 for t in client.ticks if t.latency is not None]
        s.ticks_unanswered = sum(t.latency is None for t in client.ticks)
        s.orphan_runs = client.stats.orphan_runs
        s.ref_hits = client.stats.ref_hits
        s.run_outcomes = dict(client.stats.statuses)
        s.messages, s.bytes = client.stats.messages, client.stats.bytes
        clicked = state["clicked"] or 0.0
        s.run_log = [
            (round(t - clicked, 3), ev, rid[:8], len(frags), status)
            for t, ev, rid, frags, status in client.run_log
        ]
    return s


# ---------------------------------------------------------------------------- one phase
@dataclass
class Phase:
    label: str
    students: list[Student]
    command: list[str]
    wall_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)  # while students were connected
    threads_idle: int = 0
    threads_peak: int = 0
    threads_after: int = 0
    settle_s: float = 0.0
    rss_after_mb: float = 0.0
    runs_trained: int | None = None
    runs_signal: str = ""
    panel_ms: list[float] = field(default_factory=list)
    health_ms: list[float] = field(default_factory=list)
    client_cpu_pct: float = 0.0
    log_tail: str = ""


def spread(n: int, low: float = 0.0, high: float = 0.9, step: float = 0.05) -> list[float]:
    """n values evenly over [low, high], on the slider's steps."""
    if n == 1:
        return [round(round((low + high) / 2 / step) * step, 2)]
    return [round(round((low + (high - low) * i / (n - 1)) / step) * step, 2) for i in range(n)]


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def settle_threads(sampler: ProcSampler, target: int, limit: float) -> float:
    """Wait (at most ``limit`` s) until the server's threads are back to ``target``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if sampler.read()[2] <= target:
            break
        await asyncio.sleep(1.0)
    return time.monotonic() - start


async def run_phase(
    label: str,
    ps: list[float],
    args,
    work: Path,
    env_extra: dict[str, str] | None = None,
    app_dir: Path | None = None,
) -> Phase:
    extra = list(args.extra_flag or [])
    env_extra = {**(args.ray_env or {}), **(env_extra or {})}
    with contextlib.ExitStack() as stack:
        # Replicas share one run store (work/runs); students take them in turn. CPU, RSS,
        # threads and health are the first replica's.
        servers = [
            stack.enter_context(
                app_server(
                    app_dir or args.app_dir, work, extra, env_extra=env_extra, name=f"server{r}"
                )
            )
            for r in range(args.replicas)
        ]
        server = servers[0]
        sampler = stack.enter_context(ProcSampler(server.pid))
        probe = stack.enter_context(HealthProbe(server.url))
        await asyncio.sleep(2.0)  # the idle server, before anyone connects
        idle = sampler.read()[2]
        students = [Student(i, p) for i, p in enumerate(ps)]
        t0, cpu0, unix0 = time.monotonic(), self_cpu(), time.time()

        async def one(s: Student) -> Student:
            await asyncio.sleep(s.index * args.stagger)
            url = servers[s.index % len(servers)].url
            return await student_session(url, s, args.action, args.preset, args.timeout, t0)

        bound = len(ps) * args.stagger + PAGE_LOAD_S * 3 + args.timeout + 60
        # Past the bound, students keep what they saw; those cut stay "timeout"/"not started".
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(one(s) for s in students)), bound)
        t1, cpu1, unix1 = time.monotonic(), self_cpu(), time.time()
        settle = await settle_threads(sampler, idle, args.settle)
        _, rss_after, threads_after = sampler.read()
        window = sampler.window(t0, t1)
        log_text = "\n".join(srv.log_text() for srv in servers)
        trained, signal = runs_trained(log_text)
        return Phase(
            label=label,
            students=students,
            command=server.command,
            wall_s=t1 - t0,
            samples=window,
            threads_idle=idle,
            threads_peak=max((s.threads for s in window), default=idle),
            threads_after=threads_after,
            settle_s=settle,
            rss_after_mb=rss_after,
            runs_trained=trained,
            runs_signal=signal,
            panel_ms=panel_ms(log_text, unix0, unix1),
            health_ms=[lat * 1e3 for lat in probe.window(t0, t1)],
            client_cpu_pct=100.0 * (cpu1 - cpu0) / max(t1 - t0, 1e-6),
            log_tail=log_text[-4000:],
        )


# ---------------------------------------------------------------------------- report
def pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def med_p90(values: list[float], scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return "—"
    return f"{fmt.format(statistics.median(values))} / {fmt.format(pct(values, 0.9))}"


def phase_column(ph: Phase) -> dict[str, str]:
    st = ph.students
    n = len(st)

    def times(name: str) -> list[float]:
        return [getattr(s, name) for s in st if getattr(s, name) is not None]

    done = times("done_s")
    ticks = [ms for s in st for ms in s.ticks_ms]
    unanswered = sum(s.ticks_unanswered for s in st)
    orphans = sum(s.orphan_runs for s in st)
    outcomes = {k: sum(s.outcome == k for s in st) for k in ("done", "refused", "failed")}
    other = n - sum(outcomes.values())
    cpu = [s.cpu for s in ph.samples]
    rss = [s.rss_mb for s in ph.samples]
    tick_text = "—"
    if ticks:
        tick_text = f"{med_p90(ticks, fmt='{:.0f}')} / {max(ticks):.0f} (n={len(ticks)}"
        tick_text += f", {unanswered} unanswered)" if unanswered else ")"
    return {
        "students": str(n),
        "page load, s (median / p90)": med_p90(times("page_load_s")),
        "click → first row, s (median / p90)": med_p90(times("first_row_s")),
        "click → first curve point, s (median / p90)": med_p90(times("first_point_s")),
        "click → all its runs done, s (median / p90)": med_p90(done),
        "last student done, s after its click": f"{max(done):.1f}" if done else "—",
        "done / refused / failed / timeout+error": (
            f"{outcomes['done']} / {outcomes['refused']} / {outcomes['failed']} / {other}"
        ),
        "students who saw errors": str(sum(bool(s.errors) for s in st)),
        "fragment tick, ms (median / p90 / max)": tick_text,
        "  ... fragment runs serving no request": str(orphans),
        "server time per live-panel run, ms (app log)": med_p90(ph.panel_ms)
        if ph.panel_ms
        else "—",
        "server /_stcore/health, ms (median / p90 / max)": (
            f"{med_p90(ph.health_ms, fmt='{:.0f}')} / {max(ph.health_ms):.0f}"
            if ph.health_ms
            else "—"
        ),
        "server CPU %, mean / max (100 = 1 core)": (
            f"{statistics.fmean(cpu):.0f} / {max(cpu):.0f}" if cpu else "—"
        ),
        "server RSS, MB max (after leaving)": (
            f"{max(rss):.0f} ({ph.rss_after_mb:.0f})" if rss else "—"
        ),
        "threads idle / peak / after leaving": (
            f"{ph.threads_idle} / {ph.threads_peak} / {ph.threads_after} ({ph.settle_s:.0f} s)"
        ),
        "runs trained": "—" if ph.runs_trained is None else str(ph.runs_trained),
        "wall time, s (first connect → last left)": f"{ph.wall_s:.1f}",
        "bench client CPU % (all simulated browsers)": f"{ph.client_cpu_pct:.0f}",
    }


def report(phases: list[Phase], args) -> None:
    p_text = "p spread over 0–0.9" if args.p == "spread" else f"p = {args.p} for all"
    button = "Compare with p = 0" if args.action == "compare" else "Start run"
    print(f"\nClassroom load: {button}, {args.preset}, {p_text}, stagger {args.stagger} s")
    print(f"server: {' '.join(phases[0].command).replace(str(args.app_dir) + '/', '')}")
    columns = [phase_column(ph) for ph in phases]
    heads = [ph.label for ph in phases]
    width = max(len(k) for k in columns[0]) + 2
    colw = max(22, *(len(v) + 2 for c in columns for v in c.values()))
    print(f"{'':{width}}" + "".join(f"{h:>{colw}}" for h in heads))
    for key in columns[0]:
        print(f"{key:{width}}" + "".join(f"{c[key]:>{colw}}" for c in columns))
    print(f"runs trained counted as: {phases[-1].runs_signal}")
    for ph in phases:
        for s in ph.students:
            if s.outcome != "done" or s.errors:
                seen = "; ".join((s.refusals + s.errors)[:2])[:160]
                print(f"  {ph.label} student {s.index} (p={s.p}): {s.outcome}  {seen}")


def require_mnist_env() -> None:
    """Exit with a message unless DROPOUT_DEMO_DATA names a directory; make it absolute (the
    server runs in another directory)."""
    data = os.environ.get("DROPOUT_DEMO_DATA")
    if not data or not Path(data).is_dir():
        sys.exit("Set DROPOUT_DEMO_DATA to the MNIST directory (e.g. ../shared/mnist)")
    os.environ["DROPOUT_DEMO_DATA"] = str(Path(data).resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--action", choices=sorted(BUTTONS), default="compare")
    parser.add_argument("--preset", default=PRESET)
    parser.add_argument("--p", default="0.5", help="a value on the slider, or 'spread'")
    parser.add_argument("--stagger", type=float, default=0.2, help="s between connections")
    parser.add_argument("--timeout", type=float, default=600.0, help="s after a click")
    parser.add_argument("--settle", type=float, default=180.0, help="s to wait for threads")
    parser.add_argument(
        "--extra-flag",
        action="append",
        metavar="FLAG",
        help="passed to `streamlit run`, e.g. --extra-flag=--runner.postScriptGC=false",
    )
    parser.add_argument(
        "--also-env",
        action="append",
        metavar="NAME=VALUE",
        help="run the class once more on a server with this environment setting, as another "
        "column (A/B in one invocation), e.g. --also-env DROPOUT_DEMO_TRAIN_NICE=0",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="app replicas per phase, sharing one run store; students take them in turn",
    )
    parser.add_argument(
        "--ray-head",
        action="store_true",
        help="start a Ray head (`ray start --head --block`, stopped by its PID) and run every "
        "server with DROPOUT_DEMO_RAY=its address (replicas then share computations)",
    )
    parser.add_argument(
        "--also-app-dir",
        action="append",
        type=Path,
        metavar="DIR",
        help="run the class once more on the app in DIR (e.g. a `git worktree` of an earlier "
        "commit), as another column: code A/B in one invocation",
    )
    parser.add_argument("--no-lone", action="store_true", help="skip the lone student")
    parser.add_argument("--app-dir", type=Path, default=REPO, help="where app.py is")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--keep-logs", type=Path, help="copy the server logs into this dir")
    args = parser.parse_args()
    args.app_dir = args.app_dir.resolve()

    require_mnist_env()
    if args.p == "spread":
        class_ps, lone_p = spread(args.students), 0.5
    else:
        lone_p = round(round(float(args.p) / 0.05) * 0.05, 2)
        class_ps = [lone_p] * args.students

    variants: list[dict[str, str]] = []
    for item in args.also_env or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--also-env wants NAME=VALUE, got {item!r}")
        variants.append({name: value})

    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="classroom_load_") as tmp, contextlib.ExitStack() as st:
        args.ray_env = None
        if args.ray_head:
            args.ray_env = st.enter_context(ray_head(Path(tmp)))
            print(f"Ray head at {args.ray_env['DROPOUT_DEMO_RAY']}", flush=True)
        plan: list[tuple[str, list[float], dict[str, str] | None, Path | None]] = []
        if not args.no_lone:
            plan.append(("lone student", [lone_p], None, None))
        plan.append((f"class of {args.students}", class_ps, None, None))
        for env in variants:
            ((name, value),) = env.items()
            label = f"class, {name.removeprefix('DROPOUT_DEMO_')}={value}"
            plan.append((label, class_ps, env, None))
        for app_dir in args.also_app_dir or []:
            plan.append((f"class, app in {app_dir.name}", class_ps, None, app_dir.resolve()))
        try:
            for i, (label, ps, env, app_dir) in enumerate(plan):
                print(f"{label}: starting a fresh server ...", flush=True)
                work = Path(tmp, f"phase{i}")
                phases.append(asyncio.run(run_phase(label, ps, args, work, env, app_dir)))
                if args.keep_logs:
                    args.keep_logs.mkdir(parents=True, exist_ok=True)
                    for r in range(args.replicas):
                        shutil.copy(
                            work / f"server{r}.log", args.keep_logs / f"server{r}-phase{i}.log"
                        )
        finally:
            if phases:
                report(phases, args)
            if args.json and phases:
                args.json.write_text(
                    json.dumps(
                        {"args": {k: str(v) for k, v in vars(args).items()}}
                        | {"phases": [dataclasses.asdict(ph) for ph in phases]},
                        indent=1,
                    )
                )


if __name__ == "__main__":
    main()
