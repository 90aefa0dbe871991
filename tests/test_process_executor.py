"""The process executor: runs in worker processes, their stop, hold, death and clean-up."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import process_fakes
import pytest
import torch

from dropout_demo.config import TrainConfig
from dropout_demo.jobs import JobManager
from dropout_demo.jobs import manager as manager_module
from dropout_demo.jobs.executors import CANCELLED, DONE, FAILED, Outcome, RunTask
from dropout_demo.jobs.process_executor import ProcessExecutor
from dropout_demo.jobs.process_worker import Controls

WAIT = 300.0  # bound for events that must happen (a cold worker imports torch); not a duration
TESTS = str(Path(__file__).resolve().parent)
FAKE_FIT, FAKE_DATA = "process_fakes:fit", "process_fakes:data"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purposes
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.02)


@pytest.fixture
def fake_dir(tmp_path, monkeypatch):
    """Workers started in this test import ``process_fakes`` and see this directory."""
    monkeypatch.setenv("DROPOUT_DEMO_FAKE_DIR", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", TESTS)
    return tmp_path


@pytest.fixture
def executors(fake_dir):
    made: list[ProcessExecutor] = []

    def make(**kwargs) -> ProcessExecutor:
        kwargs.setdefault("fit", FAKE_FIT)
        kwargs.setdefault("data", FAKE_DATA)
        kwargs.setdefault("warm_up", None)
        executor = ProcessExecutor(**kwargs)
        made.append(executor)
        return executor

    yield make
    for recorder in Recorder.made:  # a failed test's runs end too
        recorder.stop.set()
    Recorder.made.clear()
    for executor in made:
        pids = executor.worker_pids()
        executor.shutdown(timeout=WAIT)
        assert executor.worker_pids() == []
        for pid in pids:
            wait_for(lambda pid=pid: not pid_alive(pid), f"worker {pid} exiting")


class Recorder:
    """A run's callbacks, recorded; ``done`` is set by ``on_finish``."""

    made: ClassVar[list[Recorder]] = []

    def __init__(self, seed: int, threads: int = 1, epochs: int = 2, held=None):
        Recorder.made.append(self)
        self.config = TrainConfig(train_size=64, epochs=epochs, seed=seed)
        self.threads = threads
        self.stop = threading.Event()
        self.held = held or (lambda: False)
        self.batches: list[tuple[int, int]] = []
        self.epochs: list = []
        self.outcome: Outcome | None = None
        self.done = threading.Event()

    def task(self) -> RunTask:
        return RunTask(
            name=f"test-{self.config.seed}",
            config=self.config,
            threads=self.threads,
            should_stop=self.stop.is_set,
            on_batch=lambda b, n: self.batches.append((b, n)),
            on_epoch=self.epochs.append,
            on_finish=self._finish,
            held=self.held,
        )

    def _finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.done.set()

    def wait(self) -> Outcome:
        assert self.done.wait(WAIT), "the run never finished"
        assert self.outcome is not None
        return self.outcome


def started(fake_dir: Path, seed: int) -> tuple[int, int]:
    """(worker pid, its torch threads) once the fake fit of ``seed`` began."""
    path = fake_dir / f"started-{seed}"
    wait_for(lambda: path.exists() and path.read_text(), f"run {seed} starting")
    pid, threads, _nice = path.read_text().split()
    return int(pid), int(threads)


def nice_of_run(fake_dir: Path, seed: int) -> int:
    started(fake_dir, seed)
    return int((fake_dir / f"started-{seed}").read_text().split()[2])


def test_a_run_streams_its_epochs_and_returns_its_weights_from_a_worker(executors, fake_dir):
    executor = executors()
    run = Recorder(seed=7, threads=2, epochs=3)
    executor.start(run.task())
    outcome = run.wait()
    assert outcome.status == DONE and outcome.error is None
    assert [m.epoch for m in run.epochs] == [1, 2, 3]
    assert [m.epoch for m in outcome.metrics] == [1, 2, 3]
    assert run.batches[-1] == (3, 3)  # the last batch of an epoch is always reported
    assert torch.equal(outcome.model.fc2.bias, torch.full((10,), 7.0))  # the worker's weights
    assert not outcome.model.training
    pid, threads = started(fake_dir, 7)
    assert pid != os.getpid() and pid in executor.worker_pids()  # another process...
    assert threads == 2  # ...with the run's torch threads


