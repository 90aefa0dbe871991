"""Runs in a worker process of this machine: training beside the server's interpreter.

Streamlit runs every page of every visitor as a thread of one process, and training threads
in that process share its GIL with them: with a class of 30 polling pages, each training step
waits for the pages between its operators, and each page waits for the training threads. Here
runs compute in a worker process (:mod:`.process_worker`) with its own interpreter, one thread
per run there, and the server keeps one light thread per run that forwards the worker's
messages to the run's callbacks: pages and training share only the CPUs.

- The worker is started once (``python -m dropout_demo.jobs.process_worker``; ``warm`` starts
  it before the first click), imports torch and the training code, loads MNIST, probes the
  precision, and then trains every run it is sent. One process, not one per run: importing
  this torch build costs every process about 500 MB, which a class server cannot spare twice.
- Parent and worker speak pickled messages over a socket pair: ``run``, ``stop`` and ``hold``
  one way; ``ready``, ``batch``, ``epoch`` and ``finish`` (with the model's weights) the other,
  each tagged with the run's number.
- **Stop** asks the run to stop at its next batch. A run that has not ended ``STOP_GRACE`` s
  later is reported cancelled; its worker is killed if it trains nothing else. **Hold**: while
  the Draw page's default model trains, other runs wait between batches (``RunTask.held``), as
  the thread executor's do.
- A worker that dies (killed, out of memory) fails its runs with the reason, and the next run
  starts a new one; a worker whose server died sees its socket close and exits, so no worker
  outlives the server.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import pickle
import queue
import signal
import subprocess
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from ..training import EpochMetrics
from ..worker_start import DATA, FIT, WARM_UP, Spawned, adopt, send, spawn, worker_env
from .executors import CANCELLED, FAILED, Outcome, RunTask, RunThreads

log = logging.getLogger("dropout_demo.jobs")

POLL = 0.05  # s between a follower's looks at its run's stop and hold
STOP_GRACE = 30.0  # s a stopping worker gets to end between batches before it is killed
# CPU priority the worker process gives up (Linux nice, the whole process): the server's page
# threads go first, training takes the rest. Unlike niced threads in the server's process,
# a niced worker holds no lock the pages need (the server's GIL), so nothing waits on it.
WORKER_NICE_ENV = "DROPOUT_DEMO_WORKER_NICE"
DEFAULT_WORKER_NICE = 5


def worker_nice() -> int:
    try:
        return min(19, max(0, int(os.environ.get(WORKER_NICE_ENV, DEFAULT_WORKER_NICE))))
    except ValueError:
        return DEFAULT_WORKER_NICE


def receive(conn: Connection) -> tuple:
    return pickle.loads(conn.recv_bytes())


def weights_to_bytes(state: dict[str, Any]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def weights_from_bytes(blob: bytes) -> dict[str, Any]:
    import torch

    return torch.load(io.BytesIO(blob), weights_only=True)


def exit_reason(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class Worker:
    """The parent's side of one worker process: its socket, and a reader thread that routes
    each message to the queue of the run it is about."""

    def __init__(self, spawned: Spawned):
        self.proc = spawned.proc
        self.conn = spawned.conn
        self.started = spawned.started
        self.ready = threading.Event()  # set by ``ready``, or when the worker died
        self.dead: str | None = None  # why it ended, once it has
        self._lock = threading.Lock()
        self._routes: dict[int, queue.Queue] = {}
        threading.Thread(target=self._read, name="dropout-worker-reader", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def post(self, message: tuple) -> None:
        with self._lock:
            send(self.conn, message)

    def open_route(self, run_id: int) -> queue.Queue:
        route: queue.Queue = queue.Queue()
        with self._lock:
            self._routes[run_id] = route
            if self.dead is not None:
                route.put(("dead",))
        return route

    def close_route(self, run_id: int) -> int:
        """Forget a run's queue; returns how many runs the worker still trains."""
        with self._lock:
            self._routes.pop(run_id, None)
            return len(self._routes)

    def _read(self) -> None:
        try:
            while True:
                message = receive(self.conn)
                if message[0] == "ready":
                    log.info(
                        "training worker %d ready in %.1f s",
                        self.pid,
                        time.monotonic() - self.started,
                    )
                    self.ready.set()
                    continue
                with self._lock:
                    route = self._routes.get(message[1])
                if route is not None:  # else: a run given up on (it ignored its stop)
                    route.put(message)
        except (EOFError, OSError):
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        with self._lock:
            if self.dead is None:
                self.dead = exit_reason(self.proc.poll())
            for route in self._routes.values():
                route.put(("dead",))
        self.ready.set()
        with contextlib.suppress(OSError):
            self.conn.close()

    def kill(self, why: str) -> None:
        with self._lock:
            if self.dead is None:
                self.dead = why  # no run is sent here any more
        with contextlib.suppress(OSError):
            self.proc.kill()

    def close(self, timeout: float) -> None:
        """Ask the worker to stop its runs and exit; kill it if it has not within ``timeout``."""
        with contextlib.suppress(OSError):
            self.post(("exit", timeout))
        try:
            self.proc.wait(timeout + 5)
        except subprocess.TimeoutExpired:
            self.kill("it did not exit when asked")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)


