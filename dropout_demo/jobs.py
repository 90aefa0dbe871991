"""Process-wide job manager: training runs in background threads, shared by every session.

Each job runs ``fit`` in its own thread and writes its progress into the job record under the
manager's lock; readers only ever get immutable :class:`JobSnapshot` copies. A cap on running
jobs with a FIFO queue behind it, per-owner and per-job limits, cooperative cancellation and a
grace period for owners (browser sessions) that go away keep a shared server healthy.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .config import MNIST_TRAIN_SIZE, TrainConfig
from .data import get_mnist
from .model import SimpleCNN
from .runs import RunRecord, RunStore, RunStoreError
from .training import EpochMetrics, FitResult, fit

log = logging.getLogger(__name__)

QUEUED, RUNNING = "queued", "running"
DONE, CANCELLED, FAILED, DIVERGED = "done", "cancelled", "failed", "diverged"
TERMINAL = frozenset({DONE, CANCELLED, FAILED, DIVERGED})
# Statuses whose model is worth keeping for the canvas (a diverged model holds NaNs).
_KEEPS_MODEL = frozenset({DONE, CANCELLED})

THREAD_PREFIX = "dropout-job-"


class JobError(Exception):
    """A refused request (a limit, an unknown or foreign run); the message is for users."""


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_max_running(cores: int | None = None) -> int:
    # One run per core up to 4: more concurrent runs on a big host would only slow every one.
    return max(1, min(cores or available_cores(), 4))


@dataclass(frozen=True)
class JobSnapshot:
    """An immutable copy of one job's state, safe to read while training goes on."""

    id: str
    owner: str
    name: str
    config: TrainConfig
    status: str
    queue_position: int | None  # 1-based place in the shared FIFO queue while queued
    epoch: int  # completed epochs
    batch: int  # batches done in the current epoch
    batches: int  # batches per epoch (0 until the first batch reports)
    progress: float  # 0..1 within the current epoch
    metrics: tuple[EpochMetrics, ...]  # one per completed epoch
    error: str | None
    created: float  # epoch seconds
    started: float | None
    finished: float | None
    elapsed: float  # seconds running so far (frozen once finished)
    has_model: bool
    saved_run_id: str | None
    stop_requested: bool = False  # cancel asked for, the worker has not stopped yet
    overall_progress: float = 0.0  # 0..1 over all epochs

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(eq=False)
class _Job:
    id: str
    owner: str
    config: TrainConfig
    created: float
    seq: int
    status: str = QUEUED
    epoch: int = 0
    batch: int = 0
    batches: int = 0
    metrics: list[EpochMetrics] = dataclasses.field(default_factory=list)
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    t_started: float | None = None  # monotonic clock, for elapsed
    t_finished: float | None = None
    model: SimpleCNN | None = None
    saved_run_id: str | None = None
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    save_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    thread: threading.Thread | None = None
    threads: int = 0  # torch intra-op threads this job's worker uses now

    def snapshot(self, queue_position: int | None) -> JobSnapshot:
        if self.t_started is None:
            elapsed = 0.0
        else:
            elapsed = (self.t_finished or time.monotonic()) - self.t_started
        progress = self.batch / self.batches if self.batches else 0.0
        overall = (self.epoch + progress) / self.config.epochs
        if self.status == DONE:
            overall = 1.0
        return JobSnapshot(
            id=self.id,
            owner=self.owner,
            name=self.config.label(),
            config=self.config,
            status=self.status,
            queue_position=queue_position,
            epoch=self.epoch,
            batch=self.batch,
            batches=self.batches,
            progress=min(progress, 1.0),
            metrics=tuple(self.metrics),
            error=self.error,
            created=self.created,
            started=self.started,
            finished=self.finished,
            elapsed=elapsed,
            has_model=self.model is not None,
            saved_run_id=self.saved_run_id,
            stop_requested=self.stop.is_set() and self.status == RUNNING,
            overall_progress=min(overall, 1.0),
        )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class JobManager:
    """Runs training jobs in background threads; every method is safe from any thread.

    ``fit_fn`` has :func:`training.fit`'s signature and returns a :class:`FitResult` (or any
    object with its ``status``, ``metrics``, ``model`` and ``message``).
    """

    def __init__(
        self,
        data_provider: Callable[[], Any] = get_mnist,
        max_running: int | None = None,
        max_per_owner: int = 4,
        max_work: int = MNIST_TRAIN_SIZE * 10,
        max_batch_size: int = 1_024,
        release_grace: float = 120.0,
        fit_fn: Callable[..., FitResult] = fit,
        max_queued: int = 32,
        keep_finished: int = 20,
    ):
        if max_running is not None and max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        self._data_provider = data_provider
        self._fit = fit_fn
        self.max_running = max_running or default_max_running()
        self.max_per_owner = max_per_owner
        self.max_work = max_work
        # Activation memory grows with the batch: one batch of 60,000 would need ~5 GB for the
        # first conv's output alone, and a hosted demo's process is shared by every visitor.
        self.max_batch_size = max_batch_size
        self.max_queued = max_queued
        self.release_grace = release_grace
        self.keep_finished = keep_finished
        self._cores = available_cores()

        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}  # insertion order = submission order
        self._queue: collections.deque[_Job] = collections.deque()
        self._running: set[_Job] = set()
        self._threads: set[threading.Thread] = set()
        self._wake = threading.Condition(self._lock)  # wakes the release reaper early
        self._deadlines: dict[str, float] = {}  # released owner -> monotonic end of its grace
        self._reaper: threading.Thread | None = None  # alive only while a grace is pending
        self._gone: set[str] = set()  # grace ran out, runs still stopping; forget them on finish
        self._seq = itertools.count(1)
        self._closed = False

    # ---------------------------------------------------------------- submitting
    def submit(self, config: TrainConfig, owner: str) -> str:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if config.batch_size > self.max_batch_size:
            raise JobError(
                f"Batch size {config.batch_size:,} is too large here; the limit is "
                f"{self.max_batch_size:,} images per batch."
            )
        if config.work > self.max_work:
            example = (
                f" (for example {self.max_work // MNIST_TRAIN_SIZE} epochs of the full "
                f"{MNIST_TRAIN_SIZE:,}-image training set)"
                if self.max_work >= MNIST_TRAIN_SIZE
                else ""
            )
            raise JobError(
                f"This run is too large: {config.epochs:,} epochs × {config.train_size:,} images "
                f"= {config.work:,} image passes, and the limit here is {self.max_work:,}"
                f"{example}. Use fewer epochs or fewer images."
            )
        with self._lock:
            if self._closed:
                raise JobError("The job manager has shut down; no new runs can start.")
            self._touch_locked(owner)
            active = sum(
                1 for j in self._jobs.values() if j.owner == owner and j.status not in TERMINAL
            )
            if active >= self.max_per_owner:
                raise JobError(
                    f"You already have {active} runs queued or running; stop one or wait"
                )
            if len(self._running) >= self.max_running and len(self._queue) >= self.max_queued:
                raise JobError(
                    f"The training queue is full ({len(self._queue)} runs waiting); "
                    "try again in a minute."
                )
            seq = next(self._seq)
            job = _Job(
                id=f"job-{seq}-{os.urandom(4).hex()}",
                owner=owner,
                config=config,
                created=time.time(),
                seq=seq,
            )
            self._jobs[job.id] = job
            self._queue.append(job)
            self._start_queued_locked()
            return job.id

    # ---------------------------------------------------------------- reading
    def snapshot(self, owner: str) -> tuple[JobSnapshot, ...]:
        """The owner's jobs in submission order."""
        with self._lock:
            positions = self._positions_locked()
            return tuple(
                j.snapshot(positions.get(j)) for j in self._jobs.values() if j.owner == owner
            )

    def get(self, job_id: str, owner: str) -> JobSnapshot:
        with self._lock:
            job = self._find_locked(job_id, owner)
            return job.snapshot(self._positions_locked().get(job))

    def model(self, job_id: str, owner: str) -> SimpleCNN | None:
        """The finished job's model (CPU, eval mode), or None. Shared: use it, don't train it."""
        with self._lock:
            return self._find_locked(job_id, owner).model

    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def queued_count(self) -> int:
        with self._lock:
            return len(self._queue)

    # ---------------------------------------------------------------- changing
    def cancel(self, job_id: str, owner: str) -> None:
        """Stop a run: a queued one is dropped at once, a running one stops within one batch."""
        with self._lock:
            self._cancel_locked(self._find_locked(job_id, owner))

    def remove(self, job_id: str, owner: str) -> None:
        """Forget a finished job (and its model)."""
        with self._lock:
            job = self._find_locked(job_id, owner)
            if job.status not in TERMINAL:
                raise JobError("Stop this run before removing it.")
            del self._jobs[job.id]

    def save(self, job_id: str, owner: str, store: RunStore) -> RunRecord:
        """Write the finished job's model and metrics to the run store (once per job)."""
        with self._lock:
            job = self._find_locked(job_id, owner)
        with job.save_lock:  # a double click saves one run, not two
            with self._lock:
                if job.model is None:
                    raise JobError("This run has no trained model to save.")
                saved_id = job.saved_run_id
                model, config, metrics = job.model, job.config, tuple(job.metrics)
            if saved_id is not None:
                # Deleted from the store since, or its record damaged: save it again.
                with contextlib.suppress(RunStoreError):
                    return store.get(saved_id)
            # Disk I/O outside the manager's lock; a finished job's model no longer changes.
            record = store.save(config, metrics, model, status=job.status, name=config.label())
            with self._lock:
                job.saved_run_id = record.id
            return record

    def touch(self, owner: str) -> None:
        """The owner is alive: a pending release is called off."""
        with self._lock:
            self._touch_locked(owner)

    def release(self, owner: str) -> None:
        """The owner went away: queued jobs go now; after the grace period its running jobs
        are cancelled and all its jobs forgotten, unless :meth:`touch` comes first."""
        with self._lock:
            if self._closed:
                return
            for job in [j for j in self._queue if j.owner == owner]:
                self._cancel_locked(job)
            has_jobs = any(j.owner == owner for j in self._jobs.values())
            if not has_jobs or owner in self._deadlines:
                return
            self._deadlines[owner] = time.monotonic() + self.release_grace
            if self._reaper is None:
                # One reaper for all released owners; it exits once no grace is pending.
                self._reaper = threading.Thread(
                    target=self._reap, name="dropout-release-reaper", daemon=True
                )
                self._reaper.start()
            self._wake.notify_all()

    def shutdown(self, timeout: float | None = None) -> None:
        """Cancel everything and join every worker and timer thread. Idempotent."""
        with self._lock:
            self._closed = True
            while self._queue:
                self._cancel_locked(self._queue[0])
            for job in self._running:
                job.stop.set()
            self._deadlines.clear()
            self._wake.notify_all()
            threads = list(self._threads)
            if self._reaper is not None:
                threads.append(self._reaper)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            if thread is threading.current_thread():
                continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)

    @property
    def closed(self) -> bool:
        return self._closed

    # ---------------------------------------------------------------- internals
    def _find_locked(self, job_id: str, owner: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            raise JobError("No such run (it may have been removed).")
        return job

    def _positions_locked(self) -> dict[_Job, int]:
        return {job: i for i, job in enumerate(self._queue, start=1)}

    def _touch_locked(self, owner: str) -> None:
        self._gone.discard(owner)
        if self._deadlines.pop(owner, None) is not None:
            self._wake.notify_all()  # the reaper may have nothing left to wait for

    def _cancel_locked(self, job: _Job) -> None:
        if job.status == QUEUED:
            self._queue.remove(job)
            self._finish_locked(job, CANCELLED)
        elif job.status == RUNNING:
            job.stop.set()

    def _reap(self) -> None:
        with self._lock:
            while not self._closed and self._deadlines:
                now = time.monotonic()
                for owner, due in list(self._deadlines.items()):
                    if due <= now:
                        del self._deadlines[owner]
                        self._expire_locked(owner)
                if self._deadlines:
                    self._wake.wait(min(self._deadlines.values()) - now)
            self._reaper = None

    def _expire_locked(self, owner: str) -> None:
        for job in [j for j in self._jobs.values() if j.owner == owner]:
            if job.status in TERMINAL:
                del self._jobs[job.id]
            else:
                self._gone.add(owner)
                self._cancel_locked(job)

    def _start_queued_locked(self) -> None:
        while not self._closed and self._queue and len(self._running) < self.max_running:
            job = self._queue.popleft()
            job.status = RUNNING
            job.started = time.time()
            job.t_started = time.monotonic()
            # Not a daemon: interpreter exit waits for the run to stop cleanly (see get_manager).
            thread = threading.Thread(
                target=self._work, args=(job,), name=f"{THREAD_PREFIX}{job.id}", daemon=False
            )
            job.thread = thread
            try:
                thread.start()
            except RuntimeError as exc:  # the OS refused another thread
                self._finish_locked(job, FAILED, _describe(exc))
                break
            self._running.add(job)
            self._threads.add(thread)

    def _finish_locked(
        self, job: _Job, status: str, error: str | None = None, model: SimpleCNN | None = None
    ) -> None:
        if job.status in TERMINAL:
            return
        job.status = status
        job.error = error or None
        job.model = model if status in _KEEPS_MODEL else None
        job.finished = time.time()
        job.t_finished = time.monotonic()
        if job.owner in self._gone:
            self._jobs.pop(job.id, None)
            if not any(j.owner == job.owner for j in self._jobs.values()):
                self._gone.discard(job.owner)
        else:
            self._prune_locked(job.owner)

    def _prune_locked(self, owner: str) -> None:
        finished = [j for j in self._jobs.values() if j.owner == owner and j.status in TERMINAL]
        for job in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._jobs[job.id]

    def _work(self, job: _Job) -> None:
        status, error, model, metrics = FAILED, "the run stopped unexpectedly", None, None
        try:
            self._share_cores(job)
            data = self._data_provider()
            if job.stop.is_set():
                status, error = CANCELLED, None
            else:
                result = self._fit(
                    job.config,
                    data,
                    on_epoch=lambda m: self._on_epoch(job, m),
                    should_stop=job.stop.is_set,
                    on_batch=lambda e, b, n: self._on_batch(job, b, n),
                )
                status, model = result.status, result.model
                metrics = list(result.metrics)
                error = (result.message or None) if status != CANCELLED else None
                if status not in (DONE, CANCELLED, DIVERGED):
                    status, error = FAILED, f"training returned unknown status {status!r}"
        except Exception as exc:
            log.warning("training job %s failed", job.id, exc_info=True)
            status, error = FAILED, _describe(exc)
        finally:
            with self._lock:
                if metrics is not None:
                    job.metrics = metrics
                    job.epoch = len(metrics)
                self._finish_locked(job, status, error, model)
                self._running.discard(job)
                self._threads.discard(threading.current_thread())
                self._start_queued_locked()

    def _on_epoch(self, job: _Job, metrics: EpochMetrics) -> None:
        with self._lock:
            job.metrics.append(metrics)
            job.epoch = len(job.metrics)
            job.batch = 0

    def _on_batch(self, job: _Job, batch: int, batches: int) -> None:
        with self._lock:
            job.batch, job.batches = batch, batches
        self._share_cores(job)

    def _share_cores(self, job: _Job) -> None:
        """Give this worker thread its equal share of the cores, now that ``n`` jobs run.

        Called in the worker thread, where the run's ops execute (torch's intra-op thread count
        is per calling thread): concurrent runs don't oversubscribe the cores and thrash, and a
        run alone gets them all. A change in the number of running jobs is picked up within one
        batch.
        """
        with self._lock:
            share = max(1, self._cores // max(1, len(self._running)))
        if share != job.threads:
            torch.set_num_threads(share)
            job.threads = share


_manager: JobManager | None = None
_manager_lock = threading.Lock()


def get_manager() -> JobManager:
    """The process-wide job manager, created on first use."""
    global _manager
    with _manager_lock:
        if _manager is None or _manager.closed:
            _manager = JobManager()
            _register_exit(_manager.shutdown)
        return _manager


def _register_exit(fn: Callable[[], None]) -> None:
    # Interpreter exit joins non-daemon threads *before* atexit handlers run, so a plain atexit
    # hook would wait for every run to finish training. threading's own exit hook (what
    # concurrent.futures uses) runs first, cancels the runs, and they stop within a batch.
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        with contextlib.suppress(RuntimeError):  # already shutting down
            register(fn)
    atexit.register(fn)