def test_one_worker_trains_runs_one_after_another_and_side_by_side(executors, fake_dir):
    executor = executors()
    first, second = Recorder(seed=10), Recorder(seed=11)
    executor.start(first.task())
    assert first.wait().status == DONE
    executor.start(second.task())
    assert second.wait().status == DONE
    gated = Recorder(seed=process_fakes.GATED, threads=2)
    beside = Recorder(seed=16, threads=1)
    executor.start(gated.task())
    executor.start(beside.task())
    assert beside.wait().status == DONE  # while the gated run is still in the worker
    assert not gated.done.is_set()
    (fake_dir / f"release-{process_fakes.GATED}").touch()
    assert gated.wait().status == DONE
    pids = {started(fake_dir, seed)[0] for seed in (10, 11, process_fakes.GATED, 16)}
    assert pids == set(executor.worker_pids()) and len(pids) == 1
    # each run's thread has its own torch thread count, as in the thread executor
    assert started(fake_dir, process_fakes.GATED)[1] == 2 and started(fake_dir, 16)[1] == 1


def test_stop_cancels_a_run_between_batches_and_keeps_the_worker(executors, fake_dir):
    executor = executors()
    run = Recorder(seed=process_fakes.GATED)
    executor.start(run.task())
    pid, _ = started(fake_dir, process_fakes.GATED)
    run.stop.set()
    assert run.wait().status == CANCELLED
    assert executor.worker_pids() == [pid]  # the worker lives on for the next run


def test_a_run_that_ignores_its_stop_alone_in_its_worker_gets_the_worker_killed(
    executors, fake_dir, monkeypatch
):
    from dropout_demo.jobs import process_executor

    monkeypatch.setattr(process_executor, "STOP_GRACE", 0.0)
    executor = executors()
    run = Recorder(seed=process_fakes.DEAF)
    executor.start(run.task())
    pid, _ = started(fake_dir, process_fakes.DEAF)
    run.stop.set()
    assert run.wait().status == CANCELLED
    wait_for(lambda: not pid_alive(pid), "the deaf run's worker being killed")
    after = Recorder(seed=17)
    executor.start(after.task())
    assert after.wait().status == DONE  # in a new worker
    assert started(fake_dir, 17)[0] != pid


def test_a_run_that_ignores_its_stop_beside_another_is_given_up_on_not_killed(
    executors, fake_dir, monkeypatch
):
    from dropout_demo.jobs import process_executor

    monkeypatch.setattr(process_executor, "STOP_GRACE", 0.0)
    executor = executors()
    other = Recorder(seed=process_fakes.GATED)
    executor.start(other.task())
    started(fake_dir, process_fakes.GATED)
    deaf = Recorder(seed=process_fakes.DEAF)
    executor.start(deaf.task())
    pid, _ = started(fake_dir, process_fakes.DEAF)
    deaf.stop.set()
    assert deaf.wait().status == CANCELLED
    (fake_dir / f"release-{process_fakes.GATED}").touch()
    (fake_dir / f"release-{process_fakes.DEAF}").touch()
    assert other.wait().status == DONE  # the worker it shared was left alive
    assert executor.worker_pids() == [pid]


def test_a_worker_that_dies_fails_its_run_with_the_reason_and_the_next_run_works(
    executors, fake_dir
):
    executor = executors()
    dead = Recorder(seed=process_fakes.DIES)
    executor.start(dead.task())
    outcome = dead.wait()
    assert outcome.status == FAILED
    assert "training process" in outcome.error and "exit code 3" in outcome.error
    after = Recorder(seed=12)
    executor.start(after.task())
    assert after.wait().status == DONE


def test_an_exception_in_fit_fails_the_run_with_its_message(executors, fake_dir):
    executor = executors()
    run = Recorder(seed=process_fakes.RAISES)
    executor.start(run.task())
    outcome = run.wait()
    assert outcome.status == FAILED and "ValueError: boom in run 4" in outcome.error


def test_a_held_run_waits_until_released(executors, fake_dir):
    executor = executors()
    hold = threading.Event()
    hold.set()
    held = Recorder(seed=13, held=hold.is_set)
    executor.start(held.task())
    free = Recorder(seed=18)  # sent to the same worker after it, and never held
    executor.start(free.task())
    assert free.wait().status == DONE
    assert not (fake_dir / "started-13").exists() and held.epochs == []
    hold.clear()
    assert held.wait().status == DONE
    assert len(held.epochs) == 2


