"""Job layer: shared runs, the result cache, the fair queue, leases, limits, failures, threads.

Most tests drive the manager with a fake ``fit`` whose batches wait on events the test sets, so
they check the logic without depending on training speed or the wall clock; two use the real
``fit`` on real MNIST.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dropout_demo import jobs as jobs_module
from dropout_demo import training
from dropout_demo.config import TrainConfig
from dropout_demo.jobs import (
    TERMINAL,
    THREAD_PREFIX,
    JobError,
    JobManager,
    Limits,
    get_manager,
    run_key,
)
from dropout_demo.jobs import manager as manager_module
from dropout_demo.model import SimpleCNN
from dropout_demo.runs import RunStore
from dropout_demo.training import EpochMetrics

TINY = TrainConfig(train_size=256, eval_size=100, epochs=2)
FAKE_DATA = "fake data"  # a value, not an identity: with Ray it is pickled to the workers
WAIT = 300.0  # generous bound for an event that must happen (a cold Ray worker on a busy
# machine included); never a measured duration
EXECUTORS = ("thread", "ray")  # every manager test runs against both executors


def job_threads() -> list[threading.Thread]:
    """The run threads (thread executor) or the threads following Ray runs (Ray executor)."""
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


@dataclass
class FakeResult:
    status: str
    metrics: list
    model: object
    config: TrainConfig
    message: str = ""
    precision: str = "fp32"


class Control:
    """The fake's state: named events, the calls seen, the seeds told to fail. In this process
    for the thread executor; inside a Ray actor for the Ray executor, so the fake in a worker
    process and the test share it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events: dict[str, threading.Event] = {}
        self.calls: list[dict] = []
        self.thread_counts: dict[int, list[int]] = {}
        self.flags: dict[str, set[int]] = {
            "raise": set(),
            "diverge": set(),
            "die": set(),
            "deaf": set(),
        }

    def reset(self) -> None:
        with self.lock:
            for event in self.events.values():
                event.set()  # a fake of an earlier test still waiting goes on and ends
            self.events, self.calls, self.thread_counts = {}, [], {}
            self.flags = {"raise": set(), "diverge": set(), "die": set(), "deaf": set()}

    def _event(self, name: str) -> threading.Event:
        with self.lock:
            return self.events.setdefault(name, threading.Event())

    def create(self, name: str) -> None:
        self._event(name)

    def exists(self, name: str) -> bool:
        with self.lock:
            return name in self.events

    def names(self) -> list[str]:
        with self.lock:
            return list(self.events)

    def set(self, name: str) -> None:
        self._event(name).set()

    def is_set(self, name: str) -> bool:
        return self._event(name).is_set()

    def wait(self, name: str, timeout: float) -> bool:
        return self._event(name).wait(timeout)

    def record_call(self, config: dict, threads: int) -> None:
        with self.lock:
            self.calls.append(config)
            self.thread_counts.setdefault(config["seed"], []).append(threads)

    def record_threads(self, seed: int, threads: int) -> None:
        with self.lock:
            self.thread_counts[seed].append(threads)

    def get_calls(self) -> list[dict]:
        with self.lock:
            return list(self.calls)

    def get_threads(self) -> dict[int, list[int]]:
        with self.lock:
            return {k: list(v) for k, v in self.thread_counts.items()}

    def flag(self, kind: str, seed: int) -> None:
        with self.lock:
            self.flags[kind].add(seed)

    def flagged(self, kind: str, seed: int) -> bool:
        with self.lock:
            return seed in self.flags[kind]


class RemoteControl:
    """:class:`Control`'s methods, called on its Ray actor (picklable: it holds the handle)."""

    def __init__(self, handle):
        self.handle = handle

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        method = getattr(self.handle, name)

        def call(*args):
            import ray

            return ray.get(method.remote(*args))

        return call


class EventHandle:
    def __init__(self, control, name: str):
        self.control, self.name = control, name

    def set(self) -> None:
        self.control.set(self.name)

    def is_set(self) -> bool:
        return self.control.is_set(self.name)

    def wait(self, timeout: float | None = None) -> bool:
        return self.control.wait(self.name, WAIT if timeout is None else timeout)


class SeedFlags:
    def __init__(self, control, kind: str):
        self.control, self.kind = control, kind

    def add(self, seed: int) -> None:
        self.control.flag(self.kind, seed)


