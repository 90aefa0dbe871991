"""The registry: runs (one per identity), the sessions attached to them, snapshots, retention.

A :class:`Run` is one computation (or one cached result), identified by its key. Each session
that asked for it holds an :class:`Attachment`: its own row, id and order. Stopping detaches a
session; the computation stops only when nobody is attached. Plain data: the manager locks.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..config import TrainConfig
from ..model import SimpleCNN
from ..training import EpochMetrics

QUEUED, RUNNING = "queued", "running"
DONE, CANCELLED, FAILED, DIVERGED = "done", "cancelled", "failed", "diverged"
TERMINAL = frozenset({DONE, CANCELLED, FAILED, DIVERGED})
# Statuses whose model is worth keeping for the canvas (a diverged model holds NaNs).
KEEPS_MODEL = frozenset({DONE, CANCELLED})


@dataclass(frozen=True)
class JobSnapshot:
    """An immutable copy of one session's view of a run, safe to read while training goes on."""

    id: str  # the session's attachment id
    owner: str
    name: str
    config: TrainConfig
    status: str
    queue_position: int | None  # 1-based place in the shared queue while queued
    epoch: int  # completed epochs
    batch: int  # batches done in the current epoch
    batches: int  # batches per epoch (0 until the first batch reports)
    progress: float  # 0..1 within the current epoch
    metrics: tuple[EpochMetrics, ...]  # one per completed epoch
    error: str | None
    created: float  # when this session asked (epoch seconds)
    started: float | None
    finished: float | None
    elapsed: float  # seconds running so far (frozen once finished)
    has_model: bool
    saved_run_id: str | None  # the run store record holding this result, once there is one
    stop_requested: bool = False  # cancel asked for, the worker has not stopped yet
    overall_progress: float = 0.0  # 0..1 over all epochs
    key: str = ""  # the run's identity (shared by every session that asked for the same run)
    shared_with: int = 0  # other sessions attached to the same run now
    cached: bool = False  # served from the run store, trained earlier
    trained_at: float | None = None  # when the result was computed (epoch seconds)
    precision: str | None = None  # what training computed in ("fp32", "bf16"), once known
    detached: bool = False  # this session stopped watching; the run went on for others
    version: int = 0  # changes whenever anything above changes
    group: str = "lab"  # which page's row this is ("lab", "sweep", "class")

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(eq=False)
class Run:
    """One computation (or cached result). ``attached`` holds the owners watching it live."""

    key: str
    config: TrainConfig
    seq: int
    created: float
    status: str = QUEUED
    epoch: int = 0
    batch: int = 0
    batches: int = 0
    metrics: tuple[EpochMetrics, ...] = ()
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    t_started: float | None = None  # monotonic clock, for elapsed
    t_finished: float | None = None
    model: SimpleCNN | None = None
    model_dropped: bool = False  # evicted from memory (reload it from the store if saved)
    store_id: str | None = None
    cached: bool = False
    trained_at: float | None = None
    precision: str | None = None
    plan: str | None = None
    requested_by: str = ""  # the owner whose request made it compute (admission counts it)
    client: str | None = None
    threads: int = 0
    attached: set[str] = dataclasses.field(default_factory=set)
    tags: set[str] = dataclasses.field(default_factory=set)  # run store tags (e.g. "starter")
    name: str | None = None  # the run store name, when not the config's label
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    priority: bool = False  # skips the fair queue; other runs pause while it trains
    version: int = 0
    used: float = 0.0  # monotonic time of the last model use, for eviction

    def changed(self) -> None:
        self.version += 1

    @property
    def computing(self) -> bool:
        return self.status in (QUEUED, RUNNING)

    def elapsed(self) -> float:
        if self.t_started is None:
            return 0.0
        return (self.t_finished or time.monotonic()) - self.t_started


@dataclass(eq=False)
class Attachment:
    id: str
    owner: str
    run: Run
    seq: int
    created: float
    group: str = "lab"
    frozen: JobSnapshot | None = None  # set when detached while the run goes on for others

    def snapshot(self, queue_position: int | None) -> JobSnapshot:
        if self.frozen is not None:
            return self.frozen
        run = self.run
        progress = run.batch / run.batches if run.batches else 0.0
        overall = 1.0 if run.status == DONE else (run.epoch + progress) / run.config.epochs
        return JobSnapshot(
            id=self.id,
            owner=self.owner,
            name=run.config.label(),
            config=run.config,
            status=run.status,
            queue_position=queue_position,
            epoch=run.epoch,
            batch=run.batch,
            batches=run.batches,
            progress=min(progress, 1.0),
            metrics=run.metrics,
            error=run.error,
            created=self.created,
            started=run.started,
            finished=run.finished,
            elapsed=run.elapsed(),
            has_model=run.model is not None or (run.model_dropped and run.store_id is not None),
            saved_run_id=run.store_id,
            stop_requested=run.stop.is_set() and run.status == RUNNING,
            overall_progress=min(overall, 1.0),
            key=run.key,
            shared_with=max(0, len(run.attached) - (self.owner in run.attached)),
            cached=run.cached,
            trained_at=run.trained_at,
            precision=run.precision,
            version=run.version,
            group=self.group,
        )


