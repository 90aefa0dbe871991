"""Executors: where a run's computation happens. The scheduler decides when; these decide where.

:class:`ThreadExecutor` trains in a thread of this process. The seam is small on purpose: a
distributed executor (Ray) implements the same ``start``/``shutdown`` and calls the same
:class:`RunCallbacks`, from whatever thread receives the worker's progress.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..config import TrainConfig
from ..model import SimpleCNN
from ..training import EpochMetrics, FitResult

log = logging.getLogger(__name__)

THREAD_PREFIX = "dropout-job-"
# CPU priority training threads give up (Linux nice, per thread): N > 0 lets the server's own
# threads go first. Off by default: once a page refresh cost a few milliseconds, the class
# benchmark measured niced training as slower for everyone (runs and first points, two
# invocations) and it starves on a host that other processes keep busy.
NICE_ENV = "DROPOUT_DEMO_TRAIN_NICE"
DEFAULT_NICE = 0


def training_nice() -> int:
    try:
        return min(19, max(0, int(os.environ.get(NICE_ENV, DEFAULT_NICE))))
    except ValueError:
        return DEFAULT_NICE


def lower_thread_priority(nice: int) -> bool:
    """Raise the calling thread's nice value by ``nice`` (Linux: per thread; its torch worker
    threads created later inherit it). Returns whether it was applied."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return False
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + nice))
    except OSError:
        return False
    return True


DONE, CANCELLED, FAILED, DIVERGED = "done", "cancelled", "failed", "diverged"


@dataclass(frozen=True)
class Outcome:
    """How a run ended, reported once."""

    status: str  # done, cancelled, failed or diverged
    error: str | None
    model: SimpleCNN | None
    metrics: list[EpochMetrics] | None  # the run's final metrics, when training returned
    precision: str | None = None
    device: str | None = None
    plan: str | None = None  # precision, memory format, kernels: what the probe picked


@dataclass(frozen=True)
class RunTask:
    """What an executor needs to run one computation, and where it reports."""

    name: str  # unique among live tasks (thread name, log lines)
    config: TrainConfig
    threads: int  # torch intra-op threads, set once when the run starts
    should_stop: Callable[[], bool]
    on_batch: Callable[[int, int], None]  # (batch done in this epoch, batches per epoch)
    on_epoch: Callable[[EpochMetrics], None]
    on_finish: Callable[[Outcome], None]  # exactly once, whatever happens
    key: str = ""  # the run's identity (jobs.identity): a distributed executor shares by it
    # True while the run should wait between batches (a priority run trains), for executors
    # that set ``pauses_for_priority = False`` and hold their runs themselves
    held: Callable[[], bool] = lambda: False


class Executor(Protocol):
    def start(self, task: RunTask) -> None: ...

    def shutdown(self, timeout: float | None = None) -> None: ...


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_fit(fit_fn: Callable[..., FitResult], data: Any, task: RunTask) -> Outcome:
    """Call ``fit`` and turn whatever happens into an :class:`Outcome` (never raises)."""
    try:
        if task.should_stop():
            return Outcome(CANCELLED, None, None, None)
        result = fit_fn(
            task.config,
            data,
            on_epoch=task.on_epoch,
            should_stop=task.should_stop,
            on_batch=lambda _epoch, batch, batches: task.on_batch(batch, batches),
        )
        status = result.status
        if status not in (DONE, CANCELLED, DIVERGED):
            return Outcome(FAILED, f"training returned unknown status {status!r}", None, None)
        error = (result.message or None) if status != CANCELLED else None
        return Outcome(
            status,
            error,
            result.model,
            list(result.metrics),
            getattr(result, "precision", None),
            getattr(result, "device", None),
            getattr(result, "plan", None) or None,
        )
    except Exception as exc:
        log.warning("training run %s failed", task.name, exc_info=True)
        return Outcome(FAILED, describe(exc), None, None)


class RunThreads:
    """One thread per run, named ``THREAD_PREFIX`` + the run's name, that computes (or follows)
    it and reports its outcome exactly once; every executor keeps its runs' threads here."""

    def __init__(self, daemon: bool):
        self._daemon = daemon
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()

    def start(
        self,
        task: RunTask,
        work: Callable[[RunTask], Outcome],
        reason: Callable[[BaseException], str] = describe,
    ) -> None:
        """Run ``work(task)`` in a new thread; an exception fails the run with ``reason``."""
        thread = threading.Thread(
            target=self._body,
            args=(task, work, reason),
            name=f"{THREAD_PREFIX}{task.name}",
            daemon=self._daemon,
        )
        with self._lock:
            self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError as exc:  # the OS refused another thread
            with self._lock:
                self._threads.discard(thread)
            task.on_finish(Outcome(FAILED, describe(exc), None, None))

    def _body(
        self,
        task: RunTask,
        work: Callable[[RunTask], Outcome],
        reason: Callable[[BaseException], str],
    ) -> None:
        outcome = Outcome(FAILED, "the run stopped unexpectedly", None, None)
        try:
            outcome = work(task)
        except Exception as exc:
            log.warning("run %s failed", task.name, exc_info=True)
            outcome = Outcome(FAILED, reason(exc), None, None)
        finally:
            try:
                task.on_finish(outcome)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

    def threads(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    def join(self, timeout: float | None = None) -> None:
        join_all(self.threads(), timeout)


class ThreadExecutor:
    """One thread per running run, in this process; torch's thread count is set per thread."""

    def __init__(self, fit_fn: Callable[..., FitResult], data_provider: Callable[[], Any]):
        self._fit = fit_fn
        self._data_provider = data_provider
        # Not daemons: interpreter exit waits for the runs to stop cleanly (see get_manager).
        self._runs = RunThreads(daemon=False)

    def start(self, task: RunTask) -> None:
        self._runs.start(task, self._work)

    def _work(self, task: RunTask) -> Outcome:
        lower_thread_priority(training_nice())
        # torch's intra-op thread count belongs to the calling thread: set once, here.
        torch.set_num_threads(task.threads)
        try:
            data = self._data_provider()
        except Exception as exc:
            log.warning("loading data for run %s failed", task.name, exc_info=True)
            return Outcome(FAILED, describe(exc), None, None)
        return run_fit(self._fit, data, task)

    def threads(self) -> list[threading.Thread]:
        return self._runs.threads()

    def shutdown(self, timeout: float | None = None) -> None:
        """Wait for every run thread (the caller has asked them to stop)."""
        self._runs.join(timeout)


def join_all(threads: list[threading.Thread], timeout: float | None = None) -> None:
    """Join ``threads`` (all but the calling one) within ``timeout`` seconds in all."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in threads:
        if thread is threading.current_thread():
            continue
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        thread.join(left)