class FakeFit:
    """A stand-in for ``training.fit`` honouring the same callbacks, driven by events.

    A run whose seed has a gate waits at every batch until the gate is set (or a stop is
    asked for); other runs go straight through. ``started(seed)`` is set once its fit began.
    Picklable (its state is a :class:`Control`, or a handle to one), so the Ray executor runs
    it in a worker process.
    """

    def __init__(self, control=None, batches: int = 3, kind: str = "thread"):
        self.control = control if control is not None else Control()
        self.batches = batches
        self.kind = kind

    def gate(self, seed: int) -> EventHandle:
        self.control.create(f"gate-{seed}")
        return EventHandle(self.control, f"gate-{seed}")

    def started(self, seed: int) -> EventHandle:
        return EventHandle(self.control, f"started-{seed}")

    @property
    def gates(self) -> dict[int, EventHandle]:
        names = [n for n in self.control.names() if n.startswith("gate-")]
        return {int(n[5:]): EventHandle(self.control, n) for n in names}

    @property
    def calls(self) -> list[TrainConfig]:
        return [TrainConfig.from_dict(c) for c in self.control.get_calls()]

    @property
    def threads(self) -> dict[int, list[int]]:
        return self.control.get_threads()

    @property
    def raise_for(self) -> SeedFlags:
        return SeedFlags(self.control, "raise")

    @property
    def diverge_for(self) -> SeedFlags:
        return SeedFlags(self.control, "diverge")

    def __call__(self, config, data, on_epoch=None, should_stop=None, on_batch=None):
        assert data == FAKE_DATA
        control, seed = self.control, config.seed
        control.record_call(config.to_dict(), torch.get_num_threads())
        control.set(f"started-{seed}")
        if control.flagged("raise", seed):
            raise ValueError(f"boom in run {seed}")
        if control.flagged("die", seed):  # the process running it dies (a Ray worker)
            os._exit(3)
        if control.flagged("deaf", seed):  # never looks at should_stop: only force stops it
            control.wait(f"gate-{seed}", WAIT)
        metrics = []
        model = SimpleCNN(p=config.p).eval()
        gated = control.exists(f"gate-{seed}")
        for epoch in range(1, config.epochs + 1):
            for b in range(1, self.batches + 1):
                if should_stop():
                    return FakeResult("cancelled", metrics, model, config)
                while gated and not control.wait(f"gate-{seed}", 0.01):
                    if should_stop():
                        return FakeResult("cancelled", metrics, model, config)
                on_batch(epoch, b, self.batches)
                control.record_threads(seed, torch.get_num_threads())
            m = EpochMetrics(epoch, 1.0 / epoch, 0.5, 1.1 / epoch, 0.5, 0.01 * epoch)
            on_epoch(m)
            metrics.append(m)
            if control.flagged("diverge", seed):
                return FakeResult("diverged", metrics, model, config, "loss became nan")
        return FakeResult("done", metrics, model, config)


