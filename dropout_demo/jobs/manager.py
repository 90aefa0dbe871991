"""The job manager: one per process, the facade that ties admission, the registry, the
scheduler, the leases and an executor together under one lock.

Identical requests share one computation: a request whose key matches a queued, running or
finished run attaches to it, and a result finished earlier (another session, an earlier
process) is served from the run store at once. Every method is safe from any thread; worker
threads only ever write through the callbacks below, under the lock.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ..config import TrainConfig
from ..data import get_mnist
from ..model import SimpleCNN
from ..openmp import release_pool
from ..training import EpochMetrics, FitResult, evaluated_images, fit
from ..worker_start import RAY_ENV, executor_kind
from . import admission
from .admission import JobError, Limits
from .executors import Executor, Outcome, RunTask, ThreadExecutor
from .identity import run_key
from .leases import Leases
from .registry import (
    CANCELLED,
    DONE,
    FAILED,
    KEEPS_MODEL,
    QUEUED,
    RUNNING,
    TERMINAL,
    Attachment,
    JobSnapshot,
    Registry,
    Run,
)
from .scheduler import Scheduler

log = logging.getLogger("dropout_demo.jobs")

# How often a run paused for a priority run looks at its own stop flag (seconds).
PAUSE_POLL = 0.25

FinishedHook = Callable[[JobSnapshot, SimpleCNN | None], None]


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class JobManager:
    """Shared runs, a fair queue and a cap on running runs; safe from any thread.

    ``fit_fn`` has :func:`training.fit`'s signature. ``store`` (a :class:`runs.RunStore`, or
    None) is both the result cache (``find(key)``) and where finished runs are saved.
    """

    def __init__(
        self,
        data_provider: Callable[[], Any] = get_mnist,
        max_running: int | None = None,
        limits: Limits | None = None,
        release_grace: float = 120.0,
        fit_fn: Callable[..., FitResult] = fit,
        keep_finished: int = 20,
        max_models: int = 64,
        store: Any | None = None,
        key_fn: Callable[[TrainConfig], str] = run_key,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
        cores: int | None = None,
    ):
        self.cores = cores or available_cores()
        # One run per core: each gets one torch thread in a busy class, which is the best
        # throughput on a small CPU; a run alone gets every core.
        self.max_running = max_running or self.cores
        self.limits = limits or Limits()
        self.store = store
        self._key = key_fn
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._registry = Registry(keep_finished=keep_finished, max_models=max_models)
        self._executor = executor or ThreadExecutor(fit_fn, data_provider)
        self._scheduler: Scheduler[Run] = Scheduler(
            self.max_running, self.cores, self._launch_locked, lambda run: run.threads
        )
        # Set while no priority run trains; other runs wait for it between batches.
        self._no_priority = threading.Event()
        self._no_priority.set()
        self._leases = Leases(release_grace, clock)
        self._reaper: threading.Thread | None = None
        self._hooks: list[FinishedHook] = []
        self._save_lock = threading.Lock()  # a double click saves one run, not two
        self._closed = False
        self._holding = 0  # submit_many in progress: queue now, start together at its end
        self.trained = 0  # computations started in this process (cache hits not counted)

    # ---------------------------------------------------------------- configuration
    @property
    def release_grace(self) -> float:
        return self._leases.grace

    def add_finished_hook(self, hook: FinishedHook) -> None:
        """``hook(snapshot, model)`` runs in the worker thread after every run ends, once the
        result is saved (``snapshot.saved_run_id``); exceptions are logged, never raised."""
        with self._lock:
            self._hooks.append(hook)

    # ---------------------------------------------------------------- submitting
    def submit(
        self,
        config: TrainConfig,
        owner: str,
        client: str | None = None,
        tags: tuple[str, ...] = (),
        name: str | None = None,
        group: str = "lab",
        priority: bool = False,
    ) -> str:
        """Ask for a run; returns this session's id for it (its row).

        ``tags`` and ``name`` go with the run into the run store (e.g. the starter model's);
        ``group`` is the page whose row this is (each page lists its own). ``priority`` (the
        Draw page's default model, which a first visitor waits for): the run skips the fair
        queue and the queue-length limit, starts in a slot above the running cap with every
        core, and the other runs pause between batches until it ends.

        Attaches to an identical queued, running or finished run, or to a cached result in the
        store, before it ever queues a new computation.
        """
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        admission.check_config(config, self.limits, evaluated_images(config))
        try:
            key = self._key(config)
        except ValueError as exc:
            raise JobError(str(exc)) from None
        with self._lock:
            self._check_open_locked()
            self._touch_locked(owner, None)
            self._reap_locked()
            att = self._attach_existing_locked(key, owner, tags, name, group, priority)
            if att is not None:
                return att.id
        record = self._cached(key)  # disk I/O outside the lock
        with self._lock:
            self._check_open_locked()
            att = self._attach_existing_locked(key, owner, tags, name, group, priority)
            if att is not None:
                return att.id
            if record is not None:
                run = self._registry.new_run(
                    key,
                    config,
                    status=DONE,
                    metrics=tuple(record.metrics),
                    finished=record.created,
                    cached=True,
                    trained_at=record.created,
                    store_id=record.id,
                    model_dropped=True,  # loaded from the store on first use
                    precision=(getattr(record, "info", None) or {}).get("precision"),
                    tags=set(tags),
                    name=name,
                )
                log.info("cache hit: key=%s %s", key, config.label())
                return self._registry.attach(owner, run, group).id
            if not priority:
                by_owner, by_client = self._registry.active_counts(owner, client)
                queued = self._scheduler.waiting_count()
                admission.check_capacity(by_owner, by_client, queued, self.limits)
            run = self._registry.new_run(
                key, config, requested_by=owner, client=client, tags=set(tags), name=name
            )
            run.priority = priority
            att = self._registry.attach(owner, run, group)
            self._scheduler.enqueue(run, owner, priority)
            if not self._holding:
                self._scheduler.dispatch()
            return att.id

    def submit_many(
        self,
        configs: list[TrainConfig],
        owner: str,
        client: str | None = None,
        group: str = "lab",
    ) -> list[str]:
        """Ask for several runs at once (e.g. a comparison); returns their row ids.

        All are queued before any starts, so the first does not take every core only to share
        them a moment later. A refusal raises :class:`JobError` after the runs before it were
        queued; those are started all the same.
        """
        ids: list[str] = []
        with self._lock:
            self._holding += 1
        try:
            for config in configs:
                ids.append(self.submit(config, owner, client=client, group=group))
        finally:
            with self._lock:
                self._holding -= 1
                if not self._holding and not self._closed:
                    self._scheduler.dispatch()
        return ids

    def _attach_existing_locked(
        self,
        key: str,
        owner: str,
        tags: tuple[str, ...],
        name: str | None,
        group: str,
        priority: bool = False,
    ) -> Attachment | None:
        run = self._registry.reusable(key)
        if run is None:
            return None
        att = self._registry.attach(owner, run, group)
        run.tags.update(tags)
        run.name = run.name or name
        if run.status == QUEUED:
            run.priority = run.priority or priority
            self._scheduler.enqueue(run, owner, run.priority)  # its owners share their turns
            if priority and not self._holding:
                self._scheduler.dispatch()
        return att

    def _cached(self, key: str) -> Any | None:
        if self.store is None:
            return None
        try:
            return self.store.find(key)
        except Exception:  # a damaged store means a cache miss, never a refused run
            log.warning("run store lookup failed for %s", key, exc_info=True)
            return None

    # ---------------------------------------------------------------- reading
    def snapshot(self, owner: str, group: str | None = None) -> tuple[JobSnapshot, ...]:
        """The owner's rows (of one page's ``group``, or all) in the order it asked for them."""
        with self._lock:
            positions = self._scheduler.positions()
            return tuple(
                a.snapshot(positions.get(a.run))
                for a in self._registry.attachments(owner)
                if group is None or a.group == group
            )

    def get(self, job_id: str, owner: str) -> JobSnapshot:
        with self._lock:
            att = self._find_locked(job_id, owner)
            return att.snapshot(self._scheduler.positions().get(att.run))

    def model(self, job_id: str, owner: str) -> SimpleCNN | None:
        """The finished run's model (CPU, eval mode), or None. Shared: use it, don't train it.

        Models dropped from memory to bound it are reloaded from the run store.
        """
        with self._lock:
            att = self._find_locked(job_id, owner)
            if att.frozen is not None:
                return None
            run = att.run
            if run.model is not None:
                run.used = time.monotonic()
                return run.model
            if not run.model_dropped or run.store_id is None or self.store is None:
                if run.model_dropped:
                    raise JobError(
                        "This run's model was dropped from memory to make room for newer "
                        "runs, and it was not saved; train it again to use it."
                    )
                return None
            store_id = run.store_id
        try:
            model = self.store.load_model(store_id)
        except Exception as exc:
            raise JobError(
                f"This run's saved model can't be loaded any more ({exc}); train it again."
            ) from None
        with self._lock:
            self._registry.keep_model(run, model)
            return model

    def running_count(self) -> int:
        with self._lock:
            return len(self._scheduler.running)

    def queued_count(self) -> int:
        with self._lock:
            return self._scheduler.waiting_count()

    def stats(self) -> dict[str, int]:
        """Process-wide figures for logs and benchmarks."""
        with self._lock:
            runs = self._registry.runs.values()
            return {
                "trained": self.trained,
                "running": len(self._scheduler.running),
                "queued": self._scheduler.waiting_count(),
                "runs": len(self._registry.runs),
                "models": sum(r.model is not None for r in runs),
                "owners": len(self._registry.owners()),
            }

    def active_owners(self) -> int:
        """Owners with a row that is still queued or running (each polls a live panel)."""
        with self._lock:
            return self._registry.active_owners()

    # ---------------------------------------------------------------- changing
    def cancel(self, job_id: str, owner: str) -> None:
        """Stop this session's run: it detaches; the computation stops once nobody watches it
        (a queued one is dropped at once, a running one stops within one batch)."""
        with self._lock:
            self._stop_locked(self._find_locked(job_id, owner))

    def remove(self, job_id: str, owner: str) -> None:
        """Forget a finished (or stopped) row."""
        with self._lock:
            att = self._find_locked(job_id, owner)
            if att.frozen is None and att.run.status not in TERMINAL:
                raise JobError("Stop this run before removing it.")
            self._registry.drop(att)

    def save(self, job_id: str, owner: str, store: Any) -> Any:
        """The run store record of this finished run, saving it now if it has none yet."""
        with self._save_lock:
            with self._lock:
                run = self._find_locked(job_id, owner).run
                store_id = run.store_id
            if store_id is not None:
                with contextlib.suppress(Exception):
                    return store.get(store_id)
            model = self.model(job_id, owner)
            if model is None:
                raise JobError("This run has no trained model to save.")
            record = self._save(run, model, store)
            with self._lock:
                run.store_id = record.id
                run.changed()
            return record

    def touch(self, owner: str, session: str | None = None) -> None:
        """The owner is here (from ``session``): a pending release is called off."""
        with self._lock:
            self._touch_locked(owner, session)

    def release(self, owner: str, session: str | None = None) -> None:
        """A session of the owner went away. Once its last session has gone and the grace
        period passes without :meth:`touch`, its runs are stopped (queued and running alike,
        unless other sessions still watch them) and its rows forgotten."""
        with self._lock:
            if self._closed or not self._registry.attachments(owner):
                self._leases.forget(owner)
                return
            self._leases.close(owner, session)
            self._reap_locked()  # owners whose grace ran out meanwhile, computing or not
            if self._leases.pending(owner) and self._reaper is None and self._computing(owner):
                # One reaper thread while some released owner's runs still use the CPU: they
                # must stop on time. Owners with only finished rows are forgotten lazily, on
                # later activity, so an idle server keeps no extra thread.
                self._reaper = threading.Thread(
                    target=self._reap_loop, name="dropout-release-reaper", daemon=True
                )
                self._reaper.start()
            self._wake.notify_all()

    def reap(self, now: float | None = None) -> list[str]:
        """Expire the owners whose grace has run out (the reaper calls this; tests may too)."""
        with self._lock:
            return self._reap_locked(now)

    def _reap_locked(self, now: float | None = None) -> list[str]:
        gone = self._leases.due(now)
        for owner in gone:
            self._expire_locked(owner)
        return gone

    def _computing(self, owner: str) -> bool:
        return any(a.frozen is None and a.run.computing for a in self._registry.attachments(owner))

    def shutdown(self, timeout: float | None = None) -> None:
        """Cancel everything and wait for every worker. Idempotent."""
        with self._lock:
            self._closed = True
            for run in self._scheduler.drain():
                self._finish_locked(run, CANCELLED)
            for run in self._scheduler.running:
                run.stop.set()
            self._leases.clear()
            self._wake.notify_all()
            reaper = self._reaper
        self._executor.shutdown(timeout)
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    # ---------------------------------------------------------------- internals
    def _check_open_locked(self) -> None:
        if self._closed:
            raise JobError("The job manager has shut down; no new runs can start.")

    def _find_locked(self, job_id: str, owner: str) -> Attachment:
        att = self._registry.find(job_id, owner)
        if att is None:
            raise JobError("No such run (it may have been removed).")
        return att

    def _touch_locked(self, owner: str, session: str | None) -> None:
        if self._leases.touch(owner, session):
            self._wake.notify_all()

    def _stop_locked(self, att: Attachment) -> None:
        run = att.run
        if att.frozen is not None or run.status in TERMINAL:
            return
        others = run.attached - {att.owner}
        if others:
            # Others still watch: this session's row freezes as it is now; the run goes on.
            snap = att.snapshot(None)
            frozen = dataclasses.replace(
                snap,
                status=CANCELLED,
                finished=time.time(),
                has_model=False,
                saved_run_id=None,
                stop_requested=False,
                detached=True,
                shared_with=0,
                version=snap.version + 1,
            )
            if run.status == QUEUED:
                self._scheduler.queue.discard_owner(run, att.owner)
            self._registry.detach(att, freeze=frozen)
        elif run.status == QUEUED:
            self._scheduler.remove(run)
            self._finish_locked(run, CANCELLED)
        elif run.status == RUNNING:
            run.stop.set()
            run.changed()

    def _expire_locked(self, owner: str) -> None:
        for att in self._registry.attachments(owner):
            self._stop_locked(att)
            self._registry.drop(att)
        self._leases.forget(owner)

    def _reap_loop(self) -> None:
        with self._lock:
            while not self._closed:
                self._reap_locked()
                due = self._leases.next_deadline()
                if due is None or not any(
                    self._leases.pending(o) and self._computing(o) for o in self._registry.owners()
                ):
                    break
                self._wake.wait(max(0.0, due - self._leases.clock()))
            self._reaper = None

    def _launch_locked(self, run: Run, threads: int) -> None:
        run.status = RUNNING
        run.started = time.time()
        run.t_started = time.monotonic()
        run.threads = threads
        if run.priority:
            self._no_priority.clear()
        run.changed()
        self.trained += 1
        log.info("run started: key=%s %s threads=%d", run.key, run.config.label(), threads)
        pauses = getattr(self._executor, "pauses_for_priority", True)
        task = RunTask(
            name=f"{run.key[:8]}-{run.seq}",
            config=run.config,
            threads=threads,
            should_stop=(
                run.stop.is_set if run.priority or not pauses else lambda: self._should_stop(run)
            ),
            on_batch=lambda b, n: self._on_batch(run, b, n),
            on_epoch=lambda m: self._on_epoch(run, m),
            on_finish=lambda outcome: self._on_finish(run, outcome),
            key=run.key,
            held=(lambda: False) if run.priority else (lambda: not self._no_priority.is_set()),
        )
        self._executor.start(task)

    def _should_stop(self, run: Run) -> bool:
        """A run's stop check between batches; while a priority run trains, it waits here,
        its OpenMP threads handed back (see :mod:`dropout_demo.openmp`)."""
        if not self._no_priority.is_set() and not run.stop.is_set():
            release_pool()
        while not self._no_priority.is_set() and not run.stop.is_set():
            self._no_priority.wait(PAUSE_POLL)
        return run.stop.is_set()

    def _on_batch(self, run: Run, batch: int, batches: int) -> None:
        with self._lock:
            run.batch, run.batches = batch, batches
            run.changed()

    def _on_epoch(self, run: Run, metrics: EpochMetrics) -> None:
        with self._lock:
            run.metrics = (*run.metrics, metrics)  # a new tuple: snapshots share, never copy
            run.epoch = len(run.metrics)
            run.batch = 0
            run.changed()

    def _on_finish(self, run: Run, outcome: Outcome) -> None:
        with self._lock:
            if outcome.metrics is not None:
                run.metrics = tuple(outcome.metrics)
                run.epoch = len(run.metrics)
            run.precision = outcome.precision or run.precision
            run.plan = outcome.plan or run.plan
            self._finish_locked(run, outcome.status, outcome.error, outcome.model)
            self._scheduler.finished(run)
            if not self._scheduler.priority_running:
                self._no_priority.set()  # the paused runs go on
            if not self._closed:
                self._scheduler.dispatch()
            model = run.model
            save = (
                run.status == DONE
                and model is not None
                and self.store is not None
                and run.store_id is None
            )
            hooks = list(self._hooks)
        if save:
            with self._save_lock:  # not twice: save() may be asked for the same run meanwhile
                try:
                    if run.store_id is None:
                        record = self._save(run, model, self.store)
                        with self._lock:
                            run.store_id = record.id
                            run.changed()
                except Exception:
                    log.warning("could not save run %s to the run store", run.key, exc_info=True)
        if hooks:
            with self._lock:
                snap = self._run_snapshot_locked(run)
            for hook in hooks:
                try:
                    hook(snap, model)
                except Exception:
                    log.warning("a finished-run hook failed", exc_info=True)

    def _save(self, run: Run, model: SimpleCNN, store: Any) -> Any:
        info = {
            "precision": run.precision,
            "plan": run.plan,
            "train_seconds": round(run.elapsed(), 3),
        }
        return store.save(
            run.config,
            run.metrics,
            model,
            status=run.status,
            name=run.name or run.config.label(),
            tags=tuple(sorted(run.tags)),
            key=run.key,
            info=info,
        )

    def _run_snapshot_locked(self, run: Run) -> JobSnapshot:
        # A snapshot of the run itself (for hooks), as an attachment-less row.
        return Attachment(id="", owner="", run=run, seq=0, created=run.created).snapshot(None)

    def _finish_locked(
        self, run: Run, status: str, error: str | None = None, model: SimpleCNN | None = None
    ) -> None:
        if run.status in TERMINAL:
            return
        run.status = status
        run.error = error or None
        run.finished = time.time()
        run.t_finished = time.monotonic()
        run.trained_at = run.finished
        self._registry.keep_model(run, model if status in KEEPS_MODEL else None)
        run.changed()
        for owner in run.attached:
            self._registry.prune_owner(owner)


_manager: JobManager | None = None
_manager_lock = threading.Lock()


def get_manager() -> JobManager:
    """The process-wide job manager, created on first use, saving to the default run store."""
    global _manager
    with _manager_lock:
        if _manager is None or _manager.closed:
            from ..runs import RunStore

            _manager = JobManager(store=RunStore(), **executor_settings())
            _register_exit(_manager.shutdown)
            # The first request's key needs the precision probe (a few training steps of each
            # candidate): measure it now, in the background, not in a visitor's first click.
            threading.Thread(target=_warm_up, name="dropout-warm-up", daemon=True).start()
        return _manager


def executor_settings() -> dict[str, Any]:
    """The executor and the machine it computes on: a worker process beside this one (the
    default, ``DROPOUT_DEMO_EXECUTOR=process``), threads of this process (``=thread``), or,
    with ``DROPOUT_DEMO_RAY`` set, a Ray cluster (imported only then; see
    :mod:`.ray_executor`), whose CPUs set the running cap."""
    try:
        kind = executor_kind()
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc
    if kind == "thread":
        return {}
    if kind == "process":
        from .process_executor import ProcessExecutor

        executor = ProcessExecutor()
        executor.warm()
        return {"executor": executor, "cores": available_cores()}
    address = os.environ.get(RAY_ENV, "").strip()
    from ..data import resolve_data_dir
    from .ray_executor import RayExecutor, cluster_cpus

    try:
        executor = RayExecutor(address, data_dir=str(resolve_data_dir()))
    except Exception as exc:
        raise RuntimeError(f"could not use Ray ({RAY_ENV}={address}): {exc}") from exc
    total, _largest_node = cluster_cpus()
    log.info("training on Ray (%s): %d CPUs in the cluster", address, total)
    return {"executor": executor, "cores": total}


def _warm_up() -> None:
    try:
        run_key(TrainConfig())
    except Exception:  # a broken probe shows up, with its reason, on the first real request
        log.debug("warm-up of the run identity failed", exc_info=True)


def _register_exit(fn: Callable[[], None]) -> None:
    # Interpreter exit joins non-daemon threads *before* atexit handlers run, so a plain atexit
    # hook would wait for every run to finish training. threading's own exit hook (what
    # concurrent.futures uses) runs first, cancels the runs, and they stop within a batch.
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        with contextlib.suppress(RuntimeError):  # already shutting down
            register(fn)
    atexit.register(fn)


__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "QUEUED",
    "RUNNING",
    "TERMINAL",
    "JobError",
    "JobManager",
    "JobSnapshot",
    "get_manager",
]