def test_a_held_run_can_still_be_stopped(executors, fake_dir):
    executor = executors()
    run = Recorder(seed=14, held=lambda: True)
    executor.start(run.task())
    run.stop.set()
    assert run.wait().status == CANCELLED
    assert run.epochs == [] and not (fake_dir / "started-14").exists()


def test_controls_block_while_held_and_return_on_stop():
    controls = Controls(held=True)
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(controls.should_stop()))
    waiter.start()
    waiter.join(0.05)
    assert waiter.is_alive()  # held: still waiting
    controls.set(stop=True)
    waiter.join(WAIT)
    assert answers == [True]
    assert Controls().should_stop() is False


def test_the_warm_worker_takes_the_first_run(executors, fake_dir):
    executor = executors()
    executor.warm()
    (pid,) = executor.worker_pids()
    run = Recorder(seed=15)
    executor.start(run.task())
    assert run.wait().status == DONE
    assert started(fake_dir, 15)[0] == pid


def test_the_workers_main_thread_keeps_one_torch_thread_and_runs_get_theirs(executors, fake_dir):
    """libgomp stops spin-waiting while its pools hold more threads than there are cores, so an
    OpenMP pool left in the worker's long-lived main thread would slow every two-thread run:
    the warm-up is told the cores and the main thread stays at one; runs set their own."""
    executor = executors(warm_up="process_fakes:warm_up")
    executor.warm()
    wait_for(lambda: (fake_dir / "warm").exists(), "the warm-up")
    cores, main_threads, in_main = (fake_dir / "warm").read_text().split()
    assert (int(main_threads), in_main) == (1, "True")
    default = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert int(cores) == int(default)  # torch's default in a fresh process: all cores
    run = Recorder(seed=16, threads=2)
    executor.start(run.task())
    assert run.wait().status == DONE
    assert started(fake_dir, 16)[1] == 2


def test_workers_exit_when_their_server_dies(fake_dir, tmp_path):
    script = (
        "import sys, time\n"
        "from dropout_demo.jobs.process_executor import ProcessExecutor\n"
        "ex = ProcessExecutor(fit='process_fakes:fit', data='process_fakes:data', warm_up=None)\n"
        "ex.warm()\n"
        "ex.worker().ready.wait()\n"
        "print(ex.worker_pids()[0], flush=True)\n"
        "import os; os._exit(0)\n"  # no shutdown: as if the server were killed
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, str(Path(TESTS).parent)]))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=WAIT
    )
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[0])
    wait_for(lambda: not pid_alive(pid), f"worker {pid} exiting after its server")


def test_a_manager_on_worker_processes_shares_one_run_between_two_owners(executors, fake_dir):
    manager = JobManager(executor=executors(), max_running=2, cores=2)
    try:
        config = TrainConfig(train_size=64, epochs=2, seed=process_fakes.GATED)
        one = manager.submit(config, "owner-1")
        two = manager.submit(config, "owner-2")
        started(fake_dir, process_fakes.GATED)
        manager.cancel(one, "owner-1")  # the other owner still follows: it goes on
        (fake_dir / f"release-{process_fakes.GATED}").touch()
        wait_for(lambda: manager.get(two, "owner-2").is_terminal, "the shared run ending")
        snap = manager.get(two, "owner-2")
        assert snap.status == DONE and snap.epoch == 2 and snap.has_model
        assert manager.trained == 1
    finally:
        manager.shutdown(timeout=WAIT)


@pytest.mark.mnist
def test_real_training_in_a_worker_returns_the_model_it_reported(mnist, mnist_dir, monkeypatch):
    from dropout_demo.training import evaluate, prepare_tensors

    monkeypatch.setenv("DROPOUT_DEMO_DATA", str(mnist_dir))
    executor = ProcessExecutor()
    run = Recorder(seed=3, epochs=2)
    run.config = TrainConfig(train_size=256, epochs=2, eval_size=500, seed=3)
    try:
        executor.start(run.task())
        outcome = run.wait()
    finally:
        executor.shutdown(timeout=WAIT)
    assert outcome.status == DONE, outcome.error
    assert [m.epoch for m in run.epochs] == [1, 2]
    assert outcome.plan and outcome.precision == "fp32"
    tensors = prepare_tensors(run.config, mnist, torch.device("cpu"))
    loss, acc = evaluate(outcome.model, tensors.x_test, tensors.y_test)
    assert acc == pytest.approx(run.epochs[-1].test_acc)  # the weights it was scored with
    assert loss == pytest.approx(run.epochs[-1].test_loss, rel=1e-4)


