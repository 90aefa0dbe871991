"""Starting the training worker process, without importing torch.

The worker (:mod:`dropout_demo.jobs.process_worker`) needs about five seconds on this kind of
machine before it can train: import torch, load MNIST, probe the precision. A server's first
page also imports torch (the pages use it) before it reaches the job manager, and on a fresh
server that a class opens at once that took another four or five seconds. ``app.py`` therefore
calls :func:`start_early` first thing: the worker starts importing while the page does, and the
process executor adopts it (:func:`adopt`) when the job manager is made.

This module imports neither torch nor anything that does (``dropout_demo.jobs`` does).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

log = logging.getLogger("dropout_demo.jobs")

# Set (local, auto or a cluster's address): runs execute on Ray (.jobs.ray_executor)
RAY_ENV = "DROPOUT_DEMO_RAY"
# "process" (a worker process of this machine, .jobs.process_executor) or "thread" (this process)
EXECUTOR_ENV = "DROPOUT_DEMO_EXECUTOR"
DEFAULT_EXECUTOR = "process"  # when neither DROPOUT_DEMO_EXECUTOR nor DROPOUT_DEMO_RAY is set
# "0": the worker starts when the job manager is made, not with the first page (the tests' own
# app sessions set it: they bring their own job manager and never use the worker).
EARLY_ENV = "DROPOUT_DEMO_EARLY_WORKER"

# What a worker runs, as importable names (``module:attribute``).
FIT = "dropout_demo.training:fit"
DATA = "dropout_demo.data:get_mnist"
WARM_UP = "dropout_demo.training:probe_default_device"  # after the data, before the first run
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


def executor_kind() -> str:
    """``ray``, ``process`` or ``thread``, from the environment; ValueError for anything else."""
    if os.environ.get(RAY_ENV, "").strip():
        return "ray"
    kind = os.environ.get(EXECUTOR_ENV, "").strip().lower() or DEFAULT_EXECUTOR
    if kind not in ("process", "thread"):
        raise ValueError(f"{EXECUTOR_ENV}={kind!r}: use process or thread")
    return kind


def send(conn: Connection, message: tuple) -> None:
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def worker_env() -> dict[str, str]:
    """This process's environment, with the package importable from anywhere."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + path if path else "")
    return env


@dataclass
class Spawned:
    """A started worker process, already sent its ``init`` message."""

    proc: subprocess.Popen
    conn: Connection
    started: float  # time.monotonic() at the start
    init: tuple
    env: dict[str, str]

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()  # the worker sees its socket close and exits
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def spawn(fit: str, data: str, warm_up: str | None, env: dict[str, str]) -> Spawned:
    """Start ``python -m dropout_demo.jobs.process_worker FD`` on one end of a socket pair and
    send it what to load; OSError when it cannot start."""
    parent, child = socket.socketpair()
    conn = Connection(os.dup(parent.fileno()))
    parent.close()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dropout_demo.jobs.process_worker", str(child.fileno())],
            pass_fds=(child.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except BaseException:
        conn.close()
        raise
    finally:
        child.close()
    init = ("init", fit, data, warm_up)
    spawned = Spawned(proc, conn, time.monotonic(), init, env)
    try:
        send(conn, init)
    except OSError:
        spawned.discard()
        raise
    return spawned


_lock = threading.Lock()
_early: Spawned | None = None
_tried = False


def start_early() -> bool:
    """Start the default worker now if the process executor will want one (once per process;
    cheap on every later call). True when a worker was started by this call."""
    global _early, _tried
    if _tried:
        return False
    with _lock:
        if _tried:
            return False
        _tried = True
        if os.environ.get(EARLY_ENV, "1").strip() == "0":
            return False
        try:
            if executor_kind() != "process":
                return False
        except ValueError:
            return False  # the job manager reports it
        try:
            _early = spawn(FIT, DATA, WARM_UP, worker_env())
        except OSError:
            log.warning("could not start the training worker early", exc_info=True)
            return False
        log.info("training worker started with the first page: pid %d", _early.proc.pid)
        return True


def adopt(fit: str, data: str, warm_up: str | None, env: dict[str, str]) -> Spawned | None:
    """The worker :func:`start_early` started, if it is alive and runs what is asked with the
    same environment (taken: a second call returns None); one that does not is ended."""
    global _early
    with _lock:
        spawned, _early = _early, None
    if spawned is None:
        return None
    fits = spawned.init == ("init", fit, data, warm_up) and spawned.env == env
    if not fits or spawned.proc.poll() is not None:
        spawned.discard()
        return None
    return spawned


def forget_early() -> None:
    """End an unadopted early worker and allow :func:`start_early` again (for tests)."""
    global _early, _tried
    with _lock:
        spawned, _early, _tried = _early, None, False
    if spawned is not None:
        spawned.discard()