class Finished:
    """Events set by the manager's finished hook, one per run key."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events: dict[str, threading.Event] = {}
        self.snaps: dict[str, object] = {}

    def event(self, key: str) -> threading.Event:
        with self.lock:
            return self.events.setdefault(key, threading.Event())

    def __call__(self, snap, model):
        with self.lock:
            self.snaps[snap.key] = snap
        self.event(snap.key).set()

    def wait(self, config: TrainConfig) -> None:
        assert self.event(run_key(config)).wait(WAIT), f"{config.label()} never finished"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(scope="session")
def remote_control(ray_cluster):
    """One :class:`Control` actor for the session (an actor is a process: one per test would
    cost seconds each); each test starts it afresh with ``reset``."""
    handle = ray_cluster.remote(Control).options(max_concurrency=64).remote()
    yield RemoteControl(handle)
    ray_cluster.kill(handle)


@pytest.fixture(params=EXECUTORS)
def fake(request):
    if request.param == "thread":
        return FakeFit()
    return request.getfixturevalue("ray_fake")


@pytest.fixture
def ray_fake(remote_control):
    """A fake that runs in Ray workers (for the tests of the Ray executor alone)."""
    remote_control.reset()
    return FakeFit(remote_control, kind="ray")


@pytest.fixture
def finished():
    return Finished()


@pytest.fixture
def clock():
    return Clock()


def manager_factory(fake, finished, clock):
    """(make(**JobManager kwargs), close()): managers that train with ``fake`` on its
    executor (threads of this process, or Ray workers)."""
    managers = []

    def make(**kw):
        kw.setdefault("fit_fn", fake)
        kw.setdefault("data_provider", lambda: FAKE_DATA)
        if fake.kind == "ray":
            from dropout_demo.jobs.ray_executor import RayExecutor

            kw["executor"] = RayExecutor(
                "local", fit_fn=kw.pop("fit_fn"), data_provider=kw.pop("data_provider")
            )
        kw.setdefault("max_running", 2)
        kw.setdefault("cores", 2)
        kw.setdefault("clock", clock)
        manager = JobManager(**kw)
        manager.add_finished_hook(finished)
        managers.append(manager)
        return manager

    def close():
        for fake_gate in fake.gates.values():
            fake_gate.set()
        for manager in managers:
            manager.shutdown(timeout=WAIT)

    return make, close


@pytest.fixture
def make_manager(fake, finished, clock):
    make, close = manager_factory(fake, finished, clock)
    yield make
    close()


@pytest.fixture
def make_ray_manager(ray_fake, finished, clock):
    make, close = manager_factory(ray_fake, finished, clock)
    yield make
    close()


def cfg(seed: int, **kw) -> TrainConfig:
    return TINY.replace(seed=seed, **kw)


def status(manager, job_id, owner="a") -> str:
    return manager.get(job_id, owner).status


# ---------------------------------------------------------------------------- shared runs
def test_identical_requests_share_one_computation(make_manager, fake, finished):
    m = make_manager()
    fake.gate(1)
    a = m.submit(cfg(1), "a")
    b = m.submit(cfg(1), "b")
    assert a != b  # each session has its own row
    assert fake.started(1).wait(WAIT)
    snap_a, snap_b = m.get(a, "a"), m.get(b, "b")
    assert snap_a.key == snap_b.key and snap_a.shared_with == 1 and snap_b.shared_with == 1
    fake.gate(1).set()
    finished.wait(cfg(1))
    assert [c.seed for c in fake.calls] == [1]
    assert status(m, a, "a") == status(m, b, "b") == "done"
    assert m.get(a, "a").metrics == m.get(b, "b").metrics
    assert m.stats()["trained"] == 1


def test_a_finished_run_serves_a_later_request_without_training(make_manager, fake, finished):
    m = make_manager()
    m.submit(cfg(2), "a")
    finished.wait(cfg(2))
    later = m.submit(cfg(2), "b")
    snap = m.get(later, "b")
    assert snap.status == "done" and len(snap.metrics) == 2
    assert len(fake.calls) == 1


def test_stop_detaches_one_session_and_the_run_goes_on_for_the_other(make_manager, fake):
    m = make_manager()
    fake.gate(3)
    a = m.submit(cfg(3), "a")
    b = m.submit(cfg(3), "b")
    assert fake.started(3).wait(WAIT)
    m.cancel(a, "a")
    stopped, other = m.get(a, "a"), m.get(b, "b")
    assert stopped.status == "cancelled" and stopped.detached and not stopped.has_model
    assert other.status == "running" and not other.stop_requested and other.shared_with == 0
    # The detached row no longer follows the run, and can be removed at once.
    m.remove(a, "a")
    assert m.snapshot("a") == ()
    m.cancel(b, "b")  # the last watcher stops: the computation stops
    assert m.get(b, "b").stop_requested
    fake.gate(3).set()
    for t in job_threads():
        t.join(WAIT)
    assert m.get(b, "b").status == "cancelled"
    assert len(fake.calls) == 1


def test_both_sessions_stop_a_queued_run_and_it_never_trains(make_manager, fake):
    m = make_manager(max_running=1)
    fake.gate(4)
    m.submit(cfg(4), "x")  # occupies the only worker
    a = m.submit(cfg(5), "a")
    b = m.submit(cfg(5), "b")
    assert m.get(a, "a").queue_position == 1
    m.cancel(a, "a")
    assert m.get(b, "b").status == "queued"  # still wanted by b
    m.cancel(b, "b")
    assert m.get(b, "b").status == "cancelled"
    assert m.queued_count() == 0
    fake.gate(4).set()
    for t in job_threads():
        t.join(WAIT)
    assert [c.seed for c in fake.calls] == [4]


def test_a_stopped_run_is_trained_again_when_asked_again(make_manager, fake, finished):
    m = make_manager()
    fake.gate(6)
    first = m.submit(cfg(6), "a")
    assert fake.started(6).wait(WAIT)
    m.cancel(first, "a")
    for t in job_threads():
        t.join(WAIT)
    assert status(m, first, "a") == "cancelled"
    fake.gate(6).set()
    again = m.submit(cfg(6), "a")
    assert again != first
    finished.wait(cfg(6))
    for t in job_threads():
        t.join(WAIT)
    assert status(m, again, "a") == "done"
    assert len(fake.calls) == 2


RESULT_FIELDS = {
    "p": 0.25,
    "epochs": 3,
    "lr": 2e-3,
    "batch_size": 32,
    "train_size": 300,
    "eval_size": 200,
    "seed": 9,
    "precision": "bf16",
}


@pytest.mark.parametrize("field", sorted(RESULT_FIELDS))
def test_a_config_that_differs_in_a_result_field_is_not_shared(make_manager, fake, field):
    base = TINY.replace(precision="fp32")
    other = base.replace(**{field: RESULT_FIELDS[field]})
    assert run_key(other) != run_key(base)
    m = make_manager()
    a = m.submit(base, "a")
    b = m.submit(other, "b")
    assert m.get(a, "a").key != m.get(b, "b").key
    for t in job_threads():
        t.join(WAIT)
    assert len(fake.calls) == 2


def test_the_key_covers_the_training_code_version_and_ignores_float_noise(monkeypatch):
    base = TINY.replace(p=0.15)
    assert run_key(base) == run_key(TINY.replace(p=0.15000000000000002))
    assert run_key(base) == run_key(TrainConfig.from_dict(base.to_dict()))
    before = run_key(base)
    monkeypatch.setattr(jobs_module.identity, "TRAINING_VERSION", training.TRAINING_VERSION + "x")
    assert run_key(base) != before


def test_the_key_holds_the_precision_auto_resolves_to():
    resolved = jobs_module.identity.resolved(TINY.replace(precision="auto"))
    assert resolved["precision"] in ("fp32", "bf16")
    assert run_key(TINY.replace(precision="auto")) == run_key(
        TINY.replace(precision=resolved["precision"])
    )


# ---------------------------------------------------------------------------- the cache
def test_a_cache_hit_after_a_restart_serves_the_stored_result(make_manager, fake, tmp_path):
    store = RunStore(tmp_path / "store")
    first = make_manager(store=store)
    done = threading.Event()
    first.add_finished_hook(lambda snap, model: snap.saved_run_id and done.set())
    job = first.submit(cfg(7), "a")
    assert done.wait(WAIT)
    trained = first.get(job, "a")
    assert trained.saved_run_id and not trained.cached
    first.shutdown(timeout=WAIT)

    second = make_manager(store=RunStore(tmp_path / "store"))  # a new process, same store
    again = second.submit(cfg(7), "b")
    snap = second.get(again, "b")
    assert snap.status == "done" and snap.cached and snap.has_model
    assert snap.trained_at == pytest.approx(store.get(trained.saved_run_id).created)
    assert [m.test_loss for m in snap.metrics] == [m.test_loss for m in trained.metrics]
    model = second.model(again, "b")
    assert isinstance(model, SimpleCNN)
    reference = store.load_model(trained.saved_run_id).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    assert len(fake.calls) == 1  # the second manager trained nothing


def test_a_cache_miss_for_another_config_trains(make_manager, fake, tmp_path, finished):
    store = RunStore(tmp_path / "store")
    m = make_manager(store=store)
    m.submit(cfg(8), "a")
    finished.wait(cfg(8))
    m.submit(cfg(8, p=0.0), "a")
    finished.wait(cfg(8, p=0.0))
    assert len(fake.calls) == 2


def test_cancelled_runs_are_not_cached(make_manager, fake, tmp_path):
    store = RunStore(tmp_path / "store")
    m = make_manager(store=store)
    fake.gate(10)
    job = m.submit(cfg(10), "a")
    assert fake.started(10).wait(WAIT)
    m.cancel(job, "a")
    for t in job_threads():
        t.join(WAIT)
    assert store.find(run_key(cfg(10))) is None


# ---------------------------------------------------------------------------- fair queue
def test_sessions_take_turns_in_the_queue(make_manager, fake):
    m = make_manager(max_running=1)
    fake.gate(20)
    m.submit(cfg(20), "a")  # runs
    assert fake.started(20).wait(WAIT)
    a2 = m.submit(cfg(21), "a")
    a3 = m.submit(cfg(22), "a")
    b1 = m.submit(cfg(23), "b")
    c1 = m.submit(cfg(24), "c")
    positions = {
        "a2": m.get(a2, "a").queue_position,
        "a3": m.get(a3, "a").queue_position,
        "b1": m.get(b1, "b").queue_position,
        "c1": m.get(c1, "c").queue_position,
    }
    # First come, first served would give a3 place 2; in turns it waits for b and c.
    assert positions == {"a2": 1, "b1": 2, "c1": 3, "a3": 4}
    for seed in (21, 22, 23, 24):
        fake.gate(seed)
    fake.gate(20).set()
    order = []
    for seed in (21, 23, 24, 22):
        assert fake.started(seed).wait(WAIT)
        order.append(seed)
        fake.gate(seed).set()
    assert [c.seed for c in fake.calls] == [20, 21, 23, 24, 22]


def test_a_class_pressing_compare_is_never_refused(make_manager, fake):
    m = make_manager(max_running=2)
    fake.gate(0)
    for student in range(30):
        p = round(0.9 * student / 29 / 0.05) * 0.05
        m.submit(TINY.replace(seed=0, p=p), f"s{student}")
        m.submit(TINY.replace(seed=0, p=0.0), f"s{student}")
    distinct = {
        run_key(TINY.replace(seed=0, p=round(0.9 * s / 29 / 0.05) * 0.05)) for s in range(30)
    }
    distinct.add(run_key(TINY.replace(seed=0, p=0.0)))
    assert m.queued_count() + m.running_count() == len(distinct)


# ---------------------------------------------------------------------------- admission
def test_limits_refuse_with_clear_errors(make_manager, fake):
    limits = Limits(max_per_owner=2, max_per_client=3, max_queued=3)
    m = make_manager(max_running=1, limits=limits)
    fake.gate(0)
    m.submit(cfg(0), "a", client="1.2.3.4")
    m.submit(cfg(1), "a", client="1.2.3.4")
    with pytest.raises(JobError, match="already have 2 runs"):
        m.submit(cfg(2), "a", client="1.2.3.4")
    m.submit(cfg(2), "b", client="1.2.3.4")
    with pytest.raises(JobError, match="network address"):
        m.submit(cfg(3), "c", client="1.2.3.4")
    # Attaching to a run that is already wanted costs nothing and is never refused.
    m.submit(cfg(1), "c", client="1.2.3.4")
    m.submit(cfg(3), "c", client="5.6.7.8")
    with pytest.raises(JobError, match="queue is full"):
        m.submit(cfg(4), "d", client="9.9.9.9")


def test_admission_checks_are_pure_functions():
    limits = Limits()
    jobs_module.admission.check_config(TINY, limits, training.evaluated_images(TINY))
    with pytest.raises(JobError, match="Batch size"):
        jobs_module.admission.check_config(TINY.replace(batch_size=2_048), limits, 0)
    with pytest.raises(JobError, match="epochs is too many"):
        jobs_module.admission.check_config(TINY.replace(epochs=201), limits, 0)
    # Evaluation counts: a run that trains little but evaluates much is refused all the same.
    small = TrainConfig(train_size=1, epochs=100)
    jobs_module.admission.check_config(small, limits, evaluated_images=100)
    with pytest.raises(JobError, match="image passes"):
        jobs_module.admission.check_config(small, limits, evaluated_images=limits.max_work)
    big = TrainConfig(train_size=60_000, epochs=20)
    with pytest.raises(JobError, match="image passes"):
        jobs_module.admission.check_config(big, limits, training.evaluated_images(big))
    assert jobs_module.admission.image_passes(TINY, 200) == 2 * 256 + 200
    jobs_module.admission.check_capacity(3, 63, 239, limits)
    for args, match in (
        ((4, 0, 0), "already have 4"),
        ((0, 64, 0), "network address"),
        ((0, 0, 240), "queue is full"),
    ):
        with pytest.raises(JobError, match=match):
            jobs_module.admission.check_capacity(*args, limits)


def test_the_presets_pass_admission():
    from dropout_demo.config import PRESETS

    for config in PRESETS.values():
        jobs_module.admission.check_config(config, Limits(), training.evaluated_images(config))


# ---------------------------------------------------------------------------- leases
def test_a_released_owner_keeps_everything_within_the_grace(make_manager, fake, clock):
    m = make_manager(release_grace=100.0, max_running=1)
    fake.gate(30)
    running = m.submit(cfg(30), "a")
    queued = m.submit(cfg(31), "a")
    m.release("a", "session-1")
    clock.now += 99
    assert m.reap() == []
    assert status(m, queued, "a") == "queued"  # queued runs get the same grace
    m.touch("a", "session-2")  # came back (a reload)
    clock.now += 1_000
    assert m.reap() == []
    assert status(m, running, "a") == "running"


def test_after_the_grace_runs_stop_and_rows_go(make_manager, fake, clock):
    m = make_manager(release_grace=100.0, max_running=1)
    fake.gate(32)
    running = m.submit(cfg(32), "a")
    m.submit(cfg(33), "a")
    shared = m.submit(cfg(32), "b")
    m.release("a", "s1")
    clock.now += 101
    m.reap()  # (the reaper thread may have expired it first: either way it is gone)
    assert m.snapshot("a") == ()
    with pytest.raises(JobError):
        m.get(running, "a")
    assert m.queued_count() == 0  # nobody else wanted the queued one
    assert status(m, shared, "b") == "running"  # b still watches the shared run
    fake.gate(32).set()


def test_an_owner_with_two_sessions_is_released_only_when_both_close(make_manager, fake, clock):
    m = make_manager(release_grace=10.0)
    fake.gate(34)
    job = m.submit(cfg(34), "a")
    m.touch("a", "tab-1")
    m.touch("a", "tab-2")
    m.release("a", "tab-1")  # e.g. the old session of a reloaded page closes late
    clock.now += 1_000
    assert m.reap() == []
    m.release("a", "tab-2")
    clock.now += 11
    m.reap()  # (the reaper thread may have expired it first: either way it is gone)
    with pytest.raises(JobError):
        m.get(job, "a")


def test_release_of_an_owner_without_runs_starts_no_thread(make_manager):
    m = make_manager()
    before = {t.name for t in threading.enumerate()}
    m.release("nobody", "s")
    assert "dropout-release-reaper" not in {t.name for t in threading.enumerate()} - before


def test_owners_with_only_finished_rows_are_forgotten_without_a_thread(
    make_manager, finished, clock
):
    m = make_manager(release_grace=10.0)
    job = m.submit(cfg(36), "a")
    finished.wait(cfg(36))
    m.release("a", "s")
    reapers = [t for t in threading.enumerate() if t.name == "dropout-release-reaper"]
    assert reapers == []  # nothing computing: no thread waits for this owner
    clock.now += 11
    m.submit(cfg(37), "b")  # any later activity forgets the gone owner
    with pytest.raises(JobError):
        m.get(job, "a")


def test_the_reaper_thread_expires_owners_by_itself(make_manager, fake):
    m = make_manager(release_grace=0.0, clock=manager_module.time.monotonic)
    fake.gate(35)
    job = m.submit(cfg(35), "a")
    assert fake.started(35).wait(WAIT)
    m.release("a", "s")
    for t in job_threads():
        t.join(WAIT)
    with pytest.raises(JobError):
        m.get(job, "a")


# ---------------------------------------------------------------------------- ownership
def test_owners_cannot_see_or_touch_each_others_rows(make_manager, fake):
    m = make_manager()
    fake.gate(40)
    job = m.submit(cfg(40), "a")
    assert m.snapshot("b") == ()
    for call in (m.get, m.cancel, m.remove, m.model):
        with pytest.raises(JobError, match="No such run"):
            call(job, "b")
    fake.gate(40).set()


def test_remove_forgets_finished_rows_only(make_manager, fake, finished):
    m = make_manager()
    fake.gate(41)
    job = m.submit(cfg(41), "a")
    with pytest.raises(JobError, match="Stop this run"):
        m.remove(job, "a")
    fake.gate(41).set()
    finished.wait(cfg(41))
    m.remove(job, "a")
    assert m.snapshot("a") == ()


def test_finished_rows_beyond_the_keep_limit_go_oldest_first(make_manager, finished):
    m = make_manager(keep_finished=2)
    jobs = []
    for seed in range(50, 54):
        jobs.append(m.submit(cfg(seed), "a"))
        finished.wait(cfg(seed))
    assert [s.id for s in m.snapshot("a")] == jobs[-2:]


def test_models_beyond_the_process_bound_are_dropped_and_reload_from_the_store(
    make_manager, finished, tmp_path
):
    m = make_manager(max_models=2, store=RunStore(tmp_path / "s"))
    saved = threading.Semaphore(0)
    m.add_finished_hook(lambda snap, model: snap.saved_run_id and saved.release())
    jobs = []
    for seed in range(60, 63):
        jobs.append(m.submit(cfg(seed), "a"))
        assert saved.acquire(timeout=WAIT)
    assert m.stats()["models"] == 2
    oldest = m.get(jobs[0], "a")
    assert oldest.has_model  # still offered: it comes back from the store
    assert isinstance(m.model(jobs[0], "a"), SimpleCNN)
    assert m.stats()["models"] == 2


def test_a_dropped_model_that_was_never_saved_is_a_clear_error(make_manager, fake):
    m = make_manager(max_models=1)
    fake.gate(70)
    stopped = m.submit(cfg(70), "a")
    assert fake.started(70).wait(WAIT)
    m.cancel(stopped, "a")  # cancelled runs keep their model but are never saved
    for t in job_threads():
        t.join(WAIT)
    assert m.get(stopped, "a").has_model
    done = threading.Event()
    m.add_finished_hook(lambda snap, model: done.set())
    m.submit(cfg(71), "a")
    assert done.wait(WAIT)
    assert not m.get(stopped, "a").has_model
    with pytest.raises(JobError, match="dropped from memory"):
        m.model(stopped, "a")


# ---------------------------------------------------------------------------- failures
def test_an_exception_fails_that_run_and_the_next_one_still_runs(make_manager, fake, finished):
    m = make_manager(max_running=1)
    fake.raise_for.add(80)
    bad = m.submit(cfg(80), "a")
    good = m.submit(cfg(81), "a")
    finished.wait(cfg(81))
    snap = m.get(bad, "a")
    assert snap.status == "failed" and "boom in run 80" in snap.error
    assert status(m, good) == "done"


def test_a_data_loading_error_fails_the_run_with_its_message(make_manager, finished):
    def broken():
        raise FileNotFoundError("MNIST is not in /nowhere")

    m = make_manager(data_provider=broken)
    job = m.submit(cfg(82), "a")
    finished.wait(cfg(82))
    snap = m.get(job, "a")
    assert snap.status == "failed" and "/nowhere" in snap.error


def test_a_diverged_fit_is_marked_with_its_message(make_manager, fake, finished):
    fake.diverge_for.add(83)
    m = make_manager()
    job = m.submit(cfg(83), "a")
    finished.wait(cfg(83))
    snap = m.get(job, "a")
    assert snap.status == "diverged" and "nan" in snap.error and not snap.has_model


def test_cancel_of_a_running_run_is_seen_at_the_next_batch(make_manager, fake):
    m = make_manager()
    fake.gate(84)
    job = m.submit(cfg(84), "a")
    assert fake.started(84).wait(WAIT)
    m.cancel(job, "a")
    for t in job_threads():
        t.join(WAIT)
    snap = m.get(job, "a")
    assert snap.status == "cancelled" and snap.epoch == 0 and snap.has_model


def test_snapshots_are_immutable_and_share_the_metrics_tuple(make_manager, finished):
    m = make_manager()
    job = m.submit(cfg(85), "a")
    finished.wait(cfg(85))
    snap = m.get(job, "a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.status = "x"
    assert isinstance(snap.metrics, tuple)
    assert m.get(job, "a").metrics is snap.metrics  # no copy per read


# ---------------------------------------------------------------------------- threads
def test_each_run_sets_its_thread_count_once_at_start(make_manager, fake):
    m = make_manager(max_running=2, cores=4)
    fake.gate(90)
    fake.gate(91)
    fake.gate(92)
    m.submit(cfg(90), "a")  # alone, nothing waiting: all four cores
    assert fake.started(90).wait(WAIT)
    m.submit(cfg(91), "b")  # the first keeps its four; this one gets what is left: one
    assert fake.started(91).wait(WAIT)
    m.submit(cfg(92), "c")  # waits for a worker
    fake.gate(90).set()
    assert fake.started(92).wait(WAIT)  # starts beside 91 (one thread): three are free
    fake.gate(91).set()
    fake.gate(92).set()
    for t in job_threads():
        t.join(WAIT)
    assert set(fake.threads[90]) == {4}
    assert set(fake.threads[91]) == {1}
    assert set(fake.threads[92]) == {3}


def test_thread_share_splits_the_cores_when_others_wait():
    share = jobs_module.scheduler.thread_share
    assert share(cores=2, threads_in_use=0, max_running=2, more_waiting=False) == 2
    assert share(cores=2, threads_in_use=0, max_running=2, more_waiting=True) == 1
    assert share(cores=2, threads_in_use=2, max_running=2, more_waiting=False) == 1
    assert share(cores=16, threads_in_use=0, max_running=4, more_waiting=True) == 4


def test_the_test_thread_count_is_unchanged_by_workers(make_manager, finished):
    before = torch.get_num_threads()
    m = make_manager(cores=2)
    m.submit(cfg(93), "a")
    finished.wait(cfg(93))
    assert torch.get_num_threads() == before


def test_shutdown_stops_everything_and_joins_threads(make_manager, fake):
    m = make_manager(max_running=2)
    fake.gate(94)
    fake.gate(95)
    jobs = [m.submit(cfg(s), "a") for s in (94, 95, 96)]
    assert fake.started(94).wait(WAIT) and fake.started(95).wait(WAIT)
    m.shutdown(timeout=WAIT)
    assert not job_threads()
    assert {m.get(j, "a").status for j in jobs} == {"cancelled"}
    with pytest.raises(JobError, match="shut down"):
        m.submit(cfg(97), "a")


def test_twenty_runs_cap_two_random_cancels_all_end_and_leave_no_threads(make_manager, fake):
    import random

    m = make_manager(max_running=2, limits=Limits(max_per_owner=20))
    rng = random.Random(0)
    jobs = [m.submit(cfg(100 + i), "a") for i in range(20)]
    for job in rng.sample(jobs, 6):
        m.cancel(job, "a")
    for _ in range(100):  # each round joins the workers alive; the queue drains into them
        for t in job_threads():
            t.join(WAIT)
        if not (m.running_count() or m.queued_count()):
            break
    assert all(s.status in TERMINAL for s in m.snapshot("a"))
    assert not job_threads()


def test_get_manager_is_one_lazy_singleton(monkeypatch):
    monkeypatch.setattr(manager_module, "_manager", None)
    monkeypatch.setattr(manager_module, "_register_exit", lambda fn: None)
    first = get_manager()
    assert get_manager() is first
    assert first.store is not None
    first.shutdown()
    assert get_manager() is not first  # a closed manager is replaced
    get_manager().shutdown()


def test_save_returns_the_stored_record_once(make_manager, finished, tmp_path):
    store = RunStore(tmp_path / "s")
    m = make_manager()  # no store of its own: nothing saved automatically
    job = m.submit(cfg(98), "a")
    finished.wait(cfg(98))
    records = []
    threads = [
        threading.Thread(target=lambda: records.append(m.save(job, "a", store))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len({r.id for r in records}) == 1  # a double click saves one run, not two
    assert m.get(job, "a").saved_run_id in {r.id for r in records}
    assert records[0].key == run_key(cfg(98))


# ---------------------------------------------------------------------------- real training
@pytest.mark.mnist
def test_real_fit_on_real_mnist_shares_caches_and_cancels(mnist, tmp_path):
    store = RunStore(tmp_path / "store")
    m = JobManager(data_provider=lambda: mnist, max_running=2, store=store)
    saved = threading.Event()
    m.add_finished_hook(lambda snap, model: snap.saved_run_id and saved.set())
    try:
        config = TrainConfig(train_size=2_048, eval_size=500, epochs=1, precision="fp32")
        a = m.submit(config, "a")
        b = m.submit(config, "b")
        assert saved.wait(300)
        snap = m.get(b, "b")
        assert snap.status == "done" and snap.metrics[0].test_acc > 0.5
        assert m.stats()["trained"] == 1
        assert store.find(snap.key).id == snap.saved_run_id
        big = m.submit(TrainConfig(train_size=60_000, epochs=1, precision="fp32"), "a")
        m.cancel(big, "a")
        for t in job_threads():
            t.join(300)
        assert m.get(big, "a").status == "cancelled"
        assert m.get(a, "a").status == "done"
    finally:
        m.shutdown(timeout=300)


def test_each_page_lists_its_own_rows_and_a_sweep_does_not_push_out_the_labs(
    make_manager, finished
):
    m = make_manager(keep_finished=2)
    lab_row = m.submit(cfg(110), "a")
    finished.wait(cfg(110))
    sweep_rows = []
    for seed in range(111, 115):
        sweep_rows.append(m.submit(cfg(seed), "a", group="sweep"))
        finished.wait(cfg(seed))
    same_run_in_sweep = m.submit(cfg(110), "a", group="sweep")
    assert same_run_in_sweep != lab_row  # one run, a row on each page
    assert [s.id for s in m.snapshot("a", group="lab")] == [lab_row]
    assert [s.id for s in m.snapshot("a", group="sweep")] == [*sweep_rows[-2:], same_run_in_sweep]
    assert {s.group for s in m.snapshot("a")} == {"lab", "sweep"}


def test_runs_asked_for_together_start_together_with_a_fair_share_of_threads(make_manager, fake):
    m = make_manager(max_running=2, cores=2)
    fake.gate(120)
    fake.gate(121)
    ids = m.submit_many([cfg(120), cfg(121, p=0.0)], "a")
    assert len(ids) == 2
    assert fake.started(120).wait(WAIT) and fake.started(121).wait(WAIT)
    fake.gate(120).set()
    fake.gate(121).set()
    for t in job_threads():
        t.join(WAIT)
    # Queued together, neither took both cores: one thread each, no oversubscription.
    assert set(fake.threads[120]) == {1} and set(fake.threads[121]) == {1}


def test_submit_many_keeps_the_runs_before_a_refusal(make_manager, fake):
    m = make_manager(max_running=1, limits=Limits(max_per_owner=1))
    fake.gate(122)
    with pytest.raises(JobError, match="already have 1"):
        m.submit_many([cfg(122), cfg(123)], "a")
    assert [s.config.seed for s in m.snapshot("a")] == [122]
    assert fake.started(122).wait(WAIT)  # the one queued before the refusal still starts
    fake.gate(122).set()


# ---------------------------------------------------------------------------- Ray only
def wait_until(predicate, timeout: float = WAIT) -> bool:
    """Whether ``predicate`` became true within a generous bound (polled, never timed)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_two_replicas_share_one_computation_through_the_ray_registry(make_ray_manager, ray_fake):
    """Two app replicas (each its own manager and executor; one process here, as the registry
    sees only their subscriber ids) asked for one config: one computation, followed by both."""
    fake = ray_fake
    one = make_ray_manager()
    two = make_ray_manager()
    fake.gate(130)
    a = one.submit(cfg(130), "a")
    assert fake.started(130).wait(WAIT)
    b = two.submit(cfg(130), "b")
    assert wait_until(lambda: two._executor.joined == 1)  # its follower thread joined
    stats = one._executor.stats()
    assert (stats["created"], stats["joined"], stats["live"]) == (1, 1, 1)
    one.cancel(a, "a")  # one replica's only session stops: the other still follows it
    for t in job_threads():
        if t in one._executor.threads():
            t.join(WAIT)
    assert status(one, a, "a") == "cancelled" and status(two, b, "b") == "running"
    fake.gate(130).set()
    two._executor.shutdown(WAIT)
    snap = two.get(b, "b")
    assert snap.status == "done" and len(snap.metrics) == 2 and snap.has_model
    assert len(fake.calls) == 1
    fake.gate(131)
    c = two.submit(cfg(131), "c")  # both stop: cancelled for everyone
    d = one.submit(cfg(131), "d")
    assert fake.started(131).wait(WAIT)
    two.cancel(c, "c")
    one.cancel(d, "d")
    for t in job_threads():
        t.join(WAIT)
    assert status(two, c, "c") == status(one, d, "d") == "cancelled"