@pytest.mark.parametrize("setting, added", [(None, 5), ("0", 0), ("3", 3), ("junk", 5)])
def test_the_worker_gives_up_the_cpu_priority_it_is_told(
    executors, fake_dir, monkeypatch, setting, added
):
    from dropout_demo.jobs import process_executor

    if setting is None:
        monkeypatch.delenv(process_executor.WORKER_NICE_ENV, raising=False)
    else:
        monkeypatch.setenv(process_executor.WORKER_NICE_ENV, setting)
    assert process_executor.DEFAULT_WORKER_NICE == 5
    executor = executors()
    run = Recorder(seed=19)
    executor.start(run.task())
    assert run.wait().status == DONE
    server = os.getpriority(os.PRIO_PROCESS, 0)
    assert nice_of_run(fake_dir, 19) == min(19, server + added)


def test_the_executor_setting(monkeypatch):
    monkeypatch.delenv("DROPOUT_DEMO_RAY", raising=False)
    monkeypatch.setenv("DROPOUT_DEMO_EXECUTOR", "thread")
    assert manager_module.executor_settings() == {}
    monkeypatch.setenv("DROPOUT_DEMO_EXECUTOR", "fork-bomb")
    with pytest.raises(RuntimeError, match="use process or thread"):
        manager_module.executor_settings()
    monkeypatch.setenv("DROPOUT_DEMO_EXECUTOR", "process")
    settings = manager_module.executor_settings()
    try:
        assert isinstance(settings["executor"], ProcessExecutor)
        assert settings["cores"] == manager_module.available_cores()
    finally:
        settings["executor"].shutdown(timeout=WAIT)


# ---------------------------------------------------------------------------- early start
@pytest.fixture
def early(fake_dir, monkeypatch):
    """worker_start with the fakes as the default worker, its early worker forgotten after."""
    from dropout_demo import worker_start

    monkeypatch.setattr(worker_start, "FIT", FAKE_FIT)
    monkeypatch.setattr(worker_start, "DATA", FAKE_DATA)
    monkeypatch.setattr(worker_start, "WARM_UP", None)
    monkeypatch.delenv(worker_start.EARLY_ENV, raising=False)
    monkeypatch.delenv(worker_start.EXECUTOR_ENV, raising=False)
    monkeypatch.delenv(worker_start.RAY_ENV, raising=False)
    worker_start.forget_early()
    yield worker_start
    worker_start.forget_early()


def test_the_worker_started_with_the_first_page_is_the_one_that_trains(early, executors, fake_dir):
    assert early.start_early()
    assert not early.start_early()  # once per process: later pages start nothing
    spawned_pid = early._early.proc.pid
    executor = executors()
    recorder = Recorder(seed=0)
    executor.start(recorder.task())
    assert recorder.wait().status == DONE
    assert started(fake_dir, 0)[0] == spawned_pid  # adopted, not a second worker
    assert executor.worker_pids() == [spawned_pid]
    assert early._early is None


def test_an_early_worker_started_with_other_settings_is_ended_and_a_fitting_one_started(
    early, executors, fake_dir, monkeypatch
):
    assert early.start_early()
    spawned = early._early.proc
    monkeypatch.setenv("DROPOUT_DEMO_FAKE_CHANGED", "1")  # the environment moved on since
    executor = executors()
    recorder = Recorder(seed=0)
    executor.start(recorder.task())
    assert recorder.wait().status == DONE
    assert spawned.wait(WAIT) is not None  # the early worker was ended, not used
    assert early._early is None
    assert started(fake_dir, 0)[0] == executor.worker_pids()[0] != spawned.pid


def test_no_early_worker_for_the_thread_or_ray_executor_or_when_turned_off(early, monkeypatch):
    for name, value in [
        (early.EXECUTOR_ENV, "thread"),
        (early.RAY_ENV, "auto"),
        (early.EARLY_ENV, "0"),
        (early.EXECUTOR_ENV, "bogus"),  # the job manager says what is wrong, not the page
    ]:
        with monkeypatch.context() as m:
            m.setenv(name, value)
            early.forget_early()
            assert not early.start_early()
            assert early._early is None
    monkeypatch.setenv(early.EXECUTOR_ENV, "bogus")
    with pytest.raises(ValueError, match="use process or thread"):
        early.executor_kind()