class ProcessExecutor:
    """Runs in a worker process (started on first use or by :meth:`warm`, replaced if it dies).

    ``fit`` and ``data`` name importable callables (``module:attribute``): ``fit`` has
    :func:`training.fit`'s signature, ``data()`` returns what it trains on, and ``warm_up(cores)``
    (or None) runs once in the worker after the data loads (by default the precision probe),
    told the torch thread count runs can get (the worker's main thread itself keeps one).
    """

    pauses_for_priority = False  # held runs wait in the worker (RunTask.held), not here

    def __init__(self, fit: str = FIT, data: str = DATA, warm_up: str | None = WARM_UP):
        self._fit, self._data, self._warm_up = fit, data, warm_up
        self._lock = threading.Lock()
        self._worker: Worker | None = None
        self._ids = itertools.count(1)
        self._followers = RunThreads(daemon=True)  # one per run, forwarding its messages
        self._closed = False

    def worker(self) -> Worker:
        """The live worker, started now if there is none."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor is shut down")
            if self._worker is None or self._worker.dead is not None:
                what, env = (self._fit, self._data, self._warm_up), worker_env()
                spawned = adopt(*what, env)  # the one app.py started with the first page
                if spawned is None:
                    spawned = spawn(*what, env)
                    log.info("training worker started: pid %d", spawned.proc.pid)
                self._worker = Worker(spawned)
            return self._worker

    def warm(self) -> None:
        """Start the worker now, so that the first run finds torch and the data loaded."""
        try:
            self.worker()
        except (OSError, RuntimeError):
            log.warning("could not start the training worker", exc_info=True)

    def worker_pids(self) -> list[int]:
        with self._lock:
            alive = self._worker is not None and self._worker.dead is None
            return [self._worker.pid] if alive else []

    # ------------------------------------------------------------------ runs
    def start(self, task: RunTask) -> None:
        self._followers.start(task, self._run)

    def _run(self, task: RunTask) -> Outcome:
        if task.should_stop():
            return Outcome(CANCELLED, None, None, None)
        try:
            worker = self.worker()
        except (OSError, RuntimeError) as exc:
            return Outcome(FAILED, f"could not start a training process: {exc}", None, None)
        run_id = next(self._ids)
        route = worker.open_route(run_id)
        stopping_since: float | None = None
        try:
            worker.ready.wait()
            held = task.held()
            with contextlib.suppress(OSError):  # a dead worker shows up on the route
                worker.post(("run", run_id, task.config.to_dict(), task.threads, held))
            while True:
                try:
                    message = route.get(timeout=POLL)
                except queue.Empty:
                    message = None
                if message is not None:
                    kind = message[0]
                    if kind == "batch":
                        task.on_batch(message[2], message[3])
                    elif kind == "epoch":
                        task.on_epoch(EpochMetrics.from_dict(message[2]))
                    elif kind == "finish":
                        return self._outcome(message[2], task)
                    elif kind == "dead":
                        if stopping_since is not None:
                            return Outcome(CANCELLED, None, None, None)
                        reason = f"the training process (pid {worker.pid}) ended: {worker.dead}"
                        return Outcome(FAILED, reason, None, None)
                    continue
                if stopping_since is None and task.should_stop():
                    with contextlib.suppress(OSError):
                        worker.post(("stop", run_id))
                    stopping_since = time.monotonic()
                elif stopping_since is not None and time.monotonic() - stopping_since > STOP_GRACE:
                    if worker.close_route(run_id) == 0:
                        log.warning("run %s ignored its stop: its worker is killed", task.name)
                        worker.kill(f"killed: run {task.name} ignored its stop")
                    else:
                        log.warning("run %s ignored its stop: given up on", task.name)
                    return Outcome(CANCELLED, None, None, None)
                now_held = task.held()
                if now_held != held:
                    with contextlib.suppress(OSError):
                        worker.post(("hold", run_id, now_held))
                    held = now_held
        finally:
            worker.close_route(run_id)

    @staticmethod
    def _outcome(result: dict[str, Any], task: RunTask) -> Outcome:
        model = None
        if result.get("weights") is not None:
            from ..model import build_model

            model = build_model(task.config)
            model.load_state_dict(weights_from_bytes(result["weights"]))
            model.eval()
        metrics = result.get("metrics")
        return Outcome(
            result["status"],
            result.get("error"),
            model,
            None if metrics is None else [EpochMetrics.from_dict(m) for m in metrics],
            result.get("precision"),
            result.get("device"),
            result.get("plan"),
        )

    def shutdown(self, timeout: float | None = None) -> None:
        """Wait for the followers (their runs were asked to stop), then end the worker."""
        self._followers.join(timeout)
        with self._lock:
            self._closed = True
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.close(timeout=5.0)