def test_a_ray_worker_that_dies_fails_the_run_with_its_reason(make_ray_manager, ray_fake, finished):
    fake = ray_fake
    m = make_ray_manager()
    fake.control.flag("die", 132)
    job = m.submit(cfg(132), "a")
    finished.wait(cfg(132))
    snap = m.get(job, "a")
    assert snap.status == "failed" and "Ray worker" in snap.error and "died" in snap.error
    ok = m.submit(cfg(133), "a")  # the next run gets a fresh worker
    finished.wait(cfg(133))
    assert status(m, ok) == "done"


def test_a_run_that_ignores_its_stop_is_cancelled_with_ray_cancel(
    make_ray_manager, ray_fake, monkeypatch
):
    from dropout_demo.jobs import ray_executor

    fake = ray_fake
    m = make_ray_manager()
    monkeypatch.setattr(ray_executor, "STOP_GRACE", 0.0)
    fake.control.flag("deaf", 134)
    fake.gate(134)
    job = m.submit(cfg(134), "a")
    assert fake.started(134).wait(WAIT)
    m.cancel(job, "a")
    for t in job_threads():
        t.join(WAIT)
    assert status(m, job) == "cancelled"
    assert not fake.gate(134).is_set()  # it never went on by itself: Ray stopped it


def test_without_the_variable_ray_is_never_imported():
    code = (
        "import sys\n"
        "from dropout_demo.jobs import manager\n"
        "m = manager.get_manager()\n"
        "assert type(m._executor).__name__ == 'ProcessExecutor', m._executor\n"
        "m.shutdown()\n"
        "assert 'ray' not in sys.modules and 'dropout_demo.jobs.ray_executor' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DROPOUT_DEMO_RAY"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.mnist
def test_real_training_through_ray_streams_epochs_and_returns_the_model(
    ray_cluster, mnist_dir, tmp_path
):
    from dropout_demo.jobs.ray_executor import RayExecutor

    store = RunStore(tmp_path / "store")
    m = JobManager(executor=RayExecutor("local", data_dir=str(mnist_dir)), cores=2, store=store)
    epochs, saved = [], threading.Event()
    m.add_finished_hook(lambda snap, model: snap.saved_run_id and saved.set())
    try:
        config = TrainConfig(train_size=1_024, eval_size=300, epochs=2, precision="fp32")
        job = m.submit(config, "a")
        assert saved.wait(300)
        snap = m.get(job, "a")
        assert snap.status == "done" and [e.epoch for e in snap.metrics] == [1, 2]
        assert snap.metrics[-1].test_images == 300 and snap.metrics[-1].test_acc > 0.5
        model = m.model(job, "a")
        assert isinstance(model, SimpleCNN)
        stored = store.load_model(snap.saved_run_id).state_dict()
        assert all(torch.equal(t, stored[k]) for k, t in model.state_dict().items())
        epochs.append(len(snap.metrics))
    finally:
        m.shutdown(timeout=300)


def test_a_local_ray_started_from_a_page_thread_outlives_that_thread(tmp_path):
    """Streamlit runs pages in threads that end; Ray's processes die with the thread that
    started them. The local Ray must be started so that it lives on (regression: the server
    lost its Ray seconds after the first page)."""
    code = (
        "import threading\n"
        "import ray\n"
        "from dropout_demo.jobs import ray_executor\n"
        "page = threading.Thread(target=lambda: ray_executor.connect('local'))\n"
        "page.start()\n"
        "page.join()\n"
        "@ray.remote\n"
        "def pid():\n"
        "    import os\n"
        "    return os.getpid()\n"
        "print('worker', ray.get(pid.remote(), timeout=240))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=420, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    assert done.returncode == 0 and "worker" in done.stdout, done.stderr[-2000:]
