"""Shared fixtures: the real MNIST (required in CI) and isolated run/data directories."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Training may run at a lower CPU priority (the worker process: DROPOUT_DEMO_WORKER_NICE, 5 by
# default; threads: DROPOUT_DEMO_TRAIN_NICE, off by default). On a test machine that other
# processes keep busy, niced training gets a small share of a core and the suite crawls; tests
# check behaviour, not priority, so they train at normal priority whatever the caller's
# environment says (servers started by the browser tests inherit it). tests/test_executors.py
# and tests/test_process_executor.py set the variables themselves to check the niceness.
os.environ["DROPOUT_DEMO_TRAIN_NICE"] = "0"
os.environ["DROPOUT_DEMO_WORKER_NICE"] = "0"
# The app sessions of AppTest run app.py in this process with a job manager of their own, which
# never uses the worker that app.py would start with the first page (the browser tests' servers
# start it: tests/test_browser.py's app_env removes this).
os.environ["DROPOUT_DEMO_EARLY_WORKER"] = "0"


def require_or_skip(reason: str) -> None:
    """In CI a missing prerequisite is a failure; on a developer machine it is a skip."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    raw = os.environ.get("DROPOUT_DEMO_DATA")
    if not raw:
        require_or_skip("DROPOUT_DEMO_DATA is not set (point it at the MNIST files)")
    path = Path(raw)
    if not path.is_dir():
        require_or_skip(f"DROPOUT_DEMO_DATA={raw} is not a directory")
    return path


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from dropout_demo.data import get_mnist

    return get_mnist(mnist_dir)


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray instance for the Ray executor's tests (one per test session).

    Ray is an optional extra of the product and part of `make test` (which installs it); in CI
    it is required. Its workers import the package and the test modules (the fakes they run),
    so both directories go on their PYTHONPATH. Eight logical CPUs: runs are fakes, and the
    tests ask for more threads than this machine has cores.
    """
    try:
        import ray
    except ImportError:
        require_or_skip("Ray is not installed: pip install -r requirements-ray.txt")
    tests = Path(__file__).resolve().parent
    ray.init(
        address="local",
        namespace="dropout-lab",
        num_cpus=8,
        object_store_memory=128 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _ray_computations_do_not_outlive_a_test(request):
    """The Ray registry outlives a test and tests reuse run keys: it forgets every
    computation after each test (their tasks are told to stop)."""
    yield
    if "ray_cluster" not in request.fixturenames:
        return
    import ray

    from dropout_demo.jobs.ray_executor import NAMESPACE, REGISTRY_NAME

    with contextlib.suppress(ValueError):  # no registry: nothing was started
        ray.get(ray.get_actor(REGISTRY_NAME, namespace=NAMESPACE).forget_all.remote())


@pytest.fixture(autouse=True)
def _isolated_runs_dir(tmp_path_factory, monkeypatch):
    # No test may write into the user's real run store.
    monkeypatch.setenv("DROPOUT_DEMO_RUNS", str(tmp_path_factory.mktemp("runs")))


@pytest.fixture
def make_app_manager(monkeypatch):
    """``make(**JobManager kwargs)``: a job manager the app's views use (short grace), shut
    down after the test; fails the test if a training thread outlives it."""
    from dropout_demo import jobs
    from dropout_demo.jobs import manager as manager_module
    from dropout_demo.ui import state

    made = []

    def make(**kwargs):
        manager = jobs.JobManager(release_grace=0.05, **kwargs)
        made.append(manager)
        monkeypatch.setattr(manager_module, "_manager", manager)
        state._manager.clear()
        state.store.clear()
        return manager

    yield make
    for manager in made:
        manager.shutdown(timeout=120)
    state._manager.clear()
    state.store.clear()
    alive = [t.name for t in threading.enumerate() if t.name.startswith(jobs.THREAD_PREFIX)]
    assert not alive, f"training threads left running: {alive}"
