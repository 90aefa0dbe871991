"""Job manager: queueing, limits, cancellation, failures, owners, release, threads.

Most tests drive the manager with a fake ``fit`` whose "batches" are controlled by the test,
so they check the manager's logic without depending on training speed; two use the real
``fit`` on real MNIST.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import threading
import time
from dataclasses import dataclass

import pytest
import torch

from dropout_demo import jobs as jobs_module
from dropout_demo.config import TrainConfig
from dropout_demo.data import normalize
from dropout_demo.jobs import TERMINAL, THREAD_PREFIX, JobError, JobManager, get_manager
from dropout_demo.model import SimpleCNN
from dropout_demo.runs import RunStore
from dropout_demo.training import EpochMetrics

TINY = TrainConfig(train_size=256, eval_size=100, epochs=2)
FAKE_DATA = object()


def job_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@dataclass
class FakeResult:
    status: str
    metrics: list
    model: object
    config: TrainConfig
    message: str = ""


class FakeFit:
    """A stand-in for ``training.fit`` that honours the same callbacks.

    Each "batch" either sleeps ``batch_seconds`` or, when the config's seed has a gate, waits
    for that gate (so a test decides exactly when a job may proceed). ``should_stop`` is
    checked before every batch, like the real loop.
    """

    def __init__(self, batches: int = 4, batch_seconds: float = 0.001):
        self.batches = batches
        self.batch_seconds = batch_seconds
        self.gates: dict[int, threading.Event] = {}
        self.raise_for: set[int] = set()
        self.diverge_for: set[int] = set()
        self.lock = threading.Lock()
        self.running = 0
        self.max_seen_running = 0
        self.thread_counts: list[int] = []
        self.threads_after_batch: dict[int, list[int]] = collections.defaultdict(list)
        self.batches_after_stop: dict[int, int] = {}
        self.waiting: set[int] = set()  # seeds whose run has reached a gated batch

    def gate(self, seed: int) -> threading.Event:
        return self.gates.setdefault(seed, threading.Event())

    def __call__(self, config, data, on_epoch=None, should_stop=None, on_batch=None):
        assert data is FAKE_DATA
        with self.lock:
            self.running += 1
            self.max_seen_running = max(self.max_seen_running, self.running)
            self.thread_counts.append(torch.get_num_threads())
        try:
            return self._fit(config, on_epoch, should_stop, on_batch)
        finally:
            with self.lock:
                self.running -= 1

    def _fit(self, config, on_epoch, should_stop, on_batch):
        if config.seed in self.raise_for:
            raise ValueError(f"boom in run {config.seed}")
        metrics = []
        model = SimpleCNN(p=config.p).eval()
        for epoch in range(1, config.epochs + 1):
            for b in range(1, self.batches + 1):
                if should_stop():
                    return FakeResult("cancelled", metrics, model, config)
                gate = self.gates.get(config.seed)
                if gate is not None:
                    self.waiting.add(config.seed)
                    while not gate.wait(0.002):
                        if should_stop():
                            # the batch in flight finishes, then the loop sees the stop
                            self.batches_after_stop[config.seed] = 1
                            break
                else:
                    time.sleep(self.batch_seconds)
                on_batch(epoch, b, self.batches)
                self.threads_after_batch[config.seed].append(torch.get_num_threads())
            m = EpochMetrics(
                epoch=epoch,
                train_loss=1.0 / epoch,
                train_acc=0.5,
                test_loss=float("nan") if config.seed in self.diverge_for else 1.1 / epoch,
                test_acc=0.5,
                seconds=0.01 * epoch,
            )
            on_epoch(m)
            metrics.append(m)
            if config.seed in self.diverge_for:
                return FakeResult("diverged", metrics, model, config, "loss became nan in epoch 1")
        return FakeResult("done", metrics, model, config)


@pytest.fixture
def fake():
    return FakeFit()


@pytest.fixture
def make_manager(fake):
    managers = []

    def make(**kw):
        kw.setdefault("fit_fn", fake)
        kw.setdefault("data_provider", lambda: FAKE_DATA)
        kw.setdefault("max_running", 2)
        manager = JobManager(**kw)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.shutdown(timeout=10)
    assert wait_until(lambda: not job_threads(), timeout=5), job_threads()


def statuses(manager, owner):
    return [s.status for s in manager.snapshot(owner)]


def all_terminal(manager, owner):
    return all(s.is_terminal for s in manager.snapshot(owner))


# ---------------------------------------------------------------- the whole life cycle


def test_twenty_jobs_cap_two_random_cancels_all_finish_and_leave_no_threads(make_manager, fake):
    fake.batch_seconds = 0.002
    manager = make_manager(max_running=2, max_per_owner=20, max_queued=20)
    rng = random.Random(0)
    owners = ["ann", "bob", "cyd"]
    submitted = []
    for i in range(20):
        owner = owners[i % 3]
        submitted.append((manager.submit(TINY.replace(seed=i), owner), owner))
        if rng.random() < 0.3:
            job_id, who = rng.choice(submitted)
            manager.cancel(job_id, who)
        time.sleep(rng.random() * 0.004)
        assert manager.running_count() <= 2
    for job_id, owner in rng.sample(submitted, 6):
        manager.cancel(job_id, owner)

    assert wait_until(lambda: all(all_terminal(manager, o) for o in owners), timeout=20)
    assert wait_until(lambda: not job_threads(), timeout=5), job_threads()
    final = [manager.get(job_id, owner) for job_id, owner in submitted]
    assert {s.status for s in final} <= {"done", "cancelled"}
    assert {s.status for s in final} == {"done", "cancelled"}  # the random cancels hit some
    assert all(s.queue_position is None for s in final)
    assert fake.max_seen_running <= 2
    for s in final:
        if s.status == "done":
            assert s.has_model and len(s.metrics) == TINY.epochs and s.finished >= s.started
    assert manager.running_count() == 0 and manager.queued_count() == 0


def test_done_job_snapshot_has_metrics_progress_and_model(make_manager):
    manager = make_manager()
    job_id = manager.submit(TINY, "ann")
    assert wait_until(lambda: manager.get(job_id, "ann").is_terminal)
    snap = manager.get(job_id, "ann")
    assert snap.status == "done" and snap.error is None
    assert snap.name == TINY.label() and snap.config == TINY
    assert [m.epoch for m in snap.metrics] == [1, 2] and snap.epoch == 2
    assert snap.overall_progress == 1.0 and snap.elapsed > 0
    model = manager.model(job_id, "ann")
    assert isinstance(model, SimpleCNN) and not model.training


def test_queue_positions_are_fifo_and_move_up(make_manager, fake):
    manager = make_manager(max_running=1)
    for i in range(4):
        fake.gate(i)
    ids = [manager.submit(TINY.replace(seed=i), "ann") for i in range(4)]
    assert wait_until(lambda: manager.get(ids[0], "ann").status == "running")
    positions = [s.queue_position for s in manager.snapshot("ann")]
    assert positions == [None, 1, 2, 3]
    assert statuses(manager, "ann") == ["running", "queued", "queued", "queued"]

    # another owner's job queues behind everybody else's
    other = manager.submit(TINY.replace(seed=9), "bob")
    assert manager.get(other, "bob").queue_position == 4

    manager.cancel(ids[1], "ann")  # a queued job leaves the queue at once
    assert manager.get(ids[1], "ann").status == "cancelled"
    assert [s.queue_position for s in manager.snapshot("ann")] == [None, None, 1, 2]
    assert manager.get(other, "bob").queue_position == 3

    fake.gate(0).set()  # the running job finishes; the head of the queue starts
    assert wait_until(lambda: manager.get(ids[2], "ann").status == "running")
    assert manager.get(ids[0], "ann").status == "done"
    assert manager.get(ids[3], "ann").queue_position == 1
    assert manager.get(other, "bob").queue_position == 2
    assert manager.queued_count() == 2 and manager.running_count() == 1


# ---------------------------------------------------------------- owners


def test_owners_cannot_see_or_touch_each_others_jobs(make_manager, fake, tmp_path):
    manager = make_manager()
    fake.gate(1)
    done = manager.submit(TINY, "ann")
    running = manager.submit(TINY.replace(seed=1), "ann")
    assert wait_until(lambda: manager.get(done, "ann").status == "done")
    assert manager.snapshot("bob") == ()

    with pytest.raises(JobError) as missing:
        manager.get("job-999-nothing", "bob")
    store = RunStore(tmp_path)
    for job_id in (done, running):
        for method, args in (
            (manager.get, ()),
            (manager.cancel, ()),
            (manager.remove, ()),
            (manager.model, ()),
            (manager.save, (store,)),
        ):
            with pytest.raises(JobError) as refused:
                method(job_id, "bob", *args)
            assert str(refused.value) == str(missing.value)  # existence is not leaked
    assert manager.get(running, "ann").status == "running"  # bob's cancel did nothing
    assert manager.get(done, "ann").has_model
    fake.gate(1).set()


def test_remove_forgets_finished_jobs_only(make_manager, fake):
    manager = make_manager()
    fake.gate(1)
    done = manager.submit(TINY, "ann")
    running = manager.submit(TINY.replace(seed=1), "ann")
    assert wait_until(lambda: manager.get(done, "ann").is_terminal)
    with pytest.raises(JobError, match="Stop this run"):
        manager.remove(running, "ann")
    manager.remove(done, "ann")
    assert [s.id for s in manager.snapshot("ann")] == [running]
    with pytest.raises(JobError, match="No such run"):
        manager.get(done, "ann")
    fake.gate(1).set()


# ---------------------------------------------------------------- failures


def test_exception_in_run_fails_that_job_and_the_next_one_still_runs(make_manager, fake):
    fake.raise_for.add(1)
    manager = make_manager(max_running=1)
    bad = manager.submit(TINY.replace(seed=1), "ann")
    good = manager.submit(TINY.replace(seed=2), "ann")
    assert wait_until(lambda: all_terminal(manager, "ann"))
    failed = manager.get(bad, "ann")
    assert failed.status == "failed"
    assert failed.error == "ValueError: boom in run 1"
    assert not failed.has_model and manager.model(bad, "ann") is None
    assert manager.get(good, "ann").status == "done"
    assert wait_until(lambda: not job_threads())


def test_data_loading_error_fails_the_job_with_its_message(make_manager):
    from dropout_demo.data import DataError

    def no_data():
        raise DataError("MNIST file /nowhere/train-images-idx3-ubyte is missing")

    manager = make_manager(data_provider=no_data)
    job_id = manager.submit(TINY, "ann")
    assert wait_until(lambda: manager.get(job_id, "ann").is_terminal)
    snap = manager.get(job_id, "ann")
    assert snap.status == "failed"
    assert snap.error == "DataError: MNIST file /nowhere/train-images-idx3-ubyte is missing"
    assert manager.submit(TINY, "ann")  # the manager keeps working


def test_diverged_fit_marks_job_diverged_with_message(make_manager, fake):
    fake.diverge_for.add(3)
    manager = make_manager()
    job_id = manager.submit(TINY.replace(seed=3), "ann")
    assert wait_until(lambda: manager.get(job_id, "ann").is_terminal)
    snap = manager.get(job_id, "ann")
    assert snap.status == "diverged"
    assert snap.error == "loss became nan in epoch 1"
    assert len(snap.metrics) == 1 and not snap.has_model


# ---------------------------------------------------------------- cancellation


def test_cancel_running_job_is_honoured_within_one_batch(make_manager, fake):
    fake.batches = 1000
    fake.batch_seconds = 0.005
    manager = make_manager()
    job_id = manager.submit(TINY, "ann")
    assert wait_until(lambda: manager.get(job_id, "ann").batch >= 3)
    before = manager.get(job_id, "ann")
    manager.cancel(job_id, "ann")
    asked = manager.get(job_id, "ann")
    assert asked.status == "running" and asked.stop_requested
    assert wait_until(lambda: manager.get(job_id, "ann").is_terminal, timeout=2)
    after = manager.get(job_id, "ann")
    assert after.status == "cancelled" and not after.stop_requested
    # at most the batch in flight (plus one reported between the two snapshots) completes
    assert after.batch - before.batch <= 2
    assert after.epoch == 0 and after.has_model  # a stopped run keeps its weights
    manager.cancel(job_id, "ann")  # cancelling a finished job is a no-op
    assert manager.get(job_id, "ann").status == "cancelled"


def test_cancel_interrupts_a_batch_that_waits(make_manager, fake):
    manager = make_manager()
    fake.gate(5)
    job_id = manager.submit(TINY.replace(seed=5), "ann")
    assert wait_until(lambda: 5 in fake.waiting)
    manager.cancel(job_id, "ann")
    assert wait_until(lambda: manager.get(job_id, "ann").status == "cancelled", timeout=2)
    assert fake.batches_after_stop[5] == 1
    assert manager.get(job_id, "ann").batch == 1


# ---------------------------------------------------------------- snapshots


def test_snapshots_are_immutable_copies(make_manager, fake):
    manager = make_manager()
    fake.gate(7)
    job_id = manager.submit(TINY.replace(seed=7), "ann")
    assert wait_until(lambda: manager.get(job_id, "ann").status == "running")
    (snap,) = manager.snapshot("ann")
    assert isinstance(snap.metrics, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.status = "done"
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.config.epochs = 99
    fake.gate(7).set()
    assert wait_until(lambda: manager.get(job_id, "ann").status == "done")
    assert snap.status == "running" and snap.metrics == () and snap.finished is None
    assert len(manager.get(job_id, "ann").metrics) == 2


def test_snapshot_can_be_read_from_another_thread_while_training(make_manager, fake):
    fake.batches = 50
    manager = make_manager()
    job_id = manager.submit(TINY.replace(epochs=3), "ann")
    seen = []
    while not manager.get(job_id, "ann").is_terminal:
        snap = manager.get(job_id, "ann")
        seen.append((snap.epoch, snap.batch, snap.progress))
        assert 0.0 <= snap.progress <= 1.0 and len(snap.metrics) == snap.epoch
        time.sleep(0.001)
    assert seen and manager.get(job_id, "ann").status == "done"


# ---------------------------------------------------------------- limits


def test_limits_refuse_with_clear_errors(make_manager, fake):
    manager = make_manager(max_running=1, max_per_owner=4, max_queued=3, max_work=60_000 * 10)
    with pytest.raises(JobError) as too_big:
        manager.submit(TrainConfig(epochs=11), "ann")
    message = str(too_big.value)
    assert "11 epochs × 60,000 images = 660,000" in message and "600,000" in message

    fake.gate(0)
    ids = [manager.submit(TINY.replace(seed=0), "ann") for _ in range(4)]
    with pytest.raises(JobError) as too_many:
        manager.submit(TINY, "ann")
    assert str(too_many.value) == "You already have 4 runs queued or running; stop one or wait"
    assert manager.queued_count() == 3  # the owner cap counts queued and running jobs

    with pytest.raises(JobError, match=r"queue is full \(3 runs waiting\)"):
        manager.submit(TINY, "bob")
    manager.cancel(ids[-1], "ann")  # room again, for ann and for bob
    manager.submit(TINY, "bob")
    manager.cancel(ids[1], "ann")
    manager.submit(TINY.replace(seed=0), "ann")
    fake.gate(0).set()

    manager.shutdown()
    with pytest.raises(JobError, match="shut down"):
        manager.submit(TINY, "ann")


# ---------------------------------------------------------------- owners that go away


def test_release_drops_queued_now_and_cancels_running_after_grace(make_manager, fake):
    manager = make_manager(max_running=1, release_grace=0.2)
    fake.gate(1)
    running = manager.submit(TINY.replace(seed=1), "ann")
    queued = manager.submit(TINY.replace(seed=1), "ann")
    bobs = manager.submit(TINY.replace(seed=2), "bob")
    assert wait_until(lambda: manager.get(running, "ann").status == "running")

    manager.release("ann")
    assert manager.get(queued, "ann").status == "cancelled"
    assert manager.get(running, "ann").status == "running"  # within the grace period
    assert manager.get(bobs, "bob").queue_position == 1
    time.sleep(0.1)
    assert manager.get(running, "ann").status == "running"
    # after the grace period the run is stopped and the gone owner's jobs are forgotten
    assert wait_until(lambda: manager.snapshot("ann") == (), timeout=2)
    assert wait_until(lambda: manager.get(bobs, "bob").status == "done")
    assert not [t for t in threading.enumerate() if t.name.startswith("dropout-release")]


def test_touch_within_grace_keeps_runs(make_manager, fake):
    manager = make_manager(release_grace=0.2)
    fake.gate(1)
    running = manager.submit(TINY.replace(seed=1), "ann")
    assert wait_until(lambda: manager.get(running, "ann").status == "running")
    manager.release("ann")
    time.sleep(0.05)
    manager.touch("ann")  # the session reconnected
    time.sleep(0.4)
    assert manager.get(running, "ann").status == "running"
    fake.gate(1).set()
    assert wait_until(lambda: manager.get(running, "ann").status == "done")
    assert not [t for t in threading.enumerate() if t.name.startswith("dropout-release")]


def test_release_of_an_owner_without_jobs_starts_no_thread(make_manager):
    manager = make_manager(release_grace=0.2)
    manager.release("nobody")
    assert not [t for t in threading.enumerate() if t.name.startswith("dropout-release")]


def test_release_forgets_finished_jobs_and_their_models_after_grace(make_manager):
    manager = make_manager(release_grace=0.1)
    job_id = manager.submit(TINY, "ann")
    assert wait_until(lambda: manager.get(job_id, "ann").is_terminal)
    manager.release("ann")
    assert manager.get(job_id, "ann").has_model  # still there during the grace period
    assert wait_until(lambda: manager.snapshot("ann") == (), timeout=2)
    assert wait_until(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("dropout-release")]
    )
    # a returning owner starts afresh
    again = manager.submit(TINY, "ann")
    assert wait_until(lambda: manager.get(again, "ann").status == "done")


# ---------------------------------------------------------------- memory, threads, shutdown


def test_finished_jobs_beyond_the_keep_limit_are_pruned_oldest_first(make_manager):
    manager = make_manager(max_running=1, keep_finished=3, max_per_owner=10)
    ids = [manager.submit(TINY.replace(seed=i), "ann") for i in range(5)]
    assert wait_until(lambda: len(manager.snapshot("ann")) == 3 and all_terminal(manager, "ann"))
    assert [s.id for s in manager.snapshot("ann")] == ids[2:]


def test_running_jobs_share_the_cores_and_a_lone_job_gets_them_all(make_manager, fake, monkeypatch):
    main_threads = torch.get_num_threads()
    monkeypatch.setattr(jobs_module, "available_cores", lambda: 4)
    manager = make_manager(max_running=2)
    fake.gate(1)
    fake.gate(2)
    first = manager.submit(TINY.replace(seed=1), "ann")
    assert wait_until(lambda: 1 in fake.waiting)
    second = manager.submit(TINY.replace(seed=2), "ann")
    assert wait_until(lambda: 2 in fake.waiting)
    fake.gates[1].set()  # the first run goes on while the second holds the other slot
    assert wait_until(lambda: manager.get(first, "ann").is_terminal)
    fake.gates[2].set()  # now alone
    assert wait_until(lambda: manager.get(second, "ann").is_terminal)
    assert fake.thread_counts == [4, 2]  # alone at start, then one of two
    assert set(fake.threads_after_batch[1]) == {2}
    assert fake.threads_after_batch[2][-1] == 4
    assert torch.get_num_threads() == main_threads  # the caller's thread is left alone


def test_shutdown_stops_everything_and_joins_threads(make_manager, fake):
    manager = make_manager(max_running=1, release_grace=60)
    fake.gate(1)
    running = manager.submit(TINY.replace(seed=1), "ann")
    queued = manager.submit(TINY.replace(seed=1), "ann")
    other = manager.submit(TINY.replace(seed=1), "bob")
    manager.release("bob")  # leaves a pending 60 s release timer
    assert wait_until(lambda: manager.get(running, "ann").status == "running")
    manager.shutdown(timeout=5)
    assert manager.get(running, "ann").status == "cancelled"
    assert manager.get(queued, "ann").status == "cancelled"
    assert manager.get(other, "bob").status == "cancelled"
    assert not job_threads()
    assert not [t for t in threading.enumerate() if t.name.startswith("dropout-release")]
    manager.shutdown()  # idempotent


def test_get_manager_is_one_lazy_singleton(monkeypatch):
    monkeypatch.setattr(jobs_module, "_manager", None)
    found = []
    threads = [threading.Thread(target=lambda: found.append(get_manager())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len({id(m) for m in found}) == 1
        assert get_manager() is found[0]
        assert found[0].max_running >= 1
    finally:
        found[0].shutdown()
    assert get_manager() is not found[0]  # a shut-down manager is replaced
    get_manager().shutdown()


# ---------------------------------------------------------------- saving


def test_save_finished_job_to_run_store_and_load_back(make_manager, tmp_path):
    manager = make_manager()
    store = RunStore(tmp_path / "runs")
    job_id = manager.submit(TINY.replace(p=0.25), "ann")
    assert wait_until(lambda: manager.get(job_id, "ann").is_terminal)
    record = manager.save(job_id, "ann", store)
    assert manager.get(job_id, "ann").saved_run_id == record.id
    assert manager.save(job_id, "ann", store).id == record.id  # saving twice: one run
    assert [r.id for r in store.list()] == [record.id]
    assert record.config == TINY.replace(p=0.25) and record.status == "done"
    assert record.metrics == manager.get(job_id, "ann").metrics

    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(store.load_model(record.id)(x), manager.model(job_id, "ann")(x))


def test_concurrent_saves_of_one_job_write_one_run(make_manager, tmp_path):
    manager = make_manager()
    store = RunStore(tmp_path / "runs")
    job_id = manager.submit(TINY, "ann")
    assert wait_until(lambda: manager.get(job_id, "ann").is_terminal)
    records = []
    threads = [
        threading.Thread(target=lambda: records.append(manager.save(job_id, "ann", store)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.id for r in records}) == 1 and len(store.list()) == 1


def test_save_refuses_a_job_without_a_model(make_manager, fake, tmp_path):
    fake.raise_for.add(1)
    manager = make_manager()
    job_id = manager.submit(TINY.replace(seed=1), "ann")
    assert wait_until(lambda: manager.get(job_id, "ann").is_terminal)
    with pytest.raises(JobError, match="no trained model"):
        manager.save(job_id, "ann", RunStore(tmp_path))


# ---------------------------------------------------------------- the real thing


@pytest.mark.mnist
def test_real_fit_on_real_mnist_runs_to_done_and_cancels_fast(mnist, tmp_path):
    manager = JobManager(data_provider=lambda: mnist, max_running=2)
    try:
        tiny = manager.submit(TrainConfig(train_size=256, eval_size=200, epochs=1), "ann")
        big = manager.submit(TrainConfig(epochs=1), "ann")  # full MNIST, batch 64
        assert wait_until(lambda: manager.get(big, "ann").batch >= 5, timeout=60)
        before = manager.get(big, "ann")
        t0 = time.monotonic()
        manager.cancel(big, "ann")
        assert wait_until(lambda: manager.get(big, "ann").is_terminal, timeout=10)
        latency = time.monotonic() - t0
        after = manager.get(big, "ann")
        assert after.status == "cancelled" and after.batch - before.batch <= 2
        assert latency < 5  # generous; the measured figure is in the closing note

        assert wait_until(lambda: manager.get(tiny, "ann").is_terminal, timeout=60)
        done = manager.get(tiny, "ann")
        assert done.status == "done", done.error
        (m,) = done.metrics
        assert m.epoch == 1 and 0.0 <= m.test_acc <= 1.0 and m.train_loss > 0
        record = manager.save(tiny, "ann", RunStore(tmp_path))
        x = normalize(mnist.test_images[:8])
        with torch.no_grad():
            expected = manager.model(tiny, "ann")(x)
            assert torch.equal(RunStore(tmp_path).load_model(record.id)(x), expected)
    finally:
        manager.shutdown(timeout=30)
    assert not job_threads()


def test_statuses_are_the_contracts():
    assert frozenset({"done", "cancelled", "failed", "diverged"}) == TERMINAL


def test_oversized_batches_are_refused(make_manager):
    manager = make_manager(max_running=1)
    with pytest.raises(JobError, match="Batch size 60,000 is too large"):
        manager.submit(TINY.replace(batch_size=60_000, train_size=60_000, epochs=1), "ann")
    assert manager.snapshot("ann") == ()
