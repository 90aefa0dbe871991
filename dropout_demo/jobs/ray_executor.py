"""Runs on a Ray cluster: training as Ray tasks, a registry actor that every replica shares.

Imported only when ``DROPOUT_DEMO_RAY`` is set (``local`` starts a local Ray; ``auto`` or an
address joins a running cluster); without it nothing here is loaded and Ray need not be
installed (``pip install -r requirements-ray.txt``).

- **The registry** (:class:`RegistryImpl`) is one named, detached actor in the ``dropout-lab``
  namespace: which computations exist (by run key, :mod:`.identity`), which replicas' runs
  follow each, and what each has produced so far (its epochs, the batch in progress, its
  outcome with the model's weights). An app replica asked for a run joins the computation
  under that key, or starts one when there is none: one computation, however many replicas
  and sessions watch it.
- **A computation** is a Ray task (:func:`train_task`) with declared resources (``num_cpus``:
  the run's torch threads; ``num_gpus=1`` for a CUDA run, which Ray places on a GPU node). It
  runs ``training.fit`` in a worker process (Ray reuses workers, so torch and MNIST load once
  per worker), reports each epoch to the registry as it finishes and its batch progress a few
  times a second; each report's answer says whether anyone still watches.
- **A replica** (:class:`RayExecutor`, the scheduler's executor) has one light thread per run
  that long-polls the registry and calls the run's callbacks, so epochs reach the page as they
  finish.

Stopping: a replica whose sessions all let go leaves the computation; when nobody follows it,
the task stops at its next report, and the replica that started it cancels it with
``ray.cancel`` if it has not stopped within ``STOP_GRACE`` s. A worker that dies (killed, out of
memory, node lost) fails the run with Ray's reason; a computation that stops reporting for
``SILENCE_LIMIT`` s is failed by the registry (its starting replica died with it). Subscribers
not heard from for ``SUBSCRIBER_LEASE`` s are forgotten. Finished runs are saved by the
replicas into the run store, which every replica must see (one path on shared storage,
``DROPOUT_DEMO_RUNS``), so later requests are cache hits everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training import EpochMetrics
from ..worker_start import RAY_ENV
from .executors import (
    CANCELLED,
    FAILED,
    Outcome,
    RunTask,
    RunThreads,
    describe,
)

log = logging.getLogger("dropout_demo.jobs")

NAMESPACE = "dropout-lab"
REGISTRY_NAME = "dropout-lab-registry-v1"  # the version changes with the registry's methods
POLL_WAIT = 0.5  # s the registry holds a poll open waiting for news (the long poll)
REPORT_EVERY = 0.2  # s between a task's batch-progress reports (each answers "still wanted?")
SUBSCRIBER_LEASE = 60.0  # s without a poll after which the registry forgets a subscriber
RESULT_KEEP = 600.0  # s a finished computation waits for its subscribers to read the result
SILENCE_LIMIT = 600.0  # s without a report after which a computation is failed
STOP_GRACE = 30.0  # s a stopping task gets to end between batches before ray.cancel
LOCAL_OBJECT_STORE = 256 * 1024**2  # bytes; results are a model's weights (about 2 MB)
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def ray_address() -> str | None:
    """``DROPOUT_DEMO_RAY`` as given (``local``, ``auto`` or an address), or None (off)."""
    value = os.environ.get(RAY_ENV, "").strip()
    return value or None


def connect(address: str) -> Any:
    """Connect this process to Ray once: ``local`` starts a local instance, ``auto`` finds
    the cluster ``ray start`` runs on this machine, anything else is a cluster's address."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(
            f"{RAY_ENV}={address} asks for Ray, which is not installed: "
            "pip install -r requirements-ray.txt"
        ) from exc
    with _connect_lock:
        if not ray.is_initialized():
            local = address == "local"
            settings = dict(
                address=address,
                namespace=NAMESPACE,
                log_to_driver=False,
                # Workers import this package from the same path (a shared checkout or install).
                runtime_env={"env_vars": {"PYTHONPATH": PACKAGE_ROOT}},
            )
            if local:
                settings.update(include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE)
                _in_lasting_thread(lambda: ray.init(**settings))
            else:
                ray.init(**settings)
    return ray


_connect_lock = threading.Lock()