class Registry:
    """Runs by key and attachments by owner, with bounds on what stays in memory."""

    def __init__(self, keep_finished: int = 20, max_models: int = 64, max_idle_runs: int = 500):
        self.keep_finished = keep_finished  # finished rows kept per owner
        self.max_models = max_models  # trained models held in memory, process-wide
        self.max_idle_runs = max_idle_runs  # finished runs nobody is attached to, kept for reuse
        self.runs: dict[str, Run] = {}  # key -> the live or latest run with that key
        self._by_owner: dict[str, dict[str, Attachment]] = {}  # owner -> id -> attachment
        self._seq = itertools.count(1)

    # ---------------------------------------------------------------- runs
    def new_run(self, key: str, config: TrainConfig, **fields: Any) -> Run:
        run = Run(key=key, config=config, seq=next(self._seq), created=time.time(), **fields)
        self.runs[key] = run
        self._bound_idle()
        return run

    def forget_run(self, run: Run) -> None:
        if self.runs.get(run.key) is run:
            del self.runs[run.key]

    def reusable(self, key: str) -> Run | None:
        """A run with this key that a new request can attach to: waiting, training, or done."""
        run = self.runs.get(key)
        if run is None:
            return None
        if run.computing and not run.stop.is_set():
            return run
        if run.status == DONE and (run.model is not None or run.store_id is not None):
            return run
        return None

    # ---------------------------------------------------------------- attachments
    def attach(self, owner: str, run: Run, group: str = "lab") -> Attachment:
        for existing in self._by_owner.get(owner, {}).values():
            if existing.run is run and existing.frozen is None and existing.group == group:
                return existing  # asking twice for the same run gives the same row
        seq = next(self._seq)
        att = Attachment(
            id=f"job-{seq}-{os.urandom(4).hex()}",
            owner=owner,
            run=run,
            seq=seq,
            created=time.time(),
            group=group,
        )
        self._by_owner.setdefault(owner, {})[att.id] = att
        run.attached.add(owner)
        run.changed()
        return att

    def find(self, att_id: str, owner: str) -> Attachment | None:
        return self._by_owner.get(owner, {}).get(att_id)

    def attachments(self, owner: str) -> list[Attachment]:
        return list(self._by_owner.get(owner, {}).values())

    def owners(self) -> list[str]:
        return list(self._by_owner)

    def detach(self, att: Attachment, freeze: JobSnapshot | None = None) -> None:
        """``att``'s owner stops watching its run live (keeping the row, frozen, if given)."""
        run = att.run
        if not any(
            a.run is run and a is not att and a.frozen is None
            for a in self._by_owner.get(att.owner, {}).values()
        ):
            run.attached.discard(att.owner)
        att.frozen = freeze
        run.changed()

    def drop(self, att: Attachment) -> None:
        """Forget the row entirely."""
        rows = self._by_owner.get(att.owner, {})
        rows.pop(att.id, None)
        if not rows:
            self._by_owner.pop(att.owner, None)
        if att.frozen is None:
            self.detach(att)
        self._bound_idle()

    def prune_owner(self, owner: str) -> None:
        """Keep at most ``keep_finished`` finished rows per owner and page (oldest go first),
        so a 30-cell sweep does not push the Lab's rows out."""
        rows = self._by_owner.get(owner, {})
        finished = [a for a in rows.values() if a.frozen is not None or a.run.status in TERMINAL]
        for group in {a.group for a in finished}:
            mine = [a for a in finished if a.group == group]
            for att in mine[: max(0, len(mine) - self.keep_finished)]:
                self.drop(att)

    def active_owners(self) -> int:
        return sum(
            any(a.frozen is None and a.run.computing for a in rows.values())
            for rows in self._by_owner.values()
        )

    def active_counts(self, owner: str, client: str | None) -> tuple[int, int]:
        """Runs needing compute that ``owner`` / ``client`` made, still queued or running."""
        by_owner = by_client = 0
        for run in self.runs.values():
            if run.computing and not run.stop.is_set():
                by_owner += run.requested_by == owner
                by_client += client is not None and run.client == client
        return by_owner, by_client

    # ---------------------------------------------------------------- memory
    def keep_model(self, run: Run, model: SimpleCNN | None) -> list[Run]:
        """Hold ``model`` for ``run``; returns the runs whose models were dropped for room."""
        run.model = model
        run.model_dropped = False
        run.used = time.monotonic()
        holders = [r for r in self.runs.values() if r.model is not None]
        dropped = []
        if len(holders) > self.max_models:
            holders.sort(key=lambda r: r.used)
            for old in holders[: len(holders) - self.max_models]:
                old.model = None
                old.model_dropped = True
                old.changed()
                dropped.append(old)
        return dropped

    def _bound_idle(self) -> None:
        idle = [r for r in self.runs.values() if not r.attached and r.status in TERMINAL]
        if len(idle) > self.max_idle_runs:
            idle.sort(key=lambda r: r.seq)
            for run in idle[: len(idle) - self.max_idle_runs]:
                self.forget_run(run)
