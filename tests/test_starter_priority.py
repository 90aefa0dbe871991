"""The Draw page's default model goes first: a priority run skips the fair queue, starts above
the running cap with every core, and the other runs pause between batches until it ends.

Driven by events (a fake ``fit`` whose batches wait on gates the test sets); nothing here
measures a duration.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
import torch

from dropout_demo import starter
from dropout_demo.config import TrainConfig
from dropout_demo.jobs import JobManager
from dropout_demo.jobs import manager as manager_module
from dropout_demo.jobs.scheduler import Scheduler
from dropout_demo.model import SimpleCNN
from dropout_demo.runs import RunStore
from dropout_demo.training import EpochMetrics

WAIT = 60.0  # generous bound for an event that must happen; never a measured duration
FAKE_DATA = object()
CLASS = TrainConfig(train_size=256, eval_size=100, epochs=1)


# ---------------------------------------------------------------------------- scheduler
def make_scheduler(max_running=2, cores=2):
    started: list[tuple[str, int]] = []
    threads: dict[str, int] = {}

    def start(item, n):
        started.append((item, n))
        threads[item] = n

    return Scheduler(max_running, cores, start, threads.__getitem__), started


def test_a_priority_item_behind_a_full_queue_starts_next_above_the_cap():
    s, started = make_scheduler(max_running=2, cores=4)
    for i, owner in enumerate("abcabc"):
        s.enqueue(f"class-{i}", owner)
    s.dispatch()
    assert [item for item, _ in started] == ["class-0", "class-1"]  # the cap is full
    s.enqueue("starter", "system", priority=True)
    assert s.waiting()[0] == "starter" and s.positions()["starter"] == 1
    assert s.dispatch() == ["starter"]  # at once, though two runs hold the two slots
    assert started[-1] == ("starter", 4)  # every core: the others pause meanwhile
    assert s.running == {"class-0", "class-1", "starter"}
    assert s.dispatch() == []  # the class's own slots are still full
    s.finished("class-0")
    assert s.dispatch() == ["class-2"]  # the fair queue goes on in its own order
    assert not s.is_waiting("starter") and s.waiting_count() == 3


def test_priority_items_wait_for_the_priority_slot_in_order_and_never_take_class_slots():
    s, _ = make_scheduler(max_running=1)
    s.enqueue("first", "system", priority=True)
    s.enqueue("second", "system", priority=True)
    s.enqueue("class-0", "a")
    assert s.dispatch() == ["first", "class-0"]
    assert s.waiting() == ["second"]
    s.finished("class-0")
    assert s.dispatch() == []  # the class's slot is free, but "second" waits for its own
    s.finished("first")
    assert s.dispatch() == ["second"]
    assert s.priority_running == {"second"}


def test_promoting_a_queued_item_moves_it_out_of_the_fair_queue():
    s, _ = make_scheduler(max_running=1)
    s.enqueue("running", "a")
    s.dispatch()
    for item in ("x", "y", "z"):
        s.enqueue(item, "a")
    s.enqueue("z", "b", priority=True)  # someone with priority asks for a waiting run
    assert s.waiting() == ["z", "x", "y"]
    assert "z" not in s.queue
    s.remove("z")
    assert s.waiting() == ["x", "y"]
    assert s.drain() == ["x", "y"] and s.waiting_count() == 0


# ---------------------------------------------------------------------------- manager
@dataclass
class FakeResult:
    status: str
    metrics: list
    model: object
    config: TrainConfig
    message: str = ""
    precision: str = "fp32"


class GatedFit:
    """``fit`` stand-in: a run with a gate (by seed) waits at every batch for it; each batch
    calls ``should_stop`` first, as the real loop does, and counts the batches it ran."""

    def __init__(self, batches: int = 3):
        self.batches = batches
        self.gates: dict[int, threading.Event] = {}
        self.entered: dict[int, threading.Event] = {}
        self.done_batches: dict[int, int] = {}
        self.threads: dict[int, int] = {}
        self.idents: dict[int, int] = {}  # the thread each run trained in
        self.lock = threading.Lock()

    def gate(self, seed: int) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(seed, threading.Event())

    def started(self, seed: int) -> threading.Event:
        with self.lock:
            return self.entered.setdefault(seed, threading.Event())

    def __call__(self, config, data, on_epoch=None, should_stop=None, on_batch=None):
        self.threads[config.seed] = torch.get_num_threads()
        self.idents[config.seed] = threading.get_ident()
        self.started(config.seed).set()
        model = SimpleCNN(p=config.p).eval()
        for b in range(1, self.batches + 1):
            if should_stop():
                return FakeResult("cancelled", [], model, config)
            gate = self.gates.get(config.seed)
            while gate is not None and not gate.wait(0.01):
                if should_stop():
                    return FakeResult("cancelled", [], model, config)
            with self.lock:
                self.done_batches[config.seed] = b
            on_batch(1, b, self.batches)
        metrics = [EpochMetrics(1, 0.5, 0.9, 0.5, 0.9, 0.01)]
        on_epoch(metrics[0])
        return FakeResult("done", metrics, model, config)


@pytest.fixture
def fake():
    return GatedFit()


@pytest.fixture
def manager(fake):
    m = JobManager(
        data_provider=lambda: FAKE_DATA, fit_fn=fake, max_running=2, cores=2, release_grace=60
    )
    yield m
    for gate in list(fake.gates.values()):
        gate.set()
    m.shutdown(timeout=WAIT)


def test_a_priority_run_behind_a_full_queue_starts_next_and_the_others_pause(manager, fake):
    for seed in (1, 2, 3, 4):
        fake.gate(seed)
    running = [manager.submit(CLASS.replace(seed=s), f"student-{s}") for s in (1, 2)]
    queued = [manager.submit(CLASS.replace(seed=s), f"student-{s}") for s in (3, 4)]
    assert fake.started(1).wait(WAIT) and fake.started(2).wait(WAIT)
    assert manager.running_count() == 2 and manager.queued_count() == 2

    fake.gate(9)
    first = manager.submit(CLASS.replace(seed=9), "system:starter", priority=True)
    assert fake.started(9).wait(WAIT)  # started without waiting for a class run to end
    assert manager.get(first, "system:starter").status == "running"
    assert fake.threads[9] == 2  # every core
    assert [manager.get(q, f"student-{s}").status for q, s in zip(queued, (3, 4), strict=True)] == [
        "queued",
        "queued",
    ]

    # The class runs pause at their next batch: opening their gates lets them finish the
    # batch they are in, then they wait in should_stop while the priority run trains.
    before = dict(fake.done_batches)
    fake.gate(1).set()
    fake.gate(2).set()
    assert not threading.Event().wait(0.3)  # give them a chance to (wrongly) run on
    assert fake.done_batches.get(1, 0) <= before.get(1, 0) + 1
    assert fake.done_batches.get(2, 0) <= before.get(2, 0) + 1
    assert fake.done_batches.get(1, 0) < fake.batches and fake.done_batches.get(2, 0) < fake.batches
    assert manager.get(running[0], "student-1").status == "running"

    fake.gate(9).set()  # the priority run ends: the class runs go on and finish
    for job, seed in zip(running, (1, 2), strict=True):
        snap = wait_terminal(manager, job, f"student-{seed}")
        assert snap.status == "done"
    assert manager.get(first, "system:starter").status == "done"


def class_run_then_a_priority_run(manager, fake) -> str:
    """Owner "a"'s run (seed 1) started and gated, then the starter's (seed 9) started and
    gated: the class run pauses at its next stop check once its gate opens. Its job id."""
    fake.gate(1)
    job = manager.submit(CLASS.replace(seed=1), "a")
    assert fake.started(1).wait(WAIT)
    fake.gate(9)
    manager.submit(CLASS.replace(seed=9), "system:starter", priority=True)
    assert fake.started(9).wait(WAIT)
    return job


def test_a_paused_run_can_still_be_stopped(manager, fake):
    job = class_run_then_a_priority_run(manager, fake)
    fake.gate(1).set()  # now it would run on, but it is paused
    manager.cancel(job, "a")
    assert wait_terminal(manager, job, "a", allow_missing=True) in (None, "cancelled")


def test_a_paused_run_frees_its_openmp_threads_before_it_waits(manager, fake, monkeypatch):
    # Its pool would otherwise stay beside the priority run's, and libgomp would stop
    # spin-waiting for both (dropout_demo.openmp).
    freed: list[int] = []
    called = threading.Event()

    def recording_release() -> bool:
        freed.append(threading.get_ident())
        called.set()
        return True

    monkeypatch.setattr(manager_module, "release_pool", recording_release)
    job = class_run_then_a_priority_run(manager, fake)
    assert not freed  # nobody paused yet
    fake.gate(1).set()  # its next stop check pauses it
    assert called.wait(WAIT)
    assert freed == [fake.idents[1]]  # in the paused run's own thread, once
    fake.gate(9).set()
    assert wait_terminal(manager, job, "a").status == "done"
    assert freed == [fake.idents[1]]  # the priority run itself never pauses


def test_a_priority_request_for_a_queued_run_promotes_it(manager, fake):
    for seed in (1, 2, 3):
        fake.gate(seed)
    for seed in (1, 2, 3):
        manager.submit(CLASS.replace(seed=seed), "a")
    assert fake.started(1).wait(WAIT) and fake.started(2).wait(WAIT)
    assert not fake.started(3).is_set()
    manager.submit(CLASS.replace(seed=3), "system:starter", priority=True)
    assert fake.started(3).wait(WAIT)


def wait_terminal(manager, job, owner, allow_missing=False):
    done = threading.Event()
    result = []

    def poll():
        while not done.is_set():
            try:
                snap = manager.get(job, owner)
            except Exception:
                if allow_missing:
                    result.append(None)
                    return
                raise
            if snap.is_terminal:
                result.append(snap if not allow_missing else snap.status)
                return
            done.wait(0.02)

    thread = threading.Thread(target=poll)
    thread.start()
    thread.join(WAIT)
    done.set()
    assert result, "the run never ended"
    return result[0]


# ---------------------------------------------------------------------------- the starter
def test_the_starter_asks_for_priority_and_its_recipe_is_the_pen_preset(
    monkeypatch, tmp_path, manager, fake
):
    from dropout_demo.config import PRESETS, STARTER_PRESET

    monkeypatch.delenv(starter.CONFIG_ENV, raising=False)
    assert starter.starter_config() == PRESETS[STARTER_PRESET]
    assert starter.starter_config().augment == "pen"
    assert PRESETS["Seed recipe"].augment == "none"

    monkeypatch.setenv(starter.CONFIG_ENV, "train_size=256,epochs=1,eval_size=100,seed=9")
    starter._reset_for_tests()
    try:
        fake.gate(1)
        fake.gate(2)
        fake.gate(3)
        for seed in (1, 2, 3):  # a class fills both slots and the queue
            manager.submit(CLASS.replace(seed=seed), f"student-{seed}")
        assert fake.started(1).wait(WAIT) and fake.started(2).wait(WAIT)
        status = starter.ensure_default_model(RunStore(tmp_path), manager)
        assert status.state in ("queued", "training")
        assert fake.started(9).wait(WAIT)  # ahead of the queued class run 3
        assert not fake.started(3).is_set()
    finally:
        starter._reset_for_tests()


def test_a_starter_of_an_earlier_recipe_is_not_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv(starter.CONFIG_ENV, "train_size=256,epochs=1,eval_size=100")
    store = RunStore(tmp_path)
    old = starter.starter_config().replace(augment="none")
    store.save(
        old,
        [EpochMetrics(1, 0.5, 0.9, 0.5, 0.9, 0.01)],
        SimpleCNN(p=0.5),
        name=starter.STARTER_NAME,
        tags=(starter.STARTER_TAG,),
    )
    assert starter.find_starter(store) is None
    assert starter.find_starter(store, old) is not None