def _in_lasting_thread(start: Any) -> None:
    """Run ``start`` (``ray.init`` of a local instance) in a thread that lives as long as the
    process. Ray's processes die with the *thread* that started them (Linux parent-death
    signal), and a Streamlit server runs its pages in threads that end after each run: a local
    Ray started there was killed seconds later (measured: its GCS gone, the server exited)."""
    started, errors = threading.Event(), []

    def host() -> None:
        try:
            start()
        except BaseException as exc:  # handed to the caller
            errors.append(exc)
        finally:
            started.set()
        threading.Event().wait()  # never set: this thread holds the local Ray's processes

    threading.Thread(target=host, name="dropout-ray-local", daemon=True).start()
    started.wait()
    if errors:
        raise errors[0]


def cluster_cpus() -> tuple[int, int]:
    """(CPUs in the cluster, CPUs of its largest node): the running cap and a run's most."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    per_node = [int(n.get("Resources", {}).get("CPU", 0)) for n in nodes] or [1]
    return max(1, sum(per_node)), max(1, max(per_node))


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


# ------------------------------------------------------------------------------ registry
@dataclass
class _Computation:
    key: str
    id: str  # a fresh id per computation: reports of a replaced one are told to stop
    subscribers: dict[str, float] = field(default_factory=dict)  # id -> last heard
    epochs: list[dict] = field(default_factory=list)
    batch: tuple[int, int] = (0, 0)
    outcome: dict | None = None
    stop: bool = False
    heard: float = field(default_factory=time.monotonic)  # the task's last report
    finished: float | None = None
    worker: int | None = None  # pid of the worker process that trains it


class RegistryImpl:
    """The cluster-wide registry of computations (wrapped by ``ray.remote`` on first use).

    A threaded actor: long polls wait on a condition while reports and joins go on.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._runs: dict[str, _Computation] = {}
        self.created = 0
        self.joined = 0
        threading.Thread(target=self._janitor, daemon=True).start()

    def join(self, key: str, subscriber: str) -> dict:
        """Follow the computation under ``key``; ``start`` says the caller must start it."""
        with self._cond:
            c = self._runs.get(key)
            if c is not None and not _joinable(c):
                c = None  # stopped for everyone, or failed: a fresh computation replaces it
            start = c is None
            if start:
                c = self._runs[key] = _Computation(key, uuid.uuid4().hex)
                self.created += 1
            else:
                self.joined += 1
            c.subscribers[subscriber] = time.monotonic()
            return {"start": start, "id": c.id, "worker": c.worker}

    def leave(self, key: str, cid: str, subscriber: str) -> bool:
        """Stop following; True when nobody follows any more (the computation then stops)."""
        with self._cond:
            c = self._current(key, cid)
            if c is None:
                return True
            c.subscribers.pop(subscriber, None)
            if not c.subscribers and c.outcome is None:
                c.stop = True
            self._cond.notify_all()
            return not c.subscribers

    def poll(self, key: str, cid: str, subscriber: str, seen: int, batch: tuple, wait: float):
        """News after ``seen`` epochs and ``batch``, waiting up to ``wait`` s for some."""
        deadline = time.monotonic() + wait
        with self._cond:
            c = self._current(key, cid)
            while c is not None:
                if subscriber in c.subscribers:
                    c.subscribers[subscriber] = time.monotonic()
                news = len(c.epochs) > seen or tuple(c.batch) != tuple(batch)
                left = deadline - time.monotonic()
                if news or c.outcome is not None or left <= 0:
                    break
                self._cond.wait(left)
                c = self._current(key, cid)
            if c is None:
                return {"gone": True}
            return {"epochs": c.epochs[seen:], "batch": c.batch, "outcome": c.outcome}

    # -- reports from the training task; each answers whether to stop -------------------
    def started(self, key: str, cid: str, worker: int) -> bool:
        with self._cond:
            c = self._current(key, cid)
            if c is None:
                return True
            c.worker, c.heard = worker, time.monotonic()
            return c.stop

    def stopping(self, key: str, cid: str) -> bool:
        with self._cond:
            c = self._current(key, cid)
            if c is None:
                return True
            c.heard = time.monotonic()
            return c.stop

    def report_batch(self, key: str, cid: str, batch: int, batches: int) -> bool:
        with self._cond:
            c = self._current(key, cid)
            if c is None:
                return True
            c.batch, c.heard = (batch, batches), time.monotonic()
            self._cond.notify_all()
            return c.stop

    def report_epoch(self, key: str, cid: str, metrics: dict) -> bool:
        with self._cond:
            c = self._current(key, cid)
            if c is None:
                return True
            c.epochs.append(metrics)
            c.batch, c.heard = (0, c.batch[1]), time.monotonic()
            self._cond.notify_all()
            return c.stop

    def finish(self, key: str, cid: str, outcome: dict) -> None:
        """The computation's end (first report wins: a task's own, or a failure seen by the
        replica that started it)."""
        with self._cond:
            c = self._current(key, cid)
            if c is None or c.outcome is not None:
                return
            c.outcome, c.finished = outcome, time.monotonic()
            self._cond.notify_all()

    # -- inspection ----------------------------------------------------------------------
    def stats(self) -> dict:
        with self._cond:
            live = [c for c in self._runs.values() if c.outcome is None]
            return {
                "created": self.created,
                "joined": self.joined,
                "live": len(live),
                "known": len(self._runs),
            }

    def forget_all(self) -> None:
        """Drop every computation and reset the counts (tasks still running are told to stop
        at their next report). For tests and for an operator clearing a cluster."""
        with self._cond:
            self._runs.clear()
            self.created = self.joined = 0
            self._cond.notify_all()

    # -- internals -----------------------------------------------------------------------
    def _current(self, key: str, cid: str) -> _Computation | None:
        c = self._runs.get(key)
        return c if c is not None and c.id == cid else None

    def _janitor(self) -> None:
        while True:
            time.sleep(1.0)
            with self._cond:
                now = time.monotonic()
                for key, c in list(self._runs.items()):
                    for sub, seen in list(c.subscribers.items()):
                        if now - seen > SUBSCRIBER_LEASE:
                            del c.subscribers[sub]
                    if c.outcome is None:
                        if not c.subscribers:
                            c.stop = True
                        if now - c.heard > SILENCE_LIMIT:
                            silent = f"{SILENCE_LIMIT:.0f} s"
                            c.outcome = _failed(f"its Ray worker sent nothing for {silent}")
                            c.finished = now
                    elif not c.subscribers or now - c.finished > RESULT_KEEP:
                        del self._runs[key]
                self._cond.notify_all()


