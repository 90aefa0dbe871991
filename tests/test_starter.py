"""The starter model: trained once (even under concurrent callers), saved, then reused."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dropout_demo import starter
from dropout_demo.config import ConfigError
from dropout_demo.data import DataError
from dropout_demo.inference import predict
from dropout_demo.jobs import JobManager
from dropout_demo.runs import RunStore

TINY_ENV = "train_size=256,epochs=1,eval_size=500"
REPO = Path(__file__).resolve().parents[1]


class CountingManager(JobManager):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.submitted = []

    def submit(self, config, owner, **kwargs):
        job_id = super().submit(config, owner, **kwargs)
        self.submitted.append((config, owner))
        return job_id


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch):
    monkeypatch.setenv(starter.CONFIG_ENV, TINY_ENV)
    starter._reset_for_tests()
    yield
    starter._reset_for_tests()


def wait_ready(store, manager, timeout=90.0):
    deadline = time.monotonic() + timeout
    while True:
        status = starter.ensure_default_model(store, manager)
        if status.state in ("ready", "failed"):
            return status
        assert time.monotonic() < deadline, f"starter still {status.state} after {timeout} s"
        time.sleep(0.1)


def test_trains_once_under_concurrent_callers_and_saves(mnist, tmp_path):
    store = RunStore(tmp_path)
    manager = CountingManager(data_provider=lambda: mnist)
    barrier = threading.Barrier(8)
    statuses = []

    def call():
        barrier.wait()
        statuses.append(starter.ensure_default_model(store, manager))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == 8
    assert {s.state for s in statuses} <= {"queued", "training"}
    status = wait_ready(store, manager)
    assert status.ready, status.describe()
    assert len(manager.submitted) == 1
    config, owner = manager.submitted[0]
    assert owner == starter.STARTER_OWNER
    assert config == starter.starter_config()
    assert (config.train_size, config.epochs) == (256, 1)

    records = store.list()
    assert len(records) == 1
    record = records[0]
    assert record.id == status.run_id
    assert starter.STARTER_TAG in record.tags and record.name == starter.STARTER_NAME
    assert record.status == "done" and len(record.metrics) == 1
    model = store.load_model(record.id)
    assert predict(model, mnist.test_images[:4].float().unsqueeze(1)).shape == (4, 10)
    # The finished bookkeeping job is gone from the manager; no session ever sees it.
    assert manager.snapshot(starter.STARTER_OWNER) == ()

    # Later calls in this process find it in the store and start nothing.
    assert starter.ensure_default_model(store, manager).run_id == record.id
    assert len(manager.submitted) == 1
    manager.shutdown()


def test_a_new_process_reuses_the_stored_model(mnist, tmp_path):
    store = RunStore(tmp_path)
    manager = CountingManager(data_provider=lambda: mnist)
    run_id = wait_ready(store, manager).run_id
    manager.shutdown()

    # The same process after a reset, with a brand-new manager: nothing is trained.
    starter._reset_for_tests()
    other = CountingManager(data_provider=lambda: mnist)
    assert starter.ensure_default_model(store, other).run_id == run_id
    assert other.submitted == []
    other.shutdown()

    # A real new process: its manager could not train (no MNIST path given), yet it is ready.
    code = (
        "from dropout_demo.starter import ensure_default_model\n"
        "from dropout_demo.runs import RunStore\n"
        "from dropout_demo.jobs import JobManager\n"
        "m = JobManager(data_provider=lambda: 1 / 0)\n"
        "s = ensure_default_model(RunStore(), m)\n"
        "print(s.state, s.run_id)\n"
    )
    env = {**os.environ, "DROPOUT_DEMO_RUNS": str(tmp_path), "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ready", run_id]


def test_failure_is_reported_and_retried_only_on_request(tmp_path):
    def no_data():
        raise DataError("MNIST not found in /nowhere: put the four files there")

    store = RunStore(tmp_path)
    manager = CountingManager(data_provider=no_data)
    status = wait_ready(store, manager)
    assert status.state == "failed"
    assert "MNIST not found" in status.message
    assert "could not be trained" in status.describe()
    assert starter.ensure_default_model(store, manager).state == "failed"
    assert len(manager.submitted) == 1  # no retry loop behind the user's back
    starter.ensure_default_model(store, manager, retry=True)
    assert wait_ready(store, manager).state == "failed"
    assert len(manager.submitted) == 2
    assert store.list() == []
    manager.shutdown()


def test_config_override_from_the_environment(monkeypatch):
    monkeypatch.setenv(starter.CONFIG_ENV, "train_size=1000, epochs=3, p=0.25")
    config = starter.starter_config()
    assert (config.train_size, config.epochs, config.p) == (1000, 3, 0.25)
    monkeypatch.delenv(starter.CONFIG_ENV)
    assert starter.starter_config() == starter.DEFAULT_STARTER_CONFIG
    for bad in ("epochs=zero", "colour=blue", "epochs", "epochs=0"):
        monkeypatch.setenv(starter.CONFIG_ENV, bad)
        with pytest.raises(ConfigError):
            starter.starter_config()


def test_progress_lines():
    assert starter.StarterStatus("training", epoch=0, epochs=2, progress=0.4).describe() == (
        "Training a starter model: epoch 1/2 (40% of the epoch)…"
    )
    assert "position 3" in starter.StarterStatus("queued", queue_position=3).describe()


def test_a_caller_whose_look_came_before_the_save_does_not_train_again(
    mnist, tmp_path, monkeypatch
):
    # Under load: a caller finds no starter, then waits for the lock while the finished run is
    # saved and marked ready. It must see the saved model, not conclude it was deleted.
    store = RunStore(tmp_path)
    manager = CountingManager(data_provider=lambda: mnist)
    run_id = wait_ready(store, manager).run_id
    assert len(manager.submitted) == 1
    real_find = starter.find_starter
    looks = []

    def too_early(s):
        looks.append(s)
        return None if len(looks) == 1 else real_find(s)

    monkeypatch.setattr(starter, "find_starter", too_early)
    status = starter.ensure_default_model(store, manager)
    assert status.ready and status.run_id == run_id
    assert len(manager.submitted) == 1
    manager.shutdown()