def _joinable(c: _Computation) -> bool:
    if c.outcome is None:
        return not c.stop
    return c.outcome["status"] not in (CANCELLED, FAILED)


def _failed(error: str) -> dict:
    return {"status": FAILED, "error": error, "metrics": None, "state": None}


# ------------------------------------------------------------------------------ the task
def train_task(
    key: str,
    cid: str,
    config_dict: dict,
    data_dir: str | None,
    threads: int,
    fit_fn: Any = None,
    data_provider: Any = None,
) -> str:
    """One computation, in a Ray worker: ``fit`` with reports to the registry. Returns the
    status (the outcome itself goes to the registry, which every replica reads)."""
    import ray
    import torch

    from ..config import TrainConfig
    from ..data import get_mnist
    from ..training import fit

    registry = ray.get_actor(REGISTRY_NAME, namespace=NAMESPACE)
    stop = threading.Event()
    last_report, last_check = [0.0], [time.monotonic()]

    def heard(answer: bool) -> None:
        if answer:
            stop.set()

    def should_stop() -> bool:
        """Polled by fit before every batch: asks the registry a few times a second."""
        now = time.monotonic()
        if not stop.is_set() and now - last_check[0] >= REPORT_EVERY:
            last_check[0] = now
            heard(ray.get(registry.stopping.remote(key, cid)))
        return stop.is_set()

    def on_batch(_epoch: int, batch: int, batches: int) -> None:
        now = time.monotonic()
        if now - last_report[0] >= REPORT_EVERY:
            last_report[0] = now
            heard(ray.get(registry.report_batch.remote(key, cid, batch, batches)))

    def on_epoch(m: EpochMetrics) -> None:
        heard(ray.get(registry.report_epoch.remote(key, cid, m.__dict__.copy())))

    try:
        # The worker runs one task at a time: its thread count is this run's, set once here.
        torch.set_num_threads(max(1, threads))
        heard(ray.get(registry.started.remote(key, cid, os.getpid())))
        config = TrainConfig.from_dict(config_dict)
        data = data_provider() if data_provider is not None else get_mnist(data_dir)
        result = (fit_fn or fit)(
            config, data, on_epoch=on_epoch, should_stop=should_stop, on_batch=on_batch
        )
        outcome = {
            "status": result.status,
            "error": (result.message or None) if result.status != CANCELLED else None,
            "metrics": [m.__dict__.copy() for m in result.metrics],
            "state": {k: v.detach().clone() for k, v in result.model.state_dict().items()},
            "p": float(result.model.dropout.p),
            "precision": getattr(result, "precision", None),
            "device": getattr(result, "device", None),
            "plan": getattr(result, "plan", None),
        }
    except Exception as exc:  # reported to every follower, never raised
        outcome = _failed(describe(exc))
    ray.get(registry.finish.remote(key, cid, outcome))
    return outcome["status"]


def warm_worker(data_dir: str | None) -> int:
    """Load torch, the training code and MNIST into a worker ahead of the first run (Ray
    keeps a job's idle workers, one per CPU, and gives them the next tasks)."""
    from ..data import get_mnist
    from ..training import fit  # noqa: F401  (the import is the point)

    get_mnist(data_dir)
    return os.getpid()


_remote: dict[str, Any] = {}
_remote_lock = threading.Lock()


def _remote_of(name: str, fn: Any) -> Any:
    with _remote_lock:
        if name not in _remote:
            import ray

            _remote[name] = ray.remote(fn)
        return _remote[name]


def registry_handle() -> Any:
    """The cluster's registry actor, created by whichever replica asks first."""
    return (
        _remote_of("registry", RegistryImpl)
        .options(
            name=REGISTRY_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_concurrency=256,
            num_cpus=0,
        )
        .remote()
    )


# ------------------------------------------------------------------------------ executor
class RayExecutor:
    """The scheduler's executor when ``DROPOUT_DEMO_RAY`` is set: computations on Ray.

    ``start`` gets a follower thread in this process (named like the thread executor's run
    threads; it only waits on the registry); the training runs in a Ray worker.
    ``should_stop`` is read without blocking: the in-process pause for a priority run does
    not apply to runs in other processes. ``fit_fn`` and ``data_provider`` (default:
    ``training.fit`` and MNIST from ``data_dir``) are pickled to the workers, called there.
    """

    pauses_for_priority = False

    def __init__(
        self,
        address: str,
        data_dir: str | None = None,
        fit_fn: Any = None,
        data_provider: Any = None,
    ):
        self.address = address
        self._ray = connect(address)
        self._data_dir = data_dir
        self._fit = fit_fn
        self._data_provider = data_provider
        self.registry = registry_handle()
        self.subscriber_prefix = f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._lock = threading.Lock()
        self._followers = RunThreads(daemon=True)  # one per run, following it
        self.started = 0  # computations this replica started (joined ones not counted)
        self.joined = 0
        if fit_fn is None and data_provider is None:
            # Workers are per replica (a Ray job): start this one's now, not in a first click.
            total, _ = cluster_cpus()
            warm = _remote_of("warm", warm_worker).options(num_cpus=1, max_retries=0)
            self._warming = [warm.remote(data_dir) for _ in range(total)]

    def start(self, task: RunTask) -> None:
        self._followers.start(task, self._follow_run, reason=_ray_reason)

    def _follow_run(self, task: RunTask) -> Outcome:
        if task.should_stop():
            return Outcome(CANCELLED, None, None, None)
        return self._run(task)

    def _submit(self, task: RunTask, cid: str) -> Any:
        config = task.config
        if config.device == "auto":
            # As the run's key says (jobs.identity resolves "auto" here, in the replica): a
            # worker on a GPU node must not train a key that says "cpu" on its GPU.
            from ..training import resolve_device

            config = config.replace(device=resolve_device("auto").type)
        _total, node_cpus = cluster_cpus()
        wants_gpu = config.device.startswith("cuda")
        if wants_gpu and cluster_gpus() < 1:
            raise RuntimeError("the run asks for a GPU and the Ray cluster has none")
        return (
            _remote_of("train", train_task)
            .options(
                num_cpus=max(1, min(task.threads, node_cpus)),
                num_gpus=1 if wants_gpu else 0,
                max_retries=0,
                name=f"dropout-run {task.config.label()}",
            )
            .remote(
                task.key,
                cid,
                config.to_dict(),
                self._data_dir,
                task.threads,
                self._fit,
                self._data_provider,
            )
        )

    def _run(self, task: RunTask) -> Outcome:
        ray, registry = self._ray, self.registry
        subscriber = f"{self.subscriber_prefix}-{task.name}"
        joined = ray.get(registry.join.remote(task.key, subscriber))
        cid, ref = joined["id"], None
        if joined["start"]:
            try:
                ref = self._submit(task, cid)
            except Exception as exc:
                registry.finish.remote(task.key, cid, _failed(_ray_reason(exc)))
                raise
        with self._lock:
            if ref is not None:
                self.started += 1
            else:
                self.joined += 1
        log.info("ray computation %s: key=%s", "started" if ref is not None else "joined", task.key)
        seen, batch = 0, (0, 0)
        stopping_since: float | None = None
        while True:
            if stopping_since is None and task.should_stop():
                stopping_since = time.monotonic()
                if not ray.get(registry.leave.remote(task.key, cid, subscriber)):
                    return Outcome(CANCELLED, None, None, None)  # others go on following it
            if ref is not None:
                self._check_task(ref, task.key, cid, stopping_since)
            news = ray.get(registry.poll.remote(task.key, cid, subscriber, seen, batch, POLL_WAIT))
            if news.get("gone"):
                return Outcome(FAILED, "the run was dropped from the Ray registry", None, None)
            for m in news["epochs"]:
                task.on_epoch(EpochMetrics(**m))
            seen += len(news["epochs"])
            if tuple(news["batch"]) != batch:
                batch = tuple(news["batch"])
                if batch[1]:
                    task.on_batch(*batch)
            if news["outcome"] is not None:
                with contextlib.suppress(Exception):
                    registry.leave.remote(task.key, cid, subscriber)
                return _outcome(news["outcome"])

    def _check_task(self, ref: Any, key: str, cid: str, stopping_since: float | None) -> None:
        """The starting replica watches its task: a worker's death fails the computation
        for everyone; a stop not taken within the grace is forced with ``ray.cancel``."""
        ray = self._ray
        ready, _ = ray.wait([ref], timeout=0)
        if ready:
            try:
                ray.get(ref)
            except Exception as exc:  # the task never reported its end: cancelled, or died
                if stopping_since is not None:
                    end = {"status": CANCELLED, "error": None, "metrics": None, "state": None}
                else:
                    end = _failed(_ray_reason(exc))
                self.registry.finish.remote(key, cid, end)
        elif stopping_since is not None and time.monotonic() - stopping_since > STOP_GRACE:
            ray.cancel(ref, force=True)

    def stats(self) -> dict:
        """The registry's counts (computations created and joined, cluster-wide)."""
        return self._ray.get(self.registry.stats.remote())

    def threads(self) -> list[threading.Thread]:
        return self._followers.threads()

    def shutdown(self, timeout: float | None = None) -> None:
        """Wait for the followers (the caller has asked the runs to stop; each leaves)."""
        self._followers.join(timeout)


def _outcome(raw: dict) -> Outcome:
    from ..model import SimpleCNN

    model = None
    if raw.get("state") is not None:
        model = SimpleCNN(p=raw["p"])
        model.load_state_dict(raw["state"])
        model.eval()
    metrics = None
    if raw.get("metrics") is not None:
        metrics = [EpochMetrics(**m) for m in raw["metrics"]]
    return Outcome(
        raw["status"],
        raw.get("error"),
        model,
        metrics,
        raw.get("precision"),
        raw.get("device"),
        raw.get("plan") or None,
    )


def _ray_reason(exc: BaseException) -> str:
    """A worker's death or a cancellation in Ray's words, shortened to the first line."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    kind = type(exc).__name__
    if "Crashed" in kind or "ActorDied" in kind or "ActorError" in kind or "Unavailable" in kind:
        return f"the Ray worker training this run died ({kind}: {first})"
    if "Cancelled" in kind:
        return "the run's Ray task was cancelled"
    return describe(exc)
